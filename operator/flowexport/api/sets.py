"""The FlowExportSet API (flowexport.io/v1alpha1): one resource that generates FlowExports.

A FlowExportSet selects AWS accounts (a list, or Organizations OUs walked recursively),
regions and VPCs (all, by id or by tags), and the operator generates one FlowExport per
selected VPC from `spec.template`, as Argo CD's ApplicationSet generates Applications. It
also keeps the set's flow-log guardrail (`flowLogs: Ensure | Report`) and reports coverage.
The models are the single source of the CRD's schema (`flowexport.api.crd`).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from flowexport.api.models import (
    RETENTION_DAYS,
    ApiModel,
    AwsEndpoints,
    AwsSpec,
    Condition,
    FlowExportSpec,
    IngestionSpec,
    PceSpec,
    SourceSpec,
    WorkloadsSpec,
    _cel,
    _rules,
)
from flowexport.urls import check_url

KIND = "FlowExportSet"
PLURAL = "flowexportsets"
SINGULAR = "flowexportset"
SHORT_NAMES = ["fxset"]

#: The label every generated FlowExport carries: the name of the set that made it.
SET_LABEL = "flowexport.io/set"
#: Labels saying which account, region and VPC a generated FlowExport is for.
ACCOUNT_LABEL = "flowexport.io/account"
REGION_LABEL = "flowexport.io/region"
VPC_LABEL = "flowexport.io/vpc"
#: The most VPCs without a flow log that status.missing lists.
MAX_MISSING = 50
#: The most refused or failed accounts the status lists (the totals count them all).
MAX_ACCOUNT_PROBLEMS = 50

_ACCOUNT = r"^[0-9]{12}$"
_VPC = r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$"
_REGION = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"
#: An OU id (ou-<root>-<ou>) or a root id (r-<root>), as Organizations writes them.
_PARENT = r"^(ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}|r-[0-9a-z]{4,32})$"
_ROLE_NAME = r"^[A-Za-z0-9+=,.@_/-]{1,512}$"
_LOG_GROUP_PREFIX = r"^[.\-_/#A-Za-z0-9]*$"

AccountId = Annotated[str, Field(pattern=_ACCOUNT, min_length=12, max_length=12)]
VpcId = Annotated[str, Field(pattern=_VPC, max_length=21)]
Region = Annotated[str, Field(pattern=_REGION, max_length=32)]
ParentId = Annotated[str, Field(pattern=_PARENT, max_length=68)]


class OrganizationScope(ApiModel):
    """Accounts found by walking AWS Organizations from the management account."""

    management_account_id: AccountId = Field(
        description=(
            "The organisation's management account (or a delegated administrator): the "
            "Organizations calls are made there, through the role its AccountGrant gives this "
            "namespace. It must be granted like any other account."
        ),
    )
    organizational_units: list[ParentId] = Field(
        description=(
            "OUs (ou-...) or the root (r-...) whose accounts are selected "
            "(ListAccountsForParent); with recursive, their child OUs' too "
            "(ListOrganizationalUnitsForParent)."
        ),
        min_length=1,
        max_length=100,
    )
    recursive: bool = Field(
        default=True, description="Walk the child OUs of each OU listed, at every depth."
    )


class VpcSelector(ApiModel):
    """Which VPCs of the selected accounts and regions: all when neither field is set."""

    ids: list[VpcId] = Field(
        default_factory=list,
        description="Only these VPC ids (in whichever selected account and region they are).",
        max_length=1000,
    )
    tags: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict,
        description=(
            "Only VPCs carrying every one of these tags with these values (DescribeVpcs tag "
            "filters), e.g. flowexport: 'on'."
        ),
        json_schema_extra={"maxProperties": 10},
    )


class S3Destination(ApiModel):
    """A central bucket (e.g. the Control Tower log-archive account's) every flow log delivers
    to; its policy must let delivery.logs.amazonaws.com write each account's prefix."""

    bucket: str = Field(
        description="The bucket's name (it may belong to another account).",
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    )
    prefix: str = Field(
        default="",
        description="Key prefix the flow logs go under (AWS adds AWSLogs/<account>/... after it).",
        max_length=512,
        pattern=r"^([^/].*[^/]|[^/])?$",
    )


class LogGroupsDestination(ApiModel):
    """A CloudWatch Logs log group per VPC, in the VPC's own account and region."""

    name_prefix: str = Field(
        default="/flowexport/",
        description="A VPC's log group is this prefix followed by the VPC id.",
        max_length=400,
        pattern=_LOG_GROUP_PREFIX,
    )
    deliver_logs_role_name: str | None = Field(
        default=None,
        description=(
            "Name of the flow-log delivery role in every account (trusts "
            "vpc-flow-logs.amazonaws.com), e.g. flowexport-flow-logs-delivery: needed to "
            "create flow logs (flowLogs Ensure); each account's role ARN is made from it."
        ),
        pattern=_ROLE_NAME,
    )


class Destination(ApiModel):
    """Where the selected VPCs' flow logs deliver: one of s3 or logGroups."""

    model_config = _rules(
        _cel("has(self.s3) != has(self.logGroups)", "set exactly one of s3 and logGroups"),
    )

    s3: S3Destination | None = Field(
        default=None,
        description=(
            "A central bucket. The set keeps every VPC's flow log delivering there "
            "(flowLogs Ensure) and reports coverage; it generates no FlowExports (read the "
            "bucket with one FlowExport in mode s3 without vpcId)."
        ),
    )
    log_groups: LogGroupsDestination | None = Field(
        default=None,
        description=(
            "A log group per VPC: each VPC gets a FlowExport reading it (mode poll or stream, "
            "from the template)."
        ),
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Destination:
        if (self.s3 is None) == (self.log_groups is None):
            raise ValueError("set exactly one of s3 and logGroups")
        return self


def _aws_field(name: str) -> Any:
    """The FlowExport's own field `name` of spec.aws (description, bounds, CEL rules)."""
    return copy.deepcopy(AwsSpec.model_fields[name])


class TemplateAws(ApiModel):
    """The spec.aws settings every generated FlowExport shares (the set fills in accountId,
    region, vpcId, the log group and the management policy; the account's role and ExternalId
    come from its AccountGrant, assumed from the operator's own identity: no keys Secret)."""

    endpoint_url: str | None = _aws_field("endpoint_url")
    endpoints: AwsEndpoints | None = _aws_field("endpoints")
    log_group_retention_days: Literal[RETENTION_DAYS] = _aws_field(  # type: ignore[valid-type]
        "log_group_retention_days"
    )
    traffic_type: Literal["ACCEPT", "REJECT", "ALL"] | None = _aws_field("traffic_type")
    max_aggregation_interval: Literal[60, 600] | None = _aws_field("max_aggregation_interval")
    log_format: str | None = _aws_field("log_format")  # its validators come with the field
    api_requests_per_second: float = _aws_field("api_requests_per_second")
    tags: dict[str, Annotated[str, Field(max_length=256)]] = _aws_field("tags")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "the endpoint URL")


class FlowExportTemplate(ApiModel):
    """What every generated FlowExport's spec shares."""

    aws: TemplateAws = Field(
        default_factory=TemplateAws,
        description="Shared spec.aws settings (endpoints, base credentials, flow-log fields).",
        json_schema_extra={"default": {}},
    )
    pce: PceSpec = Field(description="The one PCE (and org) every generated FlowExport feeds.")
    ingestion: IngestionSpec = Field(
        default_factory=IngestionSpec,
        description="Reading, filtering, aggregation and upload settings.",
        json_schema_extra={"default": {}},
    )
    workloads: WorkloadsSpec = Field(
        default_factory=WorkloadsSpec,
        description=(
            "Workloads in the PCE for each VPC (synced through the VPC's account's role)."
        ),
        json_schema_extra={"default": {}},
    )
    source: SourceSpec = Field(
        default_factory=SourceSpec,
        description="Read mode poll (default) or stream; mode s3 is the s3 destination's.",
        json_schema_extra={"default": {}},
    )
    suspend: bool = Field(default=False, description="Generated FlowExports ingest nothing.")

    @model_validator(mode="after")
    def _no_s3_mode(self) -> FlowExportTemplate:
        if self.source.s3 is not None:
            raise ValueError(
                "template.source.s3 is not taken: with destination s3 the set generates no "
                "FlowExports"
            )
        return self


class FlowExportSetSpec(ApiModel):
    """Desired state: every selected VPC with a flow log and a FlowExport."""

    model_config = _rules(
        _cel(
            "(has(self.accounts) && size(self.accounts) > 0) || has(self.organization)",
            "select accounts: accounts, organization, or both",
        ),
    )

    accounts: list[AccountId] = Field(
        default_factory=list,
        description="Accounts selected by id (each must be granted to the namespace).",
        max_length=1000,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    organization: OrganizationScope | None = Field(
        default=None, description="Accounts selected by Organizations OUs (added to accounts)."
    )
    regions: list[Region] = Field(
        description="Regions searched in every selected account.",
        min_length=1,
        max_length=40,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    vpcs: VpcSelector = Field(
        default_factory=VpcSelector,
        description="Which VPCs: all when empty.",
        json_schema_extra={"default": {}},
    )
    flow_logs: Literal["Ensure", "Report"] = Field(
        default="Report",
        description=(
            "Ensure: every selected VPC gets a flow log to the destination (an existing one is "
            "adopted, never changed). Report: nothing in AWS is created or changed; VPCs "
            "without a flow log are only reported, and FlowExports are generated only for "
            "VPCs whose flow log delivers to a log group (which they read without changing)."
        ),
    )
    destination: Destination = Field(
        default_factory=lambda: Destination(log_groups=LogGroupsDestination()),
        description="Where the flow logs deliver: per-VPC log groups (default) or a bucket.",
        json_schema_extra={"default": {"logGroups": {}}},
    )
    template: FlowExportTemplate = Field(
        description="The shared part of every generated FlowExport's spec."
    )
    refresh_seconds: int = Field(
        default=300,
        ge=5,
        le=86400,
        description=(
            "Seconds between discoveries: new accounts and VPCs are picked up, and gone ones "
            "cleaned up, within this (one DescribeVpcs and one DescribeFlowLogs per account "
            "and region each time, paginated)."
        ),
    )
    max_flow_exports: int = Field(
        default=500,
        ge=1,
        le=10000,
        description=(
            "Safety cap: past this many selected VPCs no FlowExport is created (those there "
            "are kept) and Ready says TooManyFlowExports."
        ),
    )
    deletion_policy: Literal["Delete", "Retain"] = Field(
        default="Delete",
        description=(
            "The generated FlowExports' deletionPolicy (what happens to the flow logs, log "
            "groups and workloads they created when a VPC leaves the scope or the set goes); "
            "flow logs the set itself created into an s3 destination follow it too."
        ),
    )

    @model_validator(mode="after")
    def _accounts_chosen(self) -> FlowExportSetSpec:
        if not self.accounts and self.organization is None:
            raise ValueError("select accounts: accounts, organization, or both")
        return self

    @model_validator(mode="after")
    def _template_makes_valid_flowexports(self) -> FlowExportSetSpec:
        # The template is checked the way each generated FlowExport will be: as a whole spec.
        try:
            FlowExportSpec.model_validate(
                sample_spec(self, "123456789012", self.regions[0], "vpc-00000000")
            )
        except ValidationError as exc:
            problems = "; ".join(
                ".".join(str(p) for p in e["loc"]) + ": " + e["msg"].removeprefix("Value error, ")
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ValueError(f"the template makes invalid FlowExports ({problems})") from None
        return self


def log_group_of(spec: FlowExportSetSpec, vpc_id: str) -> str:
    """The log group a generated FlowExport reads when the set chooses it."""
    prefix = spec.destination.log_groups.name_prefix if spec.destination.log_groups else ""
    return f"{prefix}{vpc_id}"


def sample_spec(
    spec: FlowExportSetSpec,
    account_id: str,
    region: str,
    vpc_id: str,
    log_group: str | None = None,
    ensure: bool | None = None,
) -> dict[str, Any]:
    """The spec (camelCase, as stored) of the FlowExport generated for one VPC. `log_group`:
    the log group to read (default: the destination's name for the VPC); `ensure`: whether
    it may create the flow log (default: flowLogs is Ensure)."""
    template = spec.template
    aws: dict[str, Any] = template.aws.model_dump(by_alias=True, mode="json", exclude_none=True)
    ensure = spec.flow_logs == "Ensure" if ensure is None else ensure
    aws.update(
        region=region,
        vpcId=vpc_id,
        logGroupName=log_group or log_group_of(spec, vpc_id),
        managementPolicy="AdoptOrCreate" if ensure else "Observe",
    )
    if not aws.get("tags"):
        aws.pop("tags", None)
    role = (
        spec.destination.log_groups.deliver_logs_role_name if spec.destination.log_groups else None
    )
    if ensure and role:
        aws["deliverLogsRoleArn"] = f"arn:aws:iam::{account_id}:role/{role}"
    body: dict[str, Any] = {
        "aws": aws,
        **template.model_dump(
            by_alias=True,
            mode="json",
            exclude_none=True,
            include={"pce", "ingestion", "workloads", "source"},
        ),
        "deletionPolicy": spec.deletion_policy,
    }
    if template.suspend:
        body["suspend"] = True
    return body


class AccountProblem(ApiModel):
    """An account (and region) the set could not use, and why."""

    account_id: str = Field(description="The account.")
    region: str | None = Field(default=None, description="The region, if only one failed.")
    reason: str = Field(description="CamelCase reason (AccountNotGranted, AWSAccessDenied, ...).")
    message: str = Field(default="", description="Detail.", max_length=1024)


class MissingVpc(ApiModel):
    """A selected VPC without a flow log to the destination."""

    account_id: str = Field(description="Its account.")
    region: str = Field(description="Its region.")
    vpc_id: str = Field(description="The VPC.")


class AccountCounts(ApiModel):
    """The accounts in scope."""

    total: int = Field(default=0, ge=0, description="Selected (listed and found in the OUs).")
    granted: int = Field(default=0, ge=0, description="Granted to the namespace.")
    refused: int = Field(default=0, ge=0, description="Not granted: left alone.")
    failed: int = Field(default=0, ge=0, description="Granted, but discovery failed.")


class VpcCounts(ApiModel):
    """The VPCs in scope (of the accounts and regions discovered)."""

    total: int = Field(default=0, ge=0, description="Selected VPCs.")
    with_flow_log: int = Field(
        default=0, ge=0, description="With a flow log delivering to the destination."
    )
    without_flow_log: int = Field(default=0, ge=0, description="Without one.")


class FlowExportSetStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last discovered."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready (every account discovered and every FlowExport generated), Discovered and "
            "Covered (every selected VPC has a flow log to the destination)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    accounts: AccountCounts | None = Field(default=None, description="Accounts in scope.")
    vpcs: VpcCounts | None = Field(default=None, description="VPCs in scope.")
    flow_exports: int | None = Field(
        default=None, ge=0, description="FlowExports this set has generated and keeps."
    )
    flow_exports_ready: int | None = Field(
        default=None,
        ge=0,
        description="Of those, how many were Ready when the last discovery listed them.",
    )
    flow_logs_created: int | None = Field(
        default=None, ge=0, description="Flow logs the set created at its last discovery."
    )
    missing: list[MissingVpc] | None = Field(
        default=None,
        description=f"The first {MAX_MISSING} VPCs without a flow log, sorted.",
        max_length=MAX_MISSING,
    )
    refused_accounts: list[AccountProblem] | None = Field(
        default=None,
        description="Accounts in scope not granted to this namespace (never called).",
        max_length=MAX_ACCOUNT_PROBLEMS,
    )
    failed_accounts: list[AccountProblem] | None = Field(
        default=None,
        description="Accounts (or regions of them) whose discovery failed, and why.",
        max_length=MAX_ACCOUNT_PROBLEMS,
    )
    last_discovery_time: datetime | None = Field(
        default=None, description="When the last discovery ended."
    )
    discovery_seconds: float | None = Field(
        default=None, ge=0, description="How long the last discovery took."
    )


class FlowExportSet(ApiModel):
    """A FlowExportSet resource as stored by the API server."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: Literal["flowexport.io/v1alpha1"] = "flowexport.io/v1alpha1"
    kind: Literal["FlowExportSet"] = "FlowExportSet"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FlowExportSetSpec
    status: FlowExportSetStatus | None = None
