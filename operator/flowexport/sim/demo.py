"""`flowexport demo`: the whole product on loopback, no cloud account.

Starts moto (AWS), the PCE simulator (HTTPS, its own CA) and the Kubernetes API simulator,
installs the CRD, a namespace, the Secrets and a FlowExport, runs the real operator
(`flowexport run`) as a subprocess, writes synthetic flow records into the log group, and
shows the FlowExport's status and what the PCE received until done. With `--source stream` the
FlowExport reads the log group through a subscription filter into a Kinesis stream (moto
delivers the filter's payloads to Kinesis), and the demo checks that the records came through
the stream's shards and that deletion removed the stream and the filter. With `--source s3`
the operator creates the VPC's flow log into a bucket, a queue and the bucket's notification;
the demo writes the records as AWS delivers them to S3 (gzip text objects, the header line
first, under `AWSLogs/{account}/vpcflowlogs/{region}/yyyy/mm/dd/`), moto announces each on
the queue, and the demo checks that they came through it and that deletion removed the queue
and the flow log.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from botocore.exceptions import ClientError

from flowexport.api.conditions import ConditionType
from flowexport.commands.common import EXIT_OK, EXIT_REJECTED, UsageError
from flowexport.commands.demo import STREAM_SHARDS
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.errors import Reason
from flowexport.secrets import SecretKind
from flowexport.sim.stack import REGION, LoopbackStack
from flowexport.sim.traffic import Traffic

NAMESPACE = "security"
NAME = "demo-vpc"
FE_PATH = f"/apis/flowexport.io/v1alpha1/namespaces/{NAMESPACE}/flowexports"
LOG_GROUP = f"/flowexport/{NAME}"
#: The demo's FlowExport keeps both, so rejected attempts show on the PCE too.
ACTIONS = frozenset({"ACCEPT", "REJECT"})
#: The App tags of the demo's instances, in turn.
APPS = ("shop", "billing", "search")
#: Events per PutLogEvents call (AWS allows 10,000; smaller keeps the emulator quick).
PUT_BATCH = 500
#: The bucket of `--source s3`.
BUCKET = "demo-flow-logs"
#: moto's account (the account of the keys the demo's objects are named after).
ACCOUNT = "123456789012"
#: The subscription role of `--source stream` (the name `iam/operator-policy.json` may pass).
STREAM_ROLE = "flowexport-cwl-to-kinesis"
#: Trust policy of the subscription role: CloudWatch Logs assumes it to write to Kinesis.
LOGS_TRUST = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
    '"Principal": {"Service": "logs.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'
)


@dataclass
class Demo:
    """The running stand-ins and what the demo has done to them."""

    stack: LoopbackStack
    source: str = "poll"
    traffic: Traffic | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    written: int = 0
    streams: set[str] = field(default_factory=set)
    objects: int = 0

    @property
    def kube(self) -> httpx.Client:
        return self.stack.kube

    def aws(self, service: str) -> Any:
        return self.stack.aws(service)

    def status(self) -> dict[str, Any]:
        answer = self.kube.get(f"{FE_PATH}/{NAME}")
        if answer.status_code == 404:
            return {}
        status: dict[str, Any] = answer.json().get("status") or {}
        return status

    def conditions(self) -> dict[str, tuple[str, str, str]]:
        return {
            c["type"]: (c["status"], c["reason"], c.get("message", ""))
            for c in self.status().get("conditions", [])
        }

    def received(self) -> set[tuple[str, str, int, int]]:
        return set(self.stack.pce.flows())

    def write(self, count: int, group: str) -> None:
        assert self.traffic is not None
        logs = self.aws("logs")
        by_stream: dict[str, list[dict[str, Any]]] = {}
        now = time.time()
        for record in self.traffic.records(count, int(now)):
            by_stream.setdefault(record.stream, []).append(
                {"timestamp": int(now * 1000), "message": record.message}
            )
        for stream, events in by_stream.items():
            if stream not in self.streams:
                logs.create_log_stream(logGroupName=group, logStreamName=stream)
                self.streams.add(stream)
            for start in range(0, len(events), PUT_BATCH):
                logs.put_log_events(
                    logGroupName=group,
                    logStreamName=stream,
                    logEvents=events[start : start + PUT_BATCH],
                )
            self.written += len(events)

    def put_object(self, count: int, flow_log: str) -> None:
        """One flow-log object of about `count` records, as AWS writes it to S3: gzip text,
        the header line naming the fields first, keyed by account, region, date, flow log and
        the 5-minute interval."""
        assert self.traffic is not None
        now = time.time()
        lines = [" ".join(PIPELINE_FORMAT.fields)]
        lines += [record.message for record in self.traffic.records(count, int(now))]
        stamp = datetime.fromtimestamp(now - now % 300, UTC)
        key = (
            f"AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}/{stamp:%Y/%m/%d}/"
            f"{ACCOUNT}_vpcflowlogs_{REGION}_{flow_log}_{stamp:%Y%m%dT%H%MZ}_"
            f"{self.objects:08x}.log.gz"
        )
        body = gzip.compress(("\n".join(lines) + "\n").encode())
        self.aws("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
        self.objects += 1
        self.written += len(lines) - 1


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when the flows arrived, 1 otherwise."""
    if args.rate < 1 or args.duration <= 0 or args.connections < 1 or args.timeout <= 0:
        raise UsageError("--rate, --duration, --connections and --timeout must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="flowexport-demo-"))
    say(f"working directory {workdir} (operator log: {workdir / 'operator.log'})")
    try:
        with LoopbackStack.running(workdir) as stack:
            say(
                f"AWS emulator (moto) {stack.moto_url}; PCE simulator {stack.pce.url}; "
                f"Kubernetes API simulator {stack.kube_url}"
            )
            demo = Demo(stack, args.source)
            demo.manifest = _install(demo, args.connections)
            with stack.operator(NAMESPACE) as op:
                say(f"operator running (pid {op.pid}), watching namespace {NAMESPACE}")
                return _play(args, demo)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None


def say(message: str) -> None:
    """One line of the demo's story."""
    print(f"[demo] {message}", flush=True)


def _install(demo: Demo, connections: int) -> dict[str, Any]:
    """The CRD, namespace, Secrets, VPC and delivery role (and in mode stream the
    subscription role); returns the FlowExport to apply."""
    stack = demo.stack
    stack.install(
        NAMESPACE,
        {
            "pce-api-key": (SecretKind.PCE_CREDENTIALS, stack.pce.credentials()),
            "pce-ca": (SecretKind.CA_BUNDLE, {"ca.crt": stack.pce.ca_pem}),
            "aws-keys": (SecretKind.AWS_CREDENTIALS, stack.aws_credentials()),
        },
    )
    vpc, role = stack.create_vpc_and_role("flow-logs-delivery")
    demo.traffic = Traffic(PIPELINE_FORMAT, vpc, connections=connections)
    instances = _launch_instances(demo, vpc, demo.traffic)
    say(
        f"installed the CRD, namespace {NAMESPACE} and Secrets; created {vpc}, {instances} "
        f"tagged instances and {role}"
    )
    manifest: dict[str, Any] = {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "FlowExport",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "aws": {
                "region": REGION,
                "vpcId": vpc,
                "logGroupName": LOG_GROUP,
                "deliverLogsRoleArn": role,
                "endpointUrl": stack.moto_url,
                "credentialsSecretRef": {"name": "aws-keys"},
            },
            "pce": {
                "url": stack.pce.url,
                "orgId": 1,
                "credentialsSecretRef": {"name": "pce-api-key"},
                "caBundleSecretRef": {"name": "pce-ca"},
            },
            "ingestion": {
                "actions": sorted(ACTIONS),
                "startFrom": "earliest",
                "pollIntervalSeconds": 2,
                "aggregationWindowSeconds": 60,
            },
            "workloads": {
                "mode": "Sync",
                "labels": {"env": "demo", "loc": REGION},
                "labelsFromTags": {"App": "app", "Role": "role"},
            },
        },
    }
    if demo.source == "s3":
        demo.aws("s3").create_bucket(Bucket=BUCKET)
        say(f"source s3: created bucket {BUCKET} (the operator makes the rest)")
        aws = manifest["spec"]["aws"]
        del aws["logGroupName"], aws["deliverLogsRoleArn"]
        manifest["spec"]["source"] = {"mode": "s3", "s3": {"bucket": BUCKET}}
    if demo.source == "stream":
        answer = demo.aws("iam").create_role(
            RoleName=STREAM_ROLE, AssumeRolePolicyDocument=LOGS_TRUST
        )
        stream_role = str(answer["Role"]["Arn"])
        say(f"source stream: created the subscription role {stream_role}")
        manifest["spec"]["source"] = {
            "mode": "stream",
            "stream": {
                "subscriptionRoleArn": stream_role,
                "shardCount": STREAM_SHARDS,
                "readIntervalMillis": 500,
            },
        }
    return manifest


