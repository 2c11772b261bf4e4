"""One account and region's VPCs and flow logs, in as few calls as AWS allows.

A FlowExportSet's refresh makes one DescribeVpcs and one DescribeFlowLogs per account and
region (each paginated), whatever the number of VPCs, so a fleet keeps within the accounts'
Describe* budgets. With an s3 destination under `flowLogs: Ensure` the set creates the
missing flow logs itself (CreateFlowLogs takes several VPCs at once), tagged as the set's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowexport.aws.errors import call
from flowexport.aws.ownership import MANAGED_BY, MANAGED_BY_TAG
from flowexport.aws.s3 import S3_DESTINATION
from flowexport.aws.session import AwsClients
from flowexport.core.logformat import PIPELINE_FORMAT

#: The tag naming the FlowExportSet (namespace/name) that created a flow log into a bucket.
SET_OWNER_TAG = "flowexport.io/set-owner"
#: VPCs per CreateFlowLogs call.
CREATE_BATCH = 25
#: The largest page DescribeFlowLogs takes.
FLOW_LOG_PAGE = 1000


@dataclass(frozen=True)
class FlowLog:
    """A VPC flow log as DescribeFlowLogs says: its id, where it delivers, who made it."""

    flow_log_id: str
    vpc_id: str
    destination_type: str
    log_group: str | None = None
    destination: str | None = None
    set_owner: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> FlowLog:
        """From a DescribeFlowLogs item."""
        tags = {t.get("Key"): t.get("Value") for t in raw.get("Tags") or []}
        return cls(
            str(raw.get("FlowLogId", "")),
            str(raw.get("ResourceId", "")),
            str(raw.get("LogDestinationType") or "cloud-watch-logs"),
            raw.get("LogGroupName"),
            raw.get("LogDestination"),
            tags.get(SET_OWNER_TAG),
        )


@dataclass(frozen=True)
class FoundVpc:
    """A VPC of one account and region, its tags and its flow logs."""

    vpc_id: str
    tags: tuple[tuple[str, str], ...] = ()
    flow_logs: tuple[FlowLog, ...] = ()


@dataclass
class Inventory:
    """What one account and region holds, and the calls it took."""

    vpcs: list[FoundVpc] = field(default_factory=list)
    calls: int = 0


def _vpc_filters(ids: Sequence[str], tags: Mapping[str, str]) -> list[dict[str, Any]]:
    # A filter, not VpcIds: VpcIds fails the whole call when one id is of another account.
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())]
    if ids:
        filters.append({"Name": "vpc-id", "Values": list(ids)})
    return filters


def inventory(
    clients: AwsClients, ids: Sequence[str] = (), tags: Mapping[str, str] | None = None
) -> Inventory:
    """The selected VPCs of the clients' account and region, with their flow logs (one
    DescribeVpcs and one DescribeFlowLogs, paginated). Raises AwsError, classified."""
    found = Inventory()
    vpcs: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kw: dict[str, Any] = {"Filters": _vpc_filters(ids, tags or {})}
        if token:
            kw["NextToken"] = token
        found.calls += 1
        page = call("ec2", "DescribeVpcs", clients.ec2.describe_vpcs, **kw)
        vpcs += page.get("Vpcs") or []
        token = page.get("NextToken")
        if not token:
            break
    by_vpc: dict[str, list[FlowLog]] = {}
    token = None
    while vpcs:
        kw = {"MaxResults": FLOW_LOG_PAGE, **({"NextToken": token} if token else {})}
        found.calls += 1
        page = call("ec2", "DescribeFlowLogs", clients.ec2.describe_flow_logs, **kw)
        for raw in page.get("FlowLogs") or []:
            flow_log = FlowLog.parse(raw)
            by_vpc.setdefault(flow_log.vpc_id, []).append(flow_log)
        token = page.get("NextToken")
        if not token:
            break
    for vpc in vpcs:
        vpc_id = str(vpc["VpcId"])
        tags_of = tuple(sorted((str(t["Key"]), str(t["Value"])) for t in vpc.get("Tags") or []))
        logs = tuple(sorted(by_vpc.get(vpc_id, []), key=lambda f: f.flow_log_id))
        found.vpcs.append(FoundVpc(vpc_id, tags_of, logs))
    found.vpcs.sort(key=lambda v: v.vpc_id)
    return found


def bucket_destination(bucket: str, prefix: str = "") -> str:
    """The LogDestination of a flow log into `bucket` under `prefix`."""
    return f"arn:aws:s3:::{bucket}" + (f"/{prefix}" if prefix else "")


def delivers_to_bucket(flow_log: FlowLog, bucket: str, prefix: str = "") -> bool:
    """Whether the flow log delivers into the bucket under the prefix (or under no prefix
    when none is asked for: any of the bucket's)."""
    if flow_log.destination_type != S3_DESTINATION or not flow_log.destination:
        return False
    wanted = bucket_destination(bucket, prefix)
    have = flow_log.destination.rstrip("/")
    return have == wanted or (not prefix and have.startswith(f"{wanted}/"))


def create_bucket_flow_logs(
    clients: AwsClients,
    vpc_ids: Sequence[str],
    bucket: str,
    prefix: str,
    set_owner: str,
    tags: Mapping[str, str] | None = None,
    log_format: str | None = None,
    traffic_type: str | None = None,
    max_aggregation_interval: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Create a flow log into the bucket for each VPC (CREATE_BATCH VPCs a call), tagged as
    the set's; (the flow-log ids made, {vpc: why not} for those AWS refused).

    The bucket may be another account's (a log-archive bucket whose policy lets
    delivery.logs.amazonaws.com write this account's prefix). Raises AwsError when a whole
    call fails."""
    made: list[str] = []
    refused: dict[str, str] = {}
    own = {SET_OWNER_TAG: set_owner, MANAGED_BY_TAG: MANAGED_BY}
    all_tags = {**{k: v for k, v in (tags or {}).items() if k not in own}, **own}
    for start in range(0, len(vpc_ids), CREATE_BATCH):
        batch = list(vpc_ids[start : start + CREATE_BATCH])
        answer = call(
            "ec2",
            "CreateFlowLogs",
            clients.ec2.create_flow_logs,
            ResourceIds=batch,
            ResourceType="VPC",
            TrafficType=traffic_type or "ALL",
            LogDestinationType=S3_DESTINATION,
            LogDestination=bucket_destination(bucket, prefix),
            LogFormat=log_format or PIPELINE_FORMAT.render(),
            MaxAggregationInterval=max_aggregation_interval or 60,
            TagSpecifications=[
                {
                    "ResourceType": "vpc-flow-log",
                    "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()],
                }
            ],
        )
        made += [str(i) for i in answer.get("FlowLogIds") or []]
        for failure in answer.get("Unsuccessful") or []:
            error = failure.get("Error") or {}
            refused[str(failure.get("ResourceId", "?"))] = (
                f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip()
            )
    return made, refused


def delete_set_flow_logs(clients: AwsClients, set_owner: str) -> list[str]:
    """Delete the flow logs the set `set_owner` created in the clients' account and region;
    their ids."""
    answer = call(
        "ec2",
        "DescribeFlowLogs",
        clients.ec2.describe_flow_logs,
        Filters=[{"Name": f"tag:{SET_OWNER_TAG}", "Values": [set_owner]}],
    )
    ids = [
        f.flow_log_id
        for f in map(FlowLog.parse, answer.get("FlowLogs") or [])
        if f.set_owner == set_owner
    ]
    if ids:
        call("ec2", "DeleteFlowLogs", clients.ec2.delete_flow_logs, FlowLogIds=ids)
    return ids
