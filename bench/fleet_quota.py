"""N FlowExports of one account in poll mode against AWS's FilterLogEvents quota (issue 27).

    python bench/fleet_quota.py [--n 300] [--rate 5] [--baseline-source DIR] [--json]

The real `flowexport run` against the Kubernetes API simulator, moto behind the throttling
proxy (`flowexport.sim.awsthrottle`: FilterLogEvents held to `--rate` requests/s per account
and region, burst 5, answering `ThrottlingException` over it) and the PCE simulator, all on
loopback. N FlowExports in one namespace, one account and region, each with its own VPC and
log group, default poll (30 s), all applied at once. Per variant, in a fresh stack:

- ready_s: from the first apply until every FlowExport has Ready=True (target <= 60 s);
  ready_at_timeout: how many were Ready when that wait ended;
- batch_s: a batch of `--batch` connections written to every log group at once; from then
  until every FlowExport's status counts them uploaded (target <= 180 s);
- filter_calls, filter_throttled_pct: FilterLogEvents requests the proxy saw over the whole
  run and the share it throttled (target <= 5 %);
- ready_fell_back: FlowExports whose Ready went from True to anything else (target 0);
- peak_rss_mb: the operator's resident high-water mark (target <= 400 MB);
- liveness_worst_s: the slowest answer of its liveness endpoint, probed every 0.5 s from a
  process of its own, as the kubelet does (target <= 1 s);
- effective_poll_s: status.source.effectivePollIntervalSeconds over the FlowExports at the
  end (min, median, max; absent on an operator without it).

Variants: `budget` (this checkout, the shared budget at `--rate`), and either `baseline`
(`--baseline-source DIR`: another checkout's `operator/` directory, e.g. main's, run in the
same process for a fair ratio) or `no-budget` (this checkout with
`--filter-log-events-rps 0 --aws-reads-rps 0`: each FlowExport keeps only its own
apiRequestsPerSecond, as before the budget); a variant ending in `-unthrottled` (e.g.
`baseline-unthrottled`) runs with no quota at the proxy, for what the machine itself allows.
Run it alone on the machine: wrap it in
`flock /tmp/flowexport-bench.lock`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.secrets import SecretKind
from flowexport.sim.awsthrottle import AWSThrottleProxy
from flowexport.sim.serve import ServerThread
from flowexport.sim.stack import LoopbackStack
from operator_scale import KUBELET_TIMEOUT, PROBE_EVERY, PROBE_TIMEOUT, cpu_seconds, peak_rss_mb

NAMESPACE = "security"
FLOWEXPORTS = f"/apis/flowexport.io/v1alpha1/namespaces/{NAMESPACE}/flowexports"
WATCH_EVERY = 0.5
#: The proxy's burst for FilterLogEvents (AWS documents none; 5 = one second's worth).
BURST = 5.0


@dataclass
class Result:
    variant: str
    n: int
    rate: float
    ready_s: float | None
    ready_at_timeout: int
    batch_s: float | None
    uploaded: int
    filter_calls: int
    filter_throttled: int
    filter_throttled_pct: float
    ready_fell_back: int
    peak_rss_mb: float
    liveness_worst_s: float
    liveness_failed: int
    effective_poll_s: list[int] | None
    #: CPU seconds over the run: the operator's, and this process's (the Kubernetes, PCE
    #: and throttling simulators and the Ready watch share it).
    operator_cpu_s: float = 0.0
    harness_cpu_s: float = 0.0
    #: Requests the Kubernetes simulator answered over the run, by method.
    kube_requests: dict[str, int] = field(default_factory=dict)
    other_calls: dict[str, int] = field(default_factory=dict)
    source: str = "this checkout"


#: The liveness prober, in a process of its own (as the kubelet is): a prober thread in this
#: process would count its own waits for the GIL, which the simulators hold most of the time.
PROBE_SCRIPT = """
import sys, time, httpx
url, every, timeout, kubelet = sys.argv[1], *map(float, sys.argv[2:])
worst, failed = 0.0, 0
with httpx.Client(timeout=timeout) as client:
    while True:
        started = time.monotonic()
        try:
            client.get(url)
            took = time.monotonic() - started
        except httpx.HTTPError:
            took = timeout
        worst, failed = max(worst, took), failed + (took > kubelet)
        print(worst, failed, flush=True)
        time.sleep(max(0.0, every - took))