def _launch_instances(demo: Demo, vpc: str, traffic: Traffic) -> int:
    """An instance per host of the traffic, at its address, tagged Name, App and Role (what
    the FlowExport's workloads are named and labelled from); how many."""
    ec2 = demo.aws("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    hosts = [("client", traffic.clients), ("server", traffic.servers)]
    for role, group in hosts:
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{group[0].ip.rsplit('.', 1)[0]}.0/24")
        for index, host in enumerate(group):
            tags = {"Name": f"{role}-{index + 1}", "App": APPS[index % len(APPS)], "Role": role}
            ec2.run_instances(
                ImageId=image,
                MinCount=1,
                MaxCount=1,
                SubnetId=subnet["Subnet"]["SubnetId"],
                PrivateIpAddress=host.ip,
                TagSpecifications=[
                    {
                        "ResourceType": "instance",
                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                    }
                ],
            )
    return sum(len(group) for _, group in hosts)


def _play(args: argparse.Namespace, demo: Demo) -> int:
    """Apply, feed records, report progress; then summarise and (unless told not to) delete."""
    demo.stack.create(FE_PATH, demo.manifest)
    say(f"applied FlowExport {NAMESPACE}/{NAME}")
    started = time.monotonic()
    deadline = started + args.timeout
    if not _wait(
        deadline,
        lambda: demo.conditions().get(ConditionType.SUBSCRIPTION_READY, ("",))[0] == "True",
    ):
        return _fail(demo, "the subscription did not become ready")
    flow_log = str(demo.status().get("flowLogId"))
    if demo.source == "s3":
        if not _wait(deadline, lambda: demo.status().get("source", {}).get("mode") == "s3"):
            return _fail(demo, "the worker did not start reading the queue")
        source = demo.status()["source"]
        say(
            f"source s3: flow log {flow_log} -> bucket {BUCKET}; its notifications -> queue "
            f"{source.get('queueUrl')}; the operator reads the objects they announce"
        )
    else:
        say(f"subscribed: flow log {flow_log} -> log group {LOG_GROUP}")
    if demo.source == "stream":
        if not _wait(deadline, lambda: demo.status().get("source", {}).get("mode") == "stream"):
            return _fail(demo, "the worker did not start reading the Kinesis stream")
        source = demo.status()["source"]
        say(
            f"source stream: subscription filter {source.get('subscriptionFilter')} -> "
            f"Kinesis stream {source.get('streamArn')}; the operator reads its shards"
        )
    traffic = demo.traffic
    assert traffic is not None
    writing_until = started + args.duration
    last_report = 0.0
    while time.monotonic() < deadline:
        tick = time.monotonic()
        if tick < writing_until:
            if demo.source == "s3":
                demo.put_object(args.rate, flow_log)
            else:
                demo.write(args.rate, LOG_GROUP)
        if tick - last_report >= 2.0:
            _report(demo, tick - started)
            last_report = tick
        if _finished(args, demo, tick >= writing_until):
            break
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    _report(demo, time.monotonic() - started)
    expected = traffic.expected_flows(ACTIONS)
    target = args.until_flows if args.until_flows is not None else len(expected)
    code = _summary(demo, expected, demo.received(), target)
    if not args.keep:
        _delete(demo, time.monotonic() + 60)
    return code


def _finished(args: argparse.Namespace, demo: Demo, writing_done: bool) -> bool:
    """--until-flows N reached; else all written, all read and every expected flow received."""
    received = demo.received()
    if args.until_flows is not None:
        return len(received) >= int(args.until_flows)
    if not writing_done or demo.traffic is None:
        return False
    read = int(demo.status().get("counts", {}).get("recordsRead", 0))
    return read >= demo.written and demo.traffic.expected_flows(ACTIONS) <= received


def _wait(deadline: float, check: Callable[[], bool]) -> bool:
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def _report(demo: Demo, elapsed: float) -> None:
    status = demo.status()
    counts = status.get("counts", {})
    ready = demo.conditions().get(ConditionType.READY, ("Unknown", Reason.PENDING, ""))
    via = ""
    if demo.source == "stream":
        shards = status.get("shards") or {}
        via = f" ({_shard_reads(shards)} via {len(shards)} shards)"
    if demo.source == "s3":
        objects = (status.get("source") or {}).get("objectsDone", 0)
        via = f" (from {objects} of {demo.objects} objects)"
    say(
        f"t={elapsed:5.1f}s Ready={ready[0]} ({ready[1]}) | records written {demo.written} | "
        f"read {counts.get('recordsRead', 0)}{via} | flows uploaded "
        f"{counts.get('flowsUploaded', 0)} in {counts.get('batchesUploaded', 0)} batches | "
        f"PCE has {len(demo.received())} flows"
    )


def _shard_reads(shards: dict[str, Any]) -> int:
    """Records read through the stream's shards (status.shards[*].counts.recordsRead)."""
    return sum(int((e.get("counts") or {}).get("recordsRead") or 0) for e in shards.values())


def _summary(
    demo: Demo,
    expected: set[tuple[str, str, int, int]],
    received: set[tuple[str, str, int, int]],
    target: int,
) -> int:
    status = demo.status()
    counts = status.get("counts", {})
    say("summary")
    for type_, (state, reason, message) in demo.conditions().items():
        print(f"  {type_:<18} {state:<7} {reason}: {message}")
    skipped = counts.get("recordsSkipped", {})
    print(
        f"  records written {demo.written}, read {counts.get('recordsRead', 0)}, "
        f"skipped {sum(skipped.values())} {skipped}"
    )
    print(
        f"  flows uploaded {counts.get('flowsUploaded', 0)}, rejected by the PCE "
        f"{counts.get('flowsFailed', 0)}, lag {status.get('lagSeconds')} s"
    )
    bogus = received - expected
    print(
        f"  the PCE has {len(received)} distinct flows; {len(expected & received)} of "
        f"{len(expected)} expected; {len(bogus)} unexpected (e.g. return legs)"
    )
    for flow in sorted(received)[:5]:
        print(f"    {flow[0]} -> {flow[1]} port {flow[2]} proto {flow[3]}")
    workloads = demo.stack.pce.workloads()
    by_address = {i["address"]: w for w in workloads for i in w["interfaces"]}
    workloads_status = status.get("workloads", {})
    print(
        f"  the PCE has {len(workloads)} workloads (created {workloads_status.get('created', 0)}, "
        f"updated {workloads_status.get('updated', 0)}), labelled from the instances' tags:"
    )
    for workload in sorted(workloads, key=lambda w: str(w["name"]))[:3]:
        addresses = ", ".join(i["address"] for i in workload["interfaces"])
        print(f"    {workload['name']} {addresses} [{', '.join(workload['label_texts'])}]")
    off_map = {f for f in received if f[0] not in by_address or f[1] not in by_address}
    print(f"  flows on the map (a workload at both ends): {len(received) - len(off_map)}")
    through_shards = _source_summary(demo, status, len(received))
    if bogus:
        return _fail(demo, f"{len(bogus)} flows the traffic never had, e.g. {min(bogus)}")
    if len(received) < target:
        return _fail(demo, f"only {len(received)} of {target} flows reached the PCE in time")
    if off_map:
        return _fail(demo, f"{len(off_map)} flows lack a workload, e.g. {min(off_map)}")
    if demo.source == "s3" and received and not through_shards:
        return _fail(
            demo,
            f"{len(received)} flows reached the PCE but status.source counts no object done, "
            "so they did not come through the queue",
        )
    if demo.source == "stream" and received and not through_shards:
        return _fail(
            demo,
            f"{len(received)} flows reached the PCE but no shard of the Kinesis stream read a "
            "record (status.shards), so they did not come through the stream",
        )
    say(f"done: {len(received)} flows reached the PCE")
    return EXIT_OK


def _source_summary(demo: Demo, status: dict[str, Any], distinct: int) -> int:
    """Print where the records were read from; returns the records read through shards (mode
    s3: the objects done)."""
    if demo.source == "s3":
        source = status.get("source") or {}
        done = int(source.get("objectsDone") or 0)
        print(
            f"  source s3: bucket {source.get('bucket')}, queue {source.get('queueUrl')}: "
            f"{done} of the {demo.objects} objects written done, "
            f"{source.get('objectsFailed', 0)} failed, {source.get('objectsSkipped', 0)} "
            "announcements skipped (e.g. s3:TestEvent)"
        )
        return done
    if demo.source != "stream":
        print("  source poll: the log group read with FilterLogEvents")
        return 0
    source = status.get("source") or {}
    shards = status.get("shards") or {}
    through = _shard_reads(shards)
    print(
        f"  source {source.get('mode')}: Kinesis stream {source.get('streamArn')} through "
        f"subscription filter {source.get('subscriptionFilter')}"
    )
    print(
        f"  {len(shards)} shards read {through} of the {demo.written} records written "
        f"(the log group itself {int(status.get('counts', {}).get('recordsRead', 0)) - through})"
    )
    for shard_id, entry in sorted(shards.items()):
        counts = entry.get("counts") or {}
        behind = entry.get("millisBehindLatest")
        print(
            f"    {shard_id}: read {counts.get('recordsRead', 0)}, flows uploaded "
            f"{counts.get('flowsUploaded', 0)} in {counts.get('batchesUploaded', 0)} batches"
            + (f", {behind} ms behind" if behind is not None else "")
        )
    # Each shard aggregates its own records: a connection read on several shards is reported
    # by each (moto puts every PutLogEvents payload on a random shard; AWS with distribution
    # ByLogStream keeps a network interface on one, but a connection has two).
    print(
        f"  the PCE received {len(demo.stack.pce.flows())} flow reports for these {distinct} "
        "flows: each shard aggregates its own records, so a connection read on several shards "
        "is reported once by each"
    )
    return through


def _fail(demo: Demo, reason: str) -> int:
    conditions = demo.conditions()
    not_true = {t: c[1:] for t, c in conditions.items() if c[0] != "True"}
    print(
        f"flowexport demo: {reason}; conditions not True: {not_true or 'none'}; "
        f"operator log: {demo.stack.workdir / 'operator.log'}",
        file=sys.stderr,
    )
    return EXIT_REJECTED


def _delete(demo: Demo, deadline: float) -> None:
    demo.kube.delete(f"{FE_PATH}/{NAME}")
    if _wait(deadline, lambda: demo.kube.get(f"{FE_PATH}/{NAME}").status_code == 404):
        flow_logs = demo.aws("ec2").describe_flow_logs()["FlowLogs"]
        groups = demo.aws("logs").describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]
        workloads = demo.stack.pce.workloads()
        say(
            f"deleted the FlowExport; clean-up left {len(flow_logs)} flow logs, "
            f"{len(groups)} log groups and {len(workloads)} workloads behind"
        )
        if demo.source == "s3":
            queues = demo.aws("sqs").list_queues(QueueNamePrefix="flowexport-")
            notifications = demo.aws("s3").get_bucket_notification_configuration(Bucket=BUCKET)
            say(
                f"source s3: clean-up left {len(queues.get('QueueUrls') or [])} queues and "
                f"{len(notifications.get('QueueConfigurations') or [])} bucket notifications "
                f"behind (the bucket {BUCKET} and its objects are the user's)"
            )
        if demo.source == "stream":
            streams = demo.aws("kinesis").list_streams()["StreamNames"]
            say(
                f"source stream: clean-up left {len(streams)} Kinesis streams and "
                f"{len(_subscription_filters(demo))} subscription filters behind"
            )
    else:
        say("the FlowExport was not deleted in time (its finalizer is still there)")


def _subscription_filters(demo: Demo) -> list[dict[str, Any]]:
    """The log group's subscription filters (none once the log group is gone)."""
    try:
        found = demo.aws("logs").describe_subscription_filters(logGroupName=LOG_GROUP)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return []
        raise
    return list(found["subscriptionFilters"])
