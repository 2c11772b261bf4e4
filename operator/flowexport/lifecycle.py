"""The steps every front end runs for one FlowExport, without Kubernetes.

    subscribe  -> SubscriptionReady   ensure the log group, the flow log and the read mode's
                                      resources (create/adopt/repair; `flowexport.sources`)
    probe      -> PCEReachable        one authenticated PCE request
    ingest     -> WorkloadsSynced     with spec.workloads Sync: the first workload sync, then
                                      one every refreshSeconds, beside the pipeline
               -> Ingesting           the pipeline until stopped (or caught up, with `once`)
    clean_up                          remove what the FlowExport created, per deletionPolicy

Each step returns the condition updates it decided (and the error, when it failed); the front
end applies them: the operator's `kube/` to the FlowExport's status, `flowexport sync` to the
status it prints. So one state has one reason and one message, whichever front end runs it.
Secrets come through a `SecretSource`: the Kubernetes API for the operator, the manifest file
and the environment for `sync`. Blocking AWS work runs in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flowexport.api.conditions import ConditionType, ConditionUpdate, Report, caught_up, failed
from flowexport.api.models import FlowExportSpec
from flowexport.aws import budget
from flowexport.aws.blocking import off_loop
from flowexport.aws.session import AwsClients, AwsKeys, AwsTarget, shared_clients
from flowexport.aws.subscription import Subscription
from flowexport.core.flows import Flow
from flowexport.errors import ConfigError, FlowExportError, Reason, unexpected
from flowexport.pce.client import PCEClient, PCECredentials, username_problem
from flowexport.pipeline import Checkpoint, Prepare, Progress, build_pipeline
from flowexport.secrets import SecretKind, SecretSource
from flowexport.sources import (
    Reading,
    Share,
    SourceStore,
    delete_subscription,
    ensure_subscription,
    source_for,
    take_over,
)
from flowexport.sources.shards import ShardBook
from flowexport.workloads.sync import (
    OnResult,
    WorkloadSync,
    WorkloadTotals,
    delete_workloads,
    keep_synced,
    mark_of,
    sync_failed,
)

log = logging.getLogger("flowexport.lifecycle")


@dataclass
class Step:
    """What one step decided: condition updates, the error if it failed, changes it made."""

    updates: list[ConditionUpdate] = field(default_factory=list)
    error: FlowExportError | None = None
    changes: list[str] = field(default_factory=list)


@dataclass
class Subscribed(Step):
    """The subscribe step's result, with the subscription when it succeeded."""

    subscription: Subscription | None = None


@dataclass
class Ingested(Step):
    """The ingest step's result, with the progress last checkpointed."""

    progress: Progress | None = None


def invalid_spec(exc: FlowExportError) -> ConditionUpdate:
    """An invalid spec is reported on the first stage (it blocks all of them)."""
    return failed(ConditionType.SUBSCRIPTION_READY, exc)


def suspended() -> ConditionUpdate:
    """Ingesting while `spec.suspend` is true."""
    return ConditionUpdate(ConditionType.INGESTING, False, Reason.SUSPENDED, "spec.suspend is true")


def workloads_expected(spec: FlowExportSpec) -> ConditionUpdate:
    """WorkloadsSynced before the worker syncs: True at once when the mode is Off, else
    pending until the first sync (uploads wait for it)."""
    if spec.workloads.mode == "Off":
        return ConditionUpdate(
            ConditionType.WORKLOADS_SYNCED,
            True,
            Reason.DISABLED,
            "spec.workloads.mode is Off: the PCE's workloads are not touched",
        )
    return ConditionUpdate(
        ConditionType.WORKLOADS_SYNCED, None, Reason.PENDING, "waiting for the first sync"
    )


def workloads_suspended() -> ConditionUpdate:
    """WorkloadsSynced while `spec.suspend` is true (and the mode is Sync)."""
    return ConditionUpdate(
        ConditionType.WORKLOADS_SYNCED, False, Reason.SUSPENDED, "spec.suspend is true"
    )


