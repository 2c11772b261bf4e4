"""A FlowExportSet's coverage at fleet scale (run by hand; issue 27): an AWS organisation in
moto, the Kubernetes simulator, and the set's refresh as the operator's daemon runs it
(`kube/sets.Fleet.refresh`: the Organizations walk, discovery in 4 threads, the guardrail,
generated FlowExports, status), with every AWS request counted by a recording proxy.

    python bench/fleet_coverage.py [--accounts 50] [--regions us-east-1,eu-west-1] [--vpcs 3]
                                   [--changed 10] [--json]

The organisation: `--accounts` members, half in OU `workloads`, half in its child OU `prod`,
each with `--vpcs` tagged VPCs in every region (beside moto's default VPC, not selected), and
a central bucket in the management account (the log archive). The set: the OU `workloads`
walked recursively from the management account, the regions, VPCs by tag, `flowLogs:
Ensure` into the bucket (moto needs the bucket's ARN without a prefix). Steps, each with its
time, refreshes, AWS requests (by operation) and calls per account:

- apply: from the set's creation to full coverage (every selected VPC with a flow log);
- steady: one refresh with nothing changed (the per-refresh cost);
- churn: `--changed` accounts gain a VPC and `--changed` others lose one; the next refresh's
  coverage is compared with what moto holds (every tagged VPC's flow logs, listed directly);
- report: `flowLogs: Report`, `--changed` VPCs added: the next refresh must list exactly those
  as missing (sorted) and create nothing.

A FlowExportSet with an s3 destination generates no FlowExports, so this measures discovery,
the guardrail and the coverage report, not ingestion (see bench/operator_scale.py for that).

    python bench/fleet_coverage.py --operator [--accounts 50] ... [--json]

`--operator` measures the per-VPC path instead, through the real operator process (`flowexport
run`, AccountGrants enforced, the PCE simulator): destination `logGroups`, `flowLogs: Ensure`,
the template `suspend: true` (no ingestion: the FlowExports reconcile, i.e. create their log
group and flow log, and idle). Reported: seconds from the set's creation to every FlowExport
generated, to full coverage in the set's status, and to every FlowExport SubscriptionReady
(its flow log created; Ready stays False while suspended); AWS requests
by operation (all of them: the set's discovery and every FlowExport's reconcile, through the
proxy); the set's own AWS calls (its metric); the operator's RSS at the end and its peak
(VmHWM); reconciles per FlowExport (from its log, and DescribeSubscriptionFilters per
FlowExport, which counts the resync timer's too). `--hand-written` writes the same FlowExports
directly (same spec and accountId, so the same grants; no set), to tell the set's share from
the FlowExports'; `--log PATH` keeps the operator's log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import httpx
import yaml
from kubernetes import client, config

from flowexport.api.crd import build_crds
from flowexport.api.sets import FlowExportSetSpec, sample_spec
from flowexport.fleet.plan import flowexport_name
from flowexport.fleet.scan import Access, NotGrantedError, Resolve
from flowexport.kube.events import EventType
from flowexport.kube.sets import Fleet, SetApi
from flowexport.kube.state import Operator
from flowexport.sim.awsfaults import AWSFaultProxy
from flowexport.sim.fleet import KEYS, MANAGEMENT, MotoFleet, role_arn
from flowexport.sim.kube import ADMIN_TOKEN, KubeSimulator, kubeconfig
from flowexport.sim.moto import moto_server
from flowexport.sim.serve import ServerThread

NS = "security"
NAME = "org"
SETS = f"/apis/flowexport.io/v1alpha1/namespaces/{NS}/flowexportsets"
TAGS = {"flowexport": "on"}
BUCKET = "log-archive-central"
PCE = {"url": "https://pce.example.com", "orgId": 1, "credentialsSecretRef": {"name": "k"}}


@dataclass
class Step:
    """One measured step."""

    name: str
    seconds: float = 0.0
    refreshes: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    calls_per_account: dict[str, float] = field(default_factory=dict)
    status_vpcs: dict[str, int] = field(default_factory=dict)
    flow_logs_created: int = 0
    correct: bool | None = None
    note: str = ""


class Events:
    """The Events the set posts (kept, for the report)."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def post(self, body: Any, type_: EventType, reason: str, message: str) -> None:
        """Keep one Event."""
        self.posted.append((type_, reason, message))


