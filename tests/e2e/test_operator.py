"""The operator as a real process: the full life (apply -> subscribed -> records at the PCE ->
status -> delete), restart, watched namespaces, logs, start-up, running unprivileged.

Behaviours of reconcile, worker, Secrets and clean-up are tested in-process in `tests/kube/`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from flowexport.sim.kube import KubeSimulator, kubeconfig
from flowexport.sim.operator_process import OperatorProcess
from flowexport.sim.serve import ServerThread
from tests.e2e.conftest import FE, NS, Stack, eventually
from tests.flowlines import put_connections
from tests.pcesim import API_SECRET


def write_flows(stack: Stack, group: str, count: int, start: int = 0, **values: object) -> None:
    put_connections(stack.aws("logs"), group, count, start, **values)


def test_apply_ingest_status_and_delete(stack: Stack) -> None:
    stack.apply(stack.flowexport())
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    status = stack.get()["status"]
    assert status["flowLogId"].startswith("fl-")
    assert status["observedGeneration"] == 1
    write_flows(stack, "/flowexport/prod", 25)
    eventually(lambda: len(stack.received()) == 25, what="25 flows at the PCE")
    eventually(
        lambda: stack.get()["status"].get("counts", {}).get("flowsUploaded") == 25,
        what="status counts",
    )
    status = stack.get()["status"]
    assert status["counts"]["recordsRead"] == 25
    assert status["cursor"]["ingestedThrough"] > 0
    assert status["lastUploadTime"].endswith("Z")
    reasons = {e["reason"] for e in stack.events()}
    assert {"SubscriptionChanged", "Ready"} <= reasons
    ids = '{name="prod",namespace="security"}'
    assert stack.operator.metric(f"flowexport_flows_uploaded_total{ids}") == 25
    assert stack.operator.metric(f"flowexport_records_read_total{ids}") == 25
    assert stack.operator.metric("flowexport_workers") == 1
    ready = 'flowexport_condition{name="prod",namespace="security",type="Ready"}'
    assert stack.operator.metric(ready) == 1
    stack.kube.delete(f"{FE}/prod")
    eventually(lambda: stack.kube.get(f"{FE}/prod").status_code == 404, what="deletion")
    flow_logs = stack.aws("ec2").describe_flow_logs()["FlowLogs"]
    assert flow_logs == []
    groups = stack.aws("logs").describe_log_groups(logGroupNamePrefix="/flowexport/prod")[
        "logGroups"
    ]
    assert groups == []


def test_operator_restart_resumes_from_the_status_cursor(stack: Stack) -> None:
    stack.apply(stack.flowexport())
    eventually(lambda: stack.condition("prod", "Ingesting") == ("True", "Ingesting"))
    write_flows(stack, "/flowexport/prod", 10)
    eventually(lambda: len(stack.received()) == 10)
    eventually(lambda: stack.get()["status"].get("counts", {}).get("flowsUploaded") == 10)
    assert stack.operator.stop() == 0
    write_flows(stack, "/flowexport/prod", 10, start=10)
    stack.operator.start()
    eventually(lambda: len({f[0] for f in stack.received()}) == 20, what="all 20 flows")
    time.sleep(2)
    assert len(stack.received()) - 20 <= 10, "at most one batch uploaded twice"
    eventually(lambda: stack.get()["status"]["counts"]["recordsRead"] >= 20)


def test_flowexports_outside_the_watched_namespace_are_left_alone(stack: Stack) -> None:
    stack.kube.post("/api/v1/namespaces", json={"metadata": {"name": "elsewhere"}})
    other = stack.flowexport("outside")
    other["metadata"]["namespace"] = "elsewhere"
    path = "/apis/flowexport.io/v1alpha1/namespaces/elsewhere/flowexports"
    assert stack.kube.post(path, json=other).status_code == 201
    stack.apply(stack.flowexport())  # in the watched namespace: a witness that it is working
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    ignored = stack.kube.get(f"{path}/outside").json()
    assert "status" not in ignored
    assert not ignored["metadata"].get("finalizers")
    logs = stack.aws("logs").describe_log_groups(logGroupNamePrefix="/flowexport/outside")
    assert logs["logGroups"] == []


def test_json_logs_are_one_object_per_line_and_carry_no_secret(stack: Stack) -> None:
    assert stack.operator.stop() == 0
    offset = stack.operator.log.stat().st_size
    stack.operator.args += ["--log-format", "json"]
    stack.operator.start()
    stack.apply(stack.flowexport())
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    assert stack.operator.stop() == 0
    lines = stack.operator.log.read_bytes()[offset:].decode().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert any("Ready=True" in r.get("message", "") for r in records)
    assert all(API_SECRET not in line for line in lines)


def test_the_operator_exits_with_the_reason_when_the_crd_is_missing(tmp_path: Path) -> None:
    """With exact namespaces kopf does not watch for CRDs; a missing one is an error at start,
    not an operator that runs idle."""
    sim = KubeSimulator()
    with ServerThread(sim.app) as url:
        config = tmp_path / "kubeconfig"
        config.write_text(yaml.safe_dump(kubeconfig(url)))
        operator = OperatorProcess(config, tmp_path / "operator.log", NS)
        with pytest.raises(RuntimeError, match="exited at start") as failure:
            operator.start()
    assert "the FlowExport CRD (flowexports.flowexport.io/v1alpha1) is not installed" in str(
        failure.value
    )


NOBODY = 65534


def _runs_as_nobody() -> bool:
    """Whether this machine can run the test's Python as an unprivileged user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            sys.executable,
            "-c",
            "import flowexport.kube.handlers",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _runs_as_nobody(), reason="needs root, setpriv and a venv others can read")
def test_the_operator_runs_unprivileged_with_nowhere_to_write_but_tmp(stack: Stack) -> None:
    """As in the image: a non-root user, no home, no bytecode writes. Everything but /tmp is
    root's here, so a write anywhere else would fail as on a read-only root filesystem."""
    stack.operator.stop()
    shared = Path(tempfile.mkdtemp(prefix="flowexport-nobody-"))
    shared.chmod(0o755)
    config = shared / "kubeconfig"
    shutil.copy(stack.operator.kubeconfig, config)
    config.chmod(0o644)
    operator = OperatorProcess(
        config,
        stack.operator.log,
        NS,
        [*stack.loop.allow_pce(), "--resync-seconds", "3"],
        launcher=["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"],
        env={"HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    stack.operator = operator
    try:
        operator.start()
        assert operator.pid is not None
        assert Path(f"/proc/{operator.pid}/status").read_text().count(f"\t{NOBODY}\t") >= 2
        stack.apply(stack.flowexport())
        eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
        write_flows(stack, "/flowexport/prod", 5)
        eventually(lambda: len(stack.received()) == 5, what="5 flows at the PCE")
        assert "Permission denied" not in operator.tail(2000)
        assert operator.stop() == 0  # SIGTERM: the workers finish and exit cleanly
    finally:
        operator.stop()
        shutil.rmtree(shared, ignore_errors=True)
