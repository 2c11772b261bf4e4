"""Benchmark the pure core against the original Lambda's approach, in one process.

    python bench/core.py [--records N] [--windows W] [--json]
    python bench/core.py --cli [--cli-records N] [--repeat R] [--json]
    python bench/core.py --versus-old [--records N] [--repeat R]

Synthetic records (realistic mix): a few percent unique connections repeated, both legs of
each, TCP flags on some, ~5% REJECT, ~5% IPv6, ~2% NODATA. A fixed pool of distinct lines is
cycled to N records and fed in chunks of 10,000 (a CloudWatch page), in W aggregation windows.

Reports, for the core (parse + normalise + aggregate + encode) and for a baseline written the
way the Lambda worked (split, fields 3,4,6,7 of ACCEPT lines, one CSV line per record):
records/s on one core, CSV lines uploaded, and peak traced memory at N/10 and N records.

With --cli (issue 25): the same mix written as a file of N lines of AWS's default format (and
as the same records in Parquet, typed as AWS types them), then, alternating R times, each run
a fresh process: a naive loop that reads the file, splits each line and keeps four fields of
the ACCEPT records (the Lambda's way), `flowexport parse FILE` on the text and on the Parquet
file. Reports wall and CPU seconds (best of R), the ratio naive / parse (>= 1: parse is
faster), whether text and Parquet gave the same CSV, and peak RSS of parse at N/10 and N.

With --versus-old: the columnar FlowProcessor against the per-line one it replaced (kept as the
test oracle, tests/core/oracle.py), fed as the pipeline feeds it (lists of CloudWatch messages
of 10,000 and of 500), alternated, CPU seconds: records/s of each and the ratio.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
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


#: The naive loop `flowexport parse` is measured against: read, split, keep four fields.
NAIVE = """
import sys
kept = []
with open(sys.argv[1]) as lines:
    for line in lines:
        fields = line.split(" ")
        if fields[12] == "ACCEPT":
            kept.append(f"{fields[3]},{fields[4]},{fields[6]},{fields[7]}")
print(len(kept))
"""

#: Rows per Parquet row group (AWS does not document its row group size).
PARQUET_ROW_GROUP = 256 * 1024


def write_inputs(rows: list[dict[str, str]], n: int, folder: Path) -> tuple[Path, Path]:
    """N records of AWS's default format cycled from the mix: a text file and a Parquet file
    (INT32/INT64/STRING columns as AWS types them, null for `-`, gzip pages)."""
    import pyarrow as pa  # noqa: PLC0415 - only this mode needs it
    import pyarrow.parquet as pq  # noqa: PLC0415

    lines = render(rows, DEFAULT_V2_FORMAT)
    text = folder / f"flows-{n}.log"
    with text.open("w") as out:
        for chunk in records(lines, n):
            out.write("\n".join(chunk) + "\n")
    types = {"version": pa.int32(), "srcport": pa.int32(), "dstport": pa.int32()}
    types |= {"protocol": pa.int32(), "packets": pa.int64(), "bytes": pa.int64()}
    types |= {"start": pa.int64(), "end": pa.int64()}
    columns = {}
    for name in DEFAULT_V2_FORMAT.fields:
        kind = types.get(name, pa.string())
        values: list[object] = [row.get(name) for row in rows]
        if kind != pa.string():
            values = [None if v is None else int(str(v)) for v in values]
        columns[name.replace("-", "_")] = pa.array(values, kind)
    pool = pa.table(columns)
    table = pa.concat_tables([pool] * (-(-n // len(rows)))).slice(0, n)
    parquet = folder / f"flows-{n}.parquet"
    pq.write_table(table, parquet, compression="gzip", row_group_size=PARQUET_ROW_GROUP)
    return text, parquet


#: Runs a command as the only child of a small interpreter, for the child's own peak RSS (a
#: child forked from this process would count this process's memory as its own).
PROBE = """
import hashlib, json, resource, subprocess, sys, time
started = time.perf_counter()
child = subprocess.run(sys.argv[1:], capture_output=True)
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
err = child.stderr.decode(errors="replace").strip().splitlines()
print(json.dumps({
    "seconds": round(wall, 3),
    "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
    "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    "exit": child.returncode,
    "stdout_sha256": hashlib.sha256(child.stdout).hexdigest()[:16],
    "counts": err[-1] if err else "",
}))
"""


def _spawn(command: list[str]) -> dict[str, float | str]:
    """Wall and CPU seconds, peak RSS, exit code, stdout digest and counts of one command."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *command], capture_output=True, text=True, check=True
    )
    result: dict[str, float | str] = json.loads(probe.stdout)
    return result


