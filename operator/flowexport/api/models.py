"""The FlowExport API (flowexport.io/v1alpha1): the one schema for spec, status and the CRD.

Field descriptions become the CRD's descriptions (`kubectl explain`); constraints become its
OpenAPI validation. What the schema cannot express is checked by the model validators here,
and the operator reports those failures as `Ready=False` naming the field.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from flowexport.core.fields import FIELDS_BY_NAME, REQUIRED_FIELDS
from flowexport.core.logformat import LogFormat, LogFormatError
from flowexport.urls import (
    API_PATH,
    CREDENTIALS,
    FORBIDDEN_HOST,
    FORBIDDEN_HOST_MESSAGE,
    HTTP_LOOPBACK,
    NUMERIC_HOST,
    URL_PATTERN,
    VALID_IPV4_HOST,
    check_pce_url,
    check_url,
)

GROUP = "flowexport.io"
VERSION = "v1alpha1"
KIND = "FlowExport"
PLURAL = "flowexports"
SINGULAR = "flowexport"
SHORT_NAMES = ["fe"]

#: Retention values CloudWatch Logs accepts (PutRetentionPolicy); `fmt: skip` keeps the table.
RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_ACCOUNT_ID = r"^[0-9]{12}$"
_IAM_ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"
_CIDR = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*)/[0-9]{1,3}$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
#: The CRD's check of a CIDR beyond its pattern: IPv4 octets and prefixes in range, IPv6
#: prefixes too (the models check IPv6 addresses in full).
_CIDR_RULE = (
    rf"self.matches(r'^{_OCTET}(\.{_OCTET}){{3}}/(3[0-2]|[12]?[0-9])$') || "
    r"self.matches(r'^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$')"
)
_LOG_FORMAT = r"^\$\{[a-z0-9-]+\}( \$\{[a-z0-9-]+\})*$"
_RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
#: The CRD's check of a time beyond its pattern: every part in range (not the days of each
#: month, which the models check).
_TIME_RULE = (
    r"self in ['now', 'earliest'] || self.matches(r'^[0-9]{4}-(0[1-9]|1[0-2])-"
    r"(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$')"
)
_START_FROM = rf"^(now|earliest|{_RFC3339[1:-1]})$"

#: AWS tags the spec may add: every service here takes 50 per resource, two are the operator's.
MAX_AWS_TAGS = 40
#: Characters every service here (CloudWatch Logs, EC2, Kinesis) accepts in tag keys and values.
_AWS_TAG_TEXT = re.compile(r"^[\w\s.:/=+\-@]*$")


def _check_aws_tags(value: dict[str, str]) -> dict[str, str]:
    for key, text in value.items():
        if not 1 <= len(key) <= 128 or not _AWS_TAG_TEXT.match(key):
            raise ValueError(
                f"tag key {key[:64]!r} must be 1 to 128 letters, digits, spaces or _ . : / = + - @"
            )
        if key.lower().startswith("aws:") or key.startswith("flowexport.io/"):
            raise ValueError(f"tag key {key[:64]!r}: aws: and flowexport.io/ keys are reserved")
        if len(text) > 256 or not _AWS_TAG_TEXT.match(text):
            raise ValueError(
                f"the value of tag {key[:64]!r} must be at most 256 letters, digits, spaces or "
                "_ . : / = + - @"
            )
    return value


#: The PCE's org ids are small positive integers (1 on a single-org PCE); 2^31-1, the largest
#: 32-bit id, leaves them all room and keeps far below where JSON numbers lose precision.
MAX_ORG_ID = 2**31 - 1


def _cel(rule: str, message: str) -> JsonDict:
    """One CEL rule of the CRD (`x-kubernetes-validations`); the models check the same."""
    return {"rule": rule, "message": message}


def _rules(*rules: JsonDict) -> ConfigDict:
    """A model's CEL rules, for the rules across its fields (the model validators' twins)."""
    listed: list[JsonValue] = list(rules)
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": listed})


_FIELD_NAMES = "|".join(sorted(FIELDS_BY_NAME, key=lambda n: (-len(n), n)))
#: The CRD's checks of a log format, as LogFormat.parse makes them.
_LOG_FORMAT_RULES: list[JsonValue] = [
    _cel(
        rf"self.matches(r'^\$\{{({_FIELD_NAMES})\}}( \$\{{({_FIELD_NAMES})\}})*$')",
        "unknown flow-log field(s): use the fields of flow-log versions 2 to 8",
    ),
    _cel(
        " && ".join(f"self.contains('${{{name}}}')" for name in REQUIRED_FIELDS),
        "log format lacks field(s) every flow needs: " + ", ".join(REQUIRED_FIELDS),
    ),
    _cel(
        f"{sorted(FIELDS_BY_NAME)!r}.all(f, self.indexOf('${{' + f + '}}') == "
        "self.lastIndexOf('${' + f + '}'))",
        "repeated flow-log field(s): name each field once",
    ),
]
_PCE_LABEL_KEY = r"^[a-z][a-z0-9_-]{0,63}$"
#: Literal text, {{ and }}, and placeholders {name}; a template of only these is valid.
_TEMPLATE_TOKENS = r"([^{}]|\{\{|\}\})"


#: Where the credentials rules point, by the object holding the URL.
_AWS_KEYS = "AWS keys belong in credentialsSecretRef"
_PCE_KEY = "the API key belongs in credentialsSecretRef"


def _url_rules(*more: JsonDict) -> dict[str, Any]:
    """The CRD's checks of a URL field: the pattern, and CEL rules. The API server quotes the
    value of a string that fails its pattern or one of its rules (Kubernetes 1.37), so a URL
    with credentials passes both here and is refused by its object's `_no_credentials` rule,
    whose answer quotes no value. The model validators apply the same rules."""
    rules: list[JsonValue] = [
        _cel(
            f"self.matches(r'{CREDENTIALS}') || ({rule['rule']})",
            str(rule["message"]),
        )
        for rule in (
            _cel(
                f"!self.startsWith('http://') || self.matches(r'{HTTP_LOOPBACK}')",
                "plain http is only allowed for loopback hosts; use https",
            ),
            _cel(
                f"!self.matches(r'{NUMERIC_HOST}') || self.matches(r'{VALID_IPV4_HOST}')",
                "has an invalid host: give a DNS name, an IPv4 address or an [IPv6] address",
            ),
            _cel(f"!self.matches(r'{FORBIDDEN_HOST}')", FORBIDDEN_HOST_MESSAGE),
            *more,
        )
    ]
    return {"pattern": URL_PATTERN, "x-kubernetes-validations": rules}


def _no_credentials(field: str, hint: str) -> JsonDict:
    """The rule, on the object holding URL `field`, that the URL carries no credentials."""
    return _cel(
        f"!has(self.{field}) || !self.{field}.matches(r'{CREDENTIALS}')",
        f"{field} must not contain credentials (user:password@); {hint}",
    )


@functools.cache
def aws_regions() -> frozenset[str]:
    """Every region of every AWS partition, from botocore's endpoint data."""
    import botocore.loaders  # noqa: PLC0415 (only when a spec without endpoint is checked)

    data = botocore.loaders.create_loader().load_data("endpoints")
    return frozenset(r for partition in data["partitions"] for r in partition["regions"])