"""


class Prober:
    """Probes the liveness endpoint every PROBE_EVERY seconds from a child process, keeping
    the worst answer (`stop` reads it)."""

    def __init__(self, url: str) -> None:
        self.worst = 0.0
        self.failed = 0
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROBE_SCRIPT, url]
            + [str(v) for v in (PROBE_EVERY, PROBE_TIMEOUT, KUBELET_TIMEOUT)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> None:
        """Stop probing; `worst` and `failed` are then the run's."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        lines = out.split()
        if len(lines) >= 2:
            self.worst, self.failed = float(lines[-2]), int(lines[-1])


class ReadyWatch(threading.Thread):
    """Reads every FlowExport's Ready and counts every True -> not True, and their uploads."""

    def __init__(self, stack: LoopbackStack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.ready: dict[str, bool] = {}
        self.fell_back: set[str] = set()
        self.uploaded: dict[str, int] = {}
        self.effective: dict[str, int] = {}

    def run(self) -> None:
        while not self.done.is_set():
            self.look()
            self.done.wait(WATCH_EVERY)

    def look(self) -> None:
        # The stored objects as they are, not `sim.stored`'s deep copy of all N every half
        # second: this thread shares the process (and its GIL) with the simulators. A stored
        # object is replaced on each write, never changed in place, so reading it is safe.
        bucket = self.stack.sim.store.objects.get(("flowexport.io", "flowexports"), {})
        for obj in list(bucket.values()):
            name = obj["metadata"]["name"]
            status = obj.get("status") or {}
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
            )
            with self.lock:
                if self.ready.get(name) and not ready:
                    self.fell_back.add(name)
                self.ready[name] = ready
                self.uploaded[name] = int((status.get("counts") or {}).get("flowsUploaded", 0))
                effective = (status.get("source") or {}).get("effectivePollIntervalSeconds")
                if effective is not None:
                    self.effective[name] = int(effective)

    def count_ready(self) -> int:
        with self.lock:
            return sum(self.ready.values())

    def count_uploaded(self, at_least: int) -> int:
        with self.lock:
            return sum(n >= at_least for n in self.uploaded.values())


def flowexport(stack: LoopbackStack, i: int, vpc: str, role: str, aws_url: str) -> dict[str, Any]:
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
        },
    }


def flow_line(i: int, j: int, now_s: int) -> str:
    """Connection j of FlowExport i, in the flow log's format (client address unique)."""
    values = {
        "srcaddr": f"10.{100 + j}.{i // 256}.{i % 256}",
        "dstaddr": f"10.{i // 256 % 256}.{i % 256}.9",
        "srcport": str(40000 + j),
        "dstport": "443",
        "protocol": "6",
        "action": "ACCEPT",
        "log-status": "OK",
        "tcp-flags": "2",
        "version": "5",
        "account-id": "123456789012",
        "interface-id": "eni-0a1b2c3d4e5f60718",
        "packets": "10",
        "bytes": "1500",
        "start": str(now_s - 60),
        "end": str(now_s),
        "type": "IPv4",
    }
    return " ".join(values.get(name, "-") for name in PIPELINE_FORMAT.fields)


def write_batch(logs: Any, n: int, batch: int) -> None:
    """`batch` connections into every FlowExport's log group (written to moto directly: the
    quota is the operator's, not the writer's)."""
    now = int(time.time())
    for i in range(n):
        group = f"/flowexport/vpc-{i:03d}"
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_stream(logGroupName=group, logStreamName="eni-a-all")
        events = [{"timestamp": now * 1000, "message": flow_line(i, j, now)} for j in range(batch)]
        logs.put_log_events(logGroupName=group, logStreamName="eni-a-all", logEvents=events)