def grants(members: list[str]) -> Any:
    """Every member and the management account granted (their member role)."""
    allowed = {*members, MANAGEMENT}

    def for_namespace(op: Operator, namespace: str) -> Resolve:
        def resolve(account: str, region: str | None) -> Access:
            if account not in allowed:
                raise NotGrantedError(f"account {account} is not granted")
            role = None if account == MANAGEMENT else role_arn(account)
            return Access(account, role, None, f"grant-{account}")

        return resolve

    return for_namespace


def scope(fleet: MotoFleet, regions: list[str]) -> dict[str, Any]:
    """The set's selection in both runs: OU `workloads` walked from the management account,
    the regions, VPCs by tag, `flowLogs: Ensure`."""
    return {
        "organization": {
            "managementAccountId": MANAGEMENT,
            "organizationalUnits": [fleet.ous["workloads"]],
        },
        "regions": regions,
        "vpcs": {"tags": TAGS},
        "flowLogs": "Ensure",
    }


def per_account(calls: dict[str, int], members: list[str]) -> dict[str, float]:
    """Min, mean and max AWS calls per member account, and the management account's."""
    counts = [calls.get(a, 0) for a in members]
    return {
        "min": min(counts),
        "mean": round(sum(counts) / len(counts), 2),
        "max": max(counts),
        "management": calls.get(MANAGEMENT, 0),
    }


