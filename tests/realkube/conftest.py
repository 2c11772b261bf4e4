"""Fixtures for the tests against a real kube-apiserver (one control plane per session).

Without the binaries (`make kube-bin`, which needs Go) one test here, `test_controlplane.py`,
is skipped with one line saying why, and the others needing the server are deselected (so the
summary has that one line, not one per test); under CI (`CI=true`) a missing binary fails
them all instead, so CI always runs them.
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flowexport.api.crd import CRDS, FLOWEXPORT_CRD
from tests.realkube.controlplane import ControlPlane, find_binaries

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "flowexport.yaml"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CRD_NAME = "flowexports.flowexport.io"
FE_API = "/apis/flowexport.io/v1alpha1"


#: The test that stands for all of them when there is no server (skipped with the reason).
SENTINEL = "test_a_real_control_plane_runs"


@functools.cache
def binaries() -> tuple[Path | None, str]:
    """`find_binaries()`, looked up once per session."""
    return find_binaries()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without binaries (and not under CI): deselect the tests needing the server but one."""
    needing = [
        i for i in items if "control_plane" in getattr(i, "fixturenames", ()) and i.name != SENTINEL
    ]
    if not needing or binaries()[0] is not None or in_ci():
        return
    config.hook.pytest_deselected(items=needing)
    items[:] = [i for i in items if i not in needing]


def pytest_report_header(config: pytest.Config) -> str | None:
    """One line at the top when the real-server tests cannot run."""
    bin_dir, why = binaries()
    return None if bin_dir is not None else f"real kube-apiserver tests: {why}"


def in_ci() -> bool:
    """Whether this run is CI's (where a skipped real-server test is a failure)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver (+ kube-controller-manager when built), for the whole session."""
    bin_dir, why = binaries()
    if bin_dir is None:
        if in_ci():
            pytest.fail(f"real-server tests cannot run under CI: {why}", pytrace=False)
        pytest.skip(f"real kube-apiserver tests: {why}")
    logs = tmp_path_factory.mktemp("control-plane-logs")
    with ControlPlane.running(bin_dir, keep_logs=logs) as plane:
        yield plane


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    """An admin HTTP client to the real API server."""
    with control_plane.client() as client:
        yield client


def wait_for(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _install_crd(admin: httpx.Client, body: dict[str, Any], plural: str) -> dict[str, Any]:
    answer = admin.post(CRD_PATH, json=body)
    assert answer.status_code in (201, 409), answer.text
    name = body["metadata"]["name"]

    def established() -> dict[str, Any] | None:
        found: dict[str, Any] = admin.get(f"{CRD_PATH}/{name}").json()
        status = found.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        return found if conditions.get("Established") == "True" else None

    result: dict[str, Any] = wait_for(established, 30, f"the CRD {name} to be Established")
    # the resource is served once discovery lists it
    wait_for(lambda: admin.get(f"{FE_API}/{plural}").status_code == 200, 30, plural)
    return result


@pytest.fixture(scope="session")
def crd(admin: httpx.Client) -> dict[str, Any]:
    """The shipped CRD, installed and Established (with the project's other CRDs: the
    AccountGrant's, which the operator the chart configures watches)."""
    result = _install_crd(admin, yaml.safe_load(CRD_FILE.read_text()), "flowexports")
    for definition in CRDS:
        if definition is not FLOWEXPORT_CRD:
            shipped = yaml.safe_load((ROOT / "crds" / definition.file).read_text())
            _install_crd(admin, shipped, definition.plural)
    return result


@pytest.fixture
def namespace(admin: httpx.Client, crd: dict[str, Any]) -> Iterator[str]:
    """A fresh namespace for one test (deletion started after it, not awaited)."""
    name = f"t-{secrets.token_hex(4)}"
    answer = admin.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert answer.status_code == 201, answer.text
    yield name
    admin.delete(f"/api/v1/namespaces/{name}")
