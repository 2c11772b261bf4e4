"""Mode s3 (run by hand): moto in server mode (its S3 -> SQS notifications are real) and the PCE
simulator on loopback.

    python bench/s3.py [--objects 24] [--records 2000] [--replicas 1,2] [--latency-objects 20]
                       [--big-mb 75] [--core-mb 10] [--kinds text,parquet] [--json]

- throughput: per `--kinds` (gzip text; Parquet as AWS writes it: a column per field,
  INT32/INT64/STRING, gzip pages), `--objects` objects of `--records` distinct connections
  each, put before the readers start; per `--replicas` count, that many `S3Runner`s (what the
  operator runs per replica) on the one queue; seconds from their start to the last object
  done, records/s and objects/s in all and per replica.
- latency: one runner running, `--latency-objects` objects put one every 0.25 s; from each
  PutObject's return to the simulator accepting the object's first flow: p50, p95.
- peak RSS: per kind, a child process reads one object of about `--big-mb` MB (as stored)
  with `ObjectReader` in the pipeline's chunks: the reader alone, then (another child, on a
  `--core-mb` object) each chunk through the core too (`FlowProcessor`, drained per chunk as
  the pipeline does; its key cache grows to its bound with distinct connections); no PCE: not
  the window's memory; its peak RSS (VmHWM) before the object and after it.

moto, not AWS: no S3 request latency worth the name, SQS long polling answered at once when a
message is there. See bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from flowexport.api.models import FlowExportSpec
from flowexport.aws.reader import ReaderCursor
from flowexport.aws.s3 import ObjectReader, ObjectRef, ensure_s3_source
from flowexport.aws.session import AwsClients, AwsKeys, AwsTarget, make_clients
from flowexport.core.logformat import LogFormat
from flowexport.core.normalise import FlowFilter
from flowexport.core.processor import FlowProcessor
from flowexport.pce.client import PCEClient, PCECredentials
from flowexport.pipeline import Progress
from flowexport.sim.moto import moto_server, reset
from flowexport.sim.pce import PCESimConfig, PCESimulator
from flowexport.sim.serve import ServerThread
from flowexport.sources.s3 import S3Runner, S3Target

REGION = "us-east-1"
KEYS = AwsKeys("AKIABENCHS3", "bench-secret")
API_KEY, API_SECRET = "api_bench", "bench-secret"
BUCKET = "bench-flow-logs"
ACCOUNT = "123456789012"
HEADER = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes "
    "start end action log-status"
)


def key(n: int, kind: str = "text") -> str:
    ext = "parquet" if kind == "parquet" else "gz"
    return (
        f"AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}/2026/12/06/"
        f"{ACCOUNT}_vpcflowlogs_{REGION}_fl-bench_20261206T1620Z_{n:08x}.log.{ext}"
    )


def address(i: int) -> str:
    n = i + 1
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def text_object(first: int, count: int, level: int = 6) -> bytes:
    lines = [HEADER]
    lines += [
        f"2 {ACCOUNT} eni-1 {address(i)} 10.200.0.9 {40000 + i % 20000} 443 6 3 180 "
        f"1765000000 1765000060 ACCEPT OK"
        for i in range(first, first + count)
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=level)


def _columns(first: int, count: int) -> Any:
    """The records of `text_object` as AWS's Parquet columns (underscored names)."""
    import pyarrow as pa  # noqa: PLC0415

    rows = range(first, first + count)
    int32, int64, text = pa.int32(), pa.int64(), pa.string()
    return pa.table(
        {
            "version": pa.array([2] * count, int32),
            "account_id": pa.array([ACCOUNT] * count, text),
            "interface_id": pa.array([f"eni-{i % 50:017x}" for i in rows], text),
            "srcaddr": pa.array([address(i) for i in rows], text),
            "dstaddr": pa.array(["10.200.0.9"] * count, text),
            "srcport": pa.array([40000 + i % 20000 for i in rows], int32),
            "dstport": pa.array([443] * count, int32),
            "protocol": pa.array([6] * count, int32),
            "packets": pa.array([3 + i % 97 for i in rows], int64),
            "bytes": pa.array([180 + (i * 7919) % 100_000 for i in rows], int64),
            "start": pa.array([1765000000 + i % 300 for i in rows], int64),
            "end": pa.array([1765000060 + i % 300 for i in rows], int64),
            "action": pa.array(["ACCEPT"] * count, text),
            "log_status": pa.array(["OK"] * count, text),
        }
    )


def parquet_object(first: int, count: int) -> bytes:
    import pyarrow.parquet as pq  # noqa: PLC0415

    out = io.BytesIO()
    pq.write_table(_columns(first, count), out, compression="gzip")
    return out.getvalue()


