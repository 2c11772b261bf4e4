"""Mode stream against mode poll on the same records (run by hand): moto in server mode and the
PCE simulator on loopback, every run in one process so ratios compare like with like.

    python bench/stream.py [--records 5000] [--shards 1,2,4] [--rate 200]
                           [--latency-seconds 10] [--poll 15:30,0:1] [--json]

Runs, each on a fresh moto account and a fresh PCE simulator: one per `--poll SETTLE:INTERVAL`
(default: the product's 15 s settle and 30 s poll interval, then the shortest it allows, 0 s
and 1 s), then one per `--shards` count (a Provisioned stream the product creates, its default
1 s read interval). The worker is the product's: `build_pipeline` + `Pipeline.run_forever` for
poll (what `lifecycle.ingest` runs), `ShardRunner.run_forever` over a `MemoryShardBook` for
stream (what `lifecycle.ingest` runs once the log group is drained; here the log group has
nothing before the subscription filter, so there is no drain). The PCE client's own rate limit
(450 requests/min) is lifted and the simulator's is off, so times measure the work.

Each record is a distinct connection (`tests/flowlines.py`: `connection_address(i)`:<port> ->
10.1.0.9:443), so each becomes one flow at the PCE. Per run:

- backlog: `--records` records written with PutLogEvents (`--batch` per call, round robin
  over 4 log streams) before the worker starts (for poll, then left to age past the settle
  delay); `seconds` from the worker's start to the simulator accepting the last flow, and
  records/s. Per worker (each shard's pipeline; poll's one pipeline): its records and its
  records/s up to its last upload (its checkpointed `Progress`).
- steady: while that worker runs on, `--rate` records/s for `--latency-seconds`, one
  PutLogEvents call every 0.5 s; the latency of each record from its PutLogEvents call
  returning to the simulator accepting its flow (stamped in the simulator as it records the
  flow): p50, p95, max.
- per phase: CPU seconds of the worker (this process less the simulator's and the writer's
  threads) and of the simulator and moto, the AWS calls the worker made, and the PutLogEvents
  calls' mean time (for stream, moto's Kinesis delivery is inside it).

moto, not AWS: PutLogEvents puts one Kinesis record per call into a random shard (AWS: by log
stream with ByLogStream) before it returns, so the stream holds a record the moment
PutLogEvents answers; no shard limit (1 MB/s or 1,000 records/s written, 2 MB/s read) is
enforced (the product keeps to 5 GetRecords/s per shard itself), and an event is searchable by
FilterLogEvents at once (AWS: seconds later, which is what the settle delay waits for). Poll
pages through every event of the last `lookbackSeconds` (default 1200) on each read, so its
steady phase here pages through the backlog too. See bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
# tests/flowlines.py: the record generator the tests use
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from aiohttp import web
from tests.flowlines import connection_address, line

from flowexport.api.conditions import ConditionUpdate
from flowexport.api.models import FlowExportSpec
from flowexport.aws.reader import ReaderCursor
from flowexport.aws.session import AwsClients, AwsKeys, AwsTarget, make_clients
from flowexport.aws.subscription import Subscription
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.errors import FlowExportError
from flowexport.pce.client import PCEClient, PCECredentials
from flowexport.pipeline import Progress, build_pipeline
from flowexport.sim.moto import moto_server, reset
from flowexport.sim.pce import PCESimConfig, PCESimulator
from flowexport.sim.serve import ServerThread
from flowexport.sources import ensure_subscription
from flowexport.sources.shards import MemoryShardBook, ShardRunner

REGION = "us-east-1"
KEYS = AwsKeys("AKIABENCHSTREAM", "bench-secret")
API_KEY, API_SECRET = "api_bench", "bench-secret"
GROUP = "/flowexport/bench"
OWNER = "bench/stream"
SUBSCRIPTION_ROLE = "arn:aws:iam::123456789012:role/cwl-to-kinesis"
SERVER = "10.1.0.9"
LOG_STREAMS = [f"eni-{i:017x}-all" for i in range(4)]
#: Seconds between PutLogEvents calls in the steady phase.
TICK = 0.5
#: The product's poll defaults (IngestionSpec.pollIntervalSeconds, `--settle`) and minimums.
DEFAULT_POLL = "15:30,0:1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Worker:
    """One pipeline's share of the backlog: a shard's, or poll's one pipeline."""

    name: str
    records: int
    seconds: float | None
    records_per_s: float | None


