"""The whole product through its stand-ins: kube simulator, moto server, PCE simulator, and the
real operator (`flowexport run`) as a subprocess, stopped with SIGTERM (killed if it hangs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flowexport.secrets import SecretKind
from flowexport.sim.kube import ADMIN_TOKEN, KubeSimulator
from flowexport.sim.operator_process import OperatorProcess
from flowexport.sim.stack import LoopbackStack, PCEStandIn
from tests.chart import RELEASE_NAMESPACE, container_args, of_kind, render
from tests.cloud import KEYS, REGION
from tests.pcesim import API_KEY, API_SECRET, SimPCE

ROOT = Path(__file__).resolve().parents[2]
NS = "security"
FE = f"/apis/flowexport.io/v1alpha1/namespaces/{NS}/flowexports"
MERGE = {"Content-Type": "application/merge-patch+json"}
RBAC_KINDS = {
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}


@dataclass
class Stack:
    """The loopback stack, with a VPC and a delivery role in moto, and the operator."""

    loop: LoopbackStack
    vpc: str
    role: str
    operator: OperatorProcess

    @property
    def kube(self) -> httpx.Client:
        return self.loop.kube

    @property
    def sim(self) -> KubeSimulator:
        return self.loop.sim

    def aws(self, service: str) -> Any:
        return self.loop.aws(service)

    def flowexport(self, name: str = "prod", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "FlowExport",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "aws": {
                    "region": REGION,
                    "vpcId": self.vpc,
                    "logGroupName": f"/flowexport/{name}",
                    "deliverLogsRoleArn": self.role,
                    "endpointUrl": self.loop.moto_url,
                    "credentialsSecretRef": {"name": "aws-keys"},
                },
                "pce": {
                    "url": self.loop.pce.url,
                    "orgId": 1,
                    "credentialsSecretRef": {"name": "pce-key"},
                },
                "ingestion": {"startFrom": "earliest", "pollIntervalSeconds": 1, "batchSize": 10},
            },
        }
        for path, value in spec.items():
            node = body["spec"]
            *parents, leaf = path.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return body

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.kube.post(FE, json=body)
        assert answer.status_code == 201, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def get(self, name: str = "prod") -> dict[str, Any]:
        result: dict[str, Any] = self.kube.get(f"{FE}/{name}").json()
        return result

    def condition(self, name: str, type_: str) -> tuple[str, str] | None:
        for c in self.get(name).get("status", {}).get("conditions", []):
            if c["type"] == type_:
                return (c["status"], c["reason"])
        return None

    def received(self) -> list[tuple[str, str, int, int]]:
        return self.loop.pce.flows()

    def events(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.get(f"/api/v1/namespaces/{NS}/events").json()[
            "items"
        ]
        return items


def eventually(check: Callable[[], Any], timeout: float = 45.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def install_chart_rbac(kube: httpx.Client, sim: KubeSimulator, values: dict[str, Any]) -> str:
    """Create the chart's ServiceAccount, Roles and bindings, and its admission policies;
    returns the account's token."""
    kube.post("/api/v1/namespaces", json={"metadata": {"name": RELEASE_NAMESPACE}})
    objects = render(values)
    (account,) = of_kind(objects, "ServiceAccount")
    for obj in objects:
        if obj["kind"] not in RBAC_KINDS:
            continue
        namespace = obj["metadata"].get("namespace")
        api = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
        plural = RBAC_KINDS[obj["kind"]]
        where = f"{api}/namespaces/{namespace}/{plural}" if namespace else f"{api}/{plural}"
        answer = kube.post(where, json=obj)
        assert answer.status_code == 201, answer.text
    return sim.service_account_token(RELEASE_NAMESPACE, account["metadata"]["name"])


@pytest.fixture
def stack(
    moto_url: str,
    pce: SimPCE,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """Everything running, the operator watching NS. Parametrized indirectly with chart values
    ({"watch": {...}}), the operator instead runs as the chart's ServiceAccount, under the
    chart's RBAC, with exactly the arguments of the chart's Deployment (rendered with this
    test's free ports, no settle delay and a 3 s resync)."""
    chart_values: dict[str, Any] | None = getattr(request, "param", None)
    served = PCEStandIn(pce.url, pce.sim, pce.server, API_KEY, API_SECRET)
    with LoopbackStack.running(
        tmp_path, moto_url=moto_url, pce=served, aws_keys=KEYS, region=REGION
    ) as loop:
        monkeypatch.setenv("KUBECONFIG", str(loop.kubeconfig))
        operator_config = tmp_path / "operator-kubeconfig"
        operator = loop.operator(NS, ["--resync-seconds", "3", "--verbose"], operator_config)
        if chart_values is not None:
            chart_values = {
                **chart_values,
                "health": {"port": operator.port},
                "metrics": {"port": operator.metrics_port},
                "operator": {
                    "settleSeconds": 0,
                    "resyncSeconds": 3,
                    "verbose": True,
                    "allowedPceHosts": loop.allow_pce()[1:],
                },
            }
            # As the kubelet does: $(VAR) in arguments expanded from the container's env.
            args = [
                a.replace("$(POD_NAME)", "flowexport-0")
                for a in container_args(render(chart_values))
            ]
            operator.namespace, operator.args = None, args
        try:
            crd = yaml.safe_load((ROOT / "crds" / "flowexport.yaml").read_text())
            loop.install(
                NS,
                {
                    "pce-key": (SecretKind.PCE_CREDENTIALS, served.credentials()),
                    "aws-keys": (SecretKind.AWS_CREDENTIALS, loop.aws_credentials()),
                },
                crd,
            )
            # The operator's own AWS identity (moto's account), which AccountGrants lend.
            operator.env.update(
                AWS_ACCESS_KEY_ID=KEYS.access_key_id,
                AWS_SECRET_ACCESS_KEY=KEYS.secret_access_key,
            )
            token = ADMIN_TOKEN
            if chart_values is not None:
                token = install_chart_rbac(loop.kube, loop.sim, chart_values)
            loop.write_kubeconfig(operator_config, token)
            vpc, role = loop.create_vpc_and_role("d")
            stack = Stack(loop, vpc, role, operator)
            operator.start()
            yield stack
        finally:
            code = operator.stop()
            # pytest shows this only when the test failed
            print(f"operator log (exit {code}):\n{operator.tail(200)}")