def flow_object(kind: str, first: int, count: int) -> bytes:
    return parquet_object(first, count) if kind == "parquet" else text_object(first, count)


def clients_for(url: str) -> AwsClients:
    return make_clients(AwsTarget(REGION, endpoint_url=url, keys=KEYS))


def spec_for(url: str, pce_url: str) -> FlowExportSpec:
    return FlowExportSpec.model_validate(
        {
            "aws": {"region": REGION, "endpointUrl": url},
            "pce": {"url": pce_url, "orgId": 1, "credentialsSecretRef": {"name": "k"}},
            "source": {"mode": "s3", "s3": {"bucket": BUCKET}},
        }
    )


class Pce:
    def __init__(self) -> None:
        self.sim = PCESimulator(
            PCESimConfig(api_keys={API_KEY: API_SECRET}, rate_limit_per_minute=0)
        )
        self.server = ServerThread(self.sim.app)
        self.url = self.server.start()

    def flows(self) -> int:
        return int(self.server.call(lambda: len(self.sim.state.flows)))

    def seen(self) -> set[str]:
        return set(self.server.call(lambda: {f[0] for f in self.sim.state.flows}))

    def client(self) -> PCEClient:
        return PCEClient(self.url, 1, PCECredentials(API_KEY, API_SECRET), rate_per_minute=10**9)


async def _report(update: Any) -> None:
    return None


async def _nowhere(progress: Progress) -> None:
    return None


def setup(url: str) -> tuple[AwsClients, str]:
    reset(url)
    clients = clients_for(url)
    clients.s3.create_bucket(Bucket=BUCKET)
    spec = spec_for(url, "https://pce.invalid")
    assert spec.source.s3 is not None
    found = ensure_s3_source(clients, spec.aws, spec.source.s3, "bench/s3")
    return clients, found.queue_url


def runner(url: str, pce: Pce, client: PCEClient, queue: str) -> S3Runner:
    return S3Runner(
        spec_for(url, pce.url),
        S3Target(BUCKET, "", queue),
        clients_for(url),  # a replica's own clients
        client,
        Progress(ReaderCursor(0)),
        _nowhere,
        report=_report,
    )


async def throughput(
    url: str, objects: int, records: int, replicas: int, kind: str = "text"
) -> dict[str, Any]:
    pce = Pce()
    clients, queue = setup(url)
    for n in range(objects):
        body = flow_object(kind, n * records, records)
        clients.s3.put_object(Bucket=BUCKET, Key=key(n, kind), Body=body)
    stop = asyncio.Event()
    pces = [pce.client() for _ in range(replicas)]
    runners = [runner(url, pce, c, queue) for c in pces]
    started = time.monotonic()
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    while sum(r.tally.done for r in runners) < objects:
        await asyncio.sleep(0.05)
    seconds = time.monotonic() - started
    stop.set()
    await asyncio.gather(*tasks)
    for c in pces:
        await c.aclose()
    total = objects * records
    assert pce.flows() == total, (pce.flows(), total)
    pce.server.stop()
    return {
        "kind": kind,
        "replicas": replicas,
        "objects": objects,
        "records": total,
        "seconds": round(seconds, 2),
        "records_per_s": round(total / seconds),
        "objects_per_s": round(objects / seconds, 2),
        "records_per_s_per_replica": round(total / seconds / replicas),
        "objects_done_by_replica": [r.tally.done for r in runners],
    }


async def latency(url: str, objects: int, records: int) -> dict[str, Any]:
    pce = Pce()
    clients, queue = setup(url)
    client = pce.client()
    one = runner(url, pce, client, queue)
    stop = asyncio.Event()
    task = asyncio.create_task(one.run(stop))
    put_at: dict[str, float] = {}
    arrived: dict[str, float] = {}
    for n in range(objects):
        body = text_object(10_000_000 + n * records, records)
        await asyncio.to_thread(clients.s3.put_object, Bucket=BUCKET, Key=key(n), Body=body)
        put_at[address(10_000_000 + n * records)] = time.monotonic()
        await asyncio.sleep(0.25)
    deadline = time.monotonic() + 60
    while len(arrived) < objects and time.monotonic() < deadline:
        seen = pce.seen()
        now = time.monotonic()
        for first in put_at:
            if first in seen and first not in arrived:
                arrived[first] = now
        await asyncio.sleep(0.02)
    stop.set()
    await task
    await client.aclose()
    pce.server.stop()
    waits = sorted(arrived[a] - put_at[a] for a in arrived)
    return {
        "objects": objects,
        "arrived": len(waits),
        "p50_s": round(statistics.median(waits), 3),
        "p95_s": round(waits[min(len(waits) - 1, math.ceil(len(waits) * 0.95) - 1)], 3),
        "note": "sampled every 20 ms",
    }