def truth(fleet: MotoFleet, members: list[str], regions: list[str]) -> tuple[int, list[Any]]:
    """What moto holds: tagged VPCs, and those without a flow log into the bucket (sorted)."""
    total, missing = 0, []
    for account in members:
        for region in regions:
            ec2 = fleet.client("ec2", account, region)
            vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:flowexport", "Values": ["on"]}])
            into = {
                f["ResourceId"]
                for f in ec2.describe_flow_logs()["FlowLogs"]
                if f.get("LogDestination") == f"arn:aws:s3:::{BUCKET}"
            }
            for vpc in vpcs["Vpcs"]:
                total += 1
                if vpc["VpcId"] not in into:
                    missing.append({"accountId": account, "region": region, "vpcId": vpc["VpcId"]})
    return total, sorted(missing, key=lambda m: (m["accountId"], m["region"], m["vpcId"]))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    regions = args.regions.split(",")
    steps: list[Step] = []
    with (
        moto_server() as moto_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        started = time.monotonic()
        fleet = MotoFleet(moto_url)
        fleet.organise()
        fleet.add_ou("workloads")
        fleet.add_ou("prod", parent="workloads")
        half = args.accounts // 2
        fleet.add_accounts("workloads", half)
        fleet.add_accounts("prod", args.accounts - half)
        members = fleet.members
        fleet.add_vpcs(members, regions, args.vpcs, TAGS)
        fleet.client("s3").create_bucket(Bucket=BUCKET)
        setup_seconds = time.monotonic() - started
        proxy = AWSFaultProxy(moto_url)
        sim = KubeSimulator()
        with (
            ServerThread(proxy.app) as aws_url,
            ServerThread(sim.app) as kube_url,
            httpx.Client(base_url=kube_url, timeout=60) as kube,
        ):
            for crd in build_crds():
                kube.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
            kube.post("/api/v1/namespaces", json={"metadata": {"name": NS}})
            path = Path(tmp) / "kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(kube_url, ADMIN_TOKEN)))
            api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(path)))
            events = Events()
            op = Operator(cast(Any, None), events)
            sets = Fleet(op, SetApi(api), grants(members))
            state = sets.state(NS, NAME)

            async def refresh() -> dict[str, Any]:
                body = kube.get(f"{SETS}/{NAME}").json()
                await sets.refresh(body, state)
                status: dict[str, Any] = kube.get(f"{SETS}/{NAME}").json()["status"]
                return status

            def requests() -> dict[str, int]:
                return dict(Counter(h.operation for h in proxy.hits))

            body = {
                "apiVersion": "flowexport.io/v1alpha1",
                "kind": "FlowExportSet",
                "metadata": {"name": NAME, "namespace": NS},
                "spec": {
                    **scope(fleet, regions),
                    "destination": {"s3": {"bucket": BUCKET}},
                    "refreshSeconds": 300,
                    "template": {"pce": PCE, "aws": {"endpointUrl": aws_url}},
                },
            }
            expected = args.accounts * len(regions) * args.vpcs

            # apply -> full coverage
            proxy.clear()
            t0 = time.monotonic()
            kube.post(SETS, json=body)
            step = Step("apply")
            while True:
                status = await refresh()
                step.refreshes += 1
                vpcs = status["vpcs"]
                if vpcs["total"] == expected and vpcs["withoutFlowLog"] == 0:
                    break
                if step.refreshes > 5:
                    problems = status.get("refusedAccounts", []) + status.get("failedAccounts", [])
                    step.note = f"not covered after 5 refreshes: {vpcs} {problems[:3]}"
                    break
            step.seconds = round(time.monotonic() - t0, 2)
            step.requests = requests()
            step.calls_per_account = per_account(state.calls, members)
            step.status_vpcs = status["vpcs"]
            step.flow_logs_created = status["flowLogsCreated"]
            total, missing = truth(fleet, members, regions)
            step.correct = total == expected and missing == [] and status["missing"] == []
            steps.append(step)

            # steady: one refresh, nothing changed
            proxy.clear()
            t0 = time.monotonic()
            status = await refresh()
            step = Step("steady", round(time.monotonic() - t0, 2), 1, requests())
            step.calls_per_account = per_account(state.calls, members)
            step.status_vpcs = status["vpcs"]
            step.flow_logs_created = status["flowLogsCreated"]
            step.correct = status["vpcs"] == {
                "total": expected,
                "withFlowLog": expected,
                "withoutFlowLog": 0,
            }
            steps.append(step)

            # churn: VPCs added in some accounts, deleted in others
            changed = min(args.changed, len(members) // 2)
            for account in members[:changed]:
                fleet.add_vpc(account, regions[0], TAGS)
            for account in members[-changed:]:
                ec2 = fleet.client("ec2", account, regions[-1])
                vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:flowexport", "Values": ["on"]}])
                fleet.delete_vpc(account, regions[-1], vpc["Vpcs"][0]["VpcId"])
            proxy.clear()
            t0 = time.monotonic()
            status = await refresh()
            step = Step("churn", round(time.monotonic() - t0, 2), 1, requests())
            step.calls_per_account = per_account(state.calls, members)
            step.status_vpcs = status["vpcs"]
            step.flow_logs_created = status["flowLogsCreated"]
            total, missing = truth(fleet, members, regions)
            step.correct = (
                status["vpcs"] == {"total": total, "withFlowLog": total, "withoutFlowLog": 0}
                and missing == []
                and status["flowLogsCreated"] == changed
            )
            step.note = f"+{changed} VPCs, -{changed} VPCs; moto holds {total} tagged VPCs"
            steps.append(step)

            # report: nothing created, the new VPCs listed as missing
            kube.patch(
                f"{SETS}/{NAME}",
                json={"spec": {"flowLogs": "Report"}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            for account in members[changed : 2 * changed]:
                fleet.add_vpc(account, regions[0], TAGS)
            proxy.clear()
            t0 = time.monotonic()
            status = await refresh()
            step = Step("report", round(time.monotonic() - t0, 2), 1, requests())
            step.calls_per_account = per_account(state.calls, members)
            step.status_vpcs = status["vpcs"]
            step.flow_logs_created = status["flowLogsCreated"]
            total, missing = truth(fleet, members, regions)
            step.correct = (
                status["missing"] == missing[:50]
                and len(missing) == changed
                and status["vpcs"]["withoutFlowLog"] == changed
                and "CreateFlowLogs" not in step.requests
            )
            step.note = f"+{changed} VPCs under Report; missing listed: {len(status['missing'])}"
            steps.append(step)
    coverage_events = sum(1 for _, reason, _ in events.posted if reason == "CoverageChanged")
    return {
        "accounts": args.accounts,
        "regions": regions,
        "vpcs_per_account_region": args.vpcs,
        "setup_seconds": round(setup_seconds, 1),
        "coverage_events": coverage_events,
        "steps": [asdict(s) for s in steps],
    }


def run_operator(args: argparse.Namespace) -> dict[str, Any]:
    """The per-VPC path through the operator process (see the module's docstring)."""
    from flowexport.secrets import SecretKind  # noqa: PLC0415
    from flowexport.sim.stack import LoopbackStack  # noqa: PLC0415

    regions = args.regions.split(",")
    expected = args.accounts * len(regions) * args.vpcs
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, LoopbackStack.running(Path(tmp)) as loop:
        started = time.monotonic()
        fleet = MotoFleet(loop.moto_url)
        fleet.organise()
        fleet.add_ou("workloads")
        fleet.add_accounts("workloads", args.accounts)
        members = fleet.members
        vpcs = fleet.add_vpcs(members, regions, args.vpcs, TAGS)
        setup_seconds = time.monotonic() - started
        proxy = AWSFaultProxy(loop.moto_url)
        with ServerThread(proxy.app) as aws_url:
            # every CRD: FlowExport, AccountGrant, FlowExportSet
            loop.install(NS, {"pce-key": (SecretKind.PCE_CREDENTIALS, loop.pce.credentials())})
            grants_path = "/apis/flowexport.io/v1alpha1/accountgrants"
            for account in [MANAGEMENT, *members]:
                spec: dict[str, Any] = {
                    "accountId": account,
                    "namespaces": {"names": [NS]},
                    "sessionNames": args.session_names,
                }
                if account != MANAGEMENT:
                    spec["roleArn"] = role_arn(account)
                loop.create(
                    grants_path,
                    {
                        "apiVersion": "flowexport.io/v1alpha1",
                        "kind": "AccountGrant",
                        "metadata": {"name": f"acct-{account}"},
                        "spec": spec,
                    },
                )
            operator = loop.operator(NS, ["--resync-seconds", "300"])
            operator.env.update(
                AWS_ACCESS_KEY_ID=KEYS["aws_access_key_id"],
                AWS_SECRET_ACCESS_KEY=KEYS["aws_secret_access_key"],
            )
            operator.start()
            set_spec: dict[str, Any] = {
                **scope(fleet, regions),
                "destination": {"logGroups": {"deliverLogsRoleName": "delivery"}},
                "refreshSeconds": 10,
                "maxFlowExports": max(500, expected),
                "template": {
                    "aws": {"endpointUrl": aws_url},
                    "pce": {
                        "url": loop.pce.url,
                        "orgId": 1,
                        "credentialsSecretRef": {"name": "pce-key"},
                    },
                    "suspend": True,
                },
            }
            proxy.clear()
            t0 = time.monotonic()
            if args.hand_written:
                # The same FlowExports as the set would generate (the same spec, accountId:
                # the same grant), written directly: no set, no discovery.
                parsed = FlowExportSetSpec.model_validate(set_spec)
                fes_path = f"/apis/flowexport.io/v1alpha1/namespaces/{NS}/flowexports"
                for (account, region), vpc_ids in sorted(vpcs.items()):
                    for vpc_id in vpc_ids:
                        body = sample_spec(parsed, account, region, vpc_id)
                        body["aws"]["accountId"] = account
                        loop.create(
                            fes_path,
                            {
                                "apiVersion": "flowexport.io/v1alpha1",
                                "kind": "FlowExport",
                                "metadata": {
                                    "name": flowexport_name("hand", account, region, vpc_id),
                                    "namespace": NS,
                                },
                                "spec": body,
                            },
                        )
            else:
                loop.create(
                    SETS,
                    {
                        "apiVersion": "flowexport.io/v1alpha1",
                        "kind": "FlowExportSet",
                        "metadata": {"name": NAME, "namespace": NS},
                        "spec": set_spec,
                    },
                )
            fes = f"/apis/flowexport.io/v1alpha1/namespaces/{NS}/flowexports"
            deadline = t0 + args.timeout
            status: dict[str, Any] = {}
            peak = 0
            while time.monotonic() < deadline:
                items = loop.kube.get(fes).json()["items"]
                if not args.hand_written:
                    status = loop.kube.get(f"{SETS}/{NAME}").json().get("status") or {}
                peak = max(peak, _peak_rss(operator.pid))
                now = round(time.monotonic() - t0, 1)
                if len(items) >= expected:
                    timings.setdefault("all_generated", now)
                covered = status.get("vpcs") or {}
                if (
                    covered.get("total") == expected and covered.get("withoutFlowLog") == 0
                ) or args.hand_written:
                    timings.setdefault("full_coverage", now)
                ready = sum(
                    1
                    for i in items
                    for c in (i.get("status") or {}).get("conditions", [])
                    if c["type"] == "SubscriptionReady" and c["status"] == "True"
                )
                if ready >= expected:
                    timings.setdefault("all_subscribed", now)
                if {"full_coverage", "all_subscribed"} <= set(timings):
                    break
                time.sleep(1.0)
            requests = dict(Counter(h.operation for h in proxy.hits))
            set_calls = operator.metric(
                f'flowexport_set_aws_calls_total{{namespace="{NS}",set="{NAME}"}}'
            )
            rss = operator.metric("process_resident_memory_bytes")
            peak = max(peak, _peak_rss(operator.pid))
            operator.stop()
            reconciles = _reconciles(Path(tmp) / "operator.log")
            if args.log:
                shutil.copyfile(Path(tmp) / "operator.log", args.log)
    return {
        "mode": "operator",
        "session_names": args.session_names,
        "accounts": args.accounts,
        "regions": regions,
        "vpcs_per_account_region": args.vpcs,
        "setup_seconds": round(setup_seconds, 1),
        "seconds": timings,
        "status_vpcs": status.get("vpcs"),
        "flow_exports": status.get("flowExports"),
        "requests": requests,
        "requests_total": sum(requests.values()),
        "set_aws_calls": set_calls,
        "operator_rss_mb": round((rss or 0) / 2**20, 1),
        "operator_peak_rss_mb": round(peak / 2**20, 1),
        "hand_written": args.hand_written,
        "reconciles": reconciles,
        # Every reconcile that gets to the subscription filter check calls
        # DescribeSubscriptionFilters once (the resync timer's are not in the log).
        "reconciles_per_flowexport": round(
            requests.get("DescribeSubscriptionFilters", 0) / max(1, expected), 2
        ),
    }


def _peak_rss(pid: int | None) -> int:
    """The process's peak RSS (VmHWM) in bytes, 0 when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _reconciles(log_path: Path) -> dict[str, Any]:
    """How often the FlowExports were reconciled, from the operator's log: by trigger, and
    how many FlowExports were reconciled how many times."""
    triggers: Counter[str] = Counter()
    per: Counter[str] = Counter()
    if log_path.exists():
        for line in log_path.read_text(errors="replace").splitlines():
            found = re.search(r"\] (\S+)/(\S+): reconcile on (\w+)", line)
            if found is None:
                found = re.search(r"\] (\S+)/(\S+): Secret (.*) changed; reconciling", line)
            if found is None:
                continue
            per[found.group(2)] += 1
            triggers[found.group(3)[:40]] += 1
    return {
        "by_trigger": dict(triggers),
        "flowexports_by_count": {str(k): v for k, v in sorted(Counter(per.values()).items())},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON); exit 1 if a coverage report was wrong."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--regions", default="us-east-1,eu-west-1")
    parser.add_argument("--vpcs", type=int, default=3, help="tagged VPCs per account and region")
    parser.add_argument("--changed", type=int, default=10, help="accounts gaining/losing a VPC")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--operator", action="store_true", help="the per-VPC path through the operator process"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="--operator: give up after")
    parser.add_argument(
        "--session-names",
        choices=["FlowExport", "Namespace"],
        default="FlowExport",
        help="--operator: the AccountGrants' sessionNames (Namespace: one client set per grant)",
    )
    parser.add_argument(
        "--hand-written",
        action="store_true",
        help="--operator: write the same FlowExports directly (accountId: the same grants), no set",
    )
    parser.add_argument("--log", type=Path, help="--operator: copy the operator's log here")
    args = parser.parse_args(argv)
    # The operator's own identity, from which every grant's role is assumed: moto's
    # management account.
    os.environ["AWS_ACCESS_KEY_ID"] = KEYS["aws_access_key_id"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = KEYS["aws_secret_access_key"]
    if args.operator:
        found = run_operator(args)
        print(json.dumps(found, indent=2))
        return 0 if {"full_coverage", "all_subscribed"} <= set(found["seconds"]) else 1
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['accounts']} accounts x {len(result['regions'])} regions x "
            f"{result['vpcs_per_account_region']} VPCs (moto set-up {result['setup_seconds']} s)"
        )
        for s in result["steps"]:
            print(
                f"{s['name']:>7}: {s['seconds']:7.2f} s, {s['refreshes']} refresh(es), "
                f"requests {sum(s['requests'].values())} {s['requests']}, calls/account "
                f"{s['calls_per_account']}, vpcs {s['status_vpcs']}, created "
                f"{s['flow_logs_created']}, correct {s['correct']} {s['note']}"
            )
        print(f"CoverageChanged Events: {result['coverage_events']}")
    return 0 if all(s["correct"] for s in result["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