def _internal(
    stage: ConditionType, exc: Exception, doing: str
) -> tuple[list[ConditionUpdate], FlowExportError]:
    """A bug met while `doing`: logged with its traceback, reported as InternalError (retried
    with backoff), never a crash of the handler or the worker."""
    log.exception("%s failed unexpectedly", doing)
    error = unexpected(exc)
    return [failed(stage, error)], error


async def _aws_clients(spec: FlowExportSpec, secrets: SecretSource) -> AwsClients:
    """The FlowExport's AWS clients (shared with others of the same target), made off the
    loop; their reads keep to the account's read budgets (`flowexport.aws.budget`)."""
    return await off_loop(_budgeted_clients, await aws_target(spec, secrets))


def _budgeted_clients(target: AwsTarget) -> AwsClients:
    return budget.attach(shared_clients(target))


async def _secret(source: SecretSource, name: str, kind: SecretKind) -> Mapping[str, str] | None:
    values = await source.read(name, kind)
    if values is None:
        error = source.missing(name, kind)
        if error is not None:
            raise error
    return values


async def aws_target(spec: FlowExportSpec, secrets: SecretSource) -> AwsTarget:
    """Where and as whom to call AWS: keys from the referenced Secret, else the default chain;
    the role to assume, its ExternalId and the session name as the front end grants them
    (`SecretSource.account_access`, which refuses before any AWS call)."""
    aws = spec.aws
    access = await secrets.account_access(aws)
    keys = None
    if aws.credentials_secret_ref is not None:
        ref = aws.credentials_secret_ref.name
        values = await _secret(secrets, ref, SecretKind.AWS_CREDENTIALS)
        if values is not None:
            key_id = values.get("aws_access_key_id")
            secret = values.get("aws_secret_access_key")
            if not key_id or not secret:
                raise ConfigError(
                    f"Secret {ref} needs keys aws_access_key_id and aws_secret_access_key",
                    Reason.SECRET_INVALID,
                )
            keys = AwsKeys(key_id, secret, values.get("aws_session_token"))
    endpoints = aws.endpoints.model_dump(exclude_none=True) if aws.endpoints else {}
    role_arn = access.role_arn if access is not None else aws.role_arn
    target = AwsTarget(
        aws.region,
        aws.endpoint_url,
        role_arn,
        keys,
        aws.api_requests_per_second,
        tuple(sorted(endpoints.items())),
    )
    if access is None or role_arn is None:
        return target  # no role assumed: FlowExports of one identity share their clients
    return dataclasses.replace(
        target,
        external_id=access.external_id,
        session_name=access.session_name or target.session_name,
    )


async def pce_client(spec: FlowExportSpec, secrets: SecretSource) -> PCEClient:
    """A PCE client with the API key (and CA bundle) from the referenced Secrets."""
    pce = spec.pce
    ref = pce.credentials_secret_ref.name
    values = await _secret(secrets, ref, SecretKind.PCE_CREDENTIALS) or {}
    username, secret = values.get("username"), values.get("password")
    if not username or not secret:
        raise ConfigError(
            f"Secret {ref} needs keys username (the API key's auth username) and password "
            "(its secret)",
            Reason.SECRET_INVALID,
        )
    problem = username_problem(username)
    if problem is not None:
        raise ConfigError(f"Secret {ref} key username {problem}", Reason.SECRET_INVALID)
    ca_pem = None
    if pce.ca_bundle_secret_ref is not None:
        ca_ref = pce.ca_bundle_secret_ref.name
        ca_pem = (await _secret(secrets, ca_ref, SecretKind.CA_BUNDLE) or {}).get("ca.crt")
        if not ca_pem:
            raise ConfigError(f"Secret {ca_ref} has no key ca.crt", Reason.SECRET_INVALID)
    return PCEClient(
        pce.url,
        pce.org_id,
        PCECredentials(username, secret),
        ca_pem=ca_pem,
        insecure=pce.insecure_skip_tls_verify,
    )