def big_object(url: str, megabytes: int, kind: str = "text", core_mb: int = 10) -> dict[str, Any]:
    """The reader alone on a `megabytes` object; the reader and the core on a `core_mb` one
    (the core's key cache reaches its bound within a few million distinct connections)."""
    clients, _ = setup(url)
    found: dict[str, Any] = {"kind": kind}
    for what, size in (("reader", megabytes), ("core", core_mb)):
        if not size:
            continue
        body = big_parquet(size) if kind == "parquet" else big_text(size)
        clients.s3.put_object(Bucket=BUCKET, Key=key(1, kind), Body=body)
        child = subprocess.run(
            [sys.executable, __file__, "--rss-child", url, key(1, kind), what],
            capture_output=True,
            text=True,
            check=True,
        )
        found[what] = {"object_mb": round(len(body) / 1e6, 1), **json.loads(child.stdout)}
    return found


def big_text(megabytes: int) -> bytes:
    buffer = io.BytesIO()
    count, step = 0, 100_000
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=1) as out:
        out.write((HEADER + "\n").encode())
        while buffer.tell() < megabytes * 1_000_000:
            out.write(_lines(count, step))
            count += step
    return buffer.getvalue()


def big_parquet(megabytes: int) -> bytes:
    """About `megabytes` MB of Parquet, row groups of 1M rows (pyarrow's default; AWS's
    row-group size is not documented)."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    buffer = io.BytesIO()
    count, step = 0, 1_000_000
    table = _columns(0, step)
    with pq.ParquetWriter(buffer, table.schema, compression="gzip") as out:
        while buffer.tell() < megabytes * 1_000_000:
            out.write_table(_columns(count, step))
            count += step
    return buffer.getvalue()


def _lines(first: int, count: int) -> bytes:
    return "".join(
        f"2 {ACCOUNT} eni-1 {address(i)} 10.200.0.9 {40000 + i % 20000} 443 6 3 180 "
        f"1765000000 1765000060 ACCEPT OK\n"
        for i in range(first, first + count)
    ).encode()


def _hwm_kb() -> int:
    """This process's peak RSS (VmHWM, kB; unlike ru_maxrss it starts anew at exec)."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(url: str, object_key: str, what: str) -> None:
    """Read the object; `what` is `reader` (the chunks only) or `core` (each chunk through a
    FlowProcessor, drained per chunk as the pipeline does)."""
    clients = clients_for(url)
    # botocore loads S3's service model at the first call: not the object's memory.
    clients.s3.head_object(Bucket=BUCKET, Key=object_key)
    import pyarrow.parquet  # noqa: F401, PLC0415 - nor is loading pyarrow

    before = _hwm_kb()
    reader = ObjectReader(clients, ObjectRef(BUCKET, object_key, ""), 0)
    fmt: LogFormat = reader.open()
    processor = FlowProcessor(fmt, FlowFilter.build(["ACCEPT"], [], []))
    started = time.monotonic()
    records = 0
    for chunk in reader.chunks(ReaderCursor(0), 0, 500):
        rows = getattr(chunk, "rows", None)
        records += rows.num_rows if rows is not None else len(chunk.events)
        if what != "core":
            continue
        if rows is not None:
            processor.feed_batch(rows)
        else:
            processor.feed(e.message for e in chunk.events)
        processor.drain()
    seconds = time.monotonic() - started
    after = _hwm_kb()
    print(
        json.dumps(
            {
                "records": records,
                "read_seconds": round(seconds, 1),
                "records_per_s": round(records / seconds),
                "peak_rss_mb_before": round(before / 1024, 1),
                "peak_rss_mb_after": round(after / 1024, 1),
                "peak_rss_rise_mb": round((after - before) / 1024, 1),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=24)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--latency-objects", type=int, default=20)
    parser.add_argument("--big-mb", type=int, default=75)
    parser.add_argument("--kinds", default="text,parquet")
    parser.add_argument("--core-mb", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return 0
    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    kinds = args.kinds.split(",")
    with moto_server() as url:
        results["throughput"] = []
        for kind in kinds:
            runs = [
                asyncio.run(throughput(url, args.objects, args.records, int(n), kind))
                for n in args.replicas.split(",")
            ]
            first = runs[0]["records_per_s"]
            for run in runs:
                run["ratio_to_first"] = round(run["records_per_s"] / first, 2)
            results["throughput"] += runs
        if args.latency_objects:
            results["latency"] = asyncio.run(latency(url, args.latency_objects, 200))
        if args.big_mb:
            results["big_object"] = [
                big_object(url, args.big_mb, kind, args.core_mb) for kind in kinds
            ]
    print(json.dumps(results, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
