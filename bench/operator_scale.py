"""The operator at N FlowExports (run as `python bench/operator.py`): the real
`flowexport run` against the Kubernetes API simulator, moto (behind a counting proxy) and the
PCE simulator, all on loopback.

    python bench/operator.py [--n 10 50 100] [--idle-seconds 60] [--json]
                             [--baseline-source DIR]

Per N, in a fresh stack: N FlowExports in one namespace, each with its own VPC and log group
(the spec a platform team would write: default poll of 30 s), all applied at once. Reports

- ready_s: from the first apply until every FlowExport has Ready=True in the API;
- peak_rss_mb: the operator's resident high-water mark (VmHWM) over the whole run;
- idle_cpu_pct: its CPU (user + system, % of one core) over `--idle-seconds` once all are
  Ready and a settle period has passed;
- idle_kube_rps / idle_aws_rps: requests it made to the Kubernetes API and to AWS per second
  in that idle window (watch streams count once, when opened);
- liveness_worst_s: the slowest answer of its liveness endpoint, probed every 0.5 s from start
  to end (`liveness_failed`: probes not answered within 5 s, a kubelet's default timeout);
- creates: create-handler runs (one per FlowExport is right; an operator older than this
  benchmark does not log them), handler_runs: create/update/resume handler runs kopf logged
  as succeeded (one per FlowExport is right); pipelines_restarted: ingestion
  pipelines stopped before the operator was (a worker torn down and rebuilt).
- with `--workloads`: each FlowExport syncs workloads (5 tagged interfaces per VPC, all on one
  PCE org, so their bulk operations queue on one lock); Ready then includes the first sync, and
  `workloads` is how many the PCE holds at the end.

`--baseline-source DIR` runs the operator from another checkout's `operator/` directory (e.g.
a `git worktree` of an older commit) in the same process, for before/after ratios on a shared
machine. The simulators run in this process's threads; only the operator is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from flowexport.secrets import SecretKind
from flowexport.sim.awsfaults import AWSFaultProxy
from flowexport.sim.serve import ServerThread
from flowexport.sim.stack import LoopbackStack

NAMESPACE = "security"
FLOWEXPORTS = f"/apis/flowexport.io/v1alpha1/namespaces/{NAMESPACE}/flowexports"
PROBE_EVERY = 0.5
PROBE_TIMEOUT = 60.0
KUBELET_TIMEOUT = 5.0
SETTLE_SECONDS = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    n: int
    ready_s: float | None
    peak_rss_mb: float
    idle_cpu_pct: float
    idle_kube_rps: float
    idle_aws_rps: float
    liveness_worst_s: float
    liveness_failed: int
    creates: int
    handler_runs: int
    pipelines_restarted: int
    source: str
    workloads: int | None = None


class Prober(threading.Thread):
    """Probes the liveness endpoint every PROBE_EVERY seconds, keeping the worst answer."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.worst = 0.0
        self.failed = 0
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=PROBE_TIMEOUT) as client:
            while not self.done.is_set():
                started = time.monotonic()
                try:
                    client.get(self.url)
                    took = time.monotonic() - started
                except httpx.HTTPError:
                    took = PROBE_TIMEOUT
                self.worst = max(self.worst, took)
                self.failed += took > KUBELET_TIMEOUT
                self.done.wait(max(0.0, PROBE_EVERY - took))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


#: Network interfaces per VPC with --workloads (each a workload of its own).
ENIS_PER_VPC = 5


def tagged_interfaces(ec2: Any, vpc: str, cidr: str) -> None:
    """A subnet of the VPC and ENIS_PER_VPC tagged network interfaces in it (the VPCs' CIDRs
    differ: an address held by another FlowExport's workload would be left to it)."""
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr)["Subnet"]["SubnetId"]
    for i in range(ENIS_PER_VPC):
        ec2.create_network_interface(
            SubnetId=subnet,
            TagSpecifications=[
                {
                    "ResourceType": "network-interface",
                    "Tags": [
                        {"Key": "App", "Value": f"app{i % 3}"},
                        {"Key": "Name", "Value": f"n{i}"},
                    ],
                }
            ],
        )


def flowexport(
    stack: LoopbackStack, i: int, vpc: str, role: str, aws_url: str, workloads: bool = False
) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if workloads:
        extra["workloads"] = {
            "mode": "Sync",
            "labels": {"env": "bench"},
            "labelsFromTags": {"App": "app"},
        }
    return {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "FlowExport",
        "metadata": {"name": f"vpc-{i:03d}", "namespace": NAMESPACE},
        "spec": {
            "aws": {
                "region": stack.region,
                "vpcId": vpc,
                "logGroupName": f"/flowexport/vpc-{i:03d}",
                "deliverLogsRoleArn": role,
                "endpointUrl": aws_url,
                "credentialsSecretRef": {"name": "aws-keys"},
            },
            "pce": {
                "url": stack.pce.url,
                "orgId": 1,
                "credentialsSecretRef": {"name": "pce-api-key"},
                "caBundleSecretRef": {"name": "pce-ca"},
            },
            **extra,
        },
    }


