"""The chart's Argo CD health check (argocd/health.lua) run by a real Lua interpreter on status
documents the operator really writes, in Argo CD's own test format; and how Flux's kstatus reads
the same documents.

The documents in argocd/testdata/ come from in-process runs (reconcile and worker against moto
and the PCE simulator); a test checks they still are what the operator writes, volatile fields
(times, ids, ports) set to fixed values. `UPDATE_TESTDATA=1` rewrites them instead.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from lupa import lua51

from flowexport.api.crd import build_crd
from flowexport.kube import metrics
from flowexport.kube.reconcile import reconcile
from flowexport.kube.state import Export
from flowexport.kube.worker import work
from flowexport.secrets import SecretKind
from tests.cloud import cloud
from tests.kube.conftest import NS, World, world
from tests.kube.fakes import Stopped
from tests.kube.test_worker import eventually
from tests.pcesim import API_KEY

__all__ = ["cloud", "world"]  # fixtures

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "charts" / "flowexport-operator" / "argocd"
SCRIPT = (ARGOCD / "health.lua").read_text()
HEALTH_TESTS: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())[
    "tests"
]

# Fixed stand-ins for what differs between runs.
TIME = "2026-11-24T12:00:00Z"
VPC = "vpc-0a1b2c3d4e5f60718"
FLOW_LOG = "fl-0123456789abcdef0"
AWS_URL = "http://127.0.0.1:4566"
PCE_URL = "https://pce.example.com:8443"
CURSOR_MS = 1795003200000

#: What kstatus computes for each document (see `kstatus` below).
KSTATUS = {
    "healthy": "Current",
    "suspended": "Current",
    "degraded_pce_unauthorized": "Failed",
    "progressing_pce_unavailable": "InProgress",
    "progressing_new_generation": "InProgress",
    "progressing_generation_not_observed": "InProgress",
    # kstatus skips the generation check without status.observedGeneration, and finds no
    # condition: Current. Argo CD's check says Progressing; the operator writes status at once.
    "progressing_no_status": "Current",
}


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus's result for a custom resource: sigs.k8s.io/cli-utils pkg/kstatus/status,
    `Compute` (status.go) = `checkGenericProperties` (generic.go: deletion, then `checkGeneration`:
    observedGeneration present and != generation is InProgress, then the first condition
    `Reconciling=True` (InProgress) or `Stalled=True` (Failed) in list order), else Current
    (read at 5895ad6c, 2025-10-21)."""
    metadata, status = obj["metadata"], obj.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return "Terminating"
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress"
    for condition in status.get("conditions") or []:
        if condition["type"] == "Reconciling" and condition["status"] == "True":
            return "InProgress"
        if condition["type"] == "Stalled" and condition["status"] == "True":
            return "Failed"
    return "Current"


def health(obj: dict[str, Any]) -> dict[str, str]:
    """health.lua's verdict, as Argo CD runs it: the object as global `obj`, `hs` returned.
    Lua 5.1, the language of Argo CD's interpreter (gopher-lua)."""
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return {"status": result["status"], "message": result["message"]}


def _document(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ARGOCD / "testdata" / f"{name}.yaml").read_text())
    return data


def _name(test: dict[str, Any]) -> str:
    return Path(test["inputPath"]).stem


def _flowexport(body: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    """The object as the API server would hand it to Argo CD or Flux."""
    metadata = body["metadata"]
    obj: dict[str, Any] = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {k: metadata[k] for k in ("name", "namespace", "generation")},
        "spec": copy.deepcopy(body["spec"]),
    }
    if status:
        obj["status"] = copy.deepcopy(status)
    return obj


def _fixed(obj: dict[str, Any], world: World) -> dict[str, Any]:
    """`obj` with the run's times, ids, ports and cursor position set to fixed values."""
    text = json.dumps(obj)
    real = {world.cloud.vpc_id: VPC, world.cloud.url: AWS_URL, world.pce.url: PCE_URL}
    for value in sorted(real, key=len, reverse=True):
        text = text.replace(value, real[value])
    text = re.sub(r"\bfl-[0-9a-f]{8,17}\b", FLOW_LOG, text)
    fixed: dict[str, Any] = json.loads(text)
    status = fixed.get("status", {})
    for condition in status.get("conditions", []):
        condition["lastTransitionTime"] = TIME
    if "lastUploadTime" in status:
        status["lastUploadTime"] = TIME
    if "cursor" in status:
        status["cursor"] = _times_fixed(status["cursor"])
    return fixed


