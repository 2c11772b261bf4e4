"""The one error base of the product: every failure says its `Reason` and whether to retry.

The edges (AWS, PCE, Secrets, spec validation) raise these; the front ends (the operator and
`flowexport sync`) map them to conditions in one place, `flowexport.lifecycle`.

Hierarchy:

    FlowExportError(reason, retryable)
    ├── SpecError              InvalidSpec: a spec field is invalid (`problems` names them)
    ├── ConfigError            SecretNotFound, SecretInvalid: a Secret the user provides
    ├── AwsError               AWS* reasons, VPCNotFound, LogGroupNotFound, FlowLog*
    └── PCEError               PCEError: any PCE failure; subclasses by cause
        ├── PCEConfigError           PCEConfigInvalid: bad URL or CA bundle
        ├── PCEAuthError             PCEUnauthorized: 401
        ├── PCEPermissionError       PCEForbidden: 403
        ├── PCENotFoundError         PCENotFound: 404
        ├── PCERequestError          PCERequestRejected: another 4xx
        ├── PCETLSError              PCETLSVerificationFailed
        ├── PCEProtocolError         PCEUnexpectedResponse
        └── PCEUnavailableError      PCEUnavailable (retryable): 429, 5xx, timeouts

Every reason a condition can carry is a `Reason` here, at the bottom layer, so the errors need
nothing above them. `retryable` defaults to what the reason says (`Reason.retryable`). No
message carries a credential: the edges build messages from names, codes and documented
details only.
"""

from __future__ import annotations

