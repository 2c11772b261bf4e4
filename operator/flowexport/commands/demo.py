"""`flowexport demo`: the whole product on loopback, no cloud account.

Starts moto (AWS), the PCE simulator (HTTPS, its own CA) and the Kubernetes API simulator,
installs the CRD, a namespace, the Secrets and a FlowExport, runs the real operator
(`flowexport run`) as a subprocess, writes synthetic flow records into the log group, and
shows the FlowExport's status and what the PCE received until done.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from flowexport.api.crd import build_crd
from flowexport.commands.common import EXIT_OK, EXIT_REJECTED, UsageError
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.sim.kube import KubeSimulator, kubeconfig
from flowexport.sim.moto import moto_server
from flowexport.sim.operator_process import OperatorProcess
from flowexport.sim.pce import PCESimConfig, PCESimulator
from flowexport.sim.serve import ServerThread
from flowexport.sim.tls import make_loopback_tls
from flowexport.sim.traffic import Traffic

NAMESPACE = "security"
NAME = "demo-vpc"
REGION = "us-east-1"
FE_PATH = f"/apis/flowexport.io/v1alpha1/namespaces/{NAMESPACE}/flowexports"
LOG_GROUP = f"/flowexport/{NAME}"
#: The demo's FlowExport keeps both, so rejected attempts show on the PCE too.
ACTIONS = frozenset({"ACCEPT", "REJECT"})
#: Events per PutLogEvents call (AWS allows 10,000; smaller keeps the emulator quick).
PUT_BATCH = 500


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "demo",
        help="run the whole product on loopback: AWS emulator, PCE and Kubernetes simulators",
        description=(
            "Start moto, the PCE simulator and the Kubernetes API simulator on loopback, apply "
            "a FlowExport, run the operator, write synthetic flow records into the log group "
            "and show status and what the PCE received. Exit 0 when every expected flow "
            "reached the PCE (or --until-flows of them), 1 with the reason otherwise."
        ),
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds to write records (default 30)"
    )
    parser.add_argument("--rate", type=int, default=200, help="records per second (default 200)")
    parser.add_argument(
        "--connections",
        type=int,
        default=150,
        help="distinct connections in the synthetic VPC (default 150)",
    )
    parser.add_argument(
        "--until-flows", type=int, metavar="N", help="exit 0 as soon as N flows reached the PCE"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="give up (exit 1) after this many seconds (default 180)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="skip deleting the FlowExport at the end"
    )
    parser.set_defaults(run=run)


@dataclass
class Demo:
    """The running stand-ins and what the demo has done to them."""

    kube: httpx.Client
    pce: PCESimulator
    pce_server: ServerThread
    moto: str
    workdir: Path
    traffic: Traffic | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    written: int = 0
    streams: set[str] = field(default_factory=set)

    def aws(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.moto,
            region_name=REGION,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        )

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
        flows: list[tuple[str, str, int, int]] = self.pce_server.call(
            lambda: list(self.pce.state.flows)
        )
        return set(flows)

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


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when the flows arrived, 1 otherwise."""
    if args.rate < 1 or args.duration <= 0 or args.connections < 1 or args.timeout <= 0:
        raise UsageError("--rate, --duration, --connections and --timeout must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="flowexport-demo-"))
    say(f"working directory {workdir} (operator log: {workdir / 'operator.log'})")
    try:
        with (
            _stack(workdir, args.connections) as demo,
            OperatorProcess(workdir / "kubeconfig", workdir / "operator.log", NAMESPACE) as op,
        ):
            say(f"operator running (pid {op.pid}), watching namespace {NAMESPACE}")
            return _play(args, demo)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None


def say(message: str) -> None:
    """One line of the demo's story."""
    print(f"[demo] {message}", flush=True)


@contextlib.contextmanager
def _stack(workdir: Path, connections: int) -> Iterator[Demo]:
    tls = make_loopback_tls("flowexport demo PCE")
    key, secret = f"api_{secrets.token_hex(6)}", secrets.token_urlsafe(18)
    pce = PCESimulator(PCESimConfig(api_keys={key: secret}))
    pce_server = ServerThread(pce.app, ssl_context=tls.server_context())
    kube_server = ServerThread(KubeSimulator().app)
    with moto_server() as moto_url:
        pce_url = pce_server.start()
        kube_url = kube_server.start()
        try:
            (workdir / "kubeconfig").write_text(yaml.safe_dump(kubeconfig(kube_url)))
            say(
                f"AWS emulator (moto) {moto_url}; PCE simulator {pce_url}; "
                f"Kubernetes API simulator {kube_url}"
            )
            with httpx.Client(base_url=kube_url, timeout=30) as kube:
                demo = Demo(kube, pce, pce_server, moto_url, workdir)
                demo.manifest = _install(demo, pce_url, key, secret, tls.ca_pem, connections)
                yield demo
        finally:
            kube_server.stop()
            pce_server.stop()


def _install(
    demo: Demo, pce_url: str, key: str, secret: str, ca_pem: str, connections: int
) -> dict[str, Any]:
    """The CRD, namespace, Secrets, VPC and delivery role; returns the FlowExport to apply."""
    kube = demo.kube
    _created(kube.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=build_crd()))
    _created(kube.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}}))
    for name, data in (
        ("pce-api-key", {"username": key, "password": secret}),
        ("pce-ca", {"ca.crt": ca_pem}),
        ("aws-keys", {"aws_access_key_id": "demo", "aws_secret_access_key": "demo"}),
    ):
        _created(
            kube.post(
                f"/api/v1/namespaces/{NAMESPACE}/secrets",
                json={"metadata": {"name": name}, "stringData": data},
            )
        )
    vpc = demo.aws("ec2").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    role = demo.aws("iam").create_role(
        RoleName="flow-logs-delivery", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    demo.traffic = Traffic(PIPELINE_FORMAT, vpc, connections=connections)
    say(f"installed the CRD, namespace {NAMESPACE} and Secrets; created {vpc} and {role}")
    return {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "FlowExport",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "aws": {
                "region": REGION,
                "vpcId": vpc,
                "logGroupName": LOG_GROUP,
                "deliverLogsRoleArn": role,
                "endpointUrl": demo.moto,
                "credentialsSecretRef": {"name": "aws-keys"},
            },
            "pce": {
                "url": pce_url,
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
        },
    }


def _created(answer: httpx.Response) -> None:
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"the Kubernetes simulator refused a set-up request: {answer.text}")