class ApiModel(BaseModel):
    """Base for API objects: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )


class SecretRef(ApiModel):
    """A Secret in the FlowExport's own namespace."""

    name: str = Field(
        description="Name of the Secret, in the same namespace as the FlowExport.",
        min_length=1,
        max_length=253,
        pattern=_DNS_SUBDOMAIN,
    )


def _check_log_format(value: str | None) -> str | None:
    if value is not None:
        try:
            LogFormat.parse(value)
        except LogFormatError as exc:
            raise ValueError(str(exc)) from None
    return value


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("not a valid CIDR") from None
    return value


Cidr = Annotated[
    str,
    Field(
        pattern=_CIDR,
        max_length=64,
        json_schema_extra={"x-kubernetes-validations": [_cel(_CIDR_RULE, "not a valid CIDR")]},
    ),
    AfterValidator(_check_cidr),
]


class AwsEndpoints(ApiModel):
    """Endpoint URLs per AWS service."""

    model_config = _rules(
        *(_no_credentials(f, _AWS_KEYS) for f in ("ec2", "logs", "sts", "kinesis", "s3", "sqs"))
    )

    ec2: str | None = Field(
        default=None,
        description="EC2 (flow logs, network interfaces).",
        max_length=2048,
        json_schema_extra=_url_rules(),
    )
    logs: str | None = Field(
        default=None,
        description="CloudWatch Logs.",
        max_length=2048,
        json_schema_extra=_url_rules(),
    )
    sts: str | None = Field(
        default=None,
        description="STS (for roleArn).",
        max_length=2048,
        json_schema_extra=_url_rules(),
    )
    kinesis: str | None = Field(
        default=None,
        description="Kinesis Data Streams (source.mode stream).",
        max_length=2048,
        json_schema_extra=_url_rules(),
    )
    s3: str | None = Field(
        default=None,
        description="S3 (source.mode s3).",
        max_length=2048,
        json_schema_extra=_url_rules(),
    )
    sqs: str | None = Field(
        default=None,
        description="SQS (source.mode s3).",
        max_length=2048,
        json_schema_extra=_url_rules(),
    )

    @field_validator("ec2", "logs", "sts", "kinesis", "s3", "sqs")
    @classmethod
    def _endpoint_is_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "the endpoint URL")


