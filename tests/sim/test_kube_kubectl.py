"""The Kubernetes API simulator driven by a client nobody here wrote: kubectl."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.processes import flowexport_server

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).with_name("kubectl")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    config = tmp_path_factory.mktemp("kube") / "kubeconfig"
    with flowexport_server("kube-sim", "--kubeconfig", str(config)) as ready:
        yield ready


def kubectl(
    cluster: dict[str, Any], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", cluster["kubeconfig"], *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextmanager
def running_kubectl(cluster: dict[str, Any], *args: str) -> Iterator[subprocess.Popen[str]]:
    """`kubectl ARGS` left running (e.g. a delete that waits); killed on exit if it still is."""
    process = subprocess.Popen(
        [str(KUBECTL), "--kubeconfig", cluster["kubeconfig"], *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def remove_finalizers(cluster: dict[str, Any], namespace: str, *resource: str) -> None:
    """What an operator's clean-up ends with: the object's finalizers removed."""
    patch = '[{"op": "remove", "path": "/metadata/finalizers"}]'
    ok(kubectl(cluster, "-n", namespace, "patch", *resource, "--type=json", "-p", patch))


@pytest.fixture(scope="module")
def applied(cluster: dict[str, Any]) -> dict[str, Any]:
    assert "created" in ok(kubectl(cluster, "apply", "-f", str(ROOT / "crds" / "flowexport.yaml")))
    ok(kubectl(cluster, "create", "namespace", "security"))
    out = ok(kubectl(cluster, "apply", "-f", str(ROOT / "examples" / "flowexport-minimal.yaml")))
    assert "flowexport.flowexport.io/prod-vpc created" in out
    assert "secret/pce-api-key created" in out
    return cluster


def test_get_shows_the_printer_columns(applied: dict[str, Any]) -> None:
    out = ok(kubectl(applied, "get", "fe", "-n", "security"))
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "READY", "REASON", "VPC", "UPLOADED", "LAG", "AGE"]
    assert row.split()[:2] == ["prod-vpc", "vpc-0123456789abcdef0"]


def test_api_server_defaults_and_secret_round_trip(applied: dict[str, Any]) -> None:
    path = "jsonpath={.spec.ingestion.batchSize} {.spec.deletionPolicy} {.metadata.generation}"
    assert (
        ok(kubectl(applied, "get", "fe", "prod-vpc", "-n", "security", "-o", path))
        == "1000 Delete 1"
    )
    secret = ok(
        kubectl(
            applied,
            "get",
            "secret",
            "pce-api-key",
            "-n",
            "security",
            "-o",
            "jsonpath={.data.username}",
        )
    )
    assert secret == "YXBpXzAxMjM0NTY3ODlhYmNkZWY="  # base64 of api_0123456789abcdef


def test_explain_uses_the_crd_descriptions(applied: dict[str, Any]) -> None:
    out = ok(kubectl(applied, "explain", "flowexport.spec.aws"))
    assert "region\t<string> -required-" in out  # logGroupName: not needed in mode s3
    assert "CloudWatch Logs log group the VPC flow log delivers to (modes poll and" in out


def test_invalid_specs_are_refused_with_the_field(applied: dict[str, Any]) -> None:
    bad = (
        (ROOT / "examples" / "flowexport-minimal.yaml").read_text().replace("orgId: 1", "orgId: 0")
    )
    result = kubectl(applied, "apply", "-f", "-", stdin=bad)
    assert result.returncode == 1
    assert "spec.pce.orgId" in result.stderr and "is invalid" in result.stderr
    unknown = bad.replace("orgId: 0", "orgId: 1\n    colour: blue")
    result = kubectl(applied, "apply", "-f", "-", stdin=unknown)
    assert result.returncode == 1
    assert 'unknown field "spec.pce.colour"' in result.stderr


def test_spec_edits_bump_generation_metadata_edits_do_not(applied: dict[str, Any]) -> None:
    get = ("get", "fe", "prod-vpc", "-n", "security", "-o", "jsonpath={.metadata.generation}")
    before = int(ok(kubectl(applied, *get)))
    ok(kubectl(applied, "label", "fe", "prod-vpc", "-n", "security", "team=sec"))
    assert int(ok(kubectl(applied, *get))) == before
    ok(
        kubectl(
            applied,
            "patch",
            "fe",
            "prod-vpc",
            "-n",
            "security",
            "--type",
            "merge",
            "-p",
            '{"spec": {"suspend": true}}',
        )
    )
    assert int(ok(kubectl(applied, *get))) == before + 1


def test_delete_waits_for_the_finalizer(applied: dict[str, Any]) -> None:
    doc = (ROOT / "examples" / "flowexport-minimal.yaml").read_text().split("---")[0]
    doc = doc.replace("name: prod-vpc", "name: doomed\n  finalizers: [flowexport.io/cleanup]")
    ok(kubectl(applied, "apply", "-f", "-", stdin=doc))
    delete = ("delete", "fe", "doomed", "-n", "security", "--timeout=60s")
    with running_kubectl(applied, *delete) as deleting:
        time.sleep(2)
        assert deleting.poll() is None, "kubectl must wait while the finalizer is there"
        stamp = ok(
            kubectl(
                applied,
                "get",
                "fe",
                "doomed",
                "-n",
                "security",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            )
        )
        assert stamp.endswith("Z")
        remove_finalizers(applied, "security", "fe", "doomed")
        out, err = deleting.communicate(timeout=30)
    assert deleting.returncode == 0, err
    assert '"doomed" deleted' in out
    assert "NotFound" in kubectl(applied, "get", "fe", "doomed", "-n", "security").stderr


def test_a_service_account_kubeconfig_is_subject_to_rbac(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    account = "flowexport-system/fx-flowexport-operator"
    with flowexport_server(
        "kube-sim", "--kubeconfig", str(config), "--as-service-account", account
    ) as ready:
        admin = {"kubeconfig": ready["kubeconfig"]}
        operator = {"kubeconfig": ready["service_accounts"][account]}
        ok(kubectl(admin, "create", "namespace", "security"))
        ok(
            kubectl(
                admin,
                "-n",
                "security",
                "create",
                "secret",
                "generic",
                "pce-key",
                "--from-literal=password=x",
            )
        )
        refused = kubectl(operator, "-n", "security", "get", "secret", "pce-key")
        assert refused.returncode == 1
        assert (
            'User "system:serviceaccount:flowexport-system:fx-flowexport-operator" cannot get'
            in refused.stderr
        )
        rbac = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: security}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: security}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, namespace: flowexport-system, name: fx-flowexport-operator}]
"""
        ok(kubectl(admin, "apply", "-f", "-", stdin=rbac))
        assert "pce-key" in ok(kubectl(operator, "-n", "security", "get", "secret", "pce-key"))
        assert kubectl(operator, "-n", "security", "get", "secrets").returncode == 1  # no list
