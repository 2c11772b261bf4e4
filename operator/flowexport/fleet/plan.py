"""What a FlowExportSet wants, from what discovery found: pure functions, no I/O.

- `flowexport_name`: the deterministic name of the FlowExport generated for one VPC;
- `covered`: whether a VPC's flow logs deliver to the set's destination;
- `desired`: the FlowExports the set wants (name -> labels and spec);
- `diff`: what to create, update and delete against the FlowExports the set has, never
  deleting those of accounts or regions that could not be discovered this time;
- `coverage`: the status's counts, the first missing VPCs, refused and failed accounts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from flowexport.api.models import FlowExportSpec
from flowexport.api.sets import (
    ACCOUNT_LABEL,
    MAX_ACCOUNT_PROBLEMS,
    MAX_MISSING,
    REGION_LABEL,
    SET_LABEL,
    VPC_LABEL,
    FlowExportSetSpec,
    sample_spec,
)
from flowexport.aws.discovery import FoundVpc, delivers_to_bucket

#: The longest name a generated FlowExport gets (a DNS label, as a label value must be).
MAX_NAME = 63
_NOT_LABEL = re.compile(r"[^a-z0-9-]+")


def flowexport_name(set_name: str, account_id: str, region: str, vpc_id: str) -> str:
    """`<set>-<account>-<region>-<vpc-id>`, as a DNS label of at most 63 characters: a longer
    one keeps its head and ends with 10 hex characters of a hash of the whole, so two VPCs
    never share a name and the same VPC always gets the same one."""
    full = _NOT_LABEL.sub("-", f"{set_name}-{account_id}-{region}-{vpc_id}".lower()).strip("-")
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    head = full[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


@dataclass(frozen=True)
class Place:
    """One account and region."""

    account_id: str
    region: str


@dataclass(frozen=True)
class Scanned:
    """One account and region as discovery left it: its VPCs, or why it could not be read."""

    place: Place
    vpcs: tuple[FoundVpc, ...] = ()
    reason: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the account and region were read."""
        return self.reason is None


@dataclass(frozen=True)
class Refusal:
    """An account in scope that the namespace may not use (or that could not be listed)."""

    account_id: str
    reason: str
    message: str


def covered(spec: FlowExportSetSpec, vpc: FoundVpc) -> bool:
    """Whether the VPC has a flow log delivering to the set's destination: into the bucket
    (under the prefix), or into any CloudWatch Logs log group (adopted as it is)."""
    s3 = spec.destination.s3
    if s3 is not None:
        return any(delivers_to_bucket(f, s3.bucket, s3.prefix) for f in vpc.flow_logs)
    return any(f.destination_type == "cloud-watch-logs" and f.log_group for f in vpc.flow_logs)


def selected(spec: FlowExportSetSpec, vpc: FoundVpc) -> bool:
    """Whether the VPC is in the set's scope (ids and tags; discovery already filtered by
    them, this holds the answer to the spec whatever the endpoint did)."""
    ids = spec.vpcs.ids
    tags = dict(vpc.tags)
    return (not ids or vpc.vpc_id in ids) and all(
        tags.get(k) == v for k, v in spec.vpcs.tags.items()
    )


@dataclass(frozen=True)
class Wanted:
    """A FlowExport the set wants: its name, labels and spec (camelCase, as stored)."""

    name: str
    place: Place
    vpc_id: str
    labels: dict[str, str]
    spec: dict[str, Any]


def _log_group_of(spec: FlowExportSetSpec, vpc: FoundVpc) -> str | None:
    """The log group a VPC's FlowExport reads: the one its existing flow log delivers to
    (adopted, first by id), else (flowLogs Ensure) the destination's name for it."""
    groups = sorted(
        (f.flow_log_id, f.log_group)
        for f in vpc.flow_logs
        if f.destination_type == "cloud-watch-logs" and f.log_group
    )
    if groups:
        return groups[0][1]
    return None if spec.flow_logs == "Report" else ""


def desired(
    spec: FlowExportSetSpec,
    set_name: str,
    scans: Iterable[Scanned],
    extra_aws: Mapping[Place, Mapping[str, Any]] | None = None,
) -> dict[str, Wanted]:
    """The FlowExports the set wants, by name: one per selected VPC of the accounts and
    regions read (destination logGroups only; Report: only VPCs whose flow log delivers to a
    log group). `extra_aws`: spec.aws fields per place (the account's id or role)."""
    wanted: dict[str, Wanted] = {}
    if spec.destination.log_groups is None:
        return wanted
    for scan in scans:
        if not scan.ok:
            continue
        place = scan.place
        for vpc in scan.vpcs:
            if not selected(spec, vpc):
                continue
            group = _log_group_of(spec, vpc)
            if group is None:
                continue
            body = sample_spec(spec, place.account_id, place.region, vpc.vpc_id, group or None)
            body["aws"].update((extra_aws or {}).get(place, {}))
            name = flowexport_name(set_name, place.account_id, place.region, vpc.vpc_id)
            labels = {
                SET_LABEL: set_name,
                ACCOUNT_LABEL: place.account_id,
                REGION_LABEL: place.region,
                VPC_LABEL: vpc.vpc_id,
            }
            wanted[name] = Wanted(name, place, vpc.vpc_id, labels, body)
    return wanted


@dataclass(frozen=True)
class Existing:
    """A FlowExport the set generated, as stored: name, labels and spec."""

    name: str
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    #: Whether its Ready condition is True (as last listed).
    ready: bool = False

    @property
    def place(self) -> Place:
        """The account and region its labels say."""
        return Place(self.labels.get(ACCOUNT_LABEL, ""), self.labels.get(REGION_LABEL, ""))


