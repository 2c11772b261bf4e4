"""What a session name per FlowExport costs (issue 27 item 1): AssumeRole with the session name
`fx-<namespace>-<name>` means FlowExports assuming a role no longer share their AWS clients.

Against moto in server mode, in one process: N FlowExports' targets through `shared_clients`
(as the lifecycle builds them), once with one session name for all (the shared case before
grants) and once with a session name each; AssumeRole calls counted from moto's STS state,
time to make the clients, and the RSS they add (one run per process, so RSS is not reused).

    python bench/grants.py --flowexports 300 --mode shared
    python bench/grants.py --flowexports 300 --mode per-flowexport
    python bench/grants.py --flowexports 300 --mode per-namespace
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import httpx

from flowexport.api.grants import namespace_session_name, session_name
from flowexport.aws.session import AwsKeys, AwsTarget, shared_clients
from flowexport.sim.moto import moto_server

ROLE = "arn:aws:iam::210987654321:role/flowexport-member"


def rss_mib() -> float:
    """This process's resident set now (Linux /proc), in MiB."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    """Make the clients of N FlowExports and print what it took."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flowexports", type=int, default=300)
    parser.add_argument(
        "--mode", choices=["shared", "per-flowexport", "per-namespace"], required=True
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    with moto_server() as url:
        keys = AwsKeys("bench", "bench")
        warm = AwsTarget("us-east-1", url, ROLE, keys, external_id="bench-ext", session_name="warm")
        shared_clients(warm)  # botocore's models loaded once, outside the measurement
        before, started = rss_mib(), time.perf_counter()
        for index in range(args.flowexports):
            name = {
                "per-flowexport": session_name("team", f"vpc-{index:04d}"),
                "per-namespace": namespace_session_name("team"),  # sessionNames: Namespace
                "shared": "flowexport-operator",  # before grants: one name for all
            }[args.mode]
            target = AwsTarget(
                "us-east-1", url, ROLE, keys, external_id="bench-ext", session_name=name
            )
            clients = shared_clients(target)
            assert clients.logs is not None
        seconds = time.perf_counter() - started
        added = rss_mib() - before
        data = httpx.get(f"{url}/moto-api/data.json", timeout=30).json()
        assumed = len(data["sts"]["AssumedRole"]) - 1  # the warm-up's
    print(
        f"mode={args.mode} flowexports={args.flowexports} assume_role_calls={assumed} "
        f"seconds={seconds:.2f} rss_added_mib={added:.1f} "
        f"per_flowexport_mib={added / args.flowexports:.2f}"
    )


if __name__ == "__main__":
    main()