def ready_count(stack: LoopbackStack) -> int:
    count = 0
    for obj in stack.sim.stored("flowexport.io", "flowexports"):
        for c in obj.get("status", {}).get("conditions", []):
            count += c["type"] == "Ready" and c["status"] == "True"
    return count


def run_one(
    n: int,
    idle_seconds: float,
    source: str | None,
    timeout: float,
    keep_log: str | None = None,
    profile: str | None = None,
    workloads: bool = False,
) -> Result:
    with tempfile.TemporaryDirectory() as tmp, LoopbackStack.running(Path(tmp)) as stack:
        proxy = AWSFaultProxy(stack.moto_url)
        with ServerThread(proxy.app) as aws_url:
            stack.install(
                NAMESPACE,
                {
                    "pce-api-key": (SecretKind.PCE_CREDENTIALS, stack.pce.credentials()),
                    "pce-ca": (SecretKind.CA_BUNDLE, {"ca.crt": stack.pce.ca_pem}),
                    "aws-keys": (SecretKind.AWS_CREDENTIALS, stack.aws_credentials()),
                },
            )
            ec2 = stack.aws("ec2")
            _, role = stack.create_vpc_and_role("flow-logs-delivery")
            vpcs = [
                ec2.create_vpc(CidrBlock=f"10.{i % 256}.0.0/16")["Vpc"]["VpcId"] for i in range(n)
            ]
            if workloads:
                for i, vpc in enumerate(vpcs):
                    tagged_interfaces(ec2, vpc, f"10.{i % 256}.0.0/24")
            env = {"PYTHONPATH": source} if source else {}
            operator = stack.operator(NAMESPACE, ["--verbose"])
            operator.env.update(env)
            operator.start(timeout=120)
            pid = operator.pid
            assert pid is not None
            prober = Prober(f"http://127.0.0.1:{operator.port}/healthz")
            prober.start()
            started = time.monotonic()
            for i, vpc in enumerate(vpcs):
                stack.create(FLOWEXPORTS, flowexport(stack, i, vpc, role, aws_url, workloads))
            ready_s: float | None = None
            while time.monotonic() - started < timeout:
                if ready_count(stack) == n:
                    ready_s = time.monotonic() - started
                    break
                time.sleep(0.25)
            time.sleep(SETTLE_SECONDS)
            kube_before, aws_before = len(stack.sim.requests), len(proxy.hits)
            cpu_before, idle_started = cpu_seconds(pid), time.monotonic()
            if profile:
                # py-spy (pip install py-spy) samples the idle operator: collapsed stacks
                subprocess.run(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(pid),
                        "-d",
                        str(int(idle_seconds)),
                        "-f",
                        "raw",
                        "-o",
                        profile,
                        "-r",
                        "100",
                        "--gil",  # only threads holding the GIL: where the CPU goes
                    ],
                    capture_output=True,
                    check=False,
                )
            time.sleep(max(0.0, idle_seconds - (time.monotonic() - idle_started)))
            idle = time.monotonic() - idle_started
            cpu = cpu_seconds(pid) - cpu_before
            kube = len(stack.sim.requests) - kube_before
            aws = len(proxy.hits) - aws_before
            rss = peak_rss_mb(pid)
            prober.done.set()
            prober.join()
            stack_workloads = stack.pce.workloads()
            log = operator.log.read_text(errors="replace")
            operator.stop()
            if keep_log:
                shutil.copy(operator.log, keep_log)
    return Result(
        n=n,
        ready_s=None if ready_s is None else round(ready_s, 1),
        peak_rss_mb=round(rss),
        idle_cpu_pct=round(100 * cpu / idle, 2),
        idle_kube_rps=round(kube / idle, 2),
        idle_aws_rps=round(aws / idle, 2),
        liveness_worst_s=round(prober.worst, 3),
        liveness_failed=prober.failed,
        creates=log.count("reconcile on create"),
        handler_runs=log.count("Handler 'reconcile_on_change' succeeded"),
        pipelines_restarted=log.count("ingestion pipeline stopped"),
        source=source or "this checkout",
        workloads=len(stack_workloads) if workloads else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting for Ready")
    parser.add_argument("--baseline-source", help="another checkout's operator/ directory")
    parser.add_argument("--keep-log", help="copy the operator's log of the last run here")
    parser.add_argument(
        "--profile", help="sample the idle operator with py-spy into this file (collapsed)"
    )
    parser.add_argument(
        "--workloads",
        action="store_true",
        help=f"spec.workloads Sync, {ENIS_PER_VPC} tagged interfaces per VPC",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sources = [args.baseline_source, None] if args.baseline_source else [None]
    results = []
    for n in args.n:
        for source in sources:
            result = run_one(
                n,
                args.idle_seconds,
                source,
                args.timeout,
                args.keep_log,
                args.profile,
                args.workloads,
            )
            results.append(result)
            if not args.json:
                print(json.dumps(asdict(result)), flush=True)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
