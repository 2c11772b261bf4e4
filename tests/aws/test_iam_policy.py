"""iam/operator-policy.json covers every AWS call the operator makes, and nothing more.

Three views must agree:
- the calls written in the product code (an AST scan of every `<client>.ec2/.logs/sts` call,
  and every Organizations call of aws/organizations.py);
- the calls the code really makes through a whole FlowExport life against moto (create,
  adopt, repair, replace, read, assume a role, delete), and a FlowExportSet's (the
  Organizations walk in the management account, discovery and Ensure into a central bucket in
  member accounts, its flow logs removed), recorded with their parameters;
- the actions the policies allow, for the resources and condition keys of each recorded call,
  including the permissions AWS checks implicitly (iam:PassRole, tag-on-create).
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import io
import json
import runpy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import boto3.session
import cfnlint.api
import pytest
import yaml

from flowexport.api.models import SourceSpec
from flowexport.api.sets import FlowExportSetSpec
from flowexport.aws.discovery import SET_OWNER_TAG
from flowexport.aws.interfaces import discover
from flowexport.aws.kinesis_reader import ShardCursor, ShardReader
from flowexport.aws.ownership import MANAGED_BY, MANAGED_BY_TAG, OWNER_TAG, Owner, owner_tags
from flowexport.aws.reader import LogReader, ReaderCursor
from flowexport.aws.s3 import (
    ObjectReader,
    ObjectRef,
    announced,
    delete_message,
    hide_message,
    list_flow_log_objects,
    receive,
)
from flowexport.aws.session import AwsTarget, make_clients, make_session
from flowexport.aws.stream import default_name
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.fleet.scan import Access, remove_set_flow_logs
from flowexport.fleet.scan import discover as discover_set
from flowexport.sim.fleet import MANAGEMENT, MotoFleet
from flowexport.sources import delete_subscription, ensure_subscription
from flowexport.sources.shards import list_shards
from tests.aws.iampolicy import Request, actions, allows, load
from tests.cloud import KEYS, REGION, Cloud
from tests.flowlines import line
from tests.flowparquet import write_parquet

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "flowexport"
#: The emulator's setup and the demo call AWS too, but as the test bench, not the operator.
NOT_THE_OPERATOR = ("sim/", "commands/demo.py")
ACCOUNT = "123456789012"  # moto's account
DELIVERY_ROLE = "flowexport-flow-logs-delivery"
SUBSCRIPTION_ROLE = "flowexport-cwl-to-kinesis"
PREFIX = {
    "ec2": "ec2",
    "logs": "logs",
    "sts": "sts",
    "kinesis": "kinesis",
    "s3": "s3",
    "sqs": "sqs",
}
#: The module whose `client` is an Organizations client (the walk takes it as an argument).
ORGANIZATIONS_MODULE = "aws/organizations.py"


def _api_names(service: str) -> dict[str, str]:
    client = boto3.client(
        service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    mapping: dict[str, str] = client.meta.method_to_api_mapping
    return mapping


def calls_in_code() -> set[str]:
    """`service:Operation` for every boto3 client method the operator's code refers to."""
    names = {service: _api_names(service) for service in PREFIX}
    organizations = _api_names("organizations")
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        if relative.startswith(NOT_THE_OPERATOR):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            if relative == ORGANIZATIONS_MODULE and node.attr in organizations:
                found.add(f"organizations:{organizations[node.attr]}")
            owner = node.value
            service = (
                owner.attr
                if isinstance(owner, ast.Attribute)
                else owner.id
                if isinstance(owner, ast.Name)
                else None
            )
            if service in names and node.attr in names[service]:
                found.add(f"{PREFIX[service]}:{names[service][node.attr]}")
    return found


@dataclass
class Call:
    service: str
    operation: str
    params: dict[str, Any]
    #: The tags of the resource the call names (flow logs of a DeleteFlowLogs, the log group,
    #: the stream), read just before the call: what aws:ResourceTag conditions see.
    tags: dict[str, str]
    #: The destination types of the flow logs a DeleteFlowLogs call names (cloud-watch-logs, s3).
    destinations: set[str] = field(default_factory=set)
    #: The account the call is made in (a FlowExportSet's member accounts, moto's own else).
    account: str = ACCOUNT

    @property
    def action(self) -> str:
        return f"{self.service}:{self.operation}"


@dataclass
class Recording:
    calls: list[Call]
    bench: dict[str, Any]  # the test's own clients, made before recording started
    #: The organisation a FlowExportSet's life walked (its id is in the OUs' and root's ARNs).
    organization_id: str = "o-unknown"