@dataclass
class Diff:
    """What to change: FlowExports to create, to update (spec or labels) and to delete; and
    how many were left uncreated by the cap."""

    create: list[Wanted] = field(default_factory=list)
    update: list[Wanted] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    capped: int = 0

    @property
    def empty(self) -> bool:
        """Nothing to change."""
        return not (self.create or self.update or self.delete)


def same_spec(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two FlowExport specs mean the same (defaults applied: the API server fills
    them in); an invalid stored one differs from anything."""
    try:
        return FlowExportSpec.model_validate(dict(a)) == FlowExportSpec.model_validate(dict(b))
    except ValidationError:
        return False


def diff(
    wanted: Mapping[str, Wanted],
    existing: Iterable[Existing],
    unread: Iterable[Place],
    cap: int,
) -> Diff:
    """Create what is wanted and missing (up to `cap` FlowExports in all), update what differs,
    delete what is no longer wanted, except in the `unread` accounts and regions (discovery
    failed, or the account is refused): those are left as they are until they are read again."""
    out = Diff()
    kept_back = set(unread)
    have = {e.name: e for e in existing}
    for name, want in sorted(wanted.items()):
        found = have.get(name)
        if found is None:
            continue
        labels_differ = any(found.labels.get(k) != v for k, v in want.labels.items())
        if labels_differ or not same_spec(found.spec, want.spec):
            out.update.append(want)
    for name in sorted(have):
        if name not in wanted and have[name].place not in kept_back:
            out.delete.append(name)
    room = max(0, cap - (len(have) - len(out.delete)))
    missing = [w for n, w in sorted(wanted.items()) if n not in have]
    out.create = missing[:room]
    out.capped = len(missing) - len(out.create)
    return out


@dataclass
class Coverage:
    """The status's coverage: account and VPC counts, the first missing VPCs (sorted by
    account, region, VPC), refused and failed accounts."""

    accounts_total: int = 0
    accounts_granted: int = 0
    accounts_refused: int = 0
    accounts_failed: int = 0
    vpcs_total: int = 0
    vpcs_with_flow_log: int = 0
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    failed: list[Scanned] = field(default_factory=list)

    @property
    def vpcs_without_flow_log(self) -> int:
        """Selected VPCs with no flow log to the destination."""
        return self.vpcs_total - self.vpcs_with_flow_log

    def key(self) -> tuple[Any, ...]:
        """What a coverage Event is posted on a change of: the counts and the VPCs listed as
        missing (a VPC that left and another that lost its flow log change the list)."""
        return (
            self.accounts_total,
            self.accounts_refused,
            self.accounts_failed,
            self.vpcs_total,
            self.vpcs_with_flow_log,
            tuple(self.missing[:MAX_MISSING]),
        )

    def to_status(self) -> dict[str, Any]:
        """The status fields (camelCase)."""
        return {
            "accounts": {
                "total": self.accounts_total,
                "granted": self.accounts_granted,
                "refused": self.accounts_refused,
                "failed": self.accounts_failed,
            },
            "vpcs": {
                "total": self.vpcs_total,
                "withFlowLog": self.vpcs_with_flow_log,
                "withoutFlowLog": self.vpcs_without_flow_log,
            },
            "missing": [
                {"accountId": a, "region": r, "vpcId": v} for a, r, v in self.missing[:MAX_MISSING]
            ],
            "refusedAccounts": [
                {"accountId": r.account_id, "reason": r.reason, "message": r.message[:1024]}
                for r in self.refused[:MAX_ACCOUNT_PROBLEMS]
            ],
            "failedAccounts": [
                {
                    "accountId": s.place.account_id,
                    "region": s.place.region,
                    "reason": s.reason,
                    "message": s.message[:1024],
                }
                for s in self.failed[:MAX_ACCOUNT_PROBLEMS]
            ],
        }


def coverage(
    spec: FlowExportSetSpec,
    accounts: Iterable[str],
    refused: Iterable[Refusal],
    scans: Iterable[Scanned],
) -> Coverage:
    """The coverage of the accounts in scope (`accounts`, all of them, refused included)."""
    scans = list(scans)
    refusals = sorted(refused, key=lambda r: r.account_id)
    refused_ids = {r.account_id for r in refusals}
    in_scope = set(accounts) | refused_ids
    failed = sorted(
        (s for s in scans if not s.ok), key=lambda s: (s.place.account_id, s.place.region)
    )
    failed_ids = {s.place.account_id for s in failed} - refused_ids
    out = Coverage(
        accounts_total=len(in_scope),
        accounts_granted=len(in_scope - refused_ids),
        accounts_refused=len(refused_ids),
        accounts_failed=len(failed_ids),
        refused=refusals,
        failed=failed,
    )
    missing: list[tuple[str, str, str]] = []
    for scan in scans:
        if not scan.ok:
            continue
        for vpc in scan.vpcs:
            if not selected(spec, vpc):
                continue
            out.vpcs_total += 1
            if covered(spec, vpc):
                out.vpcs_with_flow_log += 1
            else:
                missing.append((scan.place.account_id, scan.place.region, vpc.vpc_id))
    out.missing = sorted(missing)
    return out


def kept_back(
    existing: Iterable[Existing],
    scans: Iterable[Scanned],
    accounts: Iterable[str],
    regions: Iterable[str],
    complete: bool,
) -> set[Place]:
    """The accounts and regions whose FlowExports stay as they are this time: still in scope
    (or the scope is not fully known: the Organizations walk failed) but not read (refused,
    or discovery failed there). FlowExports of places out of scope go."""
    read = {s.place for s in scans if s.ok}
    scope = {Place(a, r) for a in accounts for r in regions}
    return {e.place for e in existing if e.place not in read and (e.place in scope or not complete)}