def _play(args: argparse.Namespace, demo: Demo) -> int:
    """Apply, feed records, report progress; then summarise and (unless told not to) delete."""
    _created(demo.kube.post(FE_PATH, json=demo.manifest))
    say(f"applied FlowExport {NAMESPACE}/{NAME}")
    started = time.monotonic()
    deadline = started + args.timeout
    if not _wait(deadline, lambda: demo.conditions().get("SubscriptionReady", ("",))[0] == "True"):
        return _fail(demo, "the subscription did not become ready")
    say(f"subscribed: flow log {demo.status().get('flowLogId')} -> log group {LOG_GROUP}")
    traffic = demo.traffic
    assert traffic is not None
    writing_until = started + args.duration
    last_report = 0.0
    while time.monotonic() < deadline:
        tick = time.monotonic()
        if tick < writing_until:
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
    ready = demo.conditions().get("Ready", ("Unknown", "Pending", ""))
    say(
        f"t={elapsed:5.1f}s Ready={ready[0]} ({ready[1]}) | records written {demo.written} | "
        f"read {counts.get('recordsRead', 0)} | flows uploaded {counts.get('flowsUploaded', 0)} "
        f"in {counts.get('batchesUploaded', 0)} batches | PCE has {len(demo.received())} flows"
    )


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
    if bogus:
        return _fail(demo, f"{len(bogus)} flows the traffic never had, e.g. {min(bogus)}")
    if len(received) < target:
        return _fail(demo, f"only {len(received)} of {target} flows reached the PCE in time")
    say(f"done: {len(received)} flows reached the PCE")
    return EXIT_OK


def _fail(demo: Demo, reason: str) -> int:
    conditions = demo.conditions()
    not_true = {t: c[1:] for t, c in conditions.items() if c[0] != "True"}
    print(
        f"flowexport demo: {reason}; conditions not True: {not_true or 'none'}; "
        f"operator log: {demo.workdir / 'operator.log'}",
        file=sys.stderr,
    )
    return EXIT_REJECTED


def _delete(demo: Demo, deadline: float) -> None:
    demo.kube.delete(f"{FE_PATH}/{NAME}")
    if _wait(deadline, lambda: demo.kube.get(f"{FE_PATH}/{NAME}").status_code == 404):
        flow_logs = demo.aws("ec2").describe_flow_logs()["FlowLogs"]
        groups = demo.aws("logs").describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]
        say(
            f"deleted the FlowExport; clean-up left {len(flow_logs)} flow logs and "
            f"{len(groups)} log groups behind"
        )
    else:
        say("the FlowExport was not deleted in time (its finalizer is still there)")
