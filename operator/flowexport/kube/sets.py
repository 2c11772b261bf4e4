"""FlowExportSets in the operator: discover, generate FlowExports, guard flow logs, report.

A daemon per FlowExportSet (on the replica that owns it) refreshes it every
`spec.refreshSeconds` and at once on a spec change: discovery (`fleet.scan.discover`, off
the event loop), then the generated FlowExports brought in line (`fleet.plan.diff`: create,
update, delete; each carries the set's label and an ownerReference to it), then the set's
status (coverage, conditions), the metrics, and an Event when the coverage changed. Deleting
the set deletes its FlowExports (each then cleans up per its own deletionPolicy) and, for an
s3 destination under deletionPolicy Delete, the flow logs the set created.

Accounts are reached only as the namespace's grants allow (`resolver`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from flowexport.api.conditions import ConditionType
from flowexport.api.grants import session_name
from flowexport.api.models import GROUP, PLURAL, VERSION
from flowexport.api.sets import KIND as SET_KIND
from flowexport.api.sets import PLURAL as SET_PLURAL
from flowexport.api.sets import SET_LABEL, FlowExportSetSpec
from flowexport.api.validation import describe_errors
from flowexport.aws.blocking import off_loop
from flowexport.aws.session import AwsTarget
from flowexport.errors import FlowExportError, Reason, unexpected
from flowexport.fleet.plan import (
    Coverage,
    Diff,
    Existing,
    Place,
    Wanted,
    coverage,
    desired,
    diff,
    kept_back,
)
from flowexport.fleet.scan import (
    Access,
    Discovery,
    NotGrantedError,
    Resolve,
    discover,
    remove_set_flow_logs,
)
from flowexport.kube import metrics
from flowexport.kube.client import REQUEST_TIMEOUT
from flowexport.kube.state import Operator

log = logging.getLogger("flowexport.operator")

#: The condition types of a FlowExportSet's status, in the order they are listed.
#: (Discovered and Covered are named like the reasons they carry when True.)
READY, DISCOVERED, COVERED = str(ConditionType.READY), str(Reason.DISCOVERED), str(Reason.COVERED)
#: Kubernetes writes (create, update, delete of generated FlowExports) in flight at once.
WRITES_AT_ONCE = 8
#: Seconds before a set whose discovery could not start (a Secret, an invalid spec) retries.
RETRY_SECONDS = 60.0


def resolver(op: Operator, namespace: str) -> Resolve:
    """The namespace's AccountGrants, as discovery asks them: the access to an account (in a
    region), or AccountNotGrantedError; AccountGrantsUnavailableError before the grants were
    first listed. Without grants (flowexport run --account-grants Off) every account is
    refused: a set reaches accounts only through grants."""
    book = op.grants

    def resolve(account_id: str, region: str | None) -> Access:
        if book is None:
            raise NotGrantedError(
                f"account {account_id}: this operator does not use AccountGrants (flowexport "
                "run --account-grants Off), and a FlowExportSet reaches accounts only through "
                "them; no AWS call was made"
            )
        access = book.resolve(namespace, account_id, region)
        return Access(
            access.account_id,
            access.role_arn,
            access.external_id,
            access.grant_name,
            access.session_name,
        )

    return resolve


def aws_fields(access: Access) -> dict[str, Any]:
    """The spec.aws fields a generated FlowExport gets for its account: its id, which selects
    the AccountGrant that gives the role and ExternalId (never a roleArn or keys)."""
    return {"accountId": access.account_id}


class SetApi:
    """The Kubernetes calls of FlowExportSets: their generated FlowExports and their status
    (the official client's blocking calls, off the loop, with the client timeout)."""

    def __init__(self, custom: Any) -> None:
        self.custom = custom

    async def generated(self, namespace: str, set_name: str, uid: str) -> list[Existing]:
        """The FlowExports labelled as the set's and owned by it (uid)."""
        found = await off_loop(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            label_selector=f"{SET_LABEL}={set_name}",
            _request_timeout=REQUEST_TIMEOUT,
        )
        out = []
        for item in found.get("items", []):
            meta = item.get("metadata", {})
            owners = [o.get("uid") for o in meta.get("ownerReferences") or []]
            if uid in owners and not meta.get("deletionTimestamp"):
                conditions = (item.get("status") or {}).get("conditions") or []
                ready = any(
                    c.get("type") == READY and c.get("status") == "True" for c in conditions
                )
                out.append(
                    Existing(meta["name"], meta.get("labels") or {}, item.get("spec") or {}, ready)
                )
        return out

    async def create(self, namespace: str, body: dict[str, Any]) -> None:
        """Create a FlowExport."""
        await off_loop(
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            body,
            _request_timeout=REQUEST_TIMEOUT,
        )

    async def replace_spec(
        self, namespace: str, name: str, spec: dict[str, Any], labels: Mapping[str, str]
    ) -> None:
        """Set a FlowExport's spec (whole) and labels (those given)."""
        patch = [{"op": "replace", "path": "/spec", "value": spec}] + [
            {"op": "add", "path": f"/metadata/labels/{k.replace('/', '~1')}", "value": v}
            for k, v in labels.items()
        ]
        await off_loop(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            patch,
            _content_type="application/json-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )

    async def delete(self, namespace: str, name: str) -> None:
        """Delete a FlowExport (one already gone is fine)."""
        try:
            await off_loop(
                self.custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the FlowExportSet's status."""
        await off_loop(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            SET_PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )


@dataclass
class SetState:
    """What the operator remembers of one FlowExportSet between refreshes."""

    #: Set on a spec change: refresh now.
    poke: asyncio.Event = field(default_factory=asyncio.Event)
    #: The coverage last announced in an Event (None: none yet since the process started;
    #: read from the stored status first).
    coverage_key: tuple[Any, ...] | None = None
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    loaded: bool = False
    #: The AWS calls of the last discovery, by account.
    calls: dict[str, int] = field(default_factory=dict)


class Fleet:
    """The operator's FlowExportSets."""

    def __init__(
        self,
        op: Operator,
        api: SetApi | None = None,
        grants: Callable[[Operator, str], Resolve] | None = None,
    ) -> None:
        self.op = op
        self.api = api or SetApi(op.api.custom)  # type: ignore[attr-defined]
        #: The grants of a namespace (`resolver`; tests give their own).
        self.grants = grants or resolver
        self.sets: dict[tuple[str, str], SetState] = {}

    def state(self, namespace: str, name: str) -> SetState:
        """The set's state, made on first use."""
        return self.sets.setdefault((namespace, name), SetState())

    def poke(self, namespace: str, name: str) -> None:
        """Refresh the set now (its spec changed)."""
        self.state(namespace, name).poke.set()

    async def run(self, body: Any, stopped: Any) -> None:
        """The daemon of one set: refresh, then wait refreshSeconds (or a spec change)."""
        meta = body["metadata"]
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        state = self.state(namespace, name)
        while not stopped:
            wait = RETRY_SECONDS
            if self.op.replicas.owns(meta.get("uid") or ""):
                state.poke.clear()
                try:
                    wait = await self.refresh(body, state)
                except Exception:
                    log.exception("%s/%s: FlowExportSet refresh failed", namespace, name)
            else:
                wait = 5.0
            poked = asyncio.ensure_future(state.poke.wait())
            halted = asyncio.ensure_future(stopped.wait(None if math.isinf(wait) else wait))
            try:
                await asyncio.wait({poked, halted}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                poked.cancel()
                halted.cancel()

    async def refresh(self, body: Any, state: SetState) -> float:
        """One discovery and what follows; seconds until the next."""
        meta = body["metadata"]
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        uid, generation = meta.get("uid") or "", meta.get("generation")
        if not state.loaded:
            self._load(state, body.get("status") or {})
        try:
            spec = FlowExportSetSpec.model_validate(dict(body["spec"]))
        except ValidationError as exc:
            message = "; ".join(f"{p}: {m}" for p, m in describe_errors(exc))
            await self._write(
                namespace,
                name,
                state,
                generation,
                {READY: (False, Reason.INVALID_SPEC, message)},
                {},
            )
            return float("inf")  # until the spec changes (a poke)
        try:
            base = await self._base_target(namespace, spec)
        except FlowExportError as exc:
            await self._write(
                namespace, name, state, generation, {READY: (False, exc.reason, str(exc))}, {}
            )
            return RETRY_SECONDS
        if self.op.grants is not None and not self.op.grants.synced:
            await self.op.grants.wait_synced()
        base = dataclasses.replace(base, session_name=session_name(namespace, f"set-{name}"))
        started = time.monotonic()
        found: Discovery = await off_loop(
            discover, spec, f"{namespace}/{name}", base, self.grants(self.op, namespace)
        )
        extra = {
            Place(account, region): aws_fields(access)
            for account, access in found.access.items()
            for region in spec.regions
        }
        state.calls = dict(found.calls)
        wanted = desired(spec, name, found.scans, extra)
        existing = await self.api.generated(namespace, name, uid)
        unread = kept_back(existing, found.scans, found.accounts, spec.regions, found.complete)
        changes = diff(wanted, existing, unread, spec.max_flow_exports)
        applied, failures = await self._apply(body, changes)
        cover = coverage(spec, found.accounts, found.refused, found.scans)
        kept = len(existing) + applied["created"] - applied["deleted"]
        going = set(changes.delete)
        ready = sum(1 for e in existing if e.ready and e.name not in going)
        await self._report(body, state, spec, found, cover, changes, kept, failures, ready)
        log.info(
            "%s/%s: discovered %d accounts (%d refused, %d failed), %d VPCs (%d without a flow "
            "log), %d AWS calls in %.1fs; FlowExports: %d created, %d updated, %d deleted",
            namespace,
            name,
            cover.accounts_total,
            cover.accounts_refused,
            cover.accounts_failed,
            cover.vpcs_total,
            cover.vpcs_without_flow_log,
            sum(found.calls.values()),
            time.monotonic() - started,
            applied["created"],
            applied["updated"],
            applied["deleted"],
        )
        return float(spec.refresh_seconds)

    async def _base_target(self, namespace: str, spec: FlowExportSetSpec) -> AwsTarget:
        """The endpoints every account's target starts from (template.aws), with the
        operator's own identity: each account's role comes from its grant."""
        aws = spec.template.aws
        endpoints = aws.endpoints.model_dump(exclude_none=True) if aws.endpoints else {}
        return AwsTarget(
            spec.regions[0],
            aws.endpoint_url,
            None,
            None,
            aws.api_requests_per_second,
            tuple(sorted(endpoints.items())),
        )

    async def _apply(self, body: Any, changes: Diff) -> tuple[dict[str, int], list[str]]:
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        done = {"created": 0, "updated": 0, "deleted": 0}
        failures: list[str] = []
        owner = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": SET_KIND,
            "name": name,
            "uid": uid,
            "controller": True,
        }
        gate = asyncio.Semaphore(WRITES_AT_ONCE)

        async def write(kind: str, what: str, call: Awaitable[None]) -> None:
            async with gate:
                try:
                    await call
                    done[kind] += 1
                except ApiException as exc:
                    failures.append(f"{kind.removesuffix('d')} {what}: {_refusal(exc)}")

        writes = [
            write(
                "created", want.name, self.api.create(namespace, _generated(want, namespace, owner))
            )
            for want in changes.create
        ]
        writes += [
            write(
                "updated",
                want.name,
                self.api.replace_spec(namespace, want.name, want.spec, want.labels),
            )
            for want in changes.update
        ]
        writes += [
            write("deleted", gone, self.api.delete(namespace, gone)) for gone in changes.delete
        ]
        await asyncio.gather(*writes)
        for failure in failures:
            log.warning("%s/%s: FlowExport not written: %s", namespace, name, failure)
        if any(done.values()) or failures:
            self.op.events.post(
                body,
                "Warning" if failures else "Normal",
                "FlowExportsChanged",
                f"created {done['created']}, updated {done['updated']}, deleted "
                f"{done['deleted']} FlowExports"
                + (f"; failed: {'; '.join(failures[:5])}" if failures else ""),
            )
        return done, failures

    async def _report(
        self,
        body: Any,
        state: SetState,
        spec: FlowExportSetSpec,
        found: Discovery,
        cover: Coverage,
        changes: Diff,
        kept: int,
        failures: list[str],
        ready_count: int = 0,
    ) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if cover.accounts_refused:
            discovered = (
                False,
                Reason.ACCOUNTS_REFUSED,
                f"{cover.accounts_refused} of {cover.accounts_total} accounts in scope are not "
                "usable (status.refusedAccounts)",
            )
        elif cover.accounts_failed or cover.failed:
            discovered = (
                False,
                Reason.DISCOVERY_FAILED,
                f"{len(cover.failed)} account-regions could not be read (status.failedAccounts)",
            )
        else:
            discovered = (
                True,
                Reason.DISCOVERED,
                f"{cover.accounts_total} accounts x {len(spec.regions)} regions read",
            )
        if cover.vpcs_without_flow_log:
            covered = (
                False,
                Reason.FLOW_LOGS_MISSING,
                f"{cover.vpcs_without_flow_log} of {cover.vpcs_total} selected VPCs have no flow "
                "log to the destination (status.missing)",
            )
        else:
            covered = (
                True,
                Reason.COVERED,
                f"all {cover.vpcs_total} selected VPCs have a flow log to the destination",
            )
        if changes.capped:
            ready: tuple[bool, Reason, str] = (
                False,
                Reason.TOO_MANY_FLOWEXPORTS,
                f"{changes.capped} FlowExports not created: spec.maxFlowExports is "
                f"{spec.max_flow_exports}",
            )
        elif failures:
            ready = (False, Reason.INTERNAL_ERROR, "; ".join(failures[:3]))
        elif not discovered[0]:
            ready = discovered
        else:
            ready = (True, Reason.READY, f"{kept} FlowExports for {cover.vpcs_total} VPCs")
        fields = {
            **cover.to_status(),
            "flowExports": kept,
            "flowExportsReady": ready_count,
            "flowLogsCreated": found.flow_logs_created,
            "lastDiscoveryTime": _now(),
            "discoverySeconds": round(found.seconds, 3),
        }
        await self._write(
            namespace,
            name,
            state,
            meta.get("generation"),
            {READY: ready, DISCOVERED: discovered, COVERED: covered},
            fields,
        )
        metrics.set_coverage(
            namespace,
            name,
            cover.vpcs_total,
            cover.vpcs_without_flow_log,
            {
                "granted": cover.accounts_granted,
                "refused": cover.accounts_refused,
                "failed": cover.accounts_failed,
            },
            sum(found.calls.values()),
        )
        key = cover.key()
        if key != state.coverage_key:
            state.coverage_key = key
            self.op.events.post(
                body,
                "Normal" if not cover.vpcs_without_flow_log else "Warning",
                "CoverageChanged",
                f"{cover.vpcs_with_flow_log} of {cover.vpcs_total} selected VPCs have a flow log "
                f"to the destination; accounts: {cover.accounts_total} in scope, "
                f"{cover.accounts_refused} refused, {cover.accounts_failed} failed",
            )

    def _load(self, state: SetState, status: Mapping[str, Any]) -> None:
        """What the stored status says (after a restart: no repeated coverage Event)."""
        state.loaded = True
        for c in status.get("conditions") or []:
            if isinstance(c, dict) and c.get("type"):
                state.conditions[c["type"]] = dict(c)
        accounts, vpcs = status.get("accounts") or {}, status.get("vpcs") or {}
        if accounts and vpcs:
            state.coverage_key = (
                int(accounts.get("total", 0)),
                int(accounts.get("refused", 0)),
                int(accounts.get("failed", 0)),
                int(vpcs.get("total", 0)),
                int(vpcs.get("withFlowLog", 0)),
                tuple(
                    (m.get("accountId"), m.get("region"), m.get("vpcId"))
                    for m in status.get("missing") or []
                    if isinstance(m, dict)
                ),
            )

    async def _write(
        self,
        namespace: str,
        name: str,
        state: SetState,
        generation: int | None,
        conditions: Mapping[str, tuple[bool, Reason | str, str]],
        fields: dict[str, Any],
    ) -> None:
        now = _now()
        for type_, (ok, reason, message) in conditions.items():
            said = "True" if ok else "False"
            before = state.conditions.get(type_) or {}
            since = before.get("lastTransitionTime") if before.get("status") == said else None
            state.conditions[type_] = {
                "type": type_,
                "status": said,
                "reason": str(reason),
                "message": message[:32768],
                "lastTransitionTime": since or now,
                "observedGeneration": generation,
            }
        order = [READY, DISCOVERED, COVERED]
        listed = sorted(
            state.conditions.values(),
            key=lambda c: order.index(c["type"]) if c["type"] in order else 9,
        )
        status = {"observedGeneration": generation, "conditions": listed, **fields}
        try:
            await self.api.patch_status(namespace, name, status)
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile
                raise

    async def clean_up(self, body: Any) -> None:
        """The set is being deleted: delete its FlowExports (each cleans up per its own
        deletionPolicy; the ownerReference makes the garbage collector do the same), and the
        flow logs it created into an s3 destination under deletionPolicy Delete."""
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid") or ""
        for existing in await self.api.generated(namespace, name, uid):
            await self.api.delete(namespace, existing.name)
        try:
            spec = FlowExportSetSpec.model_validate(dict(body["spec"]))
        except ValidationError:
            spec = None
        if (
            spec is not None
            and spec.destination.s3 is not None
            and spec.deletion_policy == "Delete"
        ):
            try:
                base = await self._base_target(namespace, spec)
                removed = await off_loop(
                    remove_set_flow_logs,
                    spec,
                    f"{namespace}/{name}",
                    base,
                    self.grants(self.op, namespace),
                )
                if removed:
                    log.info(
                        "%s/%s: deleted %d flow logs the set created", namespace, name, removed
                    )
            except Exception as exc:  # the set goes anyway: its flow logs are tagged as its own
                error = exc if isinstance(exc, FlowExportError) else unexpected(exc)
                log.warning("%s/%s: flow logs left behind: %s", namespace, name, error)
        self.sets.pop((namespace, name), None)
        metrics.forget_set(namespace, name)


def _generated(want: Wanted, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    """The FlowExport object generated for one VPC, owned by the set (`owner`: the
    ownerReference)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FlowExport",
        "metadata": {
            "name": want.name,
            "namespace": namespace,
            "labels": want.labels,
            "ownerReferences": [owner],
        },
        "spec": want.spec,
    }


def _refusal(exc: ApiException) -> str:
    """What the API server said, in one line: its status and the Status object's message."""
    try:
        message = str(json.loads(exc.body or "{}").get("message", ""))
    except (ValueError, AttributeError):
        message = ""
    return f"{exc.status} {exc.reason}" + (f": {message[:300]}" if message else "")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