def cli_main(n: int, repeat: int, as_json: bool, baseline: str | None = None) -> int:
    """`flowexport parse` on text and Parquet vs the naive loop (see the module's doc); with
    `baseline` (another checkout's operator/ directory), its `flowexport parse` on the text
    too, in the same alternation."""
    python = sys.executable
    parse = [python, "-m", "flowexport", "parse"]
    env_path = str(Path(__file__).resolve().parents[1] / "operator")
    os.environ["PYTHONPATH"] = env_path + os.pathsep + os.environ.get("PYTHONPATH", "")
    # The baseline's modules first: a child started with `-c` puts this path before the rest.
    old_parse = (
        [python, "-c", f"import sys; sys.path.insert(0, {baseline!r}); "
         "from flowexport.cli import main; sys.exit(main())", "parse"]
        if baseline
        else None
    )  # fmt: skip
    rows = make_records(Mix())
    result: dict[str, object] = {
        "records": n,
        "python": platform.python_version(),
        "mix": Mix().__dict__,
        "load_average_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="flowexport-bench-") as tmp:
        text, parquet = write_inputs(rows, n, Path(tmp))
        small_text, small_parquet = write_inputs(rows, n // 10, Path(tmp))
        result["text_mb"] = round(text.stat().st_size / 2**20, 1)
        result["parquet_mb"] = round(parquet.stat().st_size / 2**20, 1)
        runs: dict[str, list[dict[str, float | str]]] = {"naive": [], "text": [], "parquet": []}
        if old_parse:
            runs["baseline_text"] = []
        for _ in range(repeat):  # alternated, so load changes hit all alike
            runs["naive"].append(_spawn([python, "-c", NAIVE, str(text)]))
            runs["text"].append(_spawn([*parse, str(text)]))
            runs["parquet"].append(_spawn([*parse, str(parquet)]))
            if old_parse:
                runs["baseline_text"].append(_spawn([*old_parse, str(text)]))
        small = {"text": _spawn([*parse, str(small_text)])}
        small["parquet"] = _spawn([*parse, str(small_parquet)])
    result["load_average_after"] = os.getloadavg()
    best = {k: min(v, key=lambda r: float(r["seconds"])) for k, v in runs.items()}
    cpu = {k: min(float(r["cpu_seconds"]) for r in v) for k, v in runs.items()}
    for name, run in best.items():
        result[name] = {
            **run,
            "best_cpu_seconds": cpu[name],
            "all_seconds": [r["seconds"] for r in runs[name]],
        }
        result[name]["records_per_s"] = round(n / float(run["seconds"]))  # type: ignore[index]
    naive_wall = float(best["naive"]["seconds"])
    result["ratio_naive_over_parse_text"] = {
        "wall": round(naive_wall / float(best["text"]["seconds"]), 3),
        "cpu": round(cpu["naive"] / cpu["text"], 3),
    }
    if old_parse:
        result["ratio_naive_over_baseline_parse_text"] = {
            "wall": round(naive_wall / float(best["baseline_text"]["seconds"]), 3),
            "cpu": round(cpu["naive"] / cpu["baseline_text"], 3),
        }
    result["ratio_text_over_parquet"] = {
        "wall": round(float(best["text"]["seconds"]) / float(best["parquet"]["seconds"]), 3),
        "cpu": round(cpu["text"] / cpu["parquet"], 3),
    }
    result["same_csv_text_and_parquet"] = (
        best["text"]["stdout_sha256"] == best["parquet"]["stdout_sha256"]
        and best["text"]["counts"] == best["parquet"]["counts"]
    )
    result["peak_rss_mb"] = {
        kind: {"n_over_10": small[kind]["peak_rss_mb"], "n": best[kind]["peak_rss_mb"]}
        for kind in ("text", "parquet")
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"records={n:,} python={result['python']} best of {repeat}, alternated")
    print(
        f"load average before {result['load_average_before']}, after {result['load_average_after']}"
    )
    print(f"{'':10}{'wall s':>9}{'cpu s':>9}{'records/s':>12}{'peak RSS':>10}  all wall s")
    for name in runs:
        r = result[name]
        assert isinstance(r, dict)
        print(
            f"{name:10}{r['seconds']:>9}{r['best_cpu_seconds']:>9}{r['records_per_s']:>12,}"
            f"{r['peak_rss_mb']:>9}M  {r['all_seconds']}"
        )
    print(f"naive / parse (text): {result['ratio_naive_over_parse_text']}")
    if old_parse:
        print(f"naive / baseline parse (text): {result['ratio_naive_over_baseline_parse_text']}")
    print(f"parse text / parse Parquet: {result['ratio_text_over_parquet']}")
    print(f"same CSV and counts from text and Parquet: {result['same_csv_text_and_parquet']}")
    print(f"peak RSS of parse at N/10 and N: {result['peak_rss_mb']}")
    print(f"counts: {best['text']['counts']}")
    return 0


def versus_old(n: int, repeat: int) -> int:
    """The columnar processor against the old per-line one, fed as the pipeline feeds them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.core import oracle  # noqa: PLC0415 - the old processor, kept as the oracle

    rows = make_records(Mix())
    print(f"records={n:,} best of {repeat}, alternated, CPU seconds")
    for fmt, name in ((PIPELINE_FORMAT, "operator format"), (DEFAULT_V2_FORMAT, "v2 format")):
        pool = render(rows, fmt)
        for size in (10_000, 500):
            best: dict[str, float] = {}
            for _ in range(repeat):
                for label, make in (("old", oracle.FlowProcessor), ("new", FlowProcessor)):
                    processor = make(fmt)
                    started = time.process_time()
                    for chunk in records(pool, n):
                        for at in range(0, len(chunk), size):
                            processor.feed(chunk[at : at + size])
                    processor.drain()
                    spent = time.process_time() - started
                    best[label] = min(best.get(label, spent), spent)
            print(
                f"{name:16} feeds of {size:>6,}: old {n / best['old']:>10,.0f}/s  "
                f"new {n / best['new']:>10,.0f}/s  new/old {best['old'] / best['new']:.2f}x"
            )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=1, help="aggregation windows over the run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--cli", action="store_true", help="time `flowexport parse` (text, Parquet) vs a naive loop"
    )
    parser.add_argument("--cli-records", type=int, default=2_000_000, help="lines for --cli")
    parser.add_argument(
        "--baseline-source", help="with --cli: another checkout's operator/ directory, timed too"
    )
    parser.add_argument(
        "--versus-old", action="store_true", help="the columnar processor vs the per-line one"
    )
    args = parser.parse_args()
    if args.cli:
        return cli_main(args.cli_records, args.repeat, args.json, args.baseline_source)
    if args.versus_old:
        return versus_old(args.records, args.repeat)
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