def run_one(
    variant: str,
    n: int,
    rate: float,
    batch: int,
    source: str | None,
    timeout: float,
    keep_log: str | None,
) -> Result:
    with tempfile.TemporaryDirectory() as tmp, LoopbackStack.running(Path(tmp)) as stack:
        quotas = {} if variant.endswith("unthrottled") else {"FilterLogEvents": (rate, BURST)}
        proxy = AWSThrottleProxy(stack.moto_url, quotas)
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
            args: list[str] = []
            if variant.startswith("budget-no-reads"):
                args = ["--filter-log-events-rps", str(rate), "--aws-reads-rps", "0"]
            elif variant.startswith("budget"):
                args = ["--filter-log-events-rps", str(rate)]
            elif variant.startswith("no-budget"):
                args = ["--filter-log-events-rps", "0", "--aws-reads-rps", "0"]
            operator = stack.operator(NAMESPACE, args)
            if source:
                operator.env.update({"PYTHONPATH": source})
            operator.start(timeout=120)
            pid = operator.pid
            assert pid is not None
            prober = Prober(f"http://127.0.0.1:{operator.port}/healthz")
            watch = ReadyWatch(stack)
            watch.start()
            proxy.reset_stats()
            seen = len(stack.sim.requests)
            harness_cpu = time.process_time()
            started = time.monotonic()
            for i, vpc in enumerate(vpcs):
                stack.create(FLOWEXPORTS, flowexport(stack, i, vpc, role, aws_url))
            ready_s = _until(lambda: watch.count_ready() == n, started, timeout)
            ready_at_timeout = watch.count_ready()
            # The batch is written even when not all became Ready (the baseline): how many
            # uploaded it is part of the answer.
            written = time.monotonic()
            write_batch(stack.aws("logs"), n, batch)
            batch_s = _until(lambda: watch.count_uploaded(batch) == n, written, timeout)
            watch.look()
            stats = proxy.stats()
            rss = peak_rss_mb(pid)
            operator_cpu = cpu_seconds(pid)
            harness_cpu = time.process_time() - harness_cpu
            methods: dict[str, int] = {}
            for entry in list(stack.sim.requests)[seen:]:
                methods[entry["method"]] = methods.get(entry["method"], 0) + 1
            prober.stop()
            watch.done.set()
            watch.join()
            if keep_log:
                kept = Path(keep_log)
                kept = kept.with_name(f"{kept.stem}-{variant}{kept.suffix}")
                kept.write_bytes(operator.log.read_bytes())
            operator.stop()
    filtered = stats.get("FilterLogEvents")
    calls = filtered.calls if filtered else 0
    throttled = filtered.throttled if filtered else 0
    effective = sorted(watch.effective.values())
    return Result(
        variant=variant,
        n=n,
        rate=rate,
        ready_s=ready_s,
        ready_at_timeout=ready_at_timeout,
        batch_s=batch_s,
        uploaded=watch.count_uploaded(batch),
        filter_calls=calls,
        filter_throttled=throttled,
        filter_throttled_pct=round(100 * throttled / calls, 1) if calls else 0.0,
        ready_fell_back=len(watch.fell_back),
        peak_rss_mb=round(rss),
        liveness_worst_s=round(prober.worst, 3),
        liveness_failed=prober.failed,
        effective_poll_s=[effective[0], int(statistics.median(effective)), effective[-1]]
        if effective
        else None,
        operator_cpu_s=round(operator_cpu, 1),
        harness_cpu_s=round(harness_cpu, 1),
        kube_requests=dict(sorted(methods.items())),
        other_calls={k: v.calls for k, v in sorted(stats.items()) if k != "FilterLogEvents"},
        source=source or "this checkout",
    )


def _until(check: Any, started: float, timeout: float) -> float | None:
    while time.monotonic() - started < timeout:
        if check():
            return round(time.monotonic() - started, 1)
        time.sleep(WATCH_EVERY)
    return None


def main() -> None:
    """Run the variants and print one JSON line each (or one JSON document with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="FlowExports (default 300)")
    parser.add_argument(
        "--rate", type=float, default=5.0, help="FilterLogEvents quota per second (default 5)"
    )
    parser.add_argument(
        "--batch", type=int, default=5, help="connections written to each log group"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase (seconds)")
    parser.add_argument("--baseline-source", help="another checkout's operator/ directory")
    parser.add_argument(
        "--variants",
        default="budget,baseline",
        help=(
            "budget, budget-no-reads (no Describe* budgets), baseline (needs --baseline-source; "
            "else no-budget), no-budget; a variant ending in -unthrottled runs without the "
            "quota (what the machine allows)"
        ),
    )
    parser.add_argument(
        "--keep-log", help="copy each run's operator log here (the variant added to the name)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for asked in args.variants.split(","):
        source, variant = None, asked
        if asked in ("baseline", "baseline-unthrottled"):
            if args.baseline_source:
                source = args.baseline_source
            else:
                variant = asked.replace("baseline", "no-budget")
        result = run_one(
            variant, args.n, args.rate, args.batch, source, args.timeout, args.keep_log
        )
        results.append(result)
        if not args.json:
            print(json.dumps(asdict(result)), flush=True)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
