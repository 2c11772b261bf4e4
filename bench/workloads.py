"""The workload sync at scale (run by hand): one VPC of N network interfaces in moto, the PCE
simulator, and `WorkloadSync` as the operator runs it.

    python bench/workloads.py [--enis 5000] [--json]

Half the interfaces belong to instances (one each, tagged Name/App/Role), half stand alone
(tagged like a load balancer's). Reports, each with its time and the PCE requests it made
(by method and path), then the sync's own counts:

- first: the first sync (every workload created, labels found or created);
- again: a sync with nothing changed;
- retag: 100 instances' App tag changed (100 bulk_update items; fewer below 200 interfaces);
- gone: 100 other instances terminated (100 bulk_delete items);
- aws_ms: of a sync's time, how long reading the VPC (moto) took; the rest is the PCE's and
  the operator's;
- baseline: the same addresses through `flowexport upload --ensure-workloads`'s path
  (`PCEClient.ensure_unmanaged_workloads`: one GET per address, then bulk_create), in the same
  process on a fresh simulator.

The simulator's rate limit is off so times measure the work; `at_450_per_min_s` is the floor a
real PCE's limit (500/min per key, the client keeps to 450) puts under each step's requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from flowexport.api.models import FlowExportSpec
from flowexport.aws.session import AwsKeys, AwsTarget, make_clients
from flowexport.pce.client import PCEClient, PCECredentials
from flowexport.sim.moto import moto_server
from flowexport.sim.pce import PCESimConfig, PCESimulator
from flowexport.sim.serve import ServerThread
from flowexport.workloads.sync import WorkloadSync

REGION = "us-east-1"
KEYS = AwsKeys("AKIABENCHWORKLOADS", "bench-secret")
API_KEY, API_SECRET = "api_bench", "bench-secret"
RATE_PER_MINUTE = 450


@dataclass
class Step:
    """One measured step."""

    name: str
    seconds: float
    requests: int
    by_kind: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def at_450_per_min_s(self) -> float:
        return self.requests / (RATE_PER_MINUTE / 60)


def _kind(entry: dict[str, Any]) -> str:
    parent, _, last = str(entry["path"]).rpartition("/")
    if last[:1].isdigit() or "-" in last or len(last) >= 32:  # an id: name its collection
        last = f"{parent.rsplit('/', 1)[-1]}/{{id}}"
    return f"{entry['method']} {last}"


class Pce:
    """A PCE simulator on loopback without a rate limit."""

    def __init__(self) -> None:
        self.sim = PCESimulator(
            PCESimConfig(api_keys={API_KEY: API_SECRET}, rate_limit_per_minute=0)
        )
        self.server = ServerThread(self.sim.app)
        self.url = self.server.start()

    def requests(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.server.call(lambda: list(self.sim.state.requests))
        return found

    def client(self) -> PCEClient:
        return PCEClient(self.url, 1, PCECredentials(API_KEY, API_SECRET), rate_per_minute=10**9)


async def _measure(name: str, pce: Pce, work: Any) -> tuple[Step, Any]:
    before = len(pce.requests())
    started = time.perf_counter()
    result = await work
    seconds = time.perf_counter() - started
    made = pce.requests()[before:]
    counts = {}
    for key in ("created", "updated", "deleted", "failed", "covered", "managed", "existing"):
        if hasattr(result, key):
            value = getattr(result, key)
            counts[key] = len(value) if isinstance(value, dict) else int(value)
    if hasattr(result, "discover_seconds"):
        counts["aws_ms"] = int(result.discover_seconds * 1000)
    kinds = dict(sorted(Counter(_kind(e) for e in made).items()))
    return Step(name, round(seconds, 2), len(made), kinds, counts), result


def _estate(url: str, enis: int) -> tuple[Any, str, list[str], list[str]]:
    """The VPC: enis/2 tagged instances and enis/2 tagged lone interfaces."""
    clients = make_clients(AwsTarget(REGION, endpoint_url=url, keys=KEYS))
    ec2 = clients.ec2
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/17")["Subnet"]["SubnetId"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instances: list[str] = []
    remaining = enis // 2
    while remaining:
        count = min(remaining, 500)
        made = ec2.run_instances(
            ImageId=image,
            MinCount=count,
            MaxCount=count,
            SubnetId=subnet,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": "App", "Value": "shop"}, {"Key": "Role", "Value": "web"}],
                }
            ],
        )
        instances += [i["InstanceId"] for i in made["Instances"]]
        remaining -= count
    lone = []
    for _ in range(enis - enis // 2):
        made = ec2.create_network_interface(
            SubnetId=subnet,
            TagSpecifications=[
                {
                    "ResourceType": "network-interface",
                    "Tags": [{"Key": "App", "Value": "shop"}, {"Key": "Role", "Value": "lb"}],
                }
            ],
        )
        lone.append(made["NetworkInterface"]["NetworkInterfaceId"])
    return clients, vpc, instances, lone


async def _run(enis: int) -> dict[str, Any]:
    steps: list[Step] = []
    with moto_server() as url:
        started = time.perf_counter()
        clients, vpc, instances, _ = _estate(url, enis)
        setup_s = time.perf_counter() - started
        spec = FlowExportSpec.model_validate(
            {
                "aws": {
                    "region": REGION,
                    "vpcId": vpc,
                    "logGroupName": "/flowexport/bench",
                    "endpointUrl": url,
                },
                "pce": {
                    "url": "https://pce.example",
                    "orgId": 1,
                    "credentialsSecretRef": {"name": "k"},
                },
                "workloads": {
                    "mode": "Sync",
                    "labels": {"env": "prod"},
                    "labelsFromTags": {"App": "app", "Role": "role"},
                },
            }
        )
        pce = Pce()
        try:
            async with pce.client() as client:
                sync = WorkloadSync(spec, clients, client, "bench/vpc")
                for name in ("first", "again"):
                    step, _ = await _measure(name, pce, sync.sync())
                    steps.append(step)
                some = min(100, len(instances) // 2)
                clients.ec2.create_tags(
                    Resources=instances[:some], Tags=[{"Key": "App", "Value": "billing"}]
                )
                step, _ = await _measure("retag", pce, sync.sync())
                steps.append(step)
                clients.ec2.terminate_instances(InstanceIds=instances[some : 2 * some])
                step, _ = await _measure("gone", pce, sync.sync())
                steps.append(step)
            addresses = sorted(
                {
                    p["PrivateIpAddress"]
                    for page in clients.ec2.get_paginator("describe_network_interfaces").paginate(
                        Filters=[{"Name": "vpc-id", "Values": [vpc]}]
                    )
                    for e in page["NetworkInterfaces"]
                    for p in e["PrivateIpAddresses"]
                }
            )
        finally:
            pce.server.stop()
        baseline = Pce()
        try:
            async with baseline.client() as client:
                step, _ = await _measure(
                    "baseline",
                    baseline,
                    client.ensure_unmanaged_workloads(addresses, "flowexport"),
                )
                steps.append(step)
        finally:
            baseline.server.stop()
    first, base = steps[0], steps[-1]
    first_pce_s = first.seconds - first.counts.get("aws_ms", 0) / 1000
    return {
        "enis": enis,
        "setup_s": round(setup_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "steps": [{**asdict(s), "at_450_per_min_s": round(s.at_450_per_min_s, 1)} for s in steps],
        "first_vs_baseline": {
            # The baseline reads no AWS: compare the PCE side (the sync's time without its
            # AWS reads, which are moto's own cost here).
            "pce_time_ratio": round(base.seconds / first_pce_s, 1) if first_pce_s > 0 else None,
            "requests_ratio": round(base.requests / first.requests, 1) if first.requests else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enis", type=int, default=5000, help="network interfaces (default 5000)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    if args.enis < 4:
        parser.error("--enis must be at least 4")
    report = asyncio.run(_run(args.enis))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['enis']} network interfaces (moto set-up {report['setup_s']} s), "
        f"peak RSS {report['peak_rss_mb']} MB"
    )
    for step in report["steps"]:
        print(
            f"  {step['name']:<9} {step['seconds']:>7.2f} s  {step['requests']:>5} PCE requests "
            f"(>= {step['at_450_per_min_s']:.0f} s at 450/min)  {step['counts']}  {step['by_kind']}"
        )
    ratio = report["first_vs_baseline"]
    print(
        f"  first sync vs one GET per address: PCE side {ratio['pce_time_ratio']}x faster, "
        f"{ratio['requests_ratio']}x fewer requests"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