@pytest.fixture
def recording(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recording]:
    """Every AWS call made through boto3 sessions while the test runs, with its parameters."""
    services = ("ec2", "iam", "logs", "lambda", "kinesis", "s3", "sqs")
    bench = {service: cloud.raw(service) for service in services}
    calls: list[Call] = []
    original = boto3.session.Session.client

    def resource_tags(
        service: str, operation: str, params: dict[str, Any], found: list[dict[str, Any]]
    ) -> dict[str, str]:
        if operation == "DeleteFlowLogs":
            return {t["Key"]: t["Value"] for f in found for t in f.get("Tags", [])}
        if service == "logs" and "logGroupName" in params:
            arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{params['logGroupName']}"
            with contextlib.suppress(Exception):  # not there (yet): no tags
                return dict(bench["logs"].list_tags_for_resource(resourceArn=arn)["tags"])
        if service == "kinesis":
            name = stream_name(operation, params)
            with contextlib.suppress(Exception):
                found = bench["kinesis"].list_tags_for_stream(StreamName=name)["Tags"]
                return {t["Key"]: t.get("Value", "") for t in found}
        return {}

    def client(self: boto3.session.Session, *args: Any, **kwargs: Any) -> Any:
        made = original(self, *args, **kwargs)
        caller: list[str] = []

        def account() -> str:
            """The caller's account (asked once per client, unrecorded)."""
            if not caller:
                same = {k: v for k, v in kwargs.items() if k != "service_name"}
                sts = original(self, "sts", **{"region_name": REGION, **same})
                caller.append(str(sts.get_caller_identity()["Account"]))
            return caller[0]

        def flow_logs(params: dict[str, Any]) -> list[dict[str, Any]]:
            """The flow logs named, read unrecorded with the caller's own identity (a set's
            are in member accounts, not the bench's)."""
            ec2 = original(self, *args, **kwargs)
            return list(ec2.describe_flow_logs(FlowLogIds=params["FlowLogIds"])["FlowLogs"])

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            service = model.service_model.signing_name
            found = flow_logs(params) if model.name == "DeleteFlowLogs" else []
            tags = resource_tags(service, model.name, params, found)
            kinds = {str(f.get("LogDestinationType", "cloud-watch-logs")) for f in found}
            calls.append(Call(service, model.name, dict(params), tags, kinds, account()))

        made.meta.events.register("before-parameter-build", record)
        return made

    monkeypatch.setattr(boto3.session.Session, "client", client)
    yield Recording(calls, bench)


#: The FlowExport whose life `a_flowexport_life` runs (its default stream name carries the hash).
OWNER = Owner("security", "prod", "6a1e0c7e-0000-4000-8000-000000000001")


def stream_name(operation: str, params: dict[str, Any]) -> str:
    """The stream a Kinesis call names (GetRecords: its iterator, of the life's stream)."""
    if operation == "GetRecords":
        return default_name(OWNER)
    if "StreamName" in params:
        return str(params["StreamName"])
    return str(params.get("StreamARN", "")).rsplit("/", 1)[-1]


