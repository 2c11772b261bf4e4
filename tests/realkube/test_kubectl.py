"""kubectl on FlowExports against the real API server, and the same against the simulator:
apply, diff, `--dry-run=server`, `--server-side` (with a conflict), `wait`, `get`, `explain`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flowexport.sim.kube import KubeSimulator, kubeconfig
from flowexport.sim.serve import ServerThread
from tests.realkube.conftest import CRD_FILE, CRD_PATH
from tests.realkube.controlplane import ControlPlane
from tests.realkube.corpus import BASE

KUBECTL = str(Path(sys.executable).with_name("kubectl"))


class Kubectl:
    """kubectl with one kubeconfig and namespace."""

    def __init__(self, name: str, config: Path, namespace: str) -> None:
        self.name, self.config, self.namespace = name, config, namespace

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, f"--kubeconfig={self.config}", "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def sim_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    server = ServerThread(KubeSimulator().app)
    url = server.start()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            crd = yaml.safe_load(CRD_FILE.read_text())
            assert client.post(CRD_PATH, json=crd).status_code == 201
        path = tmp_path_factory.mktemp("sim") / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(url)))
        yield path
    finally:
        server.stop()


@pytest.fixture
def both(control_plane: ControlPlane, namespace: str, sim_config: Path) -> list[Kubectl]:
    sim = Kubectl("sim", sim_config, namespace)
    made = sim("create", "namespace", namespace)
    assert made.returncode == 0, made.stderr
    return [Kubectl("real", control_plane.kubeconfig, namespace), sim]


def manifest(tmp_path: Path, namespace: str, **spec: Any) -> Path:
    body = json.loads(json.dumps(BASE))
    body["metadata"]["namespace"] = namespace
    body["spec"]["pce"].update(spec)
    path = tmp_path / f"fe-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_apply_diff_dry_run_and_get(both: list[Kubectl], tmp_path: Path) -> None:
    for k in both:
        first = manifest(tmp_path, k.namespace)
        dry = k("apply", "--dry-run=server", "-f", str(first))
        assert dry.returncode == 0, (k.name, dry.stderr)
        assert "(server dry run)" in dry.stdout, (k.name, dry.stdout)
        assert k("get", "fe", "prod-vpc").returncode != 0, f"{k.name}: the dry run created it"
        created = k("apply", "-f", str(first))
        assert created.returncode == 0, (k.name, created.stderr)
        assert "created" in created.stdout, (k.name, created.stdout)
        again = k("apply", "-f", str(first))
        assert "unchanged" in again.stdout, (k.name, again.stdout)
        assert k("diff", "-f", str(first)).returncode == 0, k.name
        changed = manifest(tmp_path, k.namespace, orgId=2)
        diff = k("diff", "-f", str(changed))
        assert diff.returncode == 1, (k.name, diff.stdout, diff.stderr)
        assert "-  orgId: 1" in diff.stdout.replace("    ", "  ").replace("  -", "-"), (
            k.name,
            diff.stdout,
        )
        assert "+  orgId: 2" in diff.stdout.replace("    ", "  ").replace("  +", "+"), k.name
        got = k("get", "fe", "prod-vpc", "--no-headers")
        assert got.returncode == 0, (k.name, got.stderr)
        assert got.stdout.split()[:2] == ["prod-vpc", BASE["spec"]["aws"]["vpcId"]], (
            k.name,
            got.stdout,
        )
        bad = manifest(tmp_path, k.namespace, orgId="1")
        refused = k("apply", "-f", str(bad))
        assert refused.returncode != 0, k.name
        assert "orgId" in refused.stderr, (k.name, refused.stderr)


def test_server_side_apply_and_its_conflicts(both: list[Kubectl], tmp_path: Path) -> None:
    fields = []
    for k in both:
        first = manifest(tmp_path, k.namespace)
        applied = k("apply", "--server-side", "--field-manager=gitops", "-f", str(first))
        assert applied.returncode == 0, (k.name, applied.stderr)
        assert "serverside-applied" in applied.stdout, (k.name, applied.stdout)
        other = manifest(tmp_path, k.namespace, orgId=3)
        conflict = k("apply", "--server-side", "--field-manager=someone", "-f", str(other))
        assert conflict.returncode != 0, k.name
        assert "conflict" in conflict.stderr.lower(), (k.name, conflict.stderr)
        assert ".spec.pce.orgId" in conflict.stderr, (k.name, conflict.stderr)
        forced = k(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=someone",
            "-f",
            str(other),
        )
        assert forced.returncode == 0, (k.name, forced.stderr)
        obj = json.loads(k("get", "fe", "prod-vpc", "-o", "json", "--show-managed-fields").stdout)
        managers = {m["manager"]: m["operation"] for m in obj["metadata"]["managedFields"]}
        assert managers == {"gitops": "Apply", "someone": "Apply"}, (k.name, managers)
        assert obj["spec"]["pce"]["orgId"] == 3
        fields.append({m["manager"]: m["fieldsV1"] for m in obj["metadata"]["managedFields"]})
    real, sim = fields
    assert sim == real, "the simulator tracks other fields than the server"


def test_wait_and_explain(both: list[Kubectl], tmp_path: Path) -> None:
    for k in both:
        assert k("apply", "-f", str(manifest(tmp_path, k.namespace))).returncode == 0
        waited = k("wait", "--for=condition=Ready", "fe/prod-vpc", "--timeout=1s")
        assert waited.returncode != 0, k.name
        assert "timed out" in waited.stderr, (k.name, waited.stderr)
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Ready",
                        "message": "exporting flows",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ]
            }
        }
        patched = k(
            "patch",
            "fe",
            "prod-vpc",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(status),
        )
        assert patched.returncode == 0, (k.name, patched.stderr)
        waited = k("wait", "--for=condition=Ready", "fe/prod-vpc", "--timeout=10s")
        assert waited.returncode == 0, (k.name, waited.stderr)
        explained = k("explain", "flowexport.spec.source.stream.kmsKeyId")
        assert explained.returncode == 0, (k.name, explained.stderr)
        assert "null: no encryption" in " ".join(explained.stdout.split()), (
            k.name,
            explained.stdout,
        )
