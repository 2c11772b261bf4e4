"""A FlowExportSet's refresh (`kube/sets.py`) against the Kubernetes simulator (the official
client, the real CRDs) and an organisation in moto: FlowExports generated, labelled, owned,
updated and deleted as VPCs come and go; Report vs Ensure; coverage in status, the metric and
the Event once per change; an ungranted account refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config

from flowexport import lifecycle
from flowexport.api.crd import build_crds
from flowexport.api.grants import session_name
from flowexport.api.sets import ACCOUNT_LABEL, SET_LABEL, VPC_LABEL
from flowexport.api.validation import parse_spec
from flowexport.aws.session import AwsKeys, AwsTarget
from flowexport.fleet.plan import flowexport_name
from flowexport.fleet.scan import Access, NotGrantedError, Resolve, target_for
from flowexport.kube import metrics
from flowexport.kube.grants import GrantBook
from flowexport.kube.secrets import KubeSecrets
from flowexport.kube.sets import Fleet, SetApi, resolver
from flowexport.kube.state import Operator
from flowexport.sim.fleet import KEYS, MotoFleet, role_arn
from flowexport.sim.kube import ADMIN_TOKEN, KubeSimulator, kubeconfig
from flowexport.sim.serve import ServerThread
from tests.api.test_models import minimal_spec
from tests.kube.fakes import FakeKube, RecordingEvents, Stopped
from tests.moto_server import reset

NS = "security"
SETS = f"/apis/flowexport.io/v1alpha1/namespaces/{NS}/flowexportsets"
FES = f"/apis/flowexport.io/v1alpha1/namespaces/{NS}/flowexports"
REGIONS = ["us-east-1", "eu-west-1"]
TAGS = {"flowexport": "on"}
PCE = {"url": "https://pce.example.com", "orgId": 1, "credentialsSecretRef": {"name": "k"}}


@dataclass
class World:
    kube: httpx.Client
    fleet: MotoFleet
    sets: Fleet
    events: RecordingEvents
    granted: set[str]

    def apply(self, name: str = "org", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "FlowExportSet",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "accounts": self.fleet.members,
                "regions": REGIONS,
                "vpcs": {"tags": TAGS},
                "refreshSeconds": 5,
                "template": {"pce": PCE, "aws": {"endpointUrl": self.fleet.url}},
                **spec,
            },
        }
        answer = self.kube.post(SETS, json=body)
        assert answer.status_code == 201, answer.text
        return self.get_set(name)

    def get_set(self, name: str = "org") -> dict[str, Any]:
        found: dict[str, Any] = self.kube.get(f"{SETS}/{name}").json()
        return found

    def change(self, name: str = "org", **spec: Any) -> dict[str, Any]:
        answer = self.kube.patch(
            f"{SETS}/{name}",
            json={"spec": spec},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert answer.status_code == 200, answer.text
        return self.get_set(name)

    async def refresh(self, name: str = "org") -> dict[str, Any]:
        body = self.get_set(name)
        await self.sets.refresh(body, self.sets.state(NS, name))
        return self.get_set(name)

    def flowexports(self) -> dict[str, dict[str, Any]]:
        items = self.kube.get(FES).json()["items"]
        return {i["metadata"]["name"]: i for i in items}


def grants_of(granted: set[str], url: str) -> Any:
    def for_namespace(op: Operator, namespace: str) -> Resolve:
        assert namespace == NS

        def resolve(account: str, region: str | None) -> Access:
            if account not in granted:
                raise NotGrantedError(f"account {account} is not granted to {namespace}")
            return Access(account, role_arn(account), None, f"grant-{account}")

        return resolve

    return for_namespace


@pytest.fixture
def world(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    reset(moto_url)
    fleet = MotoFleet(moto_url)
    fleet.organise()
    fleet.add_accounts(None, 2)
    fleet.add_vpcs(fleet.members, REGIONS, 2, TAGS)
    # the operator's own identity (moto's management account)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEYS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEYS["aws_secret_access_key"])
    sim = KubeSimulator()
    with ServerThread(sim.app) as url, httpx.Client(base_url=url, timeout=30) as kube:
        for crd in build_crds():
            assert kube.post(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
            ).is_success
        assert kube.post("/api/v1/namespaces", json={"metadata": {"name": NS}}).is_success
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(url, ADMIN_TOKEN)))
        api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(path)))
        events = RecordingEvents()
        op = Operator(FakeKube(), events)
        granted = set(fleet.members)
        sets = Fleet(op, SetApi(api), grants_of(granted, moto_url))
        yield World(kube, fleet, sets, events, granted)


def condition(obj: dict[str, Any], type_: str) -> tuple[str, str]:
    (found,) = [c for c in obj["status"]["conditions"] if c["type"] == type_]
    return found["status"], found["reason"]


async def test_ensure_generates_a_flowexport_per_vpc_and_follows_the_vpcs(world: World) -> None:
    created = world.apply(flowLogs="Ensure")
    status = (await world.refresh())["status"]
    members, fleet = world.fleet.members, world.fleet
    assert status["accounts"] == {"total": 2, "granted": 2, "refused": 0, "failed": 0}
    assert status["vpcs"] == {"total": 8, "withFlowLog": 0, "withoutFlowLog": 8}
    assert status["flowExports"] == 8 and len(status["missing"]) == 8
    assert status["missing"] == sorted(status["missing"], key=lambda m: tuple(m.values()))
    generated = world.flowexports()
    assert len(generated) == 8
    one = next(iter(generated.values()))
    meta = one["metadata"]
    assert meta["labels"][SET_LABEL] == "org" and meta["labels"][ACCOUNT_LABEL] in members
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "FlowExportSet",
            "name": "org",
            "uid": created["metadata"]["uid"],
            "controller": True,
        }
    ]
    vpc = meta["labels"][VPC_LABEL]
    assert one["spec"]["aws"]["vpcId"] == vpc
    assert one["spec"]["aws"]["logGroupName"] == f"/flowexport/{vpc}"
    assert one["spec"]["aws"]["managementPolicy"] == "AdoptOrCreate"
    assert condition(await world.refresh(), "Ready") == ("True", "Ready")
    assert world.events.reasons() >= {"CoverageChanged", "FlowExportsChanged"}
    coverage_events = [e for e in world.events.posted if e[1] == "CoverageChanged"]
    assert len(coverage_events) == 1  # the second refresh changed nothing: no second Event
    assert (
        metrics.REGISTRY.get_sample_value(
            "flowexport_vpcs_without_flow_log", {"namespace": NS, "set": "org"}
        )
        == 8
    )

    # a VPC added: a FlowExport within the next refresh; one deleted: its FlowExport goes
    added = fleet.add_vpc(members[0], "eu-west-1", TAGS)
    gone_account, gone_region = members[1], "us-east-1"
    gone = next(
        v["VpcId"]
        for v in fleet.client("ec2", gone_account, gone_region).describe_vpcs(
            Filters=[{"Name": "tag:flowexport", "Values": ["on"]}]
        )["Vpcs"]
    )
    fleet.delete_vpc(gone_account, gone_region, gone)
    status = (await world.refresh())["status"]
    names = set(world.flowexports())
    assert flowexport_name("org", members[0], "eu-west-1", added) in names
    assert flowexport_name("org", gone_account, gone_region, gone) not in names
    assert len(names) == 8 and status["vpcs"]["total"] == 8
    # a flow log appears (as a generated FlowExport would create it): coverage moves
    ec2 = fleet.client("ec2", members[0], "eu-west-1")
    fleet.client("logs", members[0], "eu-west-1").create_log_group(logGroupName="/g")
    ec2.create_flow_logs(
        ResourceIds=[added],
        ResourceType="VPC",
        TrafficType="ALL",
        LogGroupName="/g",
        DeliverLogsPermissionArn=role_arn(members[0], "delivery"),
    )
    refreshed = await world.refresh()
    assert refreshed["status"]["vpcs"] == {"total": 8, "withFlowLog": 1, "withoutFlowLog": 7}
    # one Event per change: the VPC added and the one deleted, then the new flow log
    assert len([e for e in world.events.posted if e[1] == "CoverageChanged"]) == 3

    # the template changes: every FlowExport is updated, none recreated
    uids = {n: f["metadata"]["uid"] for n, f in world.flowexports().items()}
    world.change(deletionPolicy="Retain")
    await world.refresh()
    after = world.flowexports()
    assert {n: f["metadata"]["uid"] for n, f in after.items()} == uids
    assert {f["spec"]["deletionPolicy"] for f in after.values()} == {"Retain"}

    # the set goes: its FlowExports go with it
    await world.sets.clean_up(world.get_set())
    assert world.flowexports() == {}


async def test_report_generates_only_for_vpcs_with_a_flow_log_and_observes(world: World) -> None:
    fleet = world.fleet
    account = fleet.members[0]
    vpc = fleet.add_vpc(account, "us-east-1", TAGS)
    fleet.client("logs", account).create_log_group(logGroupName="/legacy")
    fleet.client("ec2", account).create_flow_logs(
        ResourceIds=[vpc],
        ResourceType="VPC",
        TrafficType="ALL",
        LogGroupName="/legacy",
        DeliverLogsPermissionArn=role_arn(account, "delivery"),
    )
    world.apply(flowLogs="Report")
    status = (await world.refresh())["status"]
    assert status["vpcs"] == {"total": 9, "withFlowLog": 1, "withoutFlowLog": 8}
    (only,) = world.flowexports().values()
    assert only["spec"]["aws"]["vpcId"] == vpc
    assert only["spec"]["aws"]["logGroupName"] == "/legacy"
    assert only["spec"]["aws"]["managementPolicy"] == "Observe"
    # Report changed nothing in AWS: still the one flow log
    assert len(fleet.flow_logs(account, "us-east-1")) == 1
    assert condition(world.get_set(), "Covered") == ("False", "FlowLogsMissing")


async def test_an_ungranted_account_is_refused_in_status_and_keeps_its_flowexports(
    world: World,
) -> None:
    world.apply(flowLogs="Ensure")
    await world.refresh()
    assert len(world.flowexports()) == 8
    outsider = world.fleet.members[1]
    world.granted.discard(outsider)
    obj = await world.refresh()
    status = obj["status"]
    assert status["accounts"] == {"total": 2, "granted": 1, "refused": 1, "failed": 0}
    assert [r["accountId"] for r in status["refusedAccounts"]] == [outsider]
    assert condition(obj, "Discovered") == ("False", "AccountsRefused")
    assert condition(obj, "Ready") == ("False", "AccountsRefused")
    # not silently dropped, and its FlowExports are not deleted for it
    assert len(world.flowexports()) == 8
    # out of the list: now they go
    world.change(accounts=[world.fleet.members[0]])
    await world.refresh()
    assert {f["metadata"]["labels"][ACCOUNT_LABEL] for f in world.flowexports().values()} == {
        world.fleet.members[0]
    }


async def test_the_cap_creates_no_more_and_says_so(world: World) -> None:
    world.apply(flowLogs="Ensure", maxFlowExports=3)
    obj = await world.refresh()
    assert len(world.flowexports()) == 3
    assert condition(obj, "Ready") == ("False", "TooManyFlowExports")


async def test_an_invalid_spec_is_reported_and_waits_for_a_change(world: World) -> None:
    world.apply()
    bad = world.get_set()
    bad["spec"]["template"]["aws"]["logFormat"] = "${version}"  # admission let it through
    wait = await world.sets.refresh(bad, world.sets.state(NS, "org"))
    assert wait == float("inf")
    assert condition(world.get_set(), "Ready") == ("False", "InvalidSpec")
    assert world.flowexports() == {}


def test_targets_keep_the_base_endpoint_and_take_the_grant_role() -> None:
    base = AwsTarget("us-east-1", "https://vpce.example.com", keys=AwsKeys("a", "b"))
    made = target_for(base, "eu-west-1", Access("2" * 12, role_arn("2" * 12), "ext"))
    assert made.region == "eu-west-1" and made.endpoint_url == base.endpoint_url
    assert made.role_arn == role_arn("2" * 12) and made.keys == base.keys


async def test_the_daemon_refreshes_on_a_spec_change_and_stops_when_told(world: World) -> None:
    world.apply(flowLogs="Report", refreshSeconds=3600)  # no timed refresh within the test
    stopped = Stopped()
    body = world.get_set()
    task = asyncio.create_task(world.sets.run(body, stopped))
    try:
        await wait_for(lambda: (world.get_set().get("status") or {}).get("vpcs"), "a refresh")
        assert world.flowexports() == {}
        # the spec changes (kopf's update handler pokes the daemon): Ensure at once
        body.update(world.change(flowLogs="Ensure"))
        world.sets.poke(NS, "org")
        await wait_for(lambda: len(world.flowexports()) == 8, "FlowExports after the change")
    finally:
        stopped.set()
        await asyncio.wait_for(task, 10)
    assert task.done() and task.exception() is None


async def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_with_namespace_session_names_the_set_shares_its_flowexports_clients() -> None:
    """One client set per account and region for the set's discovery and its FlowExports
    (`shared_clients` keys by the whole target): the set assumes the grant's role with the
    grant's `fx-<namespace>` session name, not its own, when the grant says Namespace."""
    account = "2" * 12
    body = {
        "metadata": {"name": "acct", "generation": 1},
        "spec": {
            "accountId": account,
            "roleArn": role_arn(account),
            "externalId": "ext",
            "namespaces": {"names": [NS]},
            "sessionNames": "Namespace",
        },
    }
    book = GrantBook()
    book.put(body)
    book.mark_synced()
    op = Operator(FakeKube(), RecordingEvents(), grants=book)
    fe_spec = parse_spec(
        minimal_spec(**{"aws.accountId": account, "aws.endpointUrl": "https://aws.example.com"})
    )
    fe_target = await lifecycle.aws_target(
        fe_spec, KubeSecrets(FakeKube(), NS, name="fe", grants=book)
    )
    set_base = AwsTarget(
        fe_spec.aws.region,
        "https://aws.example.com",
        session_name=session_name(NS, "set-org"),
        requests_per_second=fe_spec.aws.api_requests_per_second,
    )
    set_target = target_for(set_base, fe_spec.aws.region, resolver(op, NS)(account, None))
    assert set_target.session_name == "fx-security"
    assert set_target == fe_target
    # sessionNames FlowExport (the default): the set keeps its own session name
    book.put({**body, "spec": {**body["spec"], "sessionNames": "FlowExport"}})
    own = target_for(set_base, fe_spec.aws.region, resolver(op, NS)(account, None))
    assert own.session_name == session_name(NS, "set-org") != fe_target.session_name


