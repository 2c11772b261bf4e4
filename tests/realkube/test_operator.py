"""The operator (`flowexport run`) against the real API server, as the chart's ServiceAccount
under the chart's rendered RBAC (a token from the TokenRequest API), with moto and the PCE
simulator: Ready, status, Events, kstatus and the Argo CD health check from the real object,
`kubectl wait`, a restart resuming from status, finalizer deletion and namespace deletion.

One operator for the module (the chart's cluster-wide install, so namespaces come and go).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from flowexport.secrets import SECRET_TYPE_LABEL, SecretKind
from flowexport.sim.moto import reset
from flowexport.sim.operator_process import OperatorProcess
from flowexport.sim.pce import PCESimConfig, PCESimulator
from flowexport.sim.serve import ServerThread
from flowexport.urls import endpoint_of, host_port_text
from tests.chart import RELEASE_NAMESPACE, container_args, of_kind, render
from tests.cloud import KEYS, REGION
from tests.deploy.test_argocd_health import health, kstatus
from tests.flowlines import put_connections
from tests.pcesim import API_KEY, API_SECRET
from tests.realkube.conftest import FE_API, wait_for
from tests.realkube.controlplane import ControlPlane

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
NS = "security"
VALUES: dict[str, Any] = {"watch": {"scope": "all"}}
PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
}


@dataclass
class RealStack:
    """The real API server with the chart's RBAC, moto, a PCE simulator and the operator."""

    plane: ControlPlane
    admin: httpx.Client
    moto_url: str
    pce_url: str
    pce: PCESimulator
    pce_server: ServerThread
    operator: OperatorProcess
    vpc: str
    role: str

    def aws(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id=KEYS.access_key_id,
            aws_secret_access_key=KEYS.secret_access_key,
        )

    def flowexport(self, name: str, namespace: str = NS) -> dict[str, Any]:
        return {
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "FlowExport",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "aws": {
                    "region": REGION,
                    "vpcId": self.vpc,
                    "logGroupName": f"/flowexport/{namespace}/{name}",
                    "deliverLogsRoleArn": self.role,
                    "endpointUrl": self.moto_url,
                    "credentialsSecretRef": {"name": "aws-keys"},
                },
                "pce": {
                    "url": self.pce_url,
                    "orgId": 1,
                    "credentialsSecretRef": {"name": "pce-key"},
                },
                "ingestion": {"startFrom": "earliest", "pollIntervalSeconds": 1, "batchSize": 10},
            },
        }

    def path(self, name: str = "", namespace: str = NS) -> str:
        return f"{FE_API}/namespaces/{namespace}/flowexports" + (f"/{name}" if name else "")

    def get(self, name: str, namespace: str = NS) -> dict[str, Any]:
        found: dict[str, Any] = self.admin.get(self.path(name, namespace)).json()
        return found

    def condition(self, name: str, type_: str, namespace: str = NS) -> tuple[str, str] | None:
        for c in self.get(name, namespace).get("status", {}).get("conditions", []):
            if c["type"] == type_:
                return (c["status"], c["reason"])
        return None

    def flows(self) -> list[Any]:
        found: list[Any] = self.pce_server.call(lambda: list(self.pce.state.flows))
        return found

    def namespace(self, name: str) -> None:
        """Create a namespace with the Secrets the FlowExports here reference."""
        answer = self.admin.post("/api/v1/namespaces", json={"metadata": {"name": name}})
        assert answer.status_code in (201, 409), answer.text
        secrets = {
            "pce-key": (SecretKind.PCE_CREDENTIALS, {"username": API_KEY, "password": API_SECRET}),
            "aws-keys": (
                SecretKind.AWS_CREDENTIALS,
                {
                    "aws_access_key_id": KEYS.access_key_id,
                    "aws_secret_access_key": KEYS.secret_access_key,
                },
            ),
        }
        for secret, (kind, data) in secrets.items():
            body = {
                "metadata": {"name": secret, "labels": {SECRET_TYPE_LABEL: str(kind)}},
                "stringData": data,
            }
            answer = self.admin.post(f"/api/v1/namespaces/{name}/secrets", json=body)
            assert answer.status_code in (201, 409), answer.text