class AwsSpec(ApiModel):
    """Where the flow logs come from and how the operator reaches AWS."""

    model_config = _rules(
        _no_credentials("endpointUrl", _AWS_KEYS),
        _cel(
            "!has(self.managementPolicy) || self.managementPolicy != 'Observe' || "
            "!has(self.removeSubscriptionFilters) || size(self.removeSubscriptionFilters) == 0",
            "removeSubscriptionFilters changes AWS, which managementPolicy Observe never does",
        ),
        _cel(
            "!has(self.accountId) || !has(self.roleArn) || "
            "self.roleArn.contains(':iam::' + self.accountId + ':role/')",
            "roleArn must be a role of accountId's account",
        ),
    )

    region: str = Field(
        description="AWS region of the VPC and the log group, e.g. us-east-1.",
        pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$",
    )
    vpc_id: str | None = Field(
        default=None,
        description=(
            "The VPC whose flow logs are exported, e.g. vpc-0123456789abcdef0. Required in "
            "modes poll and stream; optional in mode s3 (unset: every flow-log object the "
            "queue announces under the prefix is read, e.g. a central bucket)."
        ),
        pattern=r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$",
    )
    log_group_name: str | None = Field(
        default=None,
        description=(
            "CloudWatch Logs log group the VPC flow log delivers to (modes poll and stream; "
            "not used in mode s3)."
        ),
        min_length=1,
        max_length=512,
        pattern=r"^[.\-_/#A-Za-z0-9]+$",
    )
    manage_log_group: bool = Field(
        default=True,
        description=(
            "Create the log group (tagged as owned by this FlowExport) and set its retention. "
            "When false the log group must already exist."
        ),
    )
    log_group_retention_days: Literal[RETENTION_DAYS] = Field(  # type: ignore[valid-type]
        default=7,
        description="Retention of a managed log group, in days (a CloudWatch Logs value).",
    )
    management_policy: Literal["AdoptOrCreate", "Adopt", "Observe"] = Field(
        default="AdoptOrCreate",
        description=(
            "What the operator may do in AWS. AdoptOrCreate: use a matching log group and flow "
            "log, create what is missing, repair what it created. Adopt: use only what exists "
            "(a missing log group or flow log is reported, never created). Observe: read only: "
            "never create, change, repair or delete anything in AWS."
        ),
    )
    deliver_logs_role_arn: str | None = Field(
        default=None,
        description=(
            "IAM role the VPC Flow Logs service assumes to write to the log group (trusts "
            "vpc-flow-logs.amazonaws.com). Needed only to create a flow log; unset, an existing "
            "flow log is adopted with the role it has."
        ),
        pattern=_IAM_ROLE_ARN,
    )
    traffic_type: Literal["ACCEPT", "REJECT", "ALL"] | None = Field(
        default=None,
        description=(
            "Which traffic the flow log captures. Unset: an existing flow log's is adopted; a "
            "new one captures ALL."
        ),
    )
    max_aggregation_interval: Literal[60, 600] | None = Field(
        default=None,
        description=(
            "Seconds over which a flow is aggregated into one record (60 or 600). Unset: an "
            "existing flow log's is adopted (AWS's own default is 600); a new one uses 60."
        ),
    )
    log_format: Annotated[str | None, AfterValidator(_check_log_format)] = Field(
        default=None,
        description=(
            "Custom flow-log format ('${version} ${srcaddr} ...'). Unset: an existing flow "
            "log's format is adopted (AWS's default format included); a new one gets a format "
            "carrying every field the pipeline uses. Changing it replaces a flow log the "
            "operator owns."
        ),
        pattern=_LOG_FORMAT,
        max_length=4096,
        json_schema_extra={"x-kubernetes-validations": _LOG_FORMAT_RULES},
    )
    role_arn: str | None = Field(
        default=None,
        description=(
            "IAM role the operator assumes for its AWS calls (optional). Without "
            "credentialsSecretRef, an AccountGrant must grant the role's account (and this "
            "role) to the namespace when the operator enforces account grants."
        ),
        pattern=_IAM_ROLE_ARN,
        max_length=2048,
    )
    account_id: str | None = Field(
        default=None,
        description=(
            "AWS account to work in (12 digits). Without credentialsSecretRef it names the "
            "AccountGrant the cluster admin made for it and this namespace: the operator "
            "assumes the grant's role with its ExternalId (roleArn, if also given, must be the "
            "grant's role). With credentialsSecretRef it only documents the keys' account."
        ),
        pattern=_ACCOUNT_ID,
        max_length=12,
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with static keys aws_access_key_id, aws_secret_access_key and optional "
            "aws_session_token. Default: the pod's identity chain (IRSA, instance profile)."
        ),
    )
    api_requests_per_second: float = Field(
        default=2.0,
        ge=0.1,
        le=50.0,
        description=(
            "CloudWatch Logs reads per second this FlowExport may make. The account's quota "
            "(FilterLogEvents: 5/s in many regions) is shared by every reader in the account."
        ),
    )
    endpoint_url: str | None = Field(
        default=None,
        description=(
            "Override the AWS endpoint (VPC endpoints, local emulators): https, or plain http to "
            "a loopback host; no credentials, query or fragment; a port from 1 to 65535."
        ),
        max_length=2048,
        json_schema_extra=_url_rules(),
    )

    endpoints: AwsEndpoints | None = Field(
        default=None,
        description=(
            "Per-service endpoints (e.g. VPC interface endpoints), each overriding endpointUrl "
            "for its service."
        ),
    )
    remove_subscription_filters: list[
        Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^:*]+$")]
    ] = Field(
        default_factory=list,
        description=(
            "Subscription filters on the log group to delete (e.g. the Lambda this replaces), "
            "by name, once this FlowExport's subscription is ready. Filters not named here are "
            "only reported. Only on a log group this FlowExport created or no FlowExport did, "
            "and never a FlowExport's filter (OwnedByAnotherFlowExport). Not allowed with "
            "managementPolicy Observe."
        ),
        max_length=2,
    )
    tags: Annotated[
        dict[str, Annotated[str, Field(max_length=256)]], AfterValidator(_check_aws_tags)
    ] = Field(
        default_factory=dict,
        description=(
            "Tags for everything the operator creates in AWS (the log group, the flow log, the "
            "Kinesis stream), beside its own flowexport.io/ ones, e.g. CostCenter: cc-42. Set "
            "when a resource is created: resources that exist keep their tags. Keys: 1 to 128 "
            "characters, not starting with aws: or flowexport.io/; values up to 256."
        ),
        json_schema_extra={
            "maxProperties": MAX_AWS_TAGS,
            "x-kubernetes-validations": [
                {
                    # Constant cost per key (no regex over a key of unknown length).
                    "rule": (
                        "self.all(k, size(k) >= 1 && size(k) <= 128 && !k.startsWith('aws:') && "
                        "!k.startsWith('AWS:') && !k.startsWith('flowexport.io/'))"
                    ),
                    "message": (
                        "tag keys are 1 to 128 characters, not starting with aws: or "
                        "flowexport.io/; values are at most 256"
                    ),
                }
            ],
        },
    )

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "the endpoint URL")

    @model_validator(mode="after")
    def _region_exists(self) -> AwsSpec:
        # An unknown region's endpoint never answers: it would be retried for ever. With an
        # endpoint given, the endpoint says where (emulators, a region newer than botocore).
        if self.endpoint_url is None and self.endpoints is None:
            regions = aws_regions()
            if self.region not in regions:
                raise ValueError(
                    f"region {self.region} is not an AWS region ({len(regions)} known to this "
                    "release's botocore, e.g. us-east-1, eu-west-1); a region newer than the "
                    "release needs spec.aws.endpointUrl"
                )
        return self

    @model_validator(mode="after")
    def _observe_changes_nothing(self) -> AwsSpec:
        if self.management_policy == "Observe" and self.remove_subscription_filters:
            raise ValueError(
                "removeSubscriptionFilters changes AWS, which managementPolicy Observe never does"
            )
        return self

    @model_validator(mode="after")
    def _one_account(self) -> AwsSpec:
        if self.account_id and self.role_arn and self.role_arn.split(":")[4] != self.account_id:
            raise ValueError("roleArn must be a role of accountId's account")
        return self

    @property
    def account(self) -> str | None:
        """The AWS account the spec names: accountId, else roleArn's (None: neither)."""
        if self.account_id:
            return self.account_id
        return self.role_arn.split(":")[4] if self.role_arn else None

    @property
    def log_group(self) -> str:
        """spec.logGroupName (the spec's validator requires it in the modes that read one)."""
        return self.log_group_name or ""

    @property
    def vpc(self) -> str:
        """spec.vpcId (required except in mode s3)."""
        return self.vpc_id or ""


