"""Condition types and reasons of a FlowExport, and how `Ready`, `Reconciling` and `Stalled`
are computed from the stages.

Every reason the product can write is a `Reason` member; each says when it is set and whether
it is terminal (only a change to the spec, a Secret, IAM or AWS itself can clear it; the
operator then waits instead of backing off) or retryable (the operator retries with backoff).
`docs/conditions.md` holds the same table for users; a test keeps the two equal.

Beside `Ready` the status carries `Reconciling` and `Stalled`, the "abnormal-true" conditions
that Flux's kstatus (sigs.k8s.io/cli-utils pkg/kstatus/status) and the Argo CD health check read:
`Stalled` is True while the first failing stage has a terminal reason (kstatus: Failed),
`Reconciling` while a stage is not yet known, not yet evaluated for the newest generation, or
failing with a retryable reason (kstatus: InProgress). Both are False, not removed, when `Ready`
is True and while suspended (kstatus treats False and absent alike; a condition that is always
there lets `kubectl wait --for=condition=Stalled=false` work). Both carry `Ready`'s reason and
message, so the three never disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from flowexport.api.models import Condition


class ConditionType(StrEnum):
    """The conditions a FlowExport's status carries."""

    # True when every stage below is True; otherwise the first stage that is not, its reason.
    READY = "Ready"
    # Abnormal-true (kstatus): a stage is pending, re-evaluated or failing with a retryable reason.
    RECONCILING = "Reconciling"
    # Abnormal-true (kstatus): a stage failed with a terminal reason; only the user can clear it.
    STALLED = "Stalled"
    # The log group and the VPC flow log delivering to it exist as the spec asks.
    SUBSCRIPTION_READY = "SubscriptionReady"
    # The PCE answered an authenticated request for the spec's org.
    PCE_REACHABLE = "PCEReachable"
    # The PCE's workloads follow the VPC's network interfaces (True at once when mode is Off).
    WORKLOADS_SYNCED = "WorkloadsSynced"
    # The ingestion worker reads and uploads (False while suspended or failing).
    INGESTING = "Ingesting"


#: The stages whose conjunction is `Ready`, in the order `Ready` reports the first failing one.
STAGES: tuple[ConditionType, ...] = (
    ConditionType.SUBSCRIPTION_READY,
    ConditionType.PCE_REACHABLE,
    ConditionType.WORKLOADS_SYNCED,
    ConditionType.INGESTING,
)

#: The conditions computed from the stages (never set by a step), in the order they are listed.
SUMMARY: tuple[ConditionType, ...] = (
    ConditionType.READY,
    ConditionType.RECONCILING,
    ConditionType.STALLED,
)

#: The conditions that are True when something is wrong or in flight (kstatus's convention).
ABNORMAL_TRUE = frozenset({ConditionType.RECONCILING, ConditionType.STALLED})