def install_chart_rbac(admin: httpx.Client, values: dict[str, Any]) -> tuple[str, str, list[str]]:
    """Apply the chart's rendered ServiceAccount, Roles and bindings; (namespace, account,
    the paths of what was created)."""
    answer = admin.post("/api/v1/namespaces", json={"metadata": {"name": RELEASE_NAMESPACE}})
    assert answer.status_code in (201, 409), answer.text
    objects = render(values)
    created = []
    for obj in objects:
        if obj["kind"] in PATHS:
            namespace = obj["metadata"].get("namespace", RELEASE_NAMESPACE)
            where = PATHS[obj["kind"]].format(ns=namespace)
            answer = admin.post(where, json=obj)
            assert answer.status_code == 201, answer.text
            created.append(f"{where}/{obj['metadata']['name']}")
    (account,) = of_kind(objects, "ServiceAccount")
    return RELEASE_NAMESPACE, account["metadata"]["name"], created


def token_for(admin: httpx.Client, namespace: str, account: str) -> str:
    """A bound token for the ServiceAccount, from the TokenRequest API (as the kubelet gets)."""
    answer = admin.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["status"]["token"]
    return token


@pytest.fixture(scope="module")
def real(
    control_plane: ControlPlane,
    admin: httpx.Client,
    crd: dict[str, Any],
    moto_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[RealStack]:
    """The stack, the chart installed with the module's CHART_VALUES (default VALUES); the
    chart's RBAC is removed again after the module."""
    chart_values: dict[str, Any] = getattr(request.module, "CHART_VALUES", VALUES)
    watched: list[str] = chart_values["watch"].get("namespaces", [NS])
    workdir = tmp_path_factory.mktemp("real-operator")
    reset(moto_url)
    pce = PCESimulator(PCESimConfig(api_keys={API_KEY: API_SECRET}))
    pce_server = ServerThread(pce.app)
    pce_url = pce_server.start()
    created: list[str] = []
    try:
        for name in watched:  # the chart's Roles go into the watched namespaces
            answer = admin.post("/api/v1/namespaces", json={"metadata": {"name": name}})
            assert answer.status_code in (201, 409), answer.text
        namespace, account, created = install_chart_rbac(admin, chart_values)
        token = token_for(admin, namespace, account)
        kubeconfig = control_plane.write_kubeconfig(workdir / "operator.kubeconfig", token)
        operator = OperatorProcess(kubeconfig, workdir / "operator.log", None)
        values = {
            **chart_values,
            "health": {"port": operator.port},
            "metrics": {"port": operator.metrics_port},
            "operator": {
                "settleSeconds": 0,
                "resyncSeconds": 3,
                "verbose": True,
                # the PCE simulator is the one PCE the operator may send the API key to
                "allowedPceHosts": [host_port_text(endpoint_of(pce_url))],
            },
        }
        operator.args = [
            a.replace("$(POD_NAME)", "flowexport-0") for a in container_args(render(values))
        ]
        ec2 = boto3.client(
            "ec2",
            endpoint_url=moto_url,
            region_name=REGION,
            aws_access_key_id=KEYS.access_key_id,
            aws_secret_access_key=KEYS.secret_access_key,
        )
        iam = boto3.client(
            "iam",
            endpoint_url=moto_url,
            region_name=REGION,
            aws_access_key_id=KEYS.access_key_id,
            aws_secret_access_key=KEYS.secret_access_key,
        )
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        role = iam.create_role(RoleName="real-delivery", AssumeRolePolicyDocument="{}")
        stack = RealStack(
            control_plane,
            admin,
            moto_url,
            pce_url,
            pce,
            pce_server,
            operator,
            vpc,
            role["Role"]["Arn"],
        )
        for name in watched:
            stack.namespace(name)
        operator.start()
        try:
            yield stack
        finally:
            code = operator.stop()
            print(f"operator log (exit {code}):\n{operator.tail(200)}")
    finally:
        for path in created:
            admin.delete(path)
        pce_server.stop()


def kubectl(
    plane: ControlPlane, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_ready_status_events_and_health_from_the_real_object(real: RealStack) -> None:
    answer = real.admin.post(real.path(), json=real.flowexport("prod"))
    assert answer.status_code == 201, answer.text
    waited = kubectl(
        real.plane, "wait", "-n", NS, "--for=condition=Ready", "fe/prod", "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr
    obj = real.get("prod")
    assert obj["metadata"]["finalizers"], "the operator holds a finalizer"
    status = obj["status"]
    assert status["flowLogId"].startswith("fl-")
    assert status["observedGeneration"] == obj["metadata"]["generation"] == 1
    assert health(obj)["status"] == "Healthy"
    assert kstatus(obj) == "Current"
    put_connections(real.aws("logs"), "/flowexport/security/prod", 12)
    wait_for(lambda: len(real.flows()) == 12, 45, "12 flows at the PCE")
    wait_for(
        lambda: real.get("prod")["status"].get("counts", {}).get("flowsUploaded") == 12,
        30,
        "status counts",
    )
    events = real.admin.get(
        f"/api/v1/namespaces/{NS}/events", params={"fieldSelector": "involvedObject.name=prod"}
    ).json()["items"]
    reasons = {e["reason"] for e in events}
    assert {"SubscriptionChanged", "Ready"} <= reasons, reasons
    # the printer columns, from the real server's Table
    table = kubectl(real.plane, "get", "fe", "-n", NS, "prod", "--no-headers")
    assert table.returncode == 0, table.stderr
    assert table.stdout.split()[:5] == ["prod", "True", "Ready", real.vpc, "12"], table.stdout


def test_a_spec_change_is_progressing_until_observed(real: RealStack) -> None:
    wait_for(lambda: real.condition("prod", "Ready") == ("True", "Ready"), 30, "Ready")
    patch = {"spec": {"ingestion": {"batchSize": 5}}}
    answer = real.admin.patch(
        real.path("prod"),
        json=patch,
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"]["generation"] == 2
    wait_for(lambda: real.get("prod")["status"].get("observedGeneration") == 2, 30, "generation 2")
    wait_for(lambda: health(real.get("prod"))["status"] == "Healthy", 30, "Healthy")
    assert kstatus(real.get("prod")) == "Current"


def test_a_restart_resumes_from_the_status_cursor(real: RealStack) -> None:
    wait_for(lambda: len(real.flows()) == 12, 30, "the first 12 flows")
    assert real.operator.stop() == 0
    put_connections(real.aws("logs"), "/flowexport/security/prod", 8, start=12)
    real.operator.start()
    wait_for(lambda: len({f[0] for f in real.flows()}) == 20, 45, "all 20 flows")
    time.sleep(2)
    assert len(real.flows()) - 20 <= 10, "at most one batch uploaded twice"
    wait_for(lambda: real.get("prod")["status"]["counts"]["recordsRead"] >= 20, 30, "counts")


def test_deletion_behind_the_finalizer_cleans_up(real: RealStack) -> None:
    answer = real.admin.delete(real.path("prod"))
    assert answer.status_code in (200, 202), answer.text
    wait_for(lambda: real.admin.get(real.path("prod")).status_code == 404, 45, "deletion")
    logs = real.aws("logs").describe_log_groups(logGroupNamePrefix="/flowexport/security/prod")
    assert logs["logGroups"] == []
    flow_logs = [
        f
        for f in real.aws("ec2").describe_flow_logs()["FlowLogs"]
        if f.get("LogGroupName") == "/flowexport/security/prod"
    ]
    assert flow_logs == []


def test_deleting_a_namespace_completes(real: RealStack) -> None:
    if not real.plane.controller_manager:
        pytest.skip("namespace deletion needs kube-controller-manager (not built)")
    real.namespace("doomed")
    answer = real.admin.post(real.path(namespace="doomed"), json=real.flowexport("gone", "doomed"))
    assert answer.status_code == 201, answer.text
    wait_for(lambda: real.condition("gone", "Ready", "doomed") == ("True", "Ready"), 60, "Ready")
    answer = real.admin.delete("/api/v1/namespaces/doomed")
    assert answer.status_code == 200, answer.text
    wait_for(
        lambda: real.admin.get("/api/v1/namespaces/doomed").status_code == 404,
        90,
        "the namespace gone",
    )
    logs = real.aws("logs").describe_log_groups(logGroupNamePrefix="/flowexport/doomed/")
    assert logs["logGroups"] == [], "the operator cleaned up before the namespace went"
