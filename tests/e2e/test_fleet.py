"""A FlowExportSet through the real operator process, the Kubernetes simulator (every CRD,
AccountGrants enforced) and moto with two member accounts x two regions x two VPCs.

Proves issue 27 items 2-4 end to end: FlowExports generated per VPC, each reaching its account
through its AccountGrant (no roleArn, no keys) and creating its flow log (Ensure), coverage
going to full in status with one Event per change and the metric; a VPC added gets a
FlowExport within a refresh and a deleted one loses it; Report changes nothing; an ungranted
account is refused in status; and the workloads of both accounts' VPCs reach the one PCE org,
each read through its own account's role.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowexport.secrets import SecretKind
from flowexport.sim.fleet import KEYS, MANAGEMENT, MotoFleet, role_arn
from flowexport.sim.operator_process import OperatorProcess
from flowexport.sim.stack import LoopbackStack, PCEStandIn
from tests.e2e.conftest import eventually
from tests.pcesim import API_KEY, API_SECRET, SimPCE

NS = "fleet"
SETS = f"/apis/flowexport.io/v1alpha1/namespaces/{NS}/flowexportsets"
FES = f"/apis/flowexport.io/v1alpha1/namespaces/{NS}/flowexports"
GRANTS = "/apis/flowexport.io/v1alpha1/accountgrants"
REGIONS = ["us-east-1", "eu-west-1"]
TAGS = {"flowexport": "on"}
#: The timeout of every wait below (a refresh is 5 s; generated FlowExports reconcile at once).
WAIT = 90.0


@dataclass
class Fleet:
    loop: LoopbackStack
    fleet: MotoFleet
    operator: OperatorProcess

    def grant(self, account: str) -> None:
        role = None if account == MANAGEMENT else role_arn(account)
        spec: dict[str, Any] = {
            "accountId": account,
            "externalId": f"ext-{account}",
            "namespaces": {"names": [NS]},
        }
        if role:
            spec["roleArn"] = role
        self.loop.create(
            GRANTS,
            {
                "apiVersion": "flowexport.io/v1alpha1",
                "kind": "AccountGrant",
                "metadata": {"name": f"acct-{account}"},
                "spec": spec,
            },
        )

    def apply(self, name: str, **spec: Any) -> None:
        body = {
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "FlowExportSet",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "accounts": self.fleet.members,
                "regions": REGIONS,
                "vpcs": {"tags": TAGS},
                "refreshSeconds": 5,
                "destination": {"logGroups": {"deliverLogsRoleName": "flowexport-delivery"}},
                "template": {
                    "aws": {"endpointUrl": self.loop.moto_url},
                    "pce": {
                        "url": self.loop.pce.url,
                        "orgId": 1,
                        "credentialsSecretRef": {"name": "pce-key"},
                    },
                    "ingestion": {"pollIntervalSeconds": 1},
                },
                **spec,
            },
        }
        self.loop.create(SETS, body)

    def get(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.loop.kube.get(f"{SETS}/{name}").json()
        return found

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.get(name).get("status") or {}
        return status

    def condition(self, name: str, type_: str) -> tuple[str, str] | None:
        for c in self.status(name).get("conditions", []):
            if c["type"] == type_:
                return (c["status"], c["reason"])
        return None

    def flowexports(self, set_name: str) -> dict[str, dict[str, Any]]:
        items = self.loop.kube.get(
            FES, params={"labelSelector": f"flowexport.io/set={set_name}"}
        ).json()["items"]
        return {i["metadata"]["name"]: i for i in items}

    def events(self, reason: str) -> list[dict[str, Any]]:
        items = self.loop.kube.get(f"/api/v1/namespaces/{NS}/events").json()["items"]
        return [e for e in items if e.get("reason") == reason]

    def ready(self, set_name: str) -> int:
        return sum(
            1
            for fe in self.flowexports(set_name).values()
            for c in (fe.get("status") or {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        )


@pytest.fixture
def world(
    moto_url: str, pce: SimPCE, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Fleet]:
    served = PCEStandIn(pce.url, pce.sim, pce.server, API_KEY, API_SECRET)
    with LoopbackStack.running(tmp_path, moto_url=moto_url, pce=served) as loop:
        monkeypatch.setenv("KUBECONFIG", str(loop.kubeconfig))
        fleet = MotoFleet(moto_url)
        fleet.organise()
        fleet.add_accounts(None, 2)
        fleet.add_vpcs(fleet.members, REGIONS, 2, TAGS)
        # every CRD: FlowExport, AccountGrant, FlowExportSet
        loop.install(NS, {"pce-key": (SecretKind.PCE_CREDENTIALS, served.credentials())})
        operator = loop.operator(NS, ["--resync-seconds", "3", "--verbose"])
        # the operator's own identity: moto's management account; every member through a grant
        operator.env.update(
            AWS_ACCESS_KEY_ID=KEYS["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=KEYS["aws_secret_access_key"],
        )
        world = Fleet(loop, fleet, operator)
        try:
            operator.start()
            yield world
        finally:
            code = operator.stop()
            print(f"operator log (exit {code}):\n{operator.tail(300)}")


def test_a_set_over_two_accounts_ensures_flow_logs_and_follows_the_vpcs(world: Fleet) -> None:
    members = world.fleet.members
    for account in members:
        world.grant(account)
    world.apply("org", flowLogs="Ensure")
    eventually(lambda: len(world.flowexports("org")) == 8, WAIT, "8 FlowExports")
    generated = world.flowexports("org")
    for fe in generated.values():
        aws = fe["spec"]["aws"]
        assert aws["accountId"] in members and "roleArn" not in aws
        assert aws["managementPolicy"] == "AdoptOrCreate"
    # each FlowExport reaches its own account through its grant and creates its flow log
    eventually(lambda: world.ready("org") == 8, WAIT, "8 generated FlowExports Ready")
    for account in members:
        for region in REGIONS:
            logs = world.fleet.flow_logs(account, region)
            assert len(logs) == 2 and all(
                f["LogGroupName"].startswith("/flowexport/vpc-") for f in logs
            )
    eventually(
        lambda: (
            world.status("org").get("vpcs") == {"total": 8, "withFlowLog": 8, "withoutFlowLog": 0}
        ),
        WAIT,
        "full coverage",
    )
    eventually(
        lambda: world.status("org").get("flowExportsReady") == 8, WAIT, "8 Ready in the status"
    )
    assert world.condition("org", "Covered") == ("True", "Covered")
    assert world.condition("org", "Ready") == ("True", "Ready")
    assert (
        world.operator.metric('flowexport_vpcs_without_flow_log{namespace="fleet",set="org"}') == 0
    )
    # one Event per coverage change (none was missing at first sight... or 8 were: at most 2)
    changes = world.events("CoverageChanged")
    assert 1 <= len(changes) <= 2

    # a VPC added: a FlowExport (and its flow log) within a refresh
    added = world.fleet.add_vpc(members[0], "eu-west-1", TAGS)
    eventually(
        lambda: any(f["spec"]["aws"]["vpcId"] == added for f in world.flowexports("org").values()),
        WAIT,
        "a FlowExport for the new VPC",
    )
    # a VPC deleted: its FlowExport goes (and cleans up per its deletionPolicy)
    gone = next(
        f["spec"]["aws"]["vpcId"]
        for f in world.flowexports("org").values()
        if f["spec"]["aws"]["accountId"] == members[1] and f["spec"]["aws"]["region"] == "us-east-1"
    )
    world.fleet.delete_vpc(members[1], "us-east-1", gone)
    eventually(
        lambda: all(f["spec"]["aws"]["vpcId"] != gone for f in world.flowexports("org").values()),
        WAIT,
        "the deleted VPC's FlowExport gone",
    )
    eventually(
        lambda: (
            world.status("org").get("vpcs") == {"total": 8, "withFlowLog": 8, "withoutFlowLog": 0}
        ),
        WAIT,
        "full coverage again",
    )
    assert len(world.events("CoverageChanged")) > len(changes)  # the churn was announced

    # the set goes: every FlowExport it generated goes, each cleaning up (Delete) its flow log
    world.loop.kube.delete(f"{SETS}/org")
    eventually(lambda: world.flowexports("org") == {}, WAIT, "the set's FlowExports gone")
    eventually(
        lambda: all(world.fleet.flow_logs(a, r) == [] for a in members for r in REGIONS),
        WAIT,
        "the generated FlowExports' flow logs deleted",
    )


def test_report_changes_nothing_and_an_ungranted_account_is_refused(world: Fleet) -> None:
    granted, refused = world.fleet.members
    world.grant(granted)
    world.apply("watch", flowLogs="Report")
    eventually(
        lambda: (world.status("watch").get("accounts") or {}).get("refused") == 1,
        WAIT,
        "the ungranted account refused",
    )
    status = world.status("watch")
    assert status["accounts"] == {"total": 2, "granted": 1, "refused": 1, "failed": 0}
    (refusal,) = status["refusedAccounts"]
    assert refusal["accountId"] == refused and refusal["reason"] == "AccountNotGranted"
    assert status["vpcs"] == {"total": 4, "withFlowLog": 0, "withoutFlowLog": 4}
    assert len(status["missing"]) == 4
    assert {m["accountId"] for m in status["missing"]} == {granted}
    assert world.condition("watch", "Discovered") == ("False", "AccountsRefused")
    assert world.condition("watch", "Covered") == ("False", "FlowLogsMissing")
    assert world.flowexports("watch") == {}  # Report: no VPC has a flow log, nothing to read
    assert all(world.fleet.flow_logs(a, r) == [] for a in world.fleet.members for r in REGIONS)
    assert [e["type"] for e in world.events("CoverageChanged")] == ["Warning"]


def test_workloads_of_both_accounts_reach_the_one_pce_org_through_each_role(
    world: Fleet,
) -> None:
    """Item 4: each generated FlowExport syncs its own VPC's workloads through its account's
    role (the grant's): the interfaces of both accounts show as workloads of the one org."""
    first, second = world.fleet.members
    addresses = {}
    for index, account in enumerate((first, second)):
        ec2 = world.fleet.client("ec2", account, "us-east-1")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:flowexport", "Values": ["on"]}])["Vpcs"][0]
        subnet = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock=f"10.0.{10 + index}.0/24")
        eni = ec2.create_network_interface(SubnetId=subnet["Subnet"]["SubnetId"])
        addresses[account] = eni["NetworkInterface"]["PrivateIpAddress"]
        world.grant(account)
    world.apply(
        "mapped",
        flowLogs="Ensure",
        regions=["us-east-1"],
        template={
            "aws": {"endpointUrl": world.loop.moto_url},
            "pce": {
                "url": world.loop.pce.url,
                "orgId": 1,
                "credentialsSecretRef": {"name": "pce-key"},
            },
            "workloads": {"mode": "Sync", "labels": {"env": "fleet"}},
        },
    )

    def synced() -> set[str]:
        return {
            iface["address"]
            for w in world.loop.pce.workloads()
            for iface in w.get("interfaces", [])
        }

    eventually(
        lambda: set(addresses.values()) <= synced(), WAIT, "both accounts' interfaces as workloads"
    )
    fes = world.flowexports("mapped")
    by_account = {f["spec"]["aws"]["accountId"] for f in fes.values()}
    assert by_account == {first, second}
    # each account's interface is owned by a FlowExport of that account's VPC
    owners = {
        iface["address"]: w.get("external_data_set", "")
        for w in world.loop.pce.workloads()
        for iface in w.get("interfaces", [])
    }
    for account, address in addresses.items():
        owner_vpcs = [
            f["spec"]["aws"]["vpcId"]
            for f in fes.values()
            if f["spec"]["aws"]["accountId"] == account and f["metadata"]["name"] in owners[address]
        ]
        assert owner_vpcs, f"{address} of {account} is not owned by a FlowExport of {account}"