@dataclass
class Phase:
    """One measured phase of a run. CPU seconds: `worker_cpu_s` is this process less the PCE
    simulator's thread and the writer's (the pipelines, their AWS calls in threads, the
    loop); `moto_cpu_s` the moto server's, both over the phase (for the backlog, the drain:
    its writes are `put_*`)."""

    records: int
    accepted: int = 0
    seconds: float | None = None
    records_per_s: float | None = None
    put_calls: int = 0
    put_ms: float | None = None
    put_moto_cpu_s: float | None = None
    worker_cpu_s: float | None = None
    pce_cpu_s: float | None = None
    moto_cpu_s: float | None = None
    aws_calls: dict[str, int] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    rate_written: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_max_s: float | None = None
    latency_min_s: float | None = None


@dataclass
class Run:
    """One mode's run: poll at one setting, or stream over K shards."""

    name: str
    mode: str
    shards: int | None
    settle_s: float | None
    interval_s: float
    backlog: Phase
    steady: Phase
    run_s: float
    errors: list[str] = field(default_factory=list)


# -- the simulators ------------------------------------------------------------------------


class Pce:
    """The PCE simulator on a free loopback port (its own thread), stamping each flow with the
    time it accepted it."""

    def __init__(self) -> None:
        self.sim = PCESimulator(
            PCESimConfig(api_keys={API_KEY: API_SECRET}, rate_limit_per_minute=0)
        )
        #: Client address -> time.monotonic() when the simulator recorded its flow.
        self.accepted: dict[str, float] = {}
        self.sim.app.middlewares.append(self._stamp)
        self.server = ServerThread(self.sim.app)
        self.url = self.server.start()

    @web.middleware
    async def _stamp(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        before = len(self.sim.state.flows)
        response = await handler(request)
        if request.path.endswith("/bulk_traffic_flows"):
            now = time.monotonic()
            for flow in self.sim.state.flows[before:]:
                self.accepted.setdefault(flow[0], now)
        return response

    def cpu_seconds(self) -> float:
        """CPU seconds of the simulator's thread."""
        return float(self.server.call(time.thread_time))

    def client(self) -> PCEClient:
        return PCEClient(self.url, 1, PCECredentials(API_KEY, API_SECRET), rate_per_minute=10**9)

    def stop(self) -> None:
        self.server.stop()


def moto_pid() -> int | None:
    """The moto_server child of this process (Linux), for its CPU time."""
    me = os.getpid()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{me}/task"):
            for pid in Path(f"/proc/{me}/task/{task}/children").read_text().split():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"moto" in cmdline:
                    return int(pid)
    return None


def cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Calls:
    """AWS calls by operation, counted through botocore's events on the worker's clients."""

    def __init__(self, clients: AwsClients) -> None:
        self.counts: Counter[str] = Counter()
        for client in (clients.logs, clients.kinesis):
            client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[str(model.name)] += 1

    def since(self, before: Counter[str]) -> dict[str, int]:
        return {k: v - before.get(k, 0) for k, v in sorted(self.counts.items()) if v > before[k]}


# -- writing records -------------------------------------------------------------------------


def record(i: int) -> str:
    """Flow-log record `i`: a connection of its own (one flow at the PCE)."""
    return line(
        PIPELINE_FORMAT,
        srcaddr=connection_address(i),
        dstaddr=SERVER,
        srcport=40000 + i % 20000,
        dstport=443,
    )


@dataclass
class Written:
    """What a writer did: its PutLogEvents calls, their total seconds, its own CPU, and when
    the call holding each record returned (time.monotonic())."""

    calls: int = 0
    call_seconds: float = 0.0
    cpu_s: float = 0.0
    seconds: float = 0.0
    returned: dict[int, float] = field(default_factory=dict)

    def put(self, logs: Any, first: int, count: int) -> None:
        """One PutLogEvents call of records first..first+count-1, round robin over the log
        streams."""
        events = [
            {"timestamp": int(time.time() * 1000), "message": record(i)}
            for i in range(first, first + count)
        ]
        started = time.monotonic()
        logs.put_log_events(
            logGroupName=GROUP,
            logStreamName=LOG_STREAMS[self.calls % len(LOG_STREAMS)],
            logEvents=events,
        )
        done = time.monotonic()
        self.calls += 1
        self.call_seconds += done - started
        for i in range(first, first + count):
            self.returned[i] = done


def write_backlog(logs: Any, count: int, batch: int) -> Written:
    """Write records 0..count-1, `batch` per call, as fast as moto takes them."""
    written = Written()
    started, cpu = time.monotonic(), time.thread_time()
    for first in range(0, count, batch):
        written.put(logs, first, min(batch, count - first))
    written.seconds, written.cpu_s = time.monotonic() - started, time.thread_time() - cpu
    return written


def write_steady(logs: Any, first: int, count: int, rate: float) -> Written:
    """Write records first..first+count-1 at `rate` records/s, one call every TICK seconds."""
    written = Written()
    per_call = max(1, round(rate * TICK))
    started = due = time.monotonic()
    cpu = time.thread_time()
    for at in range(first, first + count, per_call):
        written.put(logs, at, min(per_call, first + count - at))
        due += TICK
        time.sleep(max(0.0, due - time.monotonic()))
    written.seconds, written.cpu_s = time.monotonic() - started, time.thread_time() - cpu
    return written


# -- one run -----------------------------------------------------------------------------


def spec_for(
    url: str, vpc: str, role: str, source: dict[str, Any], interval: int
) -> FlowExportSpec:
    return FlowExportSpec.model_validate(
        {
            "aws": {
                "region": REGION,
                "vpcId": vpc,
                "logGroupName": GROUP,
                "deliverLogsRoleArn": role,
                "endpointUrl": url,
            },
            "pce": {
                "url": "https://pce.example",
                "orgId": 1,
                "credentialsSecretRef": {"name": "k"},
            },
            "ingestion": {"pollIntervalSeconds": interval},
            "source": source,
        }
    )


def fresh_account(url: str, clients: AwsClients) -> tuple[str, str]:
    """A reset moto: a VPC and the flow logs' delivery role."""
    reset(url)
    vpc = clients.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    iam = clients.session.client("iam", endpoint_url=url)
    role = iam.create_role(RoleName="flow-logs-delivery", AssumeRolePolicyDocument="{}")
    return vpc, str(role["Role"]["Arn"])


@dataclass
class Plan:
    """What every run does."""

    records: int
    batch: int
    rate: float
    latency_seconds: float
    timeout: float


class Bench:
    """moto, the AWS clients (the worker's and the writer's), and the runs."""

    def __init__(self, url: str, plan: Plan) -> None:
        self.url, self.plan = url, plan
        target = AwsTarget(REGION, endpoint_url=url, keys=KEYS)
        self.clients = make_clients(target)
        self.writer = make_clients(target).logs  # its own connections
        self.calls = Calls(self.clients)
        self.moto = moto_pid()

    async def run(
        self, name: str, source: dict[str, Any], interval: int, settle: float | None
    ) -> Run:
        started = time.monotonic()
        vpc, role = fresh_account(self.url, self.clients)
        spec = spec_for(self.url, vpc, role, source, interval)
        subscription = ensure_subscription(self.clients, spec.aws, OWNER, spec.source)
        for log_stream in LOG_STREAMS:
            self.writer.create_log_stream(logGroupName=GROUP, logStreamName=log_stream)
        pce = Pce()
        errors: list[str] = []
        try:
            async with pce.client() as client:
                backlog, steady = await self._phases(
                    spec, subscription, client, pce, settle, errors
                )
        finally:
            pce.stop()
        stream = spec.source.stream
        return Run(
            name=name,
            mode=spec.source.mode,
            shards=stream.shard_count if stream else None,
            settle_s=settle,
            interval_s=interval if stream is None else stream.read_interval_millis / 1000,
            backlog=backlog,
            steady=steady,
            run_s=round(time.monotonic() - started, 2),
            errors=errors,
        )

    async def _phases(
        self,
        spec: FlowExportSpec,
        subscription: Subscription,
        client: PCEClient,
        pce: Pce,
        settle: float | None,
        errors: list[str],
    ) -> tuple[Phase, Phase]:
        plan = self.plan
        start_ms = int(time.time() * 1000)
        moto_before = cpu_seconds(self.moto)
        written = await asyncio.to_thread(write_backlog, self.writer, plan.records, plan.batch)
        backlog = Phase(plan.records, put_calls=written.calls)
        backlog.put_ms = _ms(written)
        backlog.put_moto_cpu_s = _less(cpu_seconds(self.moto), moto_before)
        if settle:  # poll reads an event once it is `settle` seconds old: age the backlog
            await asyncio.sleep(settle + 0.5)

        async def report(update: ConditionUpdate) -> None:
            if update.ok is False:
                errors.append(f"{update.reason}: {update.message}")

        async def on_error(exc: FlowExportError) -> None:
            errors.append(f"{exc.reason}: {exc}")

        stop = asyncio.Event()
        book = MemoryShardBook()
        marks = self._marks(pce)
        wall_start = time.time()
        task: asyncio.Task[None]
        if subscription.stream is None:
            assert settle is not None

            async def checkpoint(saved: Progress) -> None:
                await book.save("poll", saved, None)

            pipeline = build_pipeline(
                spec,
                self.clients,
                subscription.log_format,
                client,
                Progress(ReaderCursor(start_ms)),
                checkpoint,
                settle_seconds=settle,
            )
            interval = float(spec.ingestion.poll_interval_seconds)
            task = asyncio.create_task(pipeline.run_forever(stop, interval, on_error))
        else:
            runner = ShardRunner(
                spec,
                subscription.stream,
                self.clients,
                client,
                subscription.log_format,
                book,
                since_ms=subscription.stream.filter_since_ms,
                report=report,
            )
            task = asyncio.create_task(runner.run_forever(stop))
        try:
            backlog.accepted = await self._until(
                pce, plan.records, lambda: sum(p.records_read for p in book.shards.values()), task
            )
            self._close(backlog, marks, pce, None)
            if backlog.accepted == plan.records:
                last = max(pce.accepted[connection_address(i)] for i in range(plan.records))
                backlog.seconds = round(last - marks.at, 3)
                backlog.records_per_s = round(plan.records / (last - marks.at))
            backlog.workers = [
                _worker(name, p, wall_start) for name, p in sorted(book.shards.items())
            ]
            steady = await self._steady(pce, task)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        if task.done() and not task.cancelled() and task.exception() is not None:
            errors.append(f"worker failed: {task.exception()!r}")
        return backlog, steady

    async def _steady(self, pce: Pce, task: asyncio.Task[None]) -> Phase:
        plan = self.plan
        marks = self._marks(pce)
        first, count = plan.records, round(plan.rate * plan.latency_seconds)
        writing = asyncio.ensure_future(
            asyncio.to_thread(write_steady, self.writer, first, count, plan.rate)
        )
        accepted = await self._until(pce, first + count, None, task, writing)
        written = await writing
        phase = Phase(count, accepted - first, put_calls=written.calls, put_ms=_ms(written))
        self._close(phase, marks, pce, written)
        phase.rate_written = round(count / written.seconds, 1) if written.seconds else None
        ids = range(first, first + count)
        waits = sorted(
            pce.accepted[connection_address(i)] - written.returned[i]
            for i in ids
            if connection_address(i) in pce.accepted
        )
        if waits:
            cuts = statistics.quantiles(waits, n=20, method="inclusive") if len(waits) > 1 else []
            phase.latency_p50_s = round(statistics.median(waits), 3)
            phase.latency_p95_s = round(cuts[18] if cuts else waits[-1], 3)
            phase.latency_max_s, phase.latency_min_s = round(waits[-1], 3), round(waits[0], 3)
        return phase

    async def _until(
        self,
        pce: Pce,
        total: int,
        read: Callable[[], int] | None,
        task: asyncio.Task[None],
        writing: asyncio.Future[Any] | None = None,
    ) -> int:
        """Wait until the simulator accepted `total` flows (and, for the backlog, the worker
        checkpointed them: its counts are read next), the worker failed or the time is up."""
        deadline = time.monotonic() + self.plan.timeout
        while time.monotonic() < deadline and not task.done():
            written = writing is None or writing.done()
            if written and len(pce.accepted) >= total and (read is None or read() >= total):
                break
            await asyncio.sleep(0.02)
        return len(pce.accepted)

    def _marks(self, pce: Pce) -> Marks:
        return Marks(
            time.monotonic(),
            time.process_time(),
            pce.cpu_seconds(),
            cpu_seconds(self.moto),
            Counter(self.calls.counts),
        )

    def _close(self, phase: Phase, marks: Marks, pce: Pce, written: Written | None) -> None:
        """The phase's CPU times and AWS calls since `marks`."""
        bench = time.process_time() - marks.bench
        sim = pce.cpu_seconds() - marks.pce
        phase.pce_cpu_s = round(sim, 2)
        phase.worker_cpu_s = round(bench - sim - (written.cpu_s if written else 0.0), 2)
        phase.moto_cpu_s = _less(cpu_seconds(self.moto), marks.moto)
        phase.aws_calls = self.calls.since(marks.calls)


@dataclass
class Marks:
    """The clock, CPU times and call counts at a phase's start."""

    at: float
    bench: float
    pce: float
    moto: float | None
    calls: Counter[str]


def _ms(written: Written) -> float | None:
    return round(1000 * written.call_seconds / written.calls, 1) if written.calls else None


def _less(after: float | None, before: float | None) -> float | None:
    return round(after - before, 2) if after is not None and before is not None else None


def _worker(name: str, progress: Progress, wall_start: float) -> Worker:
    last = progress.last_upload_time
    seconds = last.timestamp() - wall_start if last is not None else None
    return Worker(
        name=name,
        records=progress.records_read,
        seconds=round(seconds, 3) if seconds else None,
        records_per_s=round(progress.records_read / seconds) if seconds else None,
    )


# -- the whole benchmark -------------------------------------------------------------------


def poll_settings(text: str) -> list[tuple[float, int]]:
    """`15:30,0:1` -> [(15.0, 30), (0.0, 1)] (settle seconds, poll interval seconds)."""
    found = []
    for item in filter(None, text.split(",")):
        settle, _, interval = item.partition(":")
        found.append((float(settle), int(interval)))
    return found


def ratios(runs: list[Run]) -> list[dict[str, Any]]:
    """Each stream run against each poll run: stream / poll."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    found = []
    for stream in (r for r in runs if r.mode == "stream"):
        for poll in (r for r in runs if r.mode == "poll"):
            found.append(
                {
                    "stream": stream.name,
                    "poll": poll.name,
                    "records_per_s": ratio(
                        stream.backlog.records_per_s, poll.backlog.records_per_s
                    ),
                    "latency_p50": ratio(stream.steady.latency_p50_s, poll.steady.latency_p50_s),
                    "latency_p95": ratio(stream.steady.latency_p95_s, poll.steady.latency_p95_s),
                }
            )
    return found


async def run_all(url: str, plan: Plan, polls: list[tuple[float, int]], shards: list[int]) -> Any:
    # A warm-up first (not reported): moto's back ends, the clients' first calls.
    bench = Bench(url, Plan(200, 20, 100, 0.5, plan.timeout))
    await bench.run("warm-up", {}, 1, 0.0)
    await bench.run("warm-up", _stream_source(1), 1, None)
    bench.plan = plan
    runs = []
    for settle, interval in polls:
        runs.append(await bench.run(f"poll {settle:g}s/{interval}s", {}, interval, settle))
    for count in shards:
        name = f"stream {count} shard{'s' if count > 1 else ''}"
        runs.append(await bench.run(name, _stream_source(count), 30, None))
    return runs


def _stream_source(shards: int) -> dict[str, Any]:
    return {
        "mode": "stream",
        "stream": {
            "subscriptionRoleArn": SUBSCRIPTION_ROLE,
            "capacityMode": "Provisioned",
            "shardCount": shards,
        },
    }


def _text(report: dict[str, Any]) -> None:
    plan = report["plan"]
    print(
        f"backlog {plan['records']:,} records ({plan['batch']} per PutLogEvents); steady "
        f"{plan['rate']:g} records/s for {plan['latency_seconds']:g} s; "
        f"python {report['python']}, {report['cpus']} CPUs"
    )
    print(
        f"{'run':<16}{'backlog s':>10}{'rec/s':>8}  {'per worker rec/s (records)':<34}"
        f"{'cpu':>6}{'moto':>6}{'put ms':>8}"
        f"{'p50 s':>8}{'p95 s':>8}{'max s':>8}"
    )
    for run in report["runs"]:
        b, s = run["backlog"], run["steady"]
        workers = " ".join(f"{w['records_per_s'] or '-'} ({w['records']})" for w in b["workers"])
        print(
            f"{run['name']:<16}{b['seconds']!s:>10}{b['records_per_s']!s:>8}  {workers:<34}"
            f"{b['worker_cpu_s']!s:>6}{b['moto_cpu_s']!s:>6}{b['put_ms']!s:>8}"
            f"{s['latency_p50_s']!s:>8}{s['latency_p95_s']!s:>8}{s['latency_max_s']!s:>8}"
        )
        for error in run["errors"][:3]:
            print(f"    error: {error}")
    print("stream / poll (same process):")
    for r in report["ratios"]:
        print(
            f"  {r['stream']:<16} / {r['poll']:<14} records/s {r['records_per_s']}x  "
            f"latency p50 {r['latency_p50']}x  p95 {r['latency_p95']}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="backlog records per run")
    parser.add_argument("--batch", type=int, default=500, help="records per PutLogEvents call")
    parser.add_argument("--shards", default="1,2,4", help="stream runs: shard counts")
    parser.add_argument("--rate", type=float, default=200.0, help="steady records/s")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="steady phase length")
    parser.add_argument(
        "--poll",
        default=DEFAULT_POLL,
        help=f"poll runs: SETTLE:INTERVAL seconds, comma-separated (default {DEFAULT_POLL})",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    try:
        shards = [int(s) for s in args.shards.split(",") if s]
        polls = poll_settings(args.poll)
    except ValueError:
        parser.error("--shards takes counts (1,2,4), --poll SETTLE:INTERVAL pairs (15:30,0:1)")
    if any(not 1 <= s <= 500 for s in shards) or any(p < 0 or i < 1 for p, i in polls):
        parser.error("shard counts are 1-500; a poll's settle >= 0 s and its interval >= 1 s")
    if args.records < 1 or args.batch < 1 or args.rate <= 0 or args.latency_seconds <= 0:
        parser.error("--records, --batch, --rate and --latency-seconds must be positive")
    logging.basicConfig(level=logging.ERROR)
    plan = Plan(args.records, args.batch, args.rate, args.latency_seconds, args.timeout)
    with moto_server() as url:
        runs = asyncio.run(run_all(url, plan, polls, shards))
    report = {
        "plan": asdict(plan),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "runs": [asdict(r) for r in runs],
        "ratios": ratios(runs),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
