"""A FlowExportSet's discovery: accounts in scope, then each granted account and region read
in a small thread pool, and (s3 destination, flowLogs Ensure) the missing flow logs created.

Blocking (boto3): run it off the event loop. Every account goes through `resolve`, the
namespace's grants: an account it refuses is never called, only reported; the management
account of an Organizations walk too. A failure of one account or region (AssumeRole denied,
throttling) is reported for it and stops no other.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from flowexport.api.grants import AccountNotGrantedError
from flowexport.api.sets import FlowExportSetSpec
from flowexport.aws.discovery import (
    CREATE_BATCH,
    FlowLog,
    FoundVpc,
    bucket_destination,
    create_bucket_flow_logs,
    delete_set_flow_logs,
    inventory,
)
from flowexport.aws.organizations import walk_accounts
from flowexport.aws.s3 import S3_DESTINATION
from flowexport.aws.session import CLIENT_CONFIG, AwsClients, AwsTarget, shared_clients
from flowexport.errors import FlowExportError, unexpected
from flowexport.fleet.plan import Place, Refusal, Scanned, covered, selected

log = logging.getLogger("flowexport.fleet")

#: Accounts and regions read at once (each is two or three calls; a few threads keep a
#: refresh of hundreds of accounts short without a burst on any one of them).
WORKERS = 4


@dataclass(frozen=True)
class Access:
    """How to reach one account: the role to assume (None: the operator's own identity),
    the ExternalId to send, the grant that allows it, and the grant's session name (with
    `sessionNames: Namespace`; None: the set's own)."""

    account_id: str
    role_arn: str | None
    external_id: str | None = None
    grant_name: str | None = None
    session_name: str | None = None


class NotGrantedError(AccountNotGrantedError):
    """The namespace may not use the account (no AccountGrant grants it): it is never
    called."""


#: The namespace's grants: the access to one account (in a region, if the grant says),
#: raising NotGrantedError (or another FlowExportError) when there is none.
Resolve = Callable[[str, str | None], Access]
#: Clients for a target (tests count calls through their own).
ClientsFor = Callable[[AwsTarget], AwsClients]


@dataclass
class Discovery:
    """What one discovery found."""

    accounts: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    scans: list[Scanned] = field(default_factory=list)
    #: Whether `accounts` is the whole scope (False when the Organizations walk failed).
    complete: bool = True
    flow_logs_created: int = 0
    #: AWS calls made, by account.
    calls: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    #: The access used for each granted account.
    access: dict[str, Access] = field(default_factory=dict)


def target_for(base: AwsTarget, region: str, access: Access) -> AwsTarget:
    """The AWS target of one account and region: the base's endpoints and keys, the grant's
    role and ExternalId, and the grant's session name if it names one (`sessionNames:
    Namespace`: the set then shares its clients with its FlowExports of that account and
    region), else the base's (the set's own)."""
    return dataclasses.replace(
        base,
        region=region,
        role_arn=access.role_arn,
        external_id=access.external_id,
        session_name=access.session_name or base.session_name,
    )


def _problem(exc: Exception) -> tuple[str, str]:
    error = exc if isinstance(exc, FlowExportError) else unexpected(exc)
    if not isinstance(exc, FlowExportError):
        log.exception("discovery failed unexpectedly")
    return str(error.reason), str(error)


def _accounts(
    spec: FlowExportSetSpec,
    base: AwsTarget,
    resolve: Resolve,
    clients_for: ClientsFor,
    found: Discovery,
) -> list[str]:
    """The accounts in scope: those listed and those under the OUs."""
    accounts = dict.fromkeys(spec.accounts)
    org = spec.organization
    if org is not None:
        manager = org.management_account_id
        try:
            access = resolve(manager, None)
            clients = clients_for(target_for(base, spec.regions[0], access))
            walk = walk_accounts(
                clients.session.client(
                    "organizations",
                    endpoint_url=base.endpoint("organizations"),
                    config=CLIENT_CONFIG,
                ),
                list(org.organizational_units),
                org.recursive,
            )
            found.calls[manager] += walk.calls
            accounts.update(dict.fromkeys(sorted(walk.accounts)))
        except Exception as exc:
            reason, message = _problem(exc)
            found.complete = False
            found.refused.append(
                Refusal(manager, reason, f"organization walk from {manager}: {message}")
            )
    return list(accounts)


def _scan(
    spec: FlowExportSetSpec,
    set_owner: str,
    base: AwsTarget,
    place: Place,
    access: Access,
    clients_for: ClientsFor,
) -> tuple[Scanned, int, int]:
    """One account and region read (and flow logs created); its calls and creations."""
    calls = 0
    try:
        clients = clients_for(target_for(base, place.region, access))
        got = inventory(clients, spec.vpcs.ids, spec.vpcs.tags)
        calls += got.calls
        vpcs = got.vpcs
        created = 0
        s3 = spec.destination.s3
        if s3 is not None and spec.flow_logs == "Ensure":
            lacking = [v.vpc_id for v in vpcs if selected(spec, v) and not covered(spec, v)]
            if lacking:
                aws = spec.template.aws
                made, refused = create_bucket_flow_logs(
                    clients,
                    lacking,
                    s3.bucket,
                    s3.prefix,
                    set_owner,
                    aws.tags,
                    aws.log_format,
                    aws.traffic_type,
                    aws.max_aggregation_interval,
                )
                calls += -(-len(lacking) // CREATE_BATCH)
                created = len(made)
                for vpc_id, why in refused.items():
                    log.warning("%s: flow log for %s refused: %s", place, vpc_id, why)
                made_for = set(lacking) - set(refused)
                where = bucket_destination(s3.bucket, s3.prefix)
                vpcs = [_with_new_flow_log(v, made_for, where) for v in vpcs]
        return Scanned(place, tuple(vpcs)), calls, created
    except Exception as exc:
        reason, message = _problem(exc)
        return Scanned(place, reason=reason, message=message), calls, 0


def _with_new_flow_log(vpc: FoundVpc, made_for: set[str], destination: str) -> FoundVpc:
    """The VPC with the flow log just created for it (if one was)."""
    if vpc.vpc_id not in made_for:
        return vpc
    new = FlowLog("new", vpc.vpc_id, S3_DESTINATION, destination=destination)
    return dataclasses.replace(vpc, flow_logs=(*vpc.flow_logs, new))


def discover(
    spec: FlowExportSetSpec,
    set_owner: str,
    base: AwsTarget,
    resolve: Resolve,
    clients_for: ClientsFor = shared_clients,
    workers: int = WORKERS,
) -> Discovery:
    """Accounts in scope, each granted one read in every region (WORKERS at a time)."""
    started = time.monotonic()
    found = Discovery()
    found.accounts = _accounts(spec, base, resolve, clients_for, found)
    jobs: list[tuple[Place, Access]] = []
    for account in found.accounts:
        refusals: list[tuple[str, str, str]] = []
        for region in spec.regions:
            try:
                access = resolve(account, region)
            except Exception as exc:
                refusals.append((region, *_problem(exc)))
                continue
            found.access.setdefault(account, access)
            jobs.append((Place(account, region), access))
        if len(refusals) == len(spec.regions):  # the account itself is not granted
            _, reason, message = refusals[0]
            found.refused.append(Refusal(account, reason, message))
        else:  # some regions only: reported as not read there
            found.scans += [
                Scanned(Place(account, region), reason=reason, message=message)
                for region, reason, message in refusals
            ]
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fleet") as pool:
        results = list(
            pool.map(
                lambda job: _scan(spec, set_owner, base, job[0], job[1], clients_for),
                jobs,
            )
        )
    for scanned, calls, created in results:
        found.scans.append(scanned)
        found.calls[scanned.place.account_id] += calls
        found.flow_logs_created += created
    found.seconds = time.monotonic() - started
    return found


def ok_places(scans: Iterable[Scanned]) -> set[Place]:
    """The accounts and regions read."""
    return {s.place for s in scans if s.ok}


def remove_set_flow_logs(
    spec: FlowExportSetSpec,
    set_owner: str,
    base: AwsTarget,
    resolve: Resolve,
    clients_for: ClientsFor = shared_clients,
) -> int:
    """Delete the flow logs the set created (tagged as its own) in every granted account and
    region in scope; how many. Accounts that fail are logged and skipped."""
    found = Discovery()
    removed = 0
    for account in _accounts(spec, base, resolve, clients_for, found):
        for region in spec.regions:
            try:
                access = resolve(account, region)
                clients = clients_for(target_for(base, region, access))
                removed += len(delete_set_flow_logs(clients, set_owner))
            except FlowExportError as exc:
                log.warning("%s %s: set's flow logs not deleted: %s", account, region, exc)
    return removed