class PceSpec(ApiModel):
    """The Illumio PCE that receives the flows."""

    model_config = _rules(
        _no_credentials("url", _PCE_KEY),
        _cel(
            "!has(self.caBundleSecretRef) || !has(self.insecureSkipTLSVerify) || "
            "!self.insecureSkipTLSVerify",
            "caBundleSecretRef and insecureSkipTLSVerify exclude each other",
        ),
    )

    url: str = Field(
        description=(
            "PCE base URL, e.g. https://pce.example.com:8443 (without /api/v2). Plain http is "
            "accepted only for loopback hosts such as a local simulator; no credentials, query "
            "or fragment; a port from 1 to 65535; no link-local or metadata address, nor the "
            "Kubernetes API. The operator sends the API key only to a host and port its "
            "administrator allowed (flowexport run --allowed-pce-host)."
        ),
        max_length=2048,
        json_schema_extra=_url_rules(
            _cel(f"!self.matches(r'{API_PATH}')", "give the PCE base URL without the /api/v2 path"),
        ),
    )
    org_id: int = Field(description="PCE organisation id.", ge=1, le=MAX_ORG_ID)
    credentials_secret_ref: SecretRef = Field(
        description=(
            "Secret of type kubernetes.io/basic-auth: key username holds the API key's auth "
            "username (api_...), key password its secret."
        ),
    )
    ca_bundle_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret whose key ca.crt holds PEM CA certificates trusted for the PCE.",
    )
    insecure_skip_tls_verify: bool = Field(
        default=False,
        alias="insecureSkipTLSVerify",
        description="Do not verify the PCE's TLS certificate. For testing only; logged loudly.",
    )

    @field_validator("url")
    @classmethod
    def _url_is_safe(cls, value: str) -> str:
        return check_pce_url(value)

    @model_validator(mode="after")
    def _tls_choice(self) -> PceSpec:
        if self.insecure_skip_tls_verify and self.ca_bundle_secret_ref is not None:
            raise ValueError("caBundleSecretRef and insecureSkipTLSVerify exclude each other")
        return self


#: The shortest look-back that covers AWS's delivery of flow-log records to CloudWatch Logs:
#: about 5 minutes best effort after an aggregation interval of up to 10 minutes
#: (the AWS VPC user guide, "Publish flow logs to CloudWatch Logs").
MIN_LOOKBACK_SECONDS = 900


def _check_start_from(value: str) -> str:
    if value not in ("now", "earliest"):
        try:
            parsed = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            raise ValueError("not now, earliest or an RFC 3339 time") from None
        if parsed.tzinfo is None:
            raise ValueError("an RFC 3339 time needs a zone offset (Z or +hh:mm)")
    return value


class IngestionSpec(ApiModel):
    """What the ingestion worker reads, keeps and uploads."""

    actions: list[Literal["ACCEPT", "REJECT"]] = Field(
        default_factory=lambda: ["ACCEPT"],  # type: ignore[arg-type]
        description="Record actions to upload: ACCEPT, REJECT or both.",
        min_length=1,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    include_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="When set, keep only flows whose client or server is in one of these CIDRs.",
        max_length=1000,
    )
    exclude_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="Drop flows whose client or server is in one of these CIDRs.",
        max_length=1000,
    )
    aggregation_window_seconds: int = Field(
        default=300,
        ge=5,
        le=3600,
        description="Duplicate flows within this window are uploaded once.",
    )
    batch_size: int = Field(
        default=1000, ge=1, le=1000, description="Flows per PCE upload request (at most 1000)."
    )
    poll_interval_seconds: int = Field(
        default=30, ge=1, le=3600, description="Seconds between reads of the log group."
    )
    lookback_seconds: int = Field(
        default=1200,
        ge=MIN_LOOKBACK_SECONDS,
        le=86400,
        description=(
            "How far back each read re-scans for late events (flow logs arrive minutes late); "
            "events already read are not uploaded twice. At least 900: AWS delivers a record "
            "about 5 minutes (best effort) after its aggregation interval (up to 10 minutes) "
            "ends, and an event older than its arrival minus this is never read."
        ),
    )
    start_from: Annotated[str, AfterValidator(_check_start_from)] = Field(
        default="now",
        description="Where a new FlowExport starts reading: now, earliest, or an RFC 3339 time.",
        pattern=_START_FROM,
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [_cel(_TIME_RULE, "not now, earliest or an RFC 3339 time")]
        },
    )

    @field_validator("actions")
    @classmethod
    def _actions_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("list each action once: ACCEPT, REJECT or both")
        return value