def a_flowexport_life(cloud: Cloud, bench: dict[str, Any]) -> None:
    """Everything the operator does in AWS, in the order a FlowExport's life does it."""
    iam = bench["iam"]
    role = iam.create_role(RoleName=DELIVERY_ROLE, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    operator_role = iam.create_role(RoleName="flowexport-prod", AssumeRolePolicyDocument="{}")
    target = AwsTarget(
        REGION, endpoint_url=cloud.url, keys=KEYS, role_arn=operator_role["Role"]["Arn"]
    )
    clients = make_clients(target)  # assumes the role: sts:AssumeRole
    owner = OWNER
    spec = cloud.spec(logGroupName="/flowexport/prod", deliverLogsRoleArn=role)
    ensure_subscription(clients, spec, owner)  # creates the log group and the flow log
    ensure_subscription(clients, spec, owner)  # adopts what it made: no change
    ensure_subscription(
        clients,
        cloud.spec(
            logGroupName="/flowexport/prod", deliverLogsRoleArn=role, logGroupRetentionDays=30
        ),
        owner,
    )
    replaced = cloud.spec(
        logGroupName="/flowexport/prod", deliverLogsRoleArn=role, maxAggregationInterval=60
    )
    ensure_subscription(clients, replaced, owner)  # replaces its flow log
    cloud.lambda_subscription("/flowexport/prod", "lambda-export", bench)  # what it replaces
    migrated = cloud.spec(
        logGroupName="/flowexport/prod",
        deliverLogsRoleArn=role,
        maxAggregationInterval=60,
        removeSubscriptionFilters=["lambda-export"],
    )
    ensure_subscription(clients, migrated, owner)  # removes the Lambda's subscription filter
    logs = bench["logs"]
    logs.create_log_stream(logGroupName="/flowexport/prod", logStreamName="eni-1")
    reader = LogReader(clients, "/flowexport/prod", lookback_seconds=60, settle_seconds=0)
    list(reader.chunks(ReaderCursor(0), now_ms=2**41, chunk_size=10))
    discover(clients, cloud.vpc_id)  # spec.workloads Sync: the VPC's interfaces and instances
    # spec.source mode stream: the stream created (tagged, retention, encryption), its filter,
    # then changed the other ways (shrink, no encryption, on-demand, back, reshard), read.
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/{SUBSCRIPTION_ROLE}"

    def streaming(**stream: Any) -> SourceSpec:
        return SourceSpec.model_validate(
            {"mode": "stream", "stream": {"subscriptionRoleArn": role_arn, **stream}}
        )

    ensure_subscription(clients, replaced, owner, streaming(retentionHours=48))
    ensure_subscription(clients, replaced, owner, streaming(kmsKeyId=None, capacityMode="OnDemand"))
    ensure_subscription(clients, replaced, owner, streaming())
    ensure_subscription(clients, replaced, owner, streaming(shardCount=2))
    name = default_name(owner)
    (shard, *_) = list_shards(clients, name)
    reader = ShardReader(clients, name, shard.shard_id, since_ms=0)
    list(reader.chunks(ShardCursor(shard.shard_id), now_ms=2**41, chunk_size=10))
    delete_subscription(clients, replaced, owner, "Delete", streaming())  # stream and filter
    delete_subscription(clients, replaced, owner, "Delete")
    mode_s3(cloud, clients, bench, owner)
    assert make_session(target).client("sts", endpoint_url=cloud.url).get_caller_identity()


def mode_s3(cloud: Cloud, clients: Any, bench: dict[str, Any], owner: str) -> None:
    """Mode s3: the VPC's flow log into a bucket, the queue (with its dead-letter queue) and
    the notification created, an object read and its message handled, all removed."""
    bench["s3"].create_bucket(Bucket="central-flow-logs")
    # moto refuses CreateFlowLogs to S3 with a key prefix: no prefix here.
    source = SourceSpec.model_validate({"mode": "s3", "s3": {"bucket": "central-flow-logs"}})
    s3_spec = cloud.spec(logGroupName=None)
    sub = ensure_subscription(clients, s3_spec, owner, source)
    ensure_subscription(clients, s3_spec, owner, source)  # adopts what it made
    assert sub.s3 is not None
    name = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/12/06/"
    name += f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-1_20261206T1620Z_h.log.gz"
    body = gzip.compress(b"version srcaddr dstaddr srcport dstport protocol\n")
    bench["s3"].put_object(Bucket="central-flow-logs", Key=name, Body=body)
    url = sub.s3.queue_url
    messages = receive(clients, url, 1, 30)
    refs = [ref for m in messages for ref in announced(m["Body"]).objects]
    hide_message(clients, url, messages[0]["ReceiptHandle"], 60)
    reader = ObjectReader(clients, refs[0] if refs else ObjectRef("central-flow-logs", name, ""), 0)
    list(reader.chunks(ReaderCursor(0), now_ms=0, chunk_size=10))
    # A Parquet object: its size from HeadObject, its columns through ranged GETs.
    parquet = name.replace("_h.log.gz", "_p.log.parquet")
    out = io.BytesIO()
    write_parquet(out, [line(PIPELINE_FORMAT)], PIPELINE_FORMAT)
    bench["s3"].put_object(Bucket="central-flow-logs", Key=parquet, Body=out.getvalue())
    ranged = ObjectReader(clients, ObjectRef("central-flow-logs", parquet, ""), 0)
    assert (
        sum(
            len(c.events) + (c.rows.num_rows if c.rows is not None else 0)  # type: ignore[attr-defined]
            for c in ranged.chunks(ReaderCursor(0), now_ms=0, chunk_size=10)
        )
        == 1
    )
    # `flowexport upload s3://...`: the prefix listed (ListObjectsV2).
    assert len(list_flow_log_objects(clients, "central-flow-logs", "AWSLogs/", 0).objects) == 2
    for message in messages:
        delete_message(clients, url, message["ReceiptHandle"])
    delete_subscription(clients, s3_spec, owner, "Delete", source)


#: The FlowExportSet whose life `a_flowexport_set_life` runs, and what it reads.
SET_OWNER = "security/org-prod"
SET_ROLE = "flowexport-member"  # iam/member-role.yaml's default name
SET_BUCKET = "log-archive-central"
SET_TAGS = {"flowexport": "on"}
SET_VPCS_PER_ACCOUNT = 2


def a_flowexport_set_life(cloud: Cloud, recording: Recording) -> None:
    """Everything a FlowExportSet does in AWS: the Organizations walk from the management
    account, discovery in every member account (AssumeRole into its member role), flowLogs
    Ensure into a central bucket (created, then adopted), the set's flow logs deleted."""
    mark = len(recording.calls)
    fleet = MotoFleet(cloud.url)
    fleet.organise()
    fleet.add_ou("workloads")
    fleet.add_ou("prod", parent="workloads")
    fleet.add_accounts("prod", 1)
    fleet.add_accounts("workloads", 1)
    fleet.add_vpcs(fleet.members, [REGION], SET_VPCS_PER_ACCOUNT, SET_TAGS)
    for account in fleet.members:
        fleet.client("iam", account).create_role(RoleName=SET_ROLE, AssumeRolePolicyDocument="{}")
    fleet.client("s3").create_bucket(Bucket=SET_BUCKET)
    organization = fleet.client("organizations").describe_organization()["Organization"]
    recording.organization_id = organization["Id"]
    del recording.calls[mark:]  # the bench's setup, not the operator's

    def resolve(account: str, region: str | None) -> Access:
        if account == MANAGEMENT:  # the operator's own identity, there
            return Access(account, None)
        return Access(account, f"arn:aws:iam::{account}:role/{SET_ROLE}", "ext", "grant")

    spec = FlowExportSetSpec.model_validate(
        {
            "organization": {
                "managementAccountId": MANAGEMENT,
                "organizationalUnits": [fleet.root],  # the root and both OUs below it
            },
            "regions": [REGION],
            "vpcs": {"tags": SET_TAGS},
            "flowLogs": "Ensure",
            "destination": {"s3": {"bucket": SET_BUCKET}},
            "template": {
                "pce": {
                    "url": "https://pce.example.com",
                    "orgId": 1,
                    "credentialsSecretRef": {"name": "k"},
                }
            },
        }
    )
    target = AwsTarget(REGION, endpoint_url=cloud.url, keys=KEYS)
    # fresh clients (not the shared cache): every one is made, and recorded, in this test
    found = discover_set(spec, SET_OWNER, target, resolve, clients_for=make_clients)
    assert found.complete and not found.refused, found.refused
    assert set(fleet.members) <= set(found.accounts)
    assert found.flow_logs_created == len(fleet.members) * SET_VPCS_PER_ACCOUNT
    again = discover_set(spec, SET_OWNER, target, resolve, clients_for=make_clients)
    assert again.flow_logs_created == 0  # adopted
    removed = remove_set_flow_logs(spec, SET_OWNER, target, resolve, clients_for=make_clients)
    assert removed == len(fleet.members) * SET_VPCS_PER_ACCOUNT
    # the flow logs were made and deleted in the members, and are checked there
    mine = recording.calls[mark:]
    in_members = {c.account for c in mine if c.action == "ec2:DeleteFlowLogs"}
    assert in_members == set(fleet.members)


def requirements(call: Call, organization_id: str = "o-unknown") -> list[Request]:
    """The authorization checks AWS makes for one call (implicit ones included), each with the
    condition keys it carries: the named resource's tags (aws:ResourceTag/...) and the tags the
    call puts (aws:RequestTag/...). Organizations calls name the root or OU they list, in the
    organisation `organization_id`."""
    p = call.params
    group_arn = f"arn:aws:logs:{REGION}:{call.account}:log-group:{p.get('logGroupName')}"
    flow_log_arn = f"arn:aws:ec2:{REGION}:{call.account}:vpc-flow-log/"
    stream_arn = f"arn:aws:kinesis:{REGION}:{call.account}:stream/{stream_name(call.operation, p)}"
    resource = {f"aws:ResourceTag/{k}": v for k, v in call.tags.items()}
    match call.action:
        case (
            "ec2:DescribeVpcs"
            | "ec2:DescribeFlowLogs"
            | "ec2:DescribeNetworkInterfaces"
            | "ec2:DescribeInstances"
            | "logs:DescribeLogGroups"
        ):
            return [Request(call.action, "*")]
        case "ec2:CreateFlowLogs":
            checks = [
                Request(call.action, f"arn:aws:ec2:{REGION}:{call.account}:vpc/{vpc}")
                for vpc in p["ResourceIds"]
            ]
            tags = {
                t["Key"]: t["Value"]
                for spec in p.get("TagSpecifications", [])
                for t in spec["Tags"]
            }
            checks.append(Request(call.action, flow_log_arn + "fl-new", requested(tags)))
            if p.get("LogDestinationType") == "s3":  # the delivery to S3 is the caller's
                checks.append(Request("logs:CreateLogDelivery", "*"))
            else:
                passed_to = {"iam:PassedToService": "vpc-flow-logs.amazonaws.com"}
                checks.append(Request("iam:PassRole", p["DeliverLogsPermissionArn"], passed_to))
            if tags:
                checks.append(
                    Request(
                        "ec2:CreateTags",
                        flow_log_arn + "fl-new",
                        {"ec2:CreateAction": "CreateFlowLogs", **requested(tags)},
                    )
                )
            return checks
        case "ec2:DeleteFlowLogs":
            checks = [Request(call.action, flow_log_arn + i, resource) for i in p["FlowLogIds"]]
            if "s3" in call.destinations:
                checks.append(Request("logs:DeleteLogDelivery", "*"))
            return checks
        case "logs:CreateLogGroup":
            checks = [Request(call.action, group_arn, requested(p.get("tags", {})))]
            if p.get("tags"):
                checks.append(Request("logs:TagResource", group_arn, requested(p["tags"])))
            return checks
        case (
            "logs:PutRetentionPolicy"
            | "logs:DeleteLogGroup"
            | "logs:FilterLogEvents"
            | "logs:DescribeSubscriptionFilters"
            | "logs:DeleteSubscriptionFilter"
        ):
            return [Request(call.action, group_arn, resource)]
        case "logs:PutSubscriptionFilter":
            passed_to = {"iam:PassedToService": "logs.amazonaws.com"}
            return [
                Request(call.action, group_arn, resource),
                Request("iam:PassRole", p["roleArn"], passed_to),
            ]
        case "kinesis:CreateStream":
            checks = [Request(call.action, stream_arn, requested(p.get("Tags", {})))]
            if p.get("Tags"):  # tagging in the create call needs AddTagsToStream too
                checks.append(Request("kinesis:AddTagsToStream", stream_arn, requested(p["Tags"])))
            return checks
        case "kinesis:AddTagsToStream":
            return [Request(call.action, stream_arn, {**resource, **requested(p["Tags"])})]
        case (
            "kinesis:DescribeStreamSummary"
            | "kinesis:ListTagsForStream"
            | "kinesis:ListShards"
            | "kinesis:GetShardIterator"
            | "kinesis:GetRecords"
            | "kinesis:IncreaseStreamRetentionPeriod"
            | "kinesis:DecreaseStreamRetentionPeriod"
            | "kinesis:StartStreamEncryption"
            | "kinesis:StopStreamEncryption"
            | "kinesis:UpdateStreamMode"
            | "kinesis:UpdateShardCount"
            | "kinesis:DeleteStream"
        ):
            return [Request(call.action, stream_arn, resource)]
        case "logs:ListTagsForResource":
            return [Request(call.action, p["resourceArn"], resource)]
        case "sts:AssumeRole":
            return [Request(call.action, p["RoleArn"])]
        case (
            "organizations:ListAccountsForParent" | "organizations:ListOrganizationalUnitsForParent"
        ):
            parent = str(p["ParentId"])
            kind = "root" if parent.startswith("r-") else "ou"
            arn = f"arn:aws:organizations::{MANAGEMENT}:{kind}/{organization_id}/{parent}"
            return [Request(call.action, arn)]
        case "s3:HeadBucket":  # HeadBucket is authorized as ListBucket
            return [Request("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}")]
        case "s3:GetObject":
            return [Request(call.action, f"arn:aws:s3:::{p['Bucket']}/{p['Key']}")]
        case "s3:HeadObject":  # HeadObject is authorized as GetObject
            return [Request("s3:GetObject", f"arn:aws:s3:::{p['Bucket']}/{p['Key']}")]
        case "s3:ListObjectsV2":  # authorized as ListBucket
            return [Request("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}")]
        case "s3:GetBucketNotificationConfiguration" | "s3:PutBucketNotificationConfiguration":
            action = call.action.replace("Configuration", "")
            return [Request(action, f"arn:aws:s3:::{p['Bucket']}")]
        case "sqs:CreateQueue":
            arn = f"arn:aws:sqs:{REGION}:{call.account}:{p['QueueName']}"
            checks = [Request(call.action, arn)]
            if p.get("tags"):
                checks.append(Request("sqs:TagQueue", arn))
            return checks
        case "sqs:GetQueueUrl":
            return [Request(call.action, f"arn:aws:sqs:{REGION}:{call.account}:{p['QueueName']}")]
        case "sqs:DeleteQueue":
            arn = f"arn:aws:sqs:{REGION}:{call.account}:{p['QueueUrl'].rsplit('/', 1)[1]}"
            return [Request(call.action, arn, {f"aws:ResourceTag/{MANAGED_BY_TAG}": MANAGED_BY})]
        case (
            "sqs:ListQueueTags"
            | "sqs:GetQueueAttributes"
            | "sqs:SetQueueAttributes"
            | "sqs:ReceiveMessage"
            | "sqs:DeleteMessage"
            | "sqs:ChangeMessageVisibility"
        ):
            arn = f"arn:aws:sqs:{REGION}:{call.account}:{p['QueueUrl'].rsplit('/', 1)[1]}"
            return [Request(call.action, arn)]
    raise AssertionError(f"no authorization model for {call.action}: add it here and to iam/")


def requested(tags: dict[str, str]) -> dict[str, str]:
    """aws:RequestTag/... of the tags a call puts."""
    return {f"aws:RequestTag/{k}": v for k, v in tags.items()}


def test_the_code_makes_exactly_the_calls_it_contains(cloud: Cloud, recording: Recording) -> None:
    a_flowexport_life(cloud, recording.bench)
    a_flowexport_set_life(cloud, recording)
    # GetCallerIdentity needs no permission: the test's own check, and the read budgets'
    # account for keys without a role (aws/budget.py; this life assumes a role instead).
    made = {c.action for c in recording.calls} - {"sts:GetCallerIdentity"}
    written = calls_in_code() - {"sts:GetCallerIdentity"}
    assert made == written, (
        f"called but not found in the code: {made - written}; "
        f"in the code but never exercised here: {written - made}"
    )


def test_the_policies_allow_every_call_and_nothing_else(cloud: Cloud, recording: Recording) -> None:
    """A FlowExport's life and a FlowExportSet's: the calls in the accounts against the
    operator's policy (the member role's), AssumeRole against the operator's own, the
    Organizations walk against iam/fleet-organizations-policy.json (the management account's
    role)."""
    a_flowexport_life(cloud, recording.bench)
    a_flowexport_set_life(cloud, recording)
    operator_policy = load("operator-policy.json")
    assume_policy = load("operator-assume-role-policy.json")
    organizations_policy = load("fleet-organizations-policy.json")
    needed: set[str] = set()
    for call in recording.calls:
        if call.action == "sts:GetCallerIdentity":
            continue  # needs no permission
        for request in requirements(call, recording.organization_id):
            policy = (
                assume_policy
                if request.action == "sts:AssumeRole"
                else organizations_policy
                if request.action.startswith("organizations:")
                else operator_policy
            )
            assert allows(policy, request), f"{json.dumps(request.__dict__)} is not allowed"
            needed.add(request.action)
    granted = actions(operator_policy) | actions(assume_policy) | actions(organizations_policy)
    assert granted == needed, f"granted but never needed: {granted - needed}"
    assert not any("*" in a for a in granted)


@pytest.mark.parametrize(
    "request_",
    [
        Request("logs:CreateLogGroup", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/app/prod"),
        Request("logs:DeleteLogGroup", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/eks/x"),
        Request("logs:FilterLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/app/db"),
        Request("ec2:DeleteFlowLogs", f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-flow-log/fl-1", {}),
        Request(
            "ec2:DeleteFlowLogs",
            f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-flow-log/fl-1",
            {f"aws:ResourceTag/{MANAGED_BY_TAG}": "someone-else"},
        ),
        Request(
            "ec2:CreateTags",
            f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-1",
            {"ec2:CreateAction": "CreateFlowLogs"},
        ),
        Request("ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-flow-log/fl-1", {}),
        Request(
            "iam:PassRole",
            f"arn:aws:iam::{ACCOUNT}:role/admin",
            {"iam:PassedToService": "vpc-flow-logs.amazonaws.com"},
        ),
        Request(
            "iam:PassRole",
            f"arn:aws:iam::{ACCOUNT}:role/{DELIVERY_ROLE}",
            {"iam:PassedToService": "ec2.amazonaws.com"},
        ),
    ],
    ids=[
        "create-foreign-group",
        "delete-foreign-group",
        "read-foreign-group",
        "delete-untagged-flow-log",
        "delete-foreign-flow-log",
        "tag-a-vpc",
        "tag-outside-creation",
        "pass-another-role",
        "pass-to-another-service",
    ],
)
def test_the_operator_policy_refuses_what_the_operator_must_not_do(request_: Request) -> None:
    assert not allows(load("operator-policy.json"), request_)


GROUP = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/flowexport/"
STREAM = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/"
#: What the operator's tags look like to a condition (another FlowExport's are alike: IAM sees
#: one identity; the operator itself keeps FlowExports apart, tests/aws/test_tenancy.py).
OWN = {f"aws:ResourceTag/{MANAGED_BY_TAG}": MANAGED_BY, f"aws:ResourceTag/{OWNER_TAG}": "ns/x"}
OWN_REQUEST = {
    f"aws:RequestTag/{MANAGED_BY_TAG}": MANAGED_BY,
    f"aws:RequestTag/{OWNER_TAG}": "ns/x",
}
UNTAGGED: dict[str, str] = {}
FLOW_LOG = f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-flow-log/fl-1"
#: A FlowExportSet's flow-log tags (aws/discovery.py create_bucket_flow_logs).
SET_OWN = {
    f"aws:ResourceTag/{MANAGED_BY_TAG}": MANAGED_BY,
    f"aws:ResourceTag/{SET_OWNER_TAG}": "ns/x",
}
SET_REQUEST = {
    f"aws:RequestTag/{MANAGED_BY_TAG}": MANAGED_BY,
    f"aws:RequestTag/{SET_OWNER_TAG}": "ns/x",
}


@pytest.mark.parametrize(
    ("request_", "allowed"),
    [
        # Log groups: created only with the tags, changed and unsubscribed only when tagged.
        (Request("logs:CreateLogGroup", GROUP + "a", OWN_REQUEST), True),
        (Request("logs:CreateLogGroup", GROUP + "a", UNTAGGED), False),
        (Request("logs:TagResource", GROUP + "lambda-era", UNTAGGED), False),
        (Request("logs:DeleteLogGroup", GROUP + "a", OWN), True),
        (Request("logs:DeleteLogGroup", GROUP + "lambda-era", UNTAGGED), False),
        (Request("logs:PutRetentionPolicy", GROUP + "lambda-era", UNTAGGED), False),
        (Request("logs:DeleteSubscriptionFilter", GROUP + "a", OWN), True),
        (Request("logs:DeleteSubscriptionFilter", GROUP + "lambda-era", UNTAGGED), False),
        (Request("logs:PutSubscriptionFilter", GROUP + "lambda-era", UNTAGGED), False),
        # Streams: records read only from tagged ones; metadata of any, to tell owners apart.
        (Request("kinesis:GetRecords", STREAM + "flowexport-a", OWN), True),
        (Request("kinesis:GetRecords", STREAM + "flowexport-a", UNTAGGED), False),
        (Request("kinesis:GetShardIterator", STREAM + "orders", OWN), False),
        (Request("kinesis:ListShards", STREAM + "payments", UNTAGGED), False),
        (Request("kinesis:ListTagsForStream", STREAM + "payments", UNTAGGED), True),
        (Request("kinesis:CreateStream", STREAM + "flowexport-a", OWN_REQUEST), True),
        (Request("kinesis:CreateStream", STREAM + "flowexport-a", UNTAGGED), False),
        (Request("kinesis:AddTagsToStream", STREAM + "flowexport-a", OWN), True),
        (
            Request("kinesis:AddTagsToStream", STREAM + "flowexport-a", {"aws:RequestTag/x": "1"}),
            False,
        ),
        (Request("kinesis:DeleteStream", STREAM + "flowexport-a", UNTAGGED), False),
        # Flow logs: created only with the operator's tags, on any VPC.
        (
            Request(
                "ec2:CreateFlowLogs",
                f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-flow-log/fl-1",
                OWN_REQUEST,
            ),
            True,
        ),
        (
            Request(
                "ec2:CreateFlowLogs", f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-flow-log/fl-1", UNTAGGED
            ),
            False,
        ),
        (
            Request("ec2:DeleteFlowLogs", f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-flow-log/fl-1", OWN),
            True,
        ),
        (
            Request(
                "ec2:DeleteFlowLogs", f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-flow-log/fl-1", UNTAGGED
            ),
            False,
        ),
        # A FlowExportSet's flow logs into a bucket: created with its set-owner tag, deleted
        # only when they carry it (and the operator's managed-by).
        (Request("ec2:CreateFlowLogs", FLOW_LOG, SET_REQUEST), True),
        (
            Request("ec2:CreateFlowLogs", FLOW_LOG, {f"aws:RequestTag/{SET_OWNER_TAG}": "ns/x"}),
            False,
        ),
        (Request("ec2:DeleteFlowLogs", FLOW_LOG, SET_OWN), True),
        (
            Request("ec2:DeleteFlowLogs", FLOW_LOG, {f"aws:ResourceTag/{SET_OWNER_TAG}": "ns/x"}),
            False,
        ),
        (
            Request(
                "ec2:DeleteFlowLogs",
                FLOW_LOG,
                {f"aws:ResourceTag/{MANAGED_BY_TAG}": MANAGED_BY},  # managed, but whose?
            ),
            False,
        ),
    ],
)
def test_changes_and_record_reads_need_the_operators_tags(request_: Request, allowed: bool) -> None:
    """Issue 23 item 9: Delete/PutSubscriptionFilter, DeleteLogGroup, retention and the
    Kinesis record reads only on what carries the operator's tags; creation only with them."""
    assert allows(load("operator-policy.json"), request_) is allowed


def test_adopted_log_groups_and_given_streams_are_granted_by_name() -> None:
    """What IAM cannot tell by tag (a Lambda-era log group, a stream given by streamArn) is
    granted by ARN in iam/operator-adopted-resources-policy.json, with its placeholders."""
    text = (ROOT / "iam" / "operator-adopted-resources-policy.json").read_text()
    filled = json.loads(
        text.replace("REGION", REGION)
        .replace("ACCOUNT_ID", ACCOUNT)
        .replace("LOG_GROUP_NAME", "/aws/vpc/flow-logs")
        .replace("STREAM_NAME", "lambda-era")
    )
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/vpc/flow-logs"
    for action in ("FilterLogEvents", "DeleteSubscriptionFilter", "PutSubscriptionFilter"):
        assert allows(filled, Request(f"logs:{action}", group, UNTAGGED))
        assert not allows(filled, Request(f"logs:{action}", group + "-2", UNTAGGED))
    assert not allows(filled, Request("logs:DeleteLogGroup", group, UNTAGGED))
    assert allows(filled, Request("kinesis:GetRecords", STREAM + "lambda-era", UNTAGGED))
    assert not allows(filled, Request("kinesis:DeleteStream", STREAM + "lambda-era", UNTAGGED))
    assert actions(filled) <= actions(load("operator-policy.json"))


def test_the_tag_condition_matches_what_the_operator_writes() -> None:
    statement = next(
        s for s in load("operator-policy.json")["Statement"] if s["Action"] == "ec2:DeleteFlowLogs"
    )
    assert statement["Condition"]["StringEquals"] == {
        f"aws:ResourceTag/{MANAGED_BY_TAG}": MANAGED_BY
    }
    written = {**owner_tags("ns/name"), SET_OWNER_TAG: "ns/name"}  # a FlowExport's, a set's
    for statement in load("operator-policy.json")["Statement"]:
        for pairs in statement.get("Condition", {}).values():
            for key, wanted in pairs.items():
                tag = key.partition("Tag/")[2]
                if key.startswith(("aws:ResourceTag/", "aws:RequestTag/")):
                    assert tag in written, f"{statement['Sid']}: {key} is no tag it writes"
                    assert wanted in (written[tag], "*/*"), statement["Sid"]


def test_the_delivery_role_is_for_vpc_flow_logs_of_one_account() -> None:
    trust = load("flow-logs-delivery-trust-policy.json")
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "ACCOUNT_ID"}
    delivery = load("flow-logs-delivery-policy.json")
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/flowexport/prod"
    for action in (
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
    ):
        assert allows(delivery, Request(action, group))
        assert allows(delivery, Request(action, group + ":log-stream:eni-1-all"))
    assert allows(delivery, Request("logs:DescribeLogGroups", "*"))
    assert not allows(delivery, Request("logs:DeleteLogGroup", group))


def test_every_policy_is_valid_json_with_a_version() -> None:
    for path in sorted((ROOT / "iam").glob("*.json")):
        document = json.loads(path.read_text())
        assert document["Version"] == "2012-10-17", path.name
        assert all({"Effect", "Action"} <= s.keys() for s in document["Statement"]), path.name


# -- the member role of every account of an OU (issue 27 item 1) ----------------------------

MEMBER_TEMPLATE = ROOT / "iam" / "member-role.yaml"
STACKSET_TEMPLATE = ROOT / "iam" / "member-role-stackset.yaml"


def test_the_member_role_templates_carry_the_operator_policy_and_the_external_id() -> None:
    member = yaml.safe_load(MEMBER_TEMPLATE.read_text())
    role = member["Resources"]["MemberRole"]
    assert role["Type"] == "AWS::IAM::Role"
    (inline,) = role["Properties"]["Policies"]
    assert inline["PolicyDocument"] == load("operator-policy.json"), "run `make iam`"
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"AWS": {"Ref": "OperatorRoleArn"}}
    assert trust["Action"] == "sts:AssumeRole"  # no session tags: no sts:TagSession
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    assert member["Parameters"]["RoleName"]["Default"].startswith("flowexport-")
    stackset = yaml.safe_load(STACKSET_TEMPLATE.read_text())["Resources"]["MemberRoles"]
    assert stackset["Type"] == "AWS::CloudFormation::StackSet"
    props = stackset["Properties"]
    assert props["PermissionModel"] == "SERVICE_MANAGED"
    assert props["AutoDeployment"] == {"Enabled": True, "RetainStacksOnAccountRemoval": False}
    assert "CAPABILITY_NAMED_IAM" in props["Capabilities"]
    (targets,) = props["StackInstancesGroup"]
    assert targets["DeploymentTargets"] == {
        "OrganizationalUnitIds": {"Ref": "OrganizationalUnitIds"}
    }
    # the stack every account gets is exactly iam/member-role.yaml
    assert yaml.safe_load(props["TemplateBody"]) == member
    # the same trust as iam/member-role-trust-policy.json, the by-hand form
    (by_hand,) = load("member-role-trust-policy.json")["Statement"]
    assert by_hand["Condition"]["StringEquals"]["sts:ExternalId"] == "EXTERNAL_ID"
    assert by_hand["Principal"]["AWS"].endswith(":role/flowexport-operator")


def test_the_member_role_templates_are_exactly_the_generated_ones() -> None:
    generator = runpy.run_path(str(ROOT / "hack" / "member-role.py"))
    policy = load("operator-policy.json")
    member_text = yaml.safe_dump(generator["member_template"](policy), sort_keys=False, width=100)
    assert MEMBER_TEMPLATE.read_text() == generator["HEADER"] + member_text, "run `make iam`"
    stackset = generator["stackset_template"](member_text)
    assert STACKSET_TEMPLATE.read_text() == generator["HEADER"] + yaml.safe_dump(
        stackset, sort_keys=False, width=100
    ), "run `make iam`"


def test_cfn_lint_finds_nothing_in_the_templates() -> None:
    for template in (MEMBER_TEMPLATE, STACKSET_TEMPLATE):
        problems = cfnlint.api.lint_file(template)
        assert [str(p) for p in problems] == [], template.name


def test_the_member_role_cloudformation_makes_allows_every_call(
    cloud: Cloud, recording: Recording
) -> None:
    """CloudFormation (moto's) deploys iam/member-role.yaml; the role it made, read back from
    IAM, allows every call of a FlowExport's life (the coverage helper of the operator's
    policy), and trusts the operator's role only with the ExternalId."""
    formation = boto3.client(
        "cloudformation",
        endpoint_url=cloud.url,
        region_name=REGION,
        aws_access_key_id=KEYS.access_key_id,
        aws_secret_access_key=KEYS.secret_access_key,
    )
    formation.create_stack(
        StackName="flowexport-member",
        TemplateBody=MEMBER_TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[
            {
                "ParameterKey": "OperatorRoleArn",
                "ParameterValue": "arn:aws:iam::111122223333:role/flowexport-operator",
            },
            {"ParameterKey": "ExternalId", "ParameterValue": "6f1c2a7e-cluster"},
        ],
    )
    (stack,) = formation.describe_stacks(StackName="flowexport-member")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    (output,) = stack["Outputs"]
    assert output["OutputValue"] == f"arn:aws:iam::{ACCOUNT}:role/flowexport-member"
    iam = recording.bench["iam"]
    role = iam.get_role(RoleName="flowexport-member")["Role"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": "6f1c2a7e-cluster"}}
    deployed = iam.get_role_policy(RoleName="flowexport-member", PolicyName="flowexport")
    document = deployed["PolicyDocument"]
    # moto keeps a CloudFormation-made inline policy as the text of a Python dict
    policy = ast.literal_eval(document) if isinstance(document, str) else document
    assert policy == load("operator-policy.json")
    recording.calls.clear()  # the test's CloudFormation calls are not the operator's
    a_flowexport_life(cloud, recording.bench)
    a_flowexport_set_life(cloud, recording)
    assert recording.calls
    for call in recording.calls:
        if call.action in ("sts:GetCallerIdentity", "sts:AssumeRole"):
            continue  # the member role's own trust, above; the operator's, its own policy
        for request in requirements(call, recording.organization_id):
            if call.service == "organizations":  # the management account's role, not a member's
                assert not allows(policy, request), "a member role needs no Organizations call"
                continue
            assert allows(policy, request), f"{json.dumps(request.__dict__)} is not allowed"