#: What to do about another subscription filter on the log group (the Lambda's, say).
OTHER_FILTER_ADVICE = (
    "remove it once flows arrive here (spec.aws.removeSubscriptionFilters), or the PCE gets "
    "them twice"
)


async def subscribe(spec: FlowExportSpec, owner: str, secrets: SecretSource) -> Subscribed:
    """Ensure the log group and the flow log; SubscriptionReady says how it went."""
    try:
        clients = await _aws_clients(spec, secrets)
        subscription = await off_loop(ensure_subscription, clients, spec.aws, owner, spec.source)
    except FlowExportError as exc:
        return Subscribed([failed(ConditionType.SUBSCRIPTION_READY, exc)], exc)
    except Exception as exc:
        return Subscribed(*_internal(ConditionType.SUBSCRIPTION_READY, exc, "subscribing"))
    if subscription.delivery_error:
        update = ConditionUpdate(
            ConditionType.SUBSCRIPTION_READY,
            False,
            Reason.DELIVERY_FAILED,
            subscription.delivery_error,
        )
    else:
        how = "created by" if subscription.flow_log_owned else "adopted by"
        described = source_for(spec.source).describe(subscription)
        if subscription.flow_log_id:
            message = f"flow log {subscription.flow_log_id} {how} this FlowExport" + described
        else:  # a source of objects without a VPC (mode s3): its bucket and queue
            message = described.removeprefix("; ") or "ready"
        if subscription.other_filters:
            names = ", ".join(
                f"{name} (to {target})"
                for name, target in sorted(subscription.other_filters.items())
            )
            message += (
                f"; the log group also has subscription filter {names}: {OTHER_FILTER_ADVICE}"
            )
        update = ConditionUpdate(ConditionType.SUBSCRIPTION_READY, True, Reason.SUBSCRIBED, message)
    return Subscribed([update], None, list(subscription.changes), subscription)


async def check_pce_credentials(spec: FlowExportSpec, secrets: SecretSource) -> Step:
    """The PCE key and CA bundle are there and usable (no request is made)."""
    try:
        await (await pce_client(spec, secrets)).aclose()
    except FlowExportError as exc:
        return Step([failed(ConditionType.PCE_REACHABLE, exc)], exc)
    return Step()


async def probe(spec: FlowExportSpec, secrets: SecretSource) -> Step:
    """One authenticated PCE request; PCEReachable says how it went."""
    try:
        async with await pce_client(spec, secrets) as pce:
            await pce.probe()
    except FlowExportError as exc:
        return Step([failed(ConditionType.PCE_REACHABLE, exc)], exc)
    except Exception as exc:
        return Step(*_internal(ConditionType.PCE_REACHABLE, exc, "probing the PCE"))
    message = f"{spec.pce.url} org {spec.pce.org_id}"
    return Step([ConditionUpdate(ConditionType.PCE_REACHABLE, True, Reason.REACHABLE, message)])


@dataclass
class Ingestion:
    """What `ingest` needs from its front end for one run of the pipeline."""

    spec: FlowExportSpec
    subscription: Subscription
    secrets: SecretSource
    #: The log group's progress (a copy: the pipeline moves it before a checkpoint holds it).
    progress: Progress
    #: Saves the log group's progress (after the PCE accepted everything before it).
    checkpoint: Checkpoint
    #: Where the source's state is kept (mode, start, the checkpoints of its parts).
    store: SourceStore
    stop: asyncio.Event
    #: Where Ingesting (and WorkloadsSynced) are reported as they change.
    report: Report
    #: Seconds an event must have been ingested before it is read.
    settle_seconds: float
    #: Read until caught up, then return (else until `stop`).
    once: bool = False
    #: namespace/name: whose workloads these are.
    owner: str = ""
    on_upload: Callable[[float], None] | None = None
    workload_totals: WorkloadTotals | None = None
    on_workloads: OnResult | None = None
    #: A dry run: each batch is handed here instead of being uploaded.
    dry_run: Callable[[Sequence[Flow]], None] | None = None