async def test_a_refresh_does_not_rewrite_flowexports_that_did_their_work(world: World) -> None:
    """Once the generated FlowExports created their flow logs, and the operator wrote their
    status and kopf's annotations, the set's next refreshes write none of them (a write would
    bump the generation or the labels and reconcile it again)."""
    world.apply(flowLogs="Ensure")
    await world.refresh()
    generated = world.flowexports()
    assert len(generated) == 8
    for name, fe in generated.items():
        aws = fe["spec"]["aws"]
        account, region = fe["metadata"]["labels"][ACCOUNT_LABEL], aws["region"]
        world.fleet.client("logs", account, region).create_log_group(
            logGroupName=aws["logGroupName"]
        )
        world.fleet.client("ec2", account, region).create_flow_logs(
            ResourceIds=[aws["vpcId"]],
            ResourceType="VPC",
            TrafficType="ALL",
            LogGroupName=aws["logGroupName"],
            DeliverLogsPermissionArn=role_arn(account, "delivery"),
        )
        answer = world.kube.patch(
            f"{FES}/{name}",
            json={
                "metadata": {"annotations": {"kopf.zalando.org/last-handled-configuration": "{}"}}
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert answer.is_success, answer.text
        answer = world.kube.patch(
            f"{FES}/{name}/status",
            json={
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Ready",
                            "message": "",
                            "lastTransitionTime": "2026-12-07T00:00:00Z",
                        }
                    ]
                }
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert answer.is_success, answer.text
    before = {
        n: (f["metadata"]["resourceVersion"], f["metadata"].get("generation"))
        for n, f in world.flowexports().items()
    }
    changed = len([e for e in world.events.posted if e[1] == "FlowExportsChanged"])
    for _ in range(2):
        status = (await world.refresh())["status"]
        assert status["vpcs"] == {"total": 8, "withFlowLog": 8, "withoutFlowLog": 0}
    after = {
        n: (f["metadata"]["resourceVersion"], f["metadata"].get("generation"))
        for n, f in world.flowexports().items()
    }
    assert after == before
    assert len([e for e in world.events.posted if e[1] == "FlowExportsChanged"]) == changed
    assert status["flowExportsReady"] == 8
