"""Benchmark the pure core against the original Lambda's approach, in one process.

    python bench/core.py [--records N] [--windows W] [--json]

Synthetic records (realistic mix): a few percent unique connections repeated, both legs of
each, TCP flags on some, ~5% REJECT, ~5% IPv6, ~2% NODATA. A fixed pool of distinct lines is
cycled to N records and fed in chunks of 10,000 (a CloudWatch page), in W aggregation windows.

Reports, for the core (parse + normalise + aggregate + encode) and for a baseline written the
way the Lambda worked (split, fields 3,4,6,7 of ACCEPT lines, one CSV line per record):
records/s on one core, CSV lines uploaded, and peak traced memory at N/10 and N records.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from flowexport.core.encode import encode_batches
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT, LogFormat
from flowexport.core.processor import FlowProcessor

CHUNK = 10_000
SERVICE_PORTS = (22, 53, 80, 123, 443, 3306, 5432, 6379, 8080, 8443, 9092, 9200, 27017)


@dataclass(frozen=True)
class Mix:
    """Shape of the synthetic traffic."""

    flows: int = 5_000
    connections: int = 20_000
    pool: int = 100_000
    reject: float = 0.05
    ipv6: float = 0.05
    nodata: float = 0.02
    seed: int = 7


def _address(rng: random.Random, v6: bool) -> str:
    if v6:
        return f"2001:db8:{rng.randrange(16):x}::{rng.randrange(1, 4000):x}"
    return f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def make_records(mix: Mix) -> list[dict[str, str]]:
    """Distinct flow-log records (field name -> text)."""
    rng = random.Random(mix.seed)
    flows = []
    for _ in range(mix.flows):
        v6 = rng.random() < mix.ipv6
        flows.append((_address(rng, v6), _address(rng, v6), rng.choice(SERVICE_PORTS)))
    connections = [
        (*rng.choice(flows), rng.randrange(32768, 61000), rng.choice((6, 6, 6, 17)))
        for _ in range(mix.connections)
    ]
    rows = []
    for _ in range(mix.pool):
        start = 1_700_000_000 + rng.randrange(3600)
        row = {
            "version": "5",
            "account-id": "123456789012",
            "interface-id": f"eni-{rng.randrange(50):017x}",
            "start": str(start),
            "end": str(start + 60),
            "vpc-id": "vpc-0abc",
            "subnet-id": "subnet-0abc",
        }
        if rng.random() < mix.nodata:
            row["log-status"] = "NODATA"
            rows.append(row)
            continue
        client, server, sport, cport, proto = rng.choice(connections)
        response = rng.random() < 0.5
        src, dst, srcport, dstport = (
            (server, client, sport, cport) if response else (client, server, cport, sport)
        )
        flags = 0
        if proto == 6 and rng.random() < 0.3:
            flags = 18 if response else 2
        row.update(
            {
                "srcaddr": src,
                "dstaddr": dst,
                "srcport": str(srcport),
                "dstport": str(dstport),
                "protocol": str(proto),
                "packets": str(rng.randrange(1, 500)),
                "bytes": str(rng.randrange(40, 900_000)),
                "action": "REJECT" if rng.random() < mix.reject else "ACCEPT",
                "log-status": "OK",
                "tcp-flags": str(flags),
                "instance-id": "i-0abc",
                "type": "IPv6" if ":" in src else "IPv4",
                "flow-direction": "egress",
            }
        )
        rows.append(row)
    return rows


def render(rows: list[dict[str, str]], fmt: LogFormat) -> list[str]:
    """The records as lines in `fmt` (`-` for fields a record does not have)."""
    return [" ".join(row.get(name, "-") for name in fmt.fields) for row in rows]


def records(pool: list[str], n: int) -> Iterator[list[str]]:
    """N records from the pool, in CloudWatch-page-sized chunks."""
    stream = islice(cycle(pool), n)
    while chunk := list(islice(stream, CHUNK)):
        yield chunk


def run_core(pool: list[str], n: int, windows: int, fmt: LogFormat = PIPELINE_FORMAT) -> int:
    """The core: parse, normalise, aggregate per window, encode; returns CSV lines uploaded."""
    processor = FlowProcessor(fmt)
    per_window = max(1, n // windows)
    uploaded = 0
    fed = 0
    for chunk in records(pool, n):
        processor.feed(chunk)
        fed += len(chunk)
        if fed >= per_window:
            uploaded += _upload(processor)
            fed = 0
    return uploaded + _upload(processor)


def _upload(processor: FlowProcessor) -> int:
    return sum(body.count("\n") for body in encode_batches(f for f, _ in processor.drain()))


def run_core_v2(pool: list[str], n: int, windows: int) -> int:
    """The core on AWS's default format (no prefix keys: the generic tuple-key path)."""
    return run_core(pool, n, windows, DEFAULT_V2_FORMAT)