async def ingest(job: Ingestion) -> Ingested:
    """Run the pipeline until `stop` (or, with `once`, until caught up).

    The source `spec.source` names takes over from the mode the store was in (no gap), then
    reads, reporting Ingesting through `report` (caught up, or retrying a transient failure);
    a terminal failure ends the step and is returned, with the progress last checkpointed.
    With spec.workloads Sync, the workloads of `owner` are synced first and then every
    refreshSeconds (reported as WorkloadsSynced, results to `on_workloads`); no flow is
    uploaded before the first sync ran to its end.
    """
    spec, stop = job.spec, job.stop
    try:
        clients = await _aws_clients(spec, job.secrets)
        pce = await pce_client(spec, job.secrets)
    except FlowExportError as exc:
        return Ingested([failed(ConditionType.INGESTING, exc)], exc, progress=job.progress)
    pce.dry_run = job.dry_run
    source = source_for(spec.source)
    progress: Progress | None = job.progress
    try:
        progress = await take_over(
            source, job.store, job.progress, job.subscription, spec.ingestion.start_from
        )
    except FlowExportError as exc:
        await pce.aclose()
        return Ingested([failed(ConditionType.INGESTING, exc)], exc, progress=job.progress)
    if progress is None:  # stopped while other replicas were still reading
        await pce.aclose()
        return Ingested(progress=job.progress)
    syncer = None
    if spec.workloads.mode == "Sync":
        syncer = WorkloadSync(spec, clients, pce, job.owner, job.workload_totals)
    pipeline = build_pipeline(
        spec,
        clients,
        job.subscription.log_format,
        pce,
        progress,
        job.checkpoint,
        settle_seconds=job.settle_seconds,
        on_upload=job.on_upload,
        prepare=_peers(syncer, job.on_workloads) if syncer else None,
        log_group_arn=job.subscription.log_group_arn,
    )
    report = _until_started(job.report, progress)
    reading = Reading(
        spec,
        job.subscription,
        clients,
        pce,
        pipeline,
        job.store,
        stop,
        report,
        once=job.once,
        on_upload=job.on_upload,
    )
    try:
        async with pce, _workloads_kept(syncer, stop, job.report, job.on_workloads):
            if stop.is_set():
                return Ingested(progress=pipeline.progress)
            if report is not job.report:
                await report(caught_up())  # becomes what it waits for
            await source.read(reading)
    except _WorkloadsFailedError as exc:
        error = exc.error
        return Ingested([sync_failed(error)], error, progress=pipeline.progress)
    except FlowExportError as exc:
        return Ingested([failed(ConditionType.INGESTING, exc)], exc, progress=pipeline.progress)
    except Exception as exc:  # a bug must not lose the cursor or kill the worker silently
        updates, error = _internal(ConditionType.INGESTING, exc, "ingesting")
        return Ingested(updates, error, progress=pipeline.progress)
    return Ingested(progress=pipeline.progress)