#: Placeholders a workload name template may use (see WorkloadsSpec.name_template).
NAME_PLACEHOLDERS = ("name", "id", "ip", "vpcId")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_MAX_LABELS = 16


def _check_name_template(value: str) -> str:
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError:
        raise ValueError("not a valid template (unbalanced { or })") from None
    fields = [name for _, name, _, _ in parsed if name is not None]
    if any(spec or conversion for _, name, spec, conversion in parsed if name is not None):
        raise ValueError("placeholders take no format spec or conversion")
    unknown = sorted({f for f in fields if f not in NAME_PLACEHOLDERS})
    if unknown:
        known = ", ".join(f"{{{p}}}" for p in NAME_PLACEHOLDERS)
        raise ValueError(f"unknown placeholder {{{unknown[0][:64]}}}; use {known}")
    if not fields:
        raise ValueError("needs a placeholder, or every workload gets the same name")
    return value


def _check_label_keys(value: dict[str, str], what: str) -> None:
    for key in value:
        if not _LABEL_KEY.match(key):
            raise ValueError(
                f"{what} {key[:64]!r} is not a PCE label key (lower case letters, digits, _ or -, "
                "starting with a letter, at most 64)"
            )


class WorkloadsSpec(ApiModel):
    """Unmanaged workloads in the PCE for the VPC's network interfaces, labelled from AWS tags."""

    mode: Literal["Off", "Sync"] = Field(
        default="Off",
        description=(
            "Off: the PCE's workloads are not touched. Sync: one unmanaged workload per instance "
            "(all its interfaces) or per network interface without an instance, created, "
            "updated and deleted to follow the VPC; uploads wait for the first sync."
        ),
    )
    labels: dict[str, Annotated[str, Field(max_length=255)]] = Field(
        default_factory=dict,
        description="Labels for every workload, PCE label key to value, e.g. env: prod.",
        json_schema_extra={
            "maxProperties": _MAX_LABELS,
            "x-kubernetes-validations": [
                _cel(
                    f"self.all(k, k.matches(r'{_PCE_LABEL_KEY}'))",
                    "label keys are PCE label keys (lower case letters, digits, _ or -, "
                    "starting with a letter, at most 64)",
                ),
                _cel(
                    "self.all(k, size(self[k]) >= 1 && size(self[k]) <= 255)",
                    "label values have 1 to 255 characters",
                ),
            ],
        },
    )
    labels_from_tags: dict[str, Annotated[str, Field(max_length=64)]] = Field(
        default_factory=dict,
        description=(
            "AWS tag key to PCE label key, e.g. App: app. The instance's tags, or the network "
            "interface's for one without an instance (load balancers, NAT gateways, Lambda, "
            "pods with their own interfaces); a tag overrides a static label of the same key."
        ),
        json_schema_extra={
            "maxProperties": _MAX_LABELS,
            "x-kubernetes-validations": [
                _cel(
                    f"self.all(k, self[k].matches(r'{_PCE_LABEL_KEY}'))",
                    "values are PCE label keys (lower case letters, digits, _ or -, starting "
                    "with a letter, at most 64)",
                ),
                _cel(
                    "self.all(k, size(k) >= 1 && size(k) <= 128)",
                    "an AWS tag key has 1 to 128 characters",
                ),
            ],
        },
    )
    name_template: Annotated[str, AfterValidator(_check_name_template)] = Field(
        default="{name}",
        description=(
            "Workload name: {name} (the Name tag, else the id), {id} (instance or network "
            "interface id), {ip} (primary private address), {vpcId}."
        ),
        min_length=1,
        max_length=255,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    rf"self.matches(r'^({_TEMPLATE_TOKENS[1:-1]}|\{{[^{{}}]*\}})*$')",
                    "not a valid template (unbalanced { or })",
                ),
                _cel(
                    rf"self.matches(r'^({_TEMPLATE_TOKENS[1:-1]}|\{{(name|id|ip|vpcId)\}})*$')",
                    "unknown placeholder or a format spec; use {name}, {id}, {ip}, {vpcId}",
                ),
                _cel(
                    rf"self.matches(r'^{_TEMPLATE_TOKENS}*\{{(name|id|ip|vpcId)\}}')",
                    "needs a placeholder, or every workload gets the same name",
                ),
            ]
        },
    )
    on_eni_gone: Literal["Delete", "Keep"] = Field(
        default="Delete",
        description=(
            "When an instance or network interface is gone: Delete its workload (only ever "
            "one this FlowExport created), or Keep it."
        ),
    )
    peer_cidrs: list[Cidr] = Field(
        default_factory=list,
        description=(
            "Addresses outside the VPC seen in flows (on-premises, peered VPCs) that get a "
            "workload each when they fall in one of these CIDRs."
        ),
        max_length=100,
    )
    refresh_seconds: int = Field(
        default=300,
        ge=30,
        le=86400,
        description="Seconds between syncs of the workloads with the VPC.",
    )

    @field_validator("labels")
    @classmethod
    def _static_labels(cls, value: dict[str, str]) -> dict[str, str]:
        _check_label_keys(value, "label key")
        for key, label in value.items():
            if not 1 <= len(label) <= 255:
                raise ValueError(f"label {key} needs a value of 1 to 255 characters")
        return value

    @field_validator("labels_from_tags")
    @classmethod
    def _tag_labels(cls, value: dict[str, str]) -> dict[str, str]:
        _check_label_keys({v: "" for v in value.values()}, "label key")
        for tag in value:
            if not 1 <= len(tag) <= 128:
                raise ValueError("an AWS tag key has 1 to 128 characters")
        return value


