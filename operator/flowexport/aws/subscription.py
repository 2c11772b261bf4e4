"""Ensure a VPC's flow log delivers to a CloudWatch Logs group: create, adopt, repair, remove.

Ownership is recorded in tags: what carries `flowexport.io/owner: <namespace>/<name>` was
created by that FlowExport and may be replaced or deleted by it; anything else is only adopted
(used as is) or reported, never changed. A log group another FlowExport created, or that a
flow log of another FlowExport delivers into, is never read from another namespace, and never
changed (retention, subscription filters) by anyone but its owner (`ownership.check_foreign`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowexport.api.models import AwsSpec
from flowexport.aws.errors import AwsError, call
from flowexport.aws.ownership import (
    OWNER_TAG,
    check_foreign,
    owner_tags,
    tagged_owner,
)
from flowexport.aws.s3 import S3Subscription
from flowexport.aws.session import AwsClients
from flowexport.aws.stream import (
    StreamSubscription,
    delete_filter,
    describe_filters,
    filter_owner,
)
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from flowexport.errors import Reason


@dataclass
class Subscription:
    """The log group and flow log in use, and what this reconcile changed."""

    log_group_arn: str
    flow_log_id: str
    log_format: LogFormat
    log_group_owned: bool
    flow_log_owned: bool
    delivery_error: str | None = None
    changes: list[str] = field(default_factory=list)
    #: Other subscription filters on the log group (name -> destination), e.g. the Lambda's.
    other_filters: dict[str, str] = field(default_factory=dict)
    #: The log group's subscription filters as described (less those removed here).
    filters: list[dict[str, Any]] = field(default_factory=list)
    #: Mode stream: the stream and the filter delivering to it.
    stream: StreamSubscription | None = None
    #: Mode s3: the bucket, the queue and the flow log into the bucket.
    s3: S3Subscription | None = None

    @classmethod
    def without_log_group(cls) -> Subscription:
        """What a source that reads no log group starts from (mode s3): no log group, no
        flow log to it; the source fills in what it ensures."""
        return cls("", "", PIPELINE_FORMAT, False, False)

    #: The FlowExport (namespace/name) the log group's ownership tag names, if any.
    log_group_owner: str | None = None


#: What a new flow log gets for the fields the spec leaves unset (an existing one is adopted
#: with whatever it has).
NEW_TRAFFIC_TYPE = "ALL"
NEW_AGGREGATION_INTERVAL = 60


def desired_format(spec: AwsSpec) -> LogFormat:
    """The log format of a flow log the FlowExport creates."""
    return LogFormat.parse(spec.log_format) if spec.log_format else PIPELINE_FORMAT


def _may_change(spec: AwsSpec) -> bool:
    return spec.management_policy != "Observe"


def _may_create(spec: AwsSpec) -> bool:
    return spec.management_policy == "AdoptOrCreate"


def ensure_delivery(clients: AwsClients, spec: AwsSpec, owner: str) -> Subscription:
    """Make the VPC's flow log deliver to the log group in the desired format, and remove the
    subscription filters the spec names; idempotent. The read mode's own resources are the
    source's (`flowexport.sources.ensure_subscription`).

    Raises AwsError: terminal for a missing VPC or log group, denied permissions, or a flow
    log in the way that this FlowExport does not own; retryable for throttling and outages.
    """
    _vpc_exists(clients, spec)
    changes: list[str] = []
    arn, group_owned, group_owner = _ensure_log_group(clients, spec, owner, changes)
    # One DescribeFlowLogs serves both: every flow log delivering into the log group, among
    # them this VPC's (EC2's read quota is per account: 300 VPCs reconciling at once wait
    # for each call).
    delivering = _deliveries(clients, spec)
    _check_other_deliveries(delivering, spec, owner)
    fmt = desired_format(spec)
    flow_log, flow_log_owned = _ensure_flow_log(
        clients, spec, owner, group_owner, fmt, changes, _of_vpc(delivering, spec)
    )
    error = flow_log.get("DeliverLogsErrorMessage")
    filters = _subscription_filters(clients, spec, owner, group_owner, changes)
    return Subscription(
        log_group_arn=arn,
        flow_log_id=flow_log["FlowLogId"],
        log_format=flow_log_format(flow_log),
        log_group_owned=group_owned,
        flow_log_owned=flow_log_owned,
        delivery_error=str(error) if error else None,
        changes=changes,
        other_filters={str(f["filterName"]): str(f.get("destinationArn", "")) for f in filters},
        filters=filters,
        log_group_owner=group_owner,
    )


def _vpc_exists(clients: AwsClients, spec: AwsSpec) -> None:
    """DescribeVpcs; a VPC AWS does not know says which region and account were asked (a
    VPC of another region is the likeliest cause)."""
    try:
        call("ec2", "DescribeVpcs", clients.ec2.describe_vpcs, VpcIds=[spec.vpc])
    except AwsError as exc:
        if exc.reason is not Reason.VPC_NOT_FOUND:
            raise
        raise AwsError(
            f"VPC {spec.vpc} does not exist in region {spec.region} for the "
            "operator's AWS account (or spec.aws.roleArn's): check spec.aws.region, the VPC id "
            "and the account",
            Reason.VPC_NOT_FOUND,
        ) from None


def _subscription_filters(
    clients: AwsClients,
    spec: AwsSpec,
    owner: str,
    group_owner: str | None,
    changes: list[str],
) -> list[dict[str, Any]]:
    """The log group's subscription filters as described, less those the spec asks to remove,
    which are deleted here: only on a log group of this FlowExport's own or of none, and never
    a filter of any FlowExport (one into a stream tagged as a FlowExport's, or named like the
    operator's filters); such a request is refused (OwnedByAnotherFlowExport)."""
    group = spec.log_group
    found = describe_filters(clients, group)
    doomed = (
        [f for f in found if str(f["filterName"]) in spec.remove_subscription_filters]
        if _may_change(spec)
        else []
    )
    if doomed:
        check_foreign(f"log group {group}", group_owner, owner, changes=True)
    for f in doomed:
        name = str(f["filterName"])
        made_by = filter_owner(clients, f)
        if made_by is not None:
            own = made_by.owner == str(owner)
            whose = "this FlowExport's own" if own else "another FlowExport's"
            raise AwsError(
                f"spec.aws.removeSubscriptionFilters names {name}, {whose} subscription filter "
                f"({made_by.why}): removeSubscriptionFilters removes only filters no FlowExport "
                "made (the Lambda's); take it out of the list",
                Reason.OWNED_BY_ANOTHER,
            )
    kept = []
    for f in found:
        if f in doomed:
            name = str(f["filterName"])
            delete_filter(clients, group, name)
            changes.append(f"removed subscription filter {name} (to {f.get('destinationArn', '')})")
        else:
            kept.append(f)
    return kept


def find_log_group(clients: AwsClients, name: str) -> dict[str, Any] | None:
    """The log group called exactly `name`, if it exists."""
    answer = call(
        "logs",
        "DescribeLogGroups",
        clients.logs.describe_log_groups,
        logGroupNamePrefix=name,
    )
    return next((g for g in answer.get("logGroups", []) if g["logGroupName"] == name), None)


def _group_arn(group: dict[str, Any]) -> str:
    arn = group.get("logGroupArn") or group["arn"]
    return str(arn).removesuffix(":*")


def _ensure_log_group(
    clients: AwsClients, spec: AwsSpec, owner: str, changes: list[str]
) -> tuple[str, bool, str | None]:
    """The log group's ARN, whether this FlowExport owns it, and the FlowExport its tag names
    (one of another namespace is refused here)."""
    name = spec.log_group
    group = find_log_group(clients, name)
    if group is None:
        if not spec.manage_log_group or not _may_create(spec):
            why = (
                f"managementPolicy {spec.management_policy} never creates one"
                if spec.manage_log_group
                else "spec.aws.manageLogGroup is false"
            )
            raise AwsError(
                f"log group {name} does not exist and {why}: create it, or let the operator "
                "(manageLogGroup: true, managementPolicy: AdoptOrCreate)",
                Reason.LOG_GROUP_NOT_FOUND,
            )
        call(
            "logs",
            "CreateLogGroup",
            clients.logs.create_log_group,
            logGroupName=name,
            tags=owner_tags(owner, spec.tags),
        )
        call(
            "logs",
            "PutRetentionPolicy",
            clients.logs.put_retention_policy,
            logGroupName=name,
            retentionInDays=spec.log_group_retention_days,
        )
        changes.append(f"created log group {name}")
        group = find_log_group(clients, name)
        if group is None:
            raise AwsError(f"log group {name} vanished after creation", Reason.AWS_UNAVAILABLE)
        return _group_arn(group), True, str(owner)
    arn = _group_arn(group)
    tags = call(
        "logs",
        "ListTagsForResource",
        clients.logs.list_tags_for_resource,
        resourceArn=arn,
    ).get("tags", {})
    found = tagged_owner(tags)
    check_foreign(f"log group {name}", found, owner, changes=False)
    owned = found == owner
    retention = spec.log_group_retention_days
    repairs = owned and spec.manage_log_group and _may_create(spec)
    if repairs and group.get("retentionInDays") != retention:
        call(
            "logs",
            "PutRetentionPolicy",
            clients.logs.put_retention_policy,
            logGroupName=name,
            retentionInDays=retention,
        )
        changes.append(f"set retention of {name} to {retention} days")
    return arn, owned, found


def _deliveries(clients: AwsClients, spec: AwsSpec) -> list[dict[str, Any]]:
    """Every flow log delivering into the log group, whatever its VPC."""
    answer = call(
        "ec2",
        "DescribeFlowLogs",
        clients.ec2.describe_flow_logs,
        Filters=[{"Name": "log-group-name", "Values": [spec.log_group]}],
    )
    return [f for f in answer.get("FlowLogs", []) if f.get("LogGroupName") == spec.log_group]


def _check_other_deliveries(delivering: list[dict[str, Any]], spec: AwsSpec, owner: str) -> None:
    """Refuse a log group that a flow log of a FlowExport of another namespace delivers into
    (whatever its VPC: the reader reads the whole group), even when the group itself is
    untagged (adopted by that FlowExport)."""
    for flow_log in delivering:
        check_foreign(
            f"log group {spec.log_group} (flow log {flow_log.get('FlowLogId')} delivers into it)",
            _owner_of(flow_log),
            owner,
            changes=False,
        )


def _flow_logs(clients: AwsClients, spec: AwsSpec) -> list[dict[str, Any]]:
    answer = call(
        "ec2",
        "DescribeFlowLogs",
        clients.ec2.describe_flow_logs,
        Filters=[{"Name": "resource-id", "Values": [spec.vpc]}],
    )
    return [
        f
        for f in answer.get("FlowLogs", [])
        if f.get("LogDestinationType", "cloud-watch-logs") == "cloud-watch-logs"
        and f.get("LogGroupName") == spec.log_group
    ]


def _of_vpc(delivering: list[dict[str, Any]], spec: AwsSpec) -> list[dict[str, Any]]:
    """The VPC's flow logs into the log group, of those delivering into it (`_deliveries`):
    what `_flow_logs` answers, without another call."""
    return [
        f
        for f in delivering
        if f.get("ResourceId") == spec.vpc
        and f.get("LogDestinationType", "cloud-watch-logs") == "cloud-watch-logs"
    ]


def _owner_of(flow_log: dict[str, Any]) -> str | None:
    return next((t["Value"] for t in flow_log.get("Tags", []) if t["Key"] == OWNER_TAG), None)


def flow_log_format(flow_log: dict[str, Any]) -> LogFormat:
    """The format a flow log writes (AWS's default when it has no custom one)."""
    text = flow_log.get("LogFormat")
    return LogFormat.parse(text) if text else DEFAULT_V2_FORMAT


def _differences(flow_log: dict[str, Any], spec: AwsSpec) -> list[tuple[str, Any, Any]]:
    """(field, the flow log's value, the spec's) for each field the spec sets and the flow log
    disagrees with. A field the spec leaves unset adopts what the flow log has; without a
    logFormat any usable format is accepted (and learned from the flow log)."""
    found: list[tuple[str, Any, Any]] = []
    try:
        actual: Any = flow_log_format(flow_log)
    except ValueError:
        actual = None
        found.append(("logFormat", flow_log.get("LogFormat"), spec.log_format or "usable"))
    if spec.log_format is not None and actual is not None and actual != desired_format(spec):
        found.append(("logFormat", flow_log.get("LogFormat") or "AWS default", spec.log_format))
    role = flow_log.get("DeliverLogsPermissionArn")
    if spec.deliver_logs_role_arn is not None and role != spec.deliver_logs_role_arn:
        found.append(("deliverLogsRoleArn", role, spec.deliver_logs_role_arn))
    interval = flow_log.get("MaxAggregationInterval", 600)
    if spec.max_aggregation_interval is not None and interval != spec.max_aggregation_interval:
        found.append(("maxAggregationInterval", interval, spec.max_aggregation_interval))
    traffic = flow_log.get("TrafficType")
    if spec.traffic_type is not None and traffic != spec.traffic_type:
        found.append(("trafficType", traffic, spec.traffic_type))
    return found


def _described(differences: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{name} {have} (spec.aws asks {want})" for name, have, want in differences)


def _conflict(other: dict[str, Any], spec: AwsSpec, owner: str) -> AwsError:
    """The FlowLogConflict for a flow log that differs from the spec and may not be replaced,
    with the fix that fits: adopt it as it is, let the operator replace its own, or replace a
    foreign one whose format the pipeline cannot read."""
    differences = _differences(other, spec)
    fields = " and ".join(f"spec.aws.{name}" for name, _, _ in differences)
    where = f"flow log {other['FlowLogId']} delivers {spec.vpc} to {spec.log_group}"
    if _owner_of(other) == owner:
        advice = (
            f"this FlowExport created it, and managementPolicy {spec.management_policy} does "
            f"not replace it: set managementPolicy AdoptOrCreate to have it replaced, or set "
            f"{fields} back to its values"
        )
        return AwsError(
            f"{where} with {_described(differences)}; {advice}", Reason.FLOW_LOG_CONFLICT
        )
    try:
        flow_log_format(other)
    except ValueError as exc:
        if spec.log_format is None:  # nothing in the spec to remove: the format is the problem
            return AwsError(
                f"{where} in a format the pipeline cannot use ({exc}); the operator never "
                "changes a flow log it did not create: replace it with one whose format has "
                "those fields, or delete it and set spec.aws.deliverLogsRoleArn so the operator "
                "creates one",
                Reason.FLOW_LOG_CONFLICT,
            )
    return AwsError(
        f"{where} with {_described(differences)}; the operator never changes a flow log it did "
        f"not create. To adopt it as it is, remove {fields} from the spec (or set them to its "
        "values)",
        Reason.FLOW_LOG_CONFLICT,
    )


def _ensure_flow_log(
    clients: AwsClients,
    spec: AwsSpec,
    owner: str,
    group_owner: str | None,
    fmt: LogFormat,
    changes: list[str],
    existing: list[dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    matching = [f for f in existing if not _differences(f, spec)]
    stale_owned = [f for f in existing if f not in matching and _owner_of(f) == owner]
    foreign = [f for f in existing if f not in matching and _owner_of(f) != owner]
    if stale_owned and _may_create(spec):
        ids = [f["FlowLogId"] for f in stale_owned]
        call("ec2", "DeleteFlowLogs", clients.ec2.delete_flow_logs, FlowLogIds=ids)
        for f in stale_owned:
            what = ", ".join(name for name, _, _ in _differences(f, spec))
            changes.append(f"replaced flow log {f['FlowLogId']} ({what} changed)")
        stale_owned = []
    if matching:
        chosen = next((f for f in matching if _owner_of(f) == owner), matching[0])
        return chosen, _owner_of(chosen) == owner
    if foreign or stale_owned:
        raise _conflict((foreign or stale_owned)[0], spec, owner)
    if not _may_create(spec) or spec.deliver_logs_role_arn is None:
        why = (
            f"managementPolicy {spec.management_policy} never creates one"
            if not _may_create(spec)
            else "creating one needs spec.aws.deliverLogsRoleArn"
        )
        raise AwsError(
            f"no flow log delivers {spec.vpc} to {spec.log_group}, and {why}",
            Reason.FLOW_LOG_NOT_FOUND,
        )
    # A new flow log adds this VPC's records to the log group: a change of the group.
    check_foreign(
        f"log group {spec.log_group} (a new flow log would deliver into it)",
        group_owner,
        owner,
        changes=True,
    )
    tags = [{"Key": k, "Value": v} for k, v in owner_tags(owner, spec.tags).items()]
    asked: dict[str, Any] = {
        "ResourceType": "VPC",
        "TrafficType": spec.traffic_type or NEW_TRAFFIC_TYPE,
        "LogDestinationType": "cloud-watch-logs",
        "LogGroupName": spec.log_group,
        "DeliverLogsPermissionArn": spec.deliver_logs_role_arn,
        "LogFormat": fmt.render(),
        "MaxAggregationInterval": spec.max_aggregation_interval or NEW_AGGREGATION_INTERVAL,
    }
    answer = call(
        "ec2",
        "CreateFlowLogs",
        clients.ec2.create_flow_logs,
        ResourceIds=[spec.vpc],
        TagSpecifications=[{"ResourceType": "vpc-flow-log", "Tags": tags}],
        **asked,
    )
    for failure in answer.get("Unsuccessful") or []:
        error = failure.get("Error", {})
        raise AwsError(
            f"AWS refused to create the flow log ({error.get('Code')}: {error.get('Message')})",
            Reason.FLOW_LOG_CREATE_FAILED,
        )
    if not answer.get("FlowLogIds"):
        raise AwsError("AWS created no flow log and said why not", Reason.AWS_UNAVAILABLE)
    # The new flow log is what was asked: not read back (one EC2 read fewer per VPC; a
    # delivery failure shows later, and the next reconcile reads it).
    created = {**asked, "FlowLogId": answer["FlowLogIds"][0], "ResourceId": spec.vpc}
    created["Tags"] = tags
    changes.append(f"created flow log {created['FlowLogId']}")
    return created, True


def deletes(spec: AwsSpec, policy: str) -> bool:
    """Whether a deletion removes what the FlowExport created: policy Delete, and never under
    managementPolicy Observe (which changes nothing in AWS)."""
    return policy == "Delete" and _may_change(spec)


def delete_delivery(clients: AwsClients, spec: AwsSpec, owner: str, policy: str) -> list[str]:
    """With policy Delete, remove the flow log and log group this FlowExport created (see
    `deletes`); what was removed."""
    if not deletes(spec, policy):
        return []
    removed = []
    owned = [f["FlowLogId"] for f in _flow_logs(clients, spec) if _owner_of(f) == owner]
    if owned:
        call("ec2", "DeleteFlowLogs", clients.ec2.delete_flow_logs, FlowLogIds=owned)
        removed += [f"deleted flow log {i}" for i in owned]
    group = find_log_group(clients, spec.log_group)
    if group is not None:
        tags = call(
            "logs",
            "ListTagsForResource",
            clients.logs.list_tags_for_resource,
            resourceArn=_group_arn(group),
        ).get("tags", {})
        if tags.get(OWNER_TAG) == owner:
            call(
                "logs",
                "DeleteLogGroup",
                clients.logs.delete_log_group,
                logGroupName=spec.log_group,
            )
            removed.append(f"deleted log group {spec.log_group}")
    return removed