def _times_fixed(value: Any) -> Any:
    """The cursor with every number (a time in ms) set to CURSOR_MS, its shape kept."""
    if isinstance(value, dict):
        return {key: _times_fixed(item) for key, item in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return CURSOR_MS
    return value


async def _ingest_until(
    world: World,
    export: Export,
    body: dict[str, Any],
    name: str,
    ready: tuple[str, str],
    checkpointed: bool = False,
) -> None:
    """Run the worker until Ready is `ready` (and, when `checkpointed`, until its status has
    settled: the cursor saved with its aggregation window and the effective poll interval said,
    which come after Ready, later or sooner by the machine's load), then stop it (its last
    status write included)."""
    stopped = Stopped()
    task = asyncio.create_task(work(world.op, export, body, stopped))

    def done() -> bool:
        if world.condition("Ready", name) != ready:
            return False
        if not checkpointed:
            return True
        status = world.status(name)
        return "window" in (status.get("cursor") or {}) and "effectivePollIntervalSeconds" in (
            status.get("source") or {}
        )

    try:
        await eventually(done, f"{name}: Ready {ready}" + (", status settled" * checkpointed))
    finally:
        stopped.set()
        await asyncio.wait_for(task, timeout=30)


def _body(world: World, name: str, **overrides: Any) -> dict[str, Any]:
    return world.body(name, **{"aws.logGroupName": f"/flowexport/{name}", **overrides})


async def real_documents(world: World) -> dict[str, dict[str, Any]]:
    """One FlowExport in each state, as the operator leaves it, by testdata name."""
    found: dict[str, dict[str, Any]] = {}
    found["progressing_no_status"] = _flowexport(_body(world, "new"), None)

    body = _body(world, "prod")
    export = world.export("prod")
    await reconcile(world.op, export, body)
    await _ingest_until(world, export, body, "prod", ("True", "Ready"), checkpointed=True)
    found["healthy"] = _flowexport(body, world.status("prod"))
    # The spec edited: the API server moved the generation, the operator has not seen it yet.
    edited = copy.deepcopy(body)
    edited["spec"]["ingestion"]["batchSize"] = 500
    edited["metadata"]["generation"] = 2
    found["progressing_generation_not_observed"] = _flowexport(edited, world.status("prod"))
    # Generation 2 reconciled; the worker has not yet ingested with it.
    await reconcile(world.op, export, edited)
    found["progressing_new_generation"] = _flowexport(edited, world.status("prod"))

    paused = _body(world, "paused", suspend=True)
    export = world.export("paused")
    await reconcile(world.op, export, paused)
    await _ingest_until(world, export, paused, "paused", ("False", "Suspended"))
    found["suspended"] = _flowexport(paused, world.status("paused"))

    world.kube.put_secret(
        NS, "pce-key-wrong", {"username": API_KEY, "password": "wrong"}, SecretKind.PCE_CREDENTIALS
    )
    wrong = _body(world, "wrong-key", **{"pce.credentialsSecretRef": {"name": "pce-key-wrong"}})
    await reconcile(world.op, world.export("wrong-key"), wrong)
    found["degraded_pce_unauthorized"] = _flowexport(wrong, world.status("wrong-key"))

    world.pce.faults(throttle_first=10_000, retry_after=0.0)  # every request: 429, retry at once
    down = _body(world, "pce-down")
    await reconcile(world.op, world.export("pce-down"), down)
    world.pce.faults()
    found["progressing_pce_unavailable"] = _flowexport(down, world.status("pce-down"))
    for name in ("paused", "wrong-key", "pce-down"):
        metrics.forget(NS, name)
    return {name: _fixed(obj, world) for name, obj in found.items()}


async def test_the_testdata_are_what_the_operator_writes(world: World) -> None:
    documents = await real_documents(world)
    assert set(documents) == set(KSTATUS) == {_name(t) for t in HEALTH_TESTS}
    if os.environ.get("UPDATE_TESTDATA") == "1":
        for name, obj in documents.items():
            path = ARGOCD / "testdata" / f"{name}.yaml"
            path.write_text(yaml.safe_dump(obj, sort_keys=False, width=100))
    for name, obj in documents.items():
        assert _document(name) == obj, f"testdata/{name}.yaml is stale: run with UPDATE_TESTDATA=1"


def test_the_tests_cover_every_health_and_every_document_once() -> None:
    assert {t["healthStatus"]["status"] for t in HEALTH_TESTS} == {
        "Healthy",
        "Progressing",
        "Degraded",
        "Suspended",
    }
    paths = sorted(t["inputPath"] for t in HEALTH_TESTS)
    assert paths == sorted(f"testdata/{p.name}" for p in (ARGOCD / "testdata").glob("*.yaml"))


@pytest.mark.parametrize("test", HEALTH_TESTS, ids=_name)
def test_health_lua_gives_the_expected_health(test: dict[str, Any]) -> None:
    assert health(_document(_name(test))) == test["healthStatus"]


@pytest.mark.parametrize("name", sorted(KSTATUS))
def test_kstatus_reads_each_document_as_documented(name: str) -> None:
    assert kstatus(_document(name)) == KSTATUS[name]


@pytest.mark.parametrize("name", sorted(KSTATUS))
def test_each_document_is_a_valid_flowexport(name: str) -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(_document(name), schema)