_KINESIS_ARN = r"^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:[0-9]{12}:stream/[a-zA-Z0-9_.-]{1,128}$"
_STREAM_NAME = r"^[a-zA-Z0-9_.-]{1,128}$"


class StreamSpec(ApiModel):
    """The Kinesis data stream a subscription filter on the log group delivers to."""

    model_config = _rules(
        _cel(
            "!has(self.streamArn) || !has(self.streamName) || "
            "self.streamArn.endsWith('/' + self.streamName)",
            "streamName must be the name of the stream streamArn names (or be unset)",
        )
    )

    stream_arn: str | None = Field(
        default=None,
        description=(
            "An existing stream to use (adopted as it is, never changed or deleted). Unset: "
            "the operator creates (and owns) the stream named streamName."
        ),
        pattern=_KINESIS_ARN,
        max_length=2048,
    )
    stream_name: str | None = Field(
        default=None,
        description=(
            "Name of the stream the operator creates (or adopts, if one by that name exists "
            "without an ownership tag, or, from the same namespace, with another FlowExport's: "
            "then only read). Default: this FlowExport's stream behind a filter on the log "
            "group, else flowexport-<namespace>-<name>-<hash of the uid>. With streamArn, it "
            "must be that stream's name."
        ),
        pattern=_STREAM_NAME,
    )
    capacity_mode: Literal["Provisioned", "OnDemand"] = Field(
        default="Provisioned",
        description="Capacity of a stream the operator creates: Provisioned (shardCount) or "
        "OnDemand.",
    )
    shard_count: int = Field(
        default=1,
        ge=1,
        le=500,
        description=(
            "Shards of a Provisioned stream the operator creates (each takes 1 MB/s or 1,000 "
            "records/s of writes); changed on a stream it owns with UpdateShardCount."
        ),
    )
    retention_hours: int = Field(
        default=24,
        ge=24,
        le=8760,
        description=(
            "How long the stream keeps records (a worker stopped longer than this loses the "
            "records in between, and says so)."
        ),
    )
    kms_key_id: str | None = Field(
        default="alias/aws/kinesis",
        description=(
            "KMS key for server-side encryption of a stream the operator creates (default: "
            "the AWS-managed key; null: no encryption). A customer key needs kms:Decrypt for "
            "the operator and kms:GenerateDataKey for the subscription role."
        ),
        min_length=1,
        max_length=2048,
    )
    subscription_role_arn: str | None = Field(
        default=None,
        description=(
            "IAM role CloudWatch Logs assumes to put records into the stream (trusts "
            "logs.amazonaws.com; kinesis:PutRecord on the stream). Needed to create the "
            "subscription filter; unset, an existing filter to the stream is adopted."
        ),
        pattern=_IAM_ROLE_ARN,
    )
    filter_name: str | None = Field(
        default=None,
        description=(
            "Name of the subscription filter. Default: the default stream name "
            "(flowexport-<namespace>-<name>-<hash of the uid>). A filter on the log group that "
            "already delivers to the stream is adopted whatever its name."
        ),
        min_length=1,
        max_length=512,
        pattern=r"^[^:*]+$",
    )
    distribution: Literal["ByLogStream", "Random"] = Field(
        default="ByLogStream",
        description=(
            "How CloudWatch Logs spreads records over shards: ByLogStream keeps each network "
            "interface's records on one shard (so each shard's aggregation sees all of them)."
        ),
    )
    read_interval_millis: int = Field(
        default=1000,
        ge=200,
        le=60000,
        description=(
            "Milliseconds between reads of a shard that is caught up (a shard allows 5 reads/s "
            "shared by all its consumers)."
        ),
    )

    @model_validator(mode="after")
    def _arn_and_name_agree(self) -> StreamSpec:
        arn, name = self.stream_arn, self.stream_name
        if arn is not None and name is not None and arn.rsplit("/", 1)[1] != name:
            raise ValueError(
                "streamName must be the name of the stream streamArn names (or be unset)"
            )
        return self


class S3Spec(ApiModel):
    """Mode s3: flow-log objects in a bucket, announced by S3 event notifications on a queue."""

    model_config = _rules(_no_credentials("queueUrl", _AWS_KEYS))

    bucket: str = Field(
        description="The bucket the flow logs are delivered to.",
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    )
    prefix: str = Field(
        default="",
        description=(
            "Key prefix the flow logs are under (AWS adds AWSLogs/... after it); objects "
            "announced outside it are skipped and counted."
        ),
        max_length=1024,
    )
    queue_url: str | None = Field(
        default=None,
        description=(
            "SQS queue the bucket's ObjectCreated notifications go to. Unset: the operator "
            "creates the queue (with a dead-letter queue) and the bucket notification, owns "
            "them and deletes them per deletionPolicy."
        ),
        max_length=2048,
        json_schema_extra=_url_rules(),
    )
    file_format: Literal["plain-text", "parquet"] = Field(
        default="plain-text",
        description="The file format of a flow log the operator creates (spec.aws.vpcId set).",
    )
    hive_compatible_partitions: bool = Field(
        default=False,
        description="Hive-compatible key prefixes for a flow log the operator creates.",
    )
    per_hour_partition: bool = Field(
        default=False, description="Hourly key prefixes for a flow log the operator creates."
    )

    @field_validator("queue_url")
    @classmethod
    def _queue_is_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "the queue URL")


