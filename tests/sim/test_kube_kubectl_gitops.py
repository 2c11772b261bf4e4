"""What GitOps tools do, done by kubectl to the kube simulator: server-side apply with field
managers, diff, server dry runs, single-object get, wait, and namespace deletion."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowexport.api.crd import build_crd
from tests.processes import flowexport_server
from tests.sim.test_kube_kubectl import (
    KUBECTL,
    ROOT,
    kubectl,
    ok,
    remove_finalizers,
    running_kubectl,
)

NS = "gitops"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    config = tmp_path_factory.mktemp("kube") / "kubeconfig"
    with flowexport_server("kube-sim", "--kubeconfig", str(config)) as ready:
        ok(kubectl(ready, "apply", "-f", "-", stdin=yaml.safe_dump(build_crd())))
        ok(kubectl(ready, "create", "namespace", NS))
        yield ready


def manifest(name: str, namespace: str = NS, **spec: Any) -> str:
    body = yaml.safe_load(
        (ROOT / "examples" / "flowexport-minimal.yaml").read_text().split("---")[0]
    )
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"].update(spec)
    return str(yaml.safe_dump(body))


def written(tmp_path: Path, text: str) -> str:
    path = tmp_path / "flowexport.yaml"
    path.write_text(text)
    return str(path)


def live(cluster: dict[str, Any], name: str, namespace: str = NS) -> dict[str, Any]:
    out = ok(
        kubectl(cluster, "get", "fe", name, "-n", namespace, "-o", "json", "--show-managed-fields")
    )
    result: dict[str, Any] = json.loads(out)
    return result


def test_server_side_apply_field_managers_and_conflicts(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    ssa = ("apply", "--server-side")
    first = written(tmp_path, manifest("ssa"))
    assert "flowexport.flowexport.io/ssa serverside-applied" in ok(
        kubectl(cluster, *ssa, "--field-manager=flux", "-f", first)
    )
    obj = live(cluster, "ssa")
    assert [(e["manager"], e["operation"]) for e in obj["metadata"]["managedFields"]] == [
        ("flux", "Apply")
    ]
    updated = written(tmp_path, manifest("ssa", suspend=True))
    ok(kubectl(cluster, *ssa, "--field-manager=flux", "-f", updated))
    obj = live(cluster, "ssa")
    assert obj["spec"]["suspend"] is True and obj["metadata"]["generation"] == 2

    rival = written(tmp_path, manifest("ssa", suspend=False))
    refused = kubectl(cluster, *ssa, "--field-manager=helm", "-f", rival)
    assert refused.returncode != 0
    assert 'conflict with "flux": .spec.suspend' in refused.stderr
    assert live(cluster, "ssa")["spec"]["suspend"] is True
    ok(kubectl(cluster, *ssa, "--field-manager=helm", "--force-conflicts", "-f", rival))
    obj = live(cluster, "ssa")
    assert obj["spec"]["suspend"] is False
    owners = {e["manager"]: e["fieldsV1"]["f:spec"] for e in obj["metadata"]["managedFields"]}
    assert "f:suspend" in owners["helm"] and "f:suspend" not in owners["flux"]


def test_diff_shows_the_change_and_changes_nothing(cluster: dict[str, Any], tmp_path: Path) -> None:
    ok(kubectl(cluster, "apply", "-f", written(tmp_path, manifest("diffed"))))
    before = live(cluster, "diffed")
    changed = written(tmp_path, manifest("diffed", suspend=True))
    result = kubectl(cluster, "diff", "-f", changed)
    assert result.returncode == 1, result.stderr  # 1: there are differences
    assert "-  suspend: false" in result.stdout and "+  suspend: true" in result.stdout
    after = live(cluster, "diffed")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["suspend"] is False
    same = kubectl(cluster, "diff", "-f", written(tmp_path, manifest("diffed")))
    assert same.returncode == 0, same.stdout + same.stderr


def test_server_dry_run_creates_nothing(cluster: dict[str, Any], tmp_path: Path) -> None:
    path = written(tmp_path, manifest("dry"))
    out = ok(kubectl(cluster, "apply", "--dry-run=server", "-f", path))
    assert "flowexport.flowexport.io/dry created (server dry run)" in out
    assert "NotFound" in kubectl(cluster, "get", "fe", "dry", "-n", NS).stderr
    ssa = kubectl(cluster, "apply", "--server-side", "--dry-run=server", "-f", path)
    assert "serverside-applied (server dry run)" in ok(ssa)
    assert "NotFound" in kubectl(cluster, "get", "fe", "dry", "-n", NS).stderr


def test_get_one_object_prints_the_printer_columns(cluster: dict[str, Any], tmp_path: Path) -> None:
    ok(kubectl(cluster, "apply", "-f", written(tmp_path, manifest("single"))))
    header, row = ok(kubectl(cluster, "get", "fe", "single", "-n", NS)).splitlines()
    columns = build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert header.split() == ["NAME"] + [
        c["name"].upper() for c in columns if c.get("priority", 0) == 0
    ]
    assert row.split()[:2] == ["single", "vpc-0123456789abcdef0"]  # Ready and Reason empty


def test_wait_returns_once_ready(cluster: dict[str, Any], tmp_path: Path) -> None:
    ok(kubectl(cluster, "apply", "-f", written(tmp_path, manifest("waited"))))
    waiting = subprocess.Popen(
        [
            str(KUBECTL),
            "--kubeconfig",
            cluster["kubeconfig"],
            "wait",
            "--for=condition=Ready",
            "flowexport/waited",
            "-n",
            NS,
            "--timeout=10s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        assert waiting.poll() is None, "not Ready yet"
        condition = {
            "type": "Ready",
            "status": "True",
            "reason": "Ready",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        ok(
            kubectl(
                cluster,
                "patch",
                "fe",
                "waited",
                "-n",
                NS,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"conditions": [condition]}}),
            )
        )
        out, err = waiting.communicate(timeout=15)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err
    assert "flowexport.flowexport.io/waited condition met" in out


def test_deleting_a_namespace_waits_for_its_finalizers(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    ok(kubectl(cluster, "create", "namespace", "doomed"))
    text = manifest("finalized", "doomed").replace(
        "name: finalized", "finalizers: [flowexport.io/cleanup]\n  name: finalized"
    )
    ok(kubectl(cluster, "apply", "-f", written(tmp_path, text)))
    ok(kubectl(cluster, "-n", "doomed", "create", "secret", "generic", "key", "--from-literal=k=v"))
    delete = ("delete", "namespace", "doomed", "--timeout=60s")
    with running_kubectl(cluster, *delete) as deleting:
        time.sleep(2)
        assert deleting.poll() is None, "kubectl waits while the namespace has content"
        phase = ("get", "namespace", "doomed", "-o", "jsonpath={.status.phase}")
        assert ok(kubectl(cluster, *phase)) == "Terminating"
        assert "NotFound" in kubectl(cluster, "-n", "doomed", "get", "secret", "key").stderr
        stamp = "jsonpath={.metadata.deletionTimestamp}"
        assert ok(kubectl(cluster, "-n", "doomed", "get", "fe", "finalized", "-o", stamp))
        late = kubectl(cluster, "-n", "doomed", "create", "configmap", "late")
        assert late.returncode == 1 and "because it is being terminated" in late.stderr
        remove_finalizers(cluster, "doomed", "fe", "finalized")
        out, err = deleting.communicate(timeout=30)
    assert deleting.returncode == 0, err
    assert 'namespace "doomed" deleted' in out
    assert "NotFound" in kubectl(cluster, "get", "namespace", "doomed").stderr