def run_baseline(pool: list[str], n: int, windows: int) -> int:
    """The original Lambda: v2 positions, ACCEPT only, one CSV line per record, no aggregation."""
    del windows
    body: list[str] = []
    for chunk in records(pool, n):
        for line in chunk:
            fields = line.split(" ")
            if fields[12] == "ACCEPT":
                body.append(f"{fields[3]},{fields[4]},{fields[6]},{fields[7]}")
    return len(body)


def timed(
    fn: Callable[[list[str], int, int], int], pool: list[str], n: int, w: int
) -> dict[str, float]:
    """Wall and CPU seconds, records/s and lines uploaded for one run."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    lines = fn(pool, n, w)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "records_per_s": round(n / wall),
        "csv_lines": lines,
    }


def peak_memory(fn: Callable[[list[str], int, int], int], pool: list[str], n: int, w: int) -> int:
    """Peak bytes allocated while processing N records (the input pool excluded)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn(pool, n, w)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=1, help="aggregation windows over the run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    rows = make_records(Mix())
    pools = {"pipeline": render(rows, PIPELINE_FORMAT), "v2": render(rows, DEFAULT_V2_FORMAT)}
    runs = (
        ("core", run_core, "pipeline"),
        ("core_v2", run_core_v2, "v2"),
        ("baseline", run_baseline, "v2"),
    )
    n, w = args.records, args.windows
    result: dict[str, object] = {
        "records": n,
        "windows": w,
        "python": platform.python_version(),
        "mix": Mix().__dict__,
        "input": "core: operator default format; core_v2 and baseline: AWS default v2 format",
    }
    for name, fn, pool_name in runs:
        pool = pools[pool_name]
        best = min((timed(fn, pool, n, w) for _ in range(args.repeat)), key=lambda r: r["seconds"])
        small, large = peak_memory(fn, pool, n // 10, w), peak_memory(fn, pool, n, w)
        result[name] = {
            **best,
            "peak_bytes_n_over_10": small,
            "peak_bytes_n": large,
            "memory_growth_10x": round(large / small, 2),
        }
    core, base = result["core"], result["baseline"]
    assert isinstance(core, dict) and isinstance(base, dict)
    result["speed_ratio_core_vs_baseline"] = round(core["records_per_s"] / base["records_per_s"], 3)
    result["csv_lines_ratio_core_vs_baseline"] = round(core["csv_lines"] / base["csv_lines"], 5)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"records={n:,} windows={w} python={result['python']} (best of {args.repeat})")
    print(f"{'':10}{'records/s':>12}{'csv lines':>12}{'peak N/10':>12}{'peak N':>12}{'growth':>8}")
    for name, _, _ in runs:
        r = result[name]
        assert isinstance(r, dict)
        print(
            f"{name:10}{r['records_per_s']:>12,}{r['csv_lines']:>12,}"
            f"{r['peak_bytes_n_over_10'] / 2**20:>11.1f}M{r['peak_bytes_n'] / 2**20:>11.1f}M"
            f"{r['memory_growth_10x']:>8}"
        )
    print(
        f"core/baseline speed: {result['speed_ratio_core_vs_baseline']}x; "
        f"CSV lines: 1/{1 / result['csv_lines_ratio_core_vs_baseline']:.0f} of baseline"
    )  # type: ignore[operator]
    return 0


if __name__ == "__main__":
    sys.exit(main())