#: What the message for a mode without its settings adds.
_SETTINGS_HINTS = {"stream": " (at least subscriptionRoleArn)", "s3": " (at least bucket)"}


class SourceSpec(ApiModel):
    """Where the worker reads the log group's records from."""

    model_config = _rules(
        _cel(
            "!has(self.mode) || self.mode != 'stream' || has(self.stream)",
            "mode stream needs source.stream (at least subscriptionRoleArn)",
        ),
        _cel(
            "!has(self.mode) || self.mode != 's3' || has(self.s3)",
            "mode s3 needs source.s3 (at least bucket)",
        ),
    )

    mode: Literal["poll", "stream", "s3"] = Field(
        default="poll",
        description=(
            "poll: FilterLogEvents on the log group (no other AWS resource; bounded by the "
            "account's FilterLogEvents quota). stream: a subscription filter delivers the log "
            "group to a Kinesis data stream, read shard by shard (for busy VPCs). Switching "
            "between poll and stream leaves no gap. s3: flow-log objects in S3, announced on "
            "an SQS queue (no log group)."
        ),
    )
    stream: StreamSpec | None = Field(
        default=None, description="The stream and its subscription filter (mode stream)."
    )
    s3: S3Spec | None = Field(default=None, description="The bucket, prefix and queue (mode s3).")

    @model_validator(mode="after")
    def _mode_needs_its_settings(self) -> SourceSpec:
        # A mode with settings has a field of its own name (source.stream for mode stream).
        if self.mode in type(self).model_fields and getattr(self, self.mode) is None:
            hint = _SETTINGS_HINTS.get(self.mode, "")
            raise ValueError(f"mode {self.mode} needs source.{self.mode}{hint}")
        return self