from enum import StrEnum


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
    # Ingesting=True: the worker caught up with the log group (or, polling, started reading).
    INGESTING = "Ingesting"
    # Ingesting=False: spec.suspend is true; not an error.
    SUSPENDED = "Suspended"
    # Ingesting=False: the startFrom time is still in the future (nothing to read before
    # then); not an error.
    WAITING_FOR_START = "WaitingForStart"

    # -- the spec and its Secrets (terminal: the user changes them) --
    # SubscriptionReady=False: a spec field is invalid. Terminal.
    INVALID_SPEC = "InvalidSpec"
    # Any stage: a referenced Secret is missing. Terminal.
    SECRET_NOT_FOUND = "SecretNotFound"
    # Any stage: a Secret lacks a key or holds bad data. Terminal.
    SECRET_INVALID = "SecretInvalid"
    # Any stage: a Secret lacks the label flowexport.io/secret-type for its use. Terminal.
    SECRET_NOT_LABELLED = "SecretNotLabelled"

    # -- accounts granted by the cluster admin (AccountGrant) --
    # Any AWS stage: the FlowExport names an AWS account (spec.aws.accountId, or roleArn's
    # account) or uses the operator's own identity, and no AccountGrant grants it to the
    # FlowExport's namespace (and region), or roleArn is not the granted role; no AWS call is
    # made (a new or changed AccountGrant or Namespace label is noticed within 10 s). Terminal.
    ACCOUNT_NOT_GRANTED = "AccountNotGranted"
    # Any AWS stage: the operator cannot read the AccountGrants yet (starting, or RBAC without
    # list/watch on accountgrants or namespaces); no AWS call is made. Retryable.
    ACCOUNT_GRANTS_UNAVAILABLE = "AccountGrantsUnavailable"

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
    # Ingesting: the subscription filter into the stream was deleted or replaced out of band;
    # the operator re-creates it and reads the gap from the log group. Retryable.
    SUBSCRIPTION_FILTER_CHANGED = "SubscriptionFilterChanged"
    # SubscriptionReady: the subscription filter cannot be put (the log group's two-filter
    # limit, or one the operator does not own differs from the spec). Terminal.
    SUBSCRIPTION_FILTER_CONFLICT = "SubscriptionFilterConflict"
    # SubscriptionReady=False: the spec names an AWS resource (log group, flow log, stream,
    # subscription filter) whose ownership tag flowexport.io/owner names another FlowExport:
    # one in another namespace is never read nor changed, one of the same namespace is never
    # changed; or removeSubscriptionFilters names a FlowExport's filter. Terminal.
    OWNED_BY_ANOTHER = "OwnedByAnotherFlowExport"
    # Ingesting=False (mode s3): an announced object could not be read (corrupt gzip, a
    # Parquet object while Parquet is not read yet, 403, 404); the message names its key, it
    # is left to the queue's redrive policy and the other objects go on. Retryable.
    OBJECT_UNREADABLE = "ObjectUnreadable"
    # SubscriptionReady, Ingesting (mode s3): the queue is missing (source.s3.queueUrl), or
    # the operator may not create it (managementPolicy Adopt or Observe). Terminal.
    QUEUE_NOT_FOUND = "QueueNotFound"
    # SubscriptionReady (mode s3): source.s3.bucket does not exist. Terminal.
    BUCKET_NOT_FOUND = "BucketNotFound"

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

    # -- the cursor --
    # Ingesting=False: status.cursor is gone (the status was wiped, or restored without it)
    # from a FlowExport whose cursor the operator had saved; nothing is read until the user
    # sets the annotation flowexport.io/resume-from. Terminal.
    CURSOR_LOST = "CursorLost"

    # -- FlowExportSets (their own conditions: Ready, Discovered, Covered) --
    # Discovered=True: every account and region in scope was read.
    DISCOVERED = "Discovered"
    # Covered=True: every selected VPC has a flow log delivering to the set's destination.
    COVERED = "Covered"
    # Covered=False: some selected VPCs have no flow log to the destination (status.missing
    # lists the first); flowLogs Ensure creates them, Report only says so; each refresh looks
    # again. Terminal.
    FLOW_LOGS_MISSING = "FlowLogsMissing"
    # Discovered=False: accounts in scope are not granted to the set's namespace (or the
    # Organizations walk's management account is not): they are listed in
    # status.refusedAccounts and never called; the cluster admin grants them. Terminal.
    ACCOUNTS_REFUSED = "AccountsRefused"
    # Discovered=False: reading some accounts or regions failed (AssumeRole denied,
    # throttling, an outage): status.failedAccounts says which and why; the others go on and
    # the next refresh tries again. Retryable.
    DISCOVERY_FAILED = "DiscoveryFailed"
    # Ready=False: more selected VPCs than spec.maxFlowExports: no FlowExport is created past
    # it (those there are kept); raise the cap or narrow the scope. Terminal.
    TOO_MANY_FLOWEXPORTS = "TooManyFlowExports"

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
        Reason.ACCOUNT_GRANTS_UNAVAILABLE,
        Reason.STREAM_NOT_ACTIVE,
        Reason.SUBSCRIPTION_FILTER_CHANGED,
        Reason.OBJECT_UNREADABLE,
        Reason.PCE_UNAVAILABLE,
        Reason.INTERNAL_ERROR,
        Reason.DISCOVERY_FAILED,
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
        Reason.WAITING_FOR_START,
        Reason.DISCOVERED,
        Reason.COVERED,
    }
)


class FlowExportError(Exception):
    """A failure with a condition `reason`; `retryable` when backing off can clear it."""

    reason: Reason = Reason.INTERNAL_ERROR

    def __init__(
        self, message: str, reason: Reason | None = None, *, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.retryable: bool = self.reason.retryable if retryable is None else retryable


class ConfigError(FlowExportError):
    """A Secret or key the user must provide (the FlowExport's own configuration)."""

    reason = Reason.SECRET_INVALID


def unexpected(exc: BaseException) -> FlowExportError:
    """An error the code did not foresee, as an `InternalError` (retryable; a bug to report).

    Only the type is kept: the text of an arbitrary exception could carry anything.
    """
    return FlowExportError(
        f"unexpected {type(exc).__name__}; see the operator's log", Reason.INTERNAL_ERROR
    )