def _until_started(report: Report, progress: Progress) -> Report:
    """`report`, except that while the log group's start (startFrom, resolved when the
    FlowExport was first seen) is in the future, Ingesting says it waits for it instead of
    True: nothing is read before then, and a typo (year 2999) must not look healthy."""
    start_ms = getattr(progress.cursor, "ingested_through", None)
    if not isinstance(start_ms, int) or start_ms <= time.time() * 1000:
        return report
    start = datetime.fromtimestamp(start_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    waiting = ConditionUpdate(
        ConditionType.INGESTING,
        False,
        Reason.WAITING_FOR_START,
        f"startFrom {start} is in the future: nothing is read before then",
    )

    async def reported(update: ConditionUpdate) -> None:
        ahead = start_ms > time.time() * 1000
        if ahead and update.type is ConditionType.INGESTING and update.ok is True:
            update = waiting
        await report(update)

    return reported


async def read_share(
    spec: FlowExportSpec,
    share: Share,
    secrets: SecretSource,
    book: ShardBook,
    *,
    stop: asyncio.Event,
    report: Report,
    on_upload: Callable[[float], None] | None = None,
) -> Ingested:
    """Read the parts `book` gives this process of a FlowExport another process holds (it
    started the source and reports the conditions), until `stop`; a terminal failure is
    returned."""
    try:
        clients = await _aws_clients(spec, secrets)
        pce = await pce_client(spec, secrets)
    except FlowExportError as exc:
        return Ingested([failed(ConditionType.INGESTING, exc)], exc)
    try:
        async with pce:
            await share.source.read_share(
                share, spec, clients, pce, book, stop=stop, report=report, on_upload=on_upload
            )
    except FlowExportError as exc:
        return Ingested([failed(ConditionType.INGESTING, exc)], exc)
    except Exception as exc:  # a bug must not kill the worker silently
        updates, error = _internal(ConditionType.INGESTING, exc, "reading shards")
        return Ingested(updates, error)
    return Ingested()


class _WorkloadsFailedError(Exception):
    """The first workload sync failed terminally: no upload may start."""

    def __init__(self, error: FlowExportError) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.asynccontextmanager
async def _workloads_kept(
    syncer: WorkloadSync | None, stop: asyncio.Event, report: Report, on_result: OnResult | None
) -> AsyncIterator[None]:
    """With a syncer: keep the workloads synced in the background while the body runs, which
    starts once the first sync ran to its end (or `stop`); a terminal failure of the first sync
    raises `_WorkloadsFailedError` instead. The sync stops with the body."""
    if syncer is None:
        yield
        return
    first = asyncio.Event()
    syncing = asyncio.create_task(keep_synced(syncer, stop, first, report, on_result))
    try:
        await _first_sync(syncing, first, stop)
        yield
    finally:
        syncing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await syncing


async def _first_sync(
    syncing: asyncio.Task[None], first: asyncio.Event, stop: asyncio.Event
) -> None:
    """Wait until the first sync ran to its end, `stop`, or the sync failed terminally."""
    waiters = {asyncio.ensure_future(first.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait({syncing, *waiters}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    if syncing.done() and not first.is_set() and not stop.is_set():
        exc = syncing.exception()
        if isinstance(exc, FlowExportError):
            raise _WorkloadsFailedError(exc)
        if exc is not None:
            raise exc


def _peers(syncer: WorkloadSync, on_workloads: OnResult | None) -> Prepare:
    async def prepare(flows: list[Flow]) -> None:
        result = await syncer.ensure_peers(flows)
        if result is not None and on_workloads is not None:
            await on_workloads(result)

    return prepare


@dataclass
class CleanedUp:
    """What a clean-up removed, and what it had to leave (each with the reason)."""

    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


async def clean_up(spec: FlowExportSpec, owner: str, secrets: SecretSource) -> CleanedUp:
    """Remove what the FlowExport created, per its deletion policy.

    Raises FlowExportError when AWS or (for its workloads) the PCE cannot be reached or
    refuses. Workloads whose PCE Secret is gone or unusable are left and said so: a deletion
    must not wait for ever for a Secret deleted with the FlowExport.
    """
    clients = await _aws_clients(spec, secrets)
    removed = await off_loop(
        delete_subscription, clients, spec.aws, owner, spec.deletion_policy, spec.source
    )
    done = CleanedUp(removed)
    if spec.workloads.mode == "Sync" and spec.deletion_policy == "Delete":
        try:
            pce = await pce_client(spec, secrets)
        except ConfigError as exc:
            done.left.append(
                f"the PCE workloads this FlowExport created are left in the PCE "
                f"(external_data_set {mark_of(owner, spec.aws.vpc)}): {exc}"
            )
            return done
        async with pce:
            deleted = await delete_workloads(pce, owner, spec.aws.vpc)
        if deleted:
            done.removed.append(f"deleted the {deleted} PCE workloads this FlowExport created")
    return done