class FlowExportSpec(ApiModel):
    """Desired state: export one VPC's flow logs to one PCE."""

    aws: AwsSpec = Field(description="AWS side: VPC, log group, flow log and credentials.")
    pce: PceSpec = Field(description="Illumio PCE target: URL, org and API key Secret.")
    ingestion: IngestionSpec = Field(
        default_factory=IngestionSpec,
        description="Reading, filtering, aggregation and upload settings.",
        # An empty default lets the API server fill in every nested default.
        json_schema_extra={"default": {}},
    )
    workloads: WorkloadsSpec = Field(
        default_factory=WorkloadsSpec,
        description="Workloads in the PCE for the VPC's addresses, so flows show on its map.",
        json_schema_extra={"default": {}},
    )
    source: SourceSpec = Field(
        default_factory=SourceSpec,
        description="Read by polling the log group (default) or from a Kinesis stream.",
        json_schema_extra={"default": {}},
    )
    deletion_policy: Literal["Delete", "Retain"] = Field(
        default="Delete",
        description=(
            "On deletion of the FlowExport: Delete removes the flow log and log group the "
            "operator created, and (while workloads.mode is Sync) the PCE workloads it created; "
            "Retain leaves them. Resources it adopted are never deleted."
        ),
    )
    suspend: bool = Field(
        default=False, description="Stop ingesting (the subscription is kept) while true."
    )

    @model_validator(mode="after")
    def _log_group_unless_s3(self) -> FlowExportSpec:
        # Modes poll and stream read a log group a VPC's flow log delivers to; mode s3 reads
        # objects (a VPC is optional: without one, a central bucket's every account).
        reads_objects = isinstance(getattr(self.source, self.source.mode, None), S3Spec)
        if not reads_objects:
            missing = [
                name
                for name, value in (
                    ("vpcId", self.aws.vpc_id),
                    ("logGroupName", self.aws.log_group_name),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"spec.aws needs {' and '.join(missing)} in mode {self.source.mode}"
                )
        if self.workloads.mode == "Sync" and self.aws.vpc_id is None:
            raise ValueError("workloads mode Sync needs spec.aws.vpcId")
        return self


class Condition(ApiModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(
        description=(
            "Ready, Reconciling, Stalled, SubscriptionReady, PCEReachable, WorkloadsSynced or "
            "Ingesting."
        ),
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="CamelCase reason a program can act on.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(default="", description="Human-readable detail.", max_length=32768)
    last_transition_time: datetime = Field(
        description="When the status last changed.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was set for."
    )


class Counts(ApiModel):
    """Totals since the FlowExport was created."""

    records_read: int = Field(default=0, ge=0, description="Flow-log records read.")
    records_skipped: dict[str, int] = Field(
        default_factory=dict,
        description="Records not uploaded, by reason (nodata, action_filtered, bad_ip, ...).",
    )
    flows_uploaded: int = Field(default=0, ge=0, description="Flows the PCE accepted.")
    flows_failed: int = Field(default=0, ge=0, description="Flows the PCE rejected.")
    batches_uploaded: int = Field(default=0, ge=0, description="Upload requests accepted.")


class WorkloadsStatus(ApiModel):
    """What the workload sync did (totals since the FlowExport was created)."""

    managed: int = Field(default=0, ge=0, description="Workloads this FlowExport owns now.")
    created: int = Field(default=0, ge=0, description="Workloads created.")
    updated: int = Field(default=0, ge=0, description="Workloads updated (labels, addresses).")
    deleted: int = Field(default=0, ge=0, description="Workloads deleted.")
    failed: int = Field(
        default=0, ge=0, description="Workload and label changes the PCE refused at the last sync."
    )
    covered: int = Field(
        default=0,
        ge=0,
        description=(
            "Addresses left out at the last sync because another workload (managed, or not "
            "this FlowExport's) already holds them."
        ),
    )
    last_sync_time: datetime | None = Field(default=None, description="When the last sync ended.")


class SourceStatus(ApiModel):
    """Where the worker reads from, and since when."""

    mode: Literal["poll", "stream", "s3"] = Field(description="The mode the cursors are in.")
    stream_arn: str | None = Field(default=None, description="The stream read (mode stream).")
    subscription_filter: str | None = Field(
        default=None, description="The subscription filter delivering to it."
    )
    since: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Epoch milliseconds from which the stream is read (where polling left off); shard "
            "checkpoints of an older switch are not used. Mode s3 after a switch from poll or "
            "stream: records that ended before it were read by the mode before."
        ),
    )
    stream_name: str | None = Field(default=None, description="The stream's name (mode stream).")
    subscription_filter_created: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Mode stream: when the subscription filter the stream was started with was created "
            "(epoch milliseconds). Another one (deleted and re-created out of band) starts the "
            "stream anew, the gap read from the log group."
        ),
    )
    retention_hours: int | None = Field(
        default=None, ge=1, description="The stream's retention (mode stream)."
    )
    log_format: str | None = Field(
        default=None,
        description=(
            "The flow log's format the records are parsed with (mode stream: what the other "
            "replicas reading shards of this stream use)."
        ),
    )
    shared: bool | None = Field(
        default=None,
        description=(
            "Mode stream: whether the shards are spread over the operator's replicas (not with "
            "workloads mode Sync, nor with one replica)."
        ),
    )
    log_group_counts: Counts | None = Field(
        default=None,
        description=(
            "Mode stream: the part of status.counts read from the log group itself (the rest "
            "is the shards' entries, written by the replicas reading them)."
        ),
    )
    effective_poll_interval_seconds: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Mode poll: seconds between reads of the log group as they really are, "
            "pollIntervalSeconds or longer: every FlowExport of the operator polling the same "
            "account and region takes turns in that account's FilterLogEvents quota."
        ),
    )
    bucket: str | None = Field(default=None, description="Mode s3: the bucket read.")
    queue_url: str | None = Field(
        default=None, description="Mode s3: the queue its object notifications arrive on."
    )
    objects_done: int | None = Field(
        default=None,
        ge=0,
        description="Mode s3: objects whose every flow the PCE accepted (this holder).",
    )
    objects_in_flight: int | None = Field(
        default=None, ge=0, description="Mode s3: objects being read now."
    )
    objects_failed: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Mode s3: objects that could not be read (corrupt, denied, gone), left to the "
            "queue's redrive policy."
        ),
    )
    objects_skipped: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Mode s3: announcements skipped: test events, keys that are not flow-log files or "
            "not of this VPC, objects already done (same key and ETag)."
        ),
    )
    oldest_message_age_seconds: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Mode s3: the lag: seconds since the oldest message of the last receive was sent "
            "(0 when the queue had nothing to give)."
        ),
    )
    done_objects: list[str] | None = Field(
        default=None,
        description=(
            "Mode s3: the latest objects done, as '<ETag> <key>' (at most 256): one announced "
            "again is not read again."
        ),
        max_length=256,
    )

    @classmethod
    def from_stored(cls, raw: Any) -> SourceStatus | None:
        """The stored status.source (keys of another version ignored); None if there is none
        or it is damaged."""
        if not isinstance(raw, dict):
            return None
        known = {field.alias or name for name, field in cls.model_fields.items()}
        try:
            return cls.model_validate({k: v for k, v in raw.items() if k in known})
        except ValidationError:
            return None

    def to_stored(self) -> dict[str, Any]:
        """As written in status.source."""
        stored: dict[str, Any] = self.model_dump(by_alias=True, mode="json", exclude_none=True)
        return stored


class FlowExportStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready (True when every stage is), Reconciling and Stalled (kstatus: True while "
            "working or retrying, and after a terminal failure), and the stages "
            "SubscriptionReady, PCEReachable, WorkloadsSynced and Ingesting."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    flow_log_id: str | None = Field(default=None, description="The VPC flow log delivering.")
    log_group_arn: str | None = Field(default=None, description="ARN of the log group read.")
    counts: Counts = Field(default_factory=Counts, description="Ingestion totals.")
    last_upload_time: datetime | None = Field(
        default=None, description="When the PCE last accepted a batch."
    )
    lag_seconds: int | None = Field(
        default=None, description="Age of the newest record uploaded, at upload time."
    )
    workloads: WorkloadsStatus | None = Field(
        default=None, description="The workload sync (spec.workloads.mode Sync)."
    )
    cursor: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Reader position, saved only after the PCE accepted everything before it; a "
            "restarted worker resumes from here."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    source: SourceStatus | None = Field(default=None, description="The read mode in use.")
    shards: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description=(
            "Mode stream, per shard id: its checkpoint (sequence number, saved only after the "
            "PCE accepted everything before it), counts, millisBehindLatest, whether it was "
            "read to its end and the replica reading it."
        ),
        json_schema_extra={
            "additionalProperties": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }
        },
    )


class FlowExport(ApiModel):
    """A FlowExport resource as stored by the API server."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["flowexport.io/v1alpha1"] = "flowexport.io/v1alpha1"
    kind: Literal["FlowExport"] = "FlowExport"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FlowExportSpec
    status: FlowExportStatus | None = None