class Reason(StrEnum):
    """Why a condition has its status: CamelCase, for conditions, Events and metrics."""

    # -- success and neutral states (not errors) --
    # Ready=True: every stage is True.
    READY = "Ready"
    # Ready=Unknown: a stage has not been evaluated yet (or not for the newest generation).
    PENDING = "Pending"
    # SubscriptionReady=True: the flow log was created or adopted.
    SUBSCRIBED = "Subscribed"
    # PCEReachable=True: the probe succeeded.
    REACHABLE = "Reachable"
    # WorkloadsSynced=True: the last workload sync succeeded.
    SYNCED = "Synced"
    # WorkloadsSynced=True: spec.workloads.mode is Off; the PCE's workloads are not touched.
    DISABLED = "Disabled"
    # Ingesting=True: the worker caught up with the log group.
    INGESTING = "Ingesting"
    # Ingesting=False: spec.suspend is true; not an error.
    SUSPENDED = "Suspended"

    # -- the spec and its Secrets (terminal: the user changes them) --
    # SubscriptionReady=False: a spec field is invalid. Terminal.
    INVALID_SPEC = "InvalidSpec"
    # Any stage: a referenced Secret is missing. Terminal.
    SECRET_NOT_FOUND = "SecretNotFound"
    # Any stage: a Secret lacks a key or holds bad data. Terminal.
    SECRET_INVALID = "SecretInvalid"
    # Any stage: a Secret lacks the label flowexport.io/secret-type for its use. Terminal.
    SECRET_NOT_LABELLED = "SecretNotLabelled"

    # -- AWS --
    # Any stage: AWS throttled a call. Retryable.
    AWS_THROTTLED = "AWSThrottled"
    # Any stage: AWS answered 5xx or failed. Retryable.
    AWS_UNAVAILABLE = "AWSUnavailable"
    # Any stage: no connection to the endpoint. Retryable.
    AWS_UNREACHABLE = "AWSUnreachable"
    # Any stage: IAM denied an action. Terminal.
    AWS_ACCESS_DENIED = "AWSAccessDenied"
    # Any stage: no AWS credentials at all (no IRSA, no keys Secret). Terminal.
    AWS_CREDENTIALS_MISSING = "AWSCredentialsMissing"
    # Any stage: the AWS credentials are expired or not valid. Terminal.
    AWS_CREDENTIALS_INVALID = "AWSCredentialsInvalid"
    # Any stage: STS refused to let the operator assume spec.aws.roleArn. Terminal.
    AWS_ASSUME_ROLE_DENIED = "AWSAssumeRoleDenied"
    # Any stage: STS, needed to assume spec.aws.roleArn, cannot be reached. Retryable.
    STS_UNREACHABLE = "STSUnreachable"
    # SubscriptionReady: AWS refused a call. Terminal.
    AWS_INVALID_REQUEST = "AWSInvalidRequest"
    # SubscriptionReady=False: spec.aws.vpcId does not exist. Terminal.
    VPC_NOT_FOUND = "VPCNotFound"
    # Any stage: the log group is gone. Terminal.
    LOG_GROUP_NOT_FOUND = "LogGroupNotFound"
    # SubscriptionReady: a foreign flow log differs. Terminal.
    FLOW_LOG_CONFLICT = "FlowLogConflict"
    # SubscriptionReady: no flow log, and the operator may not create one. Terminal.
    FLOW_LOG_NOT_FOUND = "FlowLogNotFound"
    # SubscriptionReady: CreateFlowLogs refused. Terminal.
    FLOW_LOG_CREATE_FAILED = "FlowLogCreateFailed"
    # SubscriptionReady=False: the flow log cannot deliver. Terminal.
    DELIVERY_FAILED = "DeliveryFailed"
    # SubscriptionReady, Ingesting: the Kinesis stream (source.stream) is missing, or the
    # operator may not create it. Terminal.
    STREAM_NOT_FOUND = "StreamNotFound"
    # SubscriptionReady: the stream is being created or updated. Retryable.
    STREAM_NOT_ACTIVE = "StreamNotActive"
    # SubscriptionReady: the subscription filter cannot be put (the log group's two-filter
    # limit, or one the operator does not own differs from the spec). Terminal.
    SUBSCRIPTION_FILTER_CONFLICT = "SubscriptionFilterConflict"

    # -- the PCE --
    # PCEReachable: bad URL or CA bundle. Terminal.
    PCE_CONFIG_INVALID = "PCEConfigInvalid"
    # PCEReachable: the PCE host is not in the operator's allowed hosts. Terminal.
    PCE_HOST_NOT_ALLOWED = "PCEHostNotAllowed"
    # PCEReachable, Ingesting: 401, wrong API key. Terminal.
    PCE_UNAUTHORIZED = "PCEUnauthorized"
    # PCEReachable, Ingesting: 403, key lacks a permission. Terminal.
    PCE_FORBIDDEN = "PCEForbidden"
    # PCEReachable, Ingesting: 404, wrong URL or org. Terminal.
    PCE_NOT_FOUND = "PCENotFound"
    # PCEReachable, Ingesting: another 4xx. Terminal.
    PCE_REQUEST_REJECTED = "PCERequestRejected"
    # PCEReachable: bad cert. Terminal.
    PCE_TLS_VERIFICATION_FAILED = "PCETLSVerificationFailed"
    # Any PCE stage: undocumented answer. Terminal.
    PCE_UNEXPECTED_RESPONSE = "PCEUnexpectedResponse"
    # PCEReachable, Ingesting: 429/5xx/timeouts. Retryable.
    PCE_UNAVAILABLE = "PCEUnavailable"
    # PCEReachable, Ingesting: another PCE failure. Terminal.
    PCE_ERROR = "PCEError"

    # -- workloads --
    # WorkloadsSynced=False: the PCE refused some workload changes (the message has their
    # errors); uploads go on and each sync tries again. Terminal.
    WORKLOADS_REJECTED = "WorkloadsRejected"

    # -- the operator itself --
    # Any stage: an unexpected error (a bug). Retryable.
    INTERNAL_ERROR = "InternalError"

    @property
    def retryable(self) -> bool:
        """Whether retrying with backoff can clear it without any change by the user."""
        return self in _RETRYABLE

    @property
    def is_error(self) -> bool:
        """Whether this reason reports a failure (not success, pending or suspended)."""
        return self not in _NOT_ERRORS


_RETRYABLE = frozenset(
    {
        Reason.AWS_THROTTLED,
        Reason.AWS_UNAVAILABLE,
        Reason.AWS_UNREACHABLE,
        Reason.STS_UNREACHABLE,
        Reason.STREAM_NOT_ACTIVE,
        Reason.PCE_UNAVAILABLE,
        Reason.INTERNAL_ERROR,
    }
)
_NOT_ERRORS = frozenset(
    {
        Reason.READY,
        Reason.PENDING,
        Reason.SUBSCRIBED,
        Reason.REACHABLE,
        Reason.SYNCED,
        Reason.DISABLED,
        Reason.INGESTING,
        Reason.SUSPENDED,
    }
)

_KNOWN = frozenset(str(r) for r in Reason)

#: The longest condition message the API accepts (metav1.Condition).
MAX_MESSAGE = 32768


@dataclass(frozen=True)
class ConditionUpdate:
    """One condition as a step decided it: True (ok), False or Unknown (None)."""

    type: ConditionType
    ok: bool | None
    reason: Reason
    message: str


#: Where a step reports a condition as it goes (the operator's status, `sync`'s printout).
Report = Callable[[ConditionUpdate], Awaitable[None]]


def set_condition(
    conditions: Sequence[Condition],
    update: ConditionUpdate,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Conditions with `update` applied; its transition time moves only when its status does.
    An update for an older generation than the condition was set for is ignored."""
    status = "Unknown" if update.ok is None else ("True" if update.ok else "False")
    previous = next((c for c in conditions if c.type == update.type), None)
    seen = previous.observed_generation if previous else None
    if seen is not None and generation is not None and generation < seen:
        return list(conditions)  # a late word about an older generation (a stopping worker)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=str(update.type),
        status=status,
        reason=str(update.reason),
        message=update.message[:MAX_MESSAGE],
        last_transition_time=since,
        observed_generation=generation,
    )
    others = [c for c in conditions if c.type != update.type]
    return _ordered([*others, updated])


def ready_of(conditions: Sequence[Condition]) -> ConditionUpdate:
    """`Ready` as the stages say: True when every stage is True, else the first that is not; a
    stage not yet evaluated for the newest generation any stage was set for counts as pending."""
    by_type = {c.type: c for c in conditions}
    newest = _newest_generation(conditions)
    for stage in STAGES:
        condition = by_type.get(stage)
        if condition is None:
            return ConditionUpdate(
                ConditionType.READY, None, Reason.PENDING, f"{stage} not yet known"
            )
        seen = condition.observed_generation
        if newest is not None and seen is not None and seen < newest:
            return ConditionUpdate(
                ConditionType.READY,
                None,
                Reason.PENDING,
                f"{stage} not yet evaluated for generation {newest}",
            )
        if condition.status != "True":
            if condition.reason not in _KNOWN:  # written by an older version; re-evaluated soon
                return ConditionUpdate(
                    ConditionType.READY, None, Reason.PENDING, f"{stage} being re-evaluated"
                )
            ok = None if condition.status == "Unknown" else False
            return ConditionUpdate(
                ConditionType.READY, ok, Reason(condition.reason), condition.message
            )
    return ConditionUpdate(ConditionType.READY, True, Reason.READY, "exporting flows")


def kstatus_of(ready: ConditionUpdate) -> tuple[ConditionUpdate, ConditionUpdate]:
    """`Reconciling` and `Stalled` for a `Ready` (see the module docstring): Stalled when it is
    False with a terminal reason, Reconciling when it is not True for any other reason than a
    suspension; both with `Ready`'s reason and message."""
    stalled = ready.ok is False and ready.reason.is_error and not ready.reason.retryable
    settled = ready.ok is True or ready.reason is Reason.SUSPENDED or stalled
    return (
        ConditionUpdate(ConditionType.RECONCILING, not settled, ready.reason, ready.message),
        ConditionUpdate(ConditionType.STALLED, stalled, ready.reason, ready.message),
    )


def with_ready(
    conditions: Sequence[Condition], generation: int | None, now: datetime
) -> list[Condition]:
    """The conditions with `Ready`, `Reconciling` and `Stalled` recomputed from the stages, set
    for the newest generation seen (a step of an older one does not move them back)."""
    ready = ready_of(conditions)
    newest = _newest_generation(conditions)
    if generation is not None and (newest is None or generation > newest):
        newest = generation
    items = list(conditions)
    for update in (ready, *kstatus_of(ready)):
        items = set_condition(items, update, newest, now)
    return items


def _newest_generation(conditions: Sequence[Condition]) -> int | None:
    seen = [c.observed_generation for c in conditions if c.type in STAGES]
    return max((g for g in seen if g is not None), default=None)


def _ordered(conditions: list[Condition]) -> list[Condition]:
    return sorted(conditions, key=lambda c: (_ORDER.get(c.type, len(_ORDER)), c.type))


#: Where each condition type goes in the list: the summary ones first, then the stages.
_ORDER = {str(name): i for i, name in enumerate((*SUMMARY, *STAGES))}
