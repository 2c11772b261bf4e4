"""Two replicas of the operator sharing FlowExports through Leases on the real server, under
the chart's RBAC for `replicas: 2`: every FlowExport Ready and exporting, each replica's Lease
in the release namespace as the coordination API stores it, and a stopped replica's
FlowExports taken over by the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowexport.sim.operator_process import OperatorProcess
from tests.chart import RELEASE_NAMESPACE
from tests.flowlines import connection_address, put_connections
from tests.realkube.conftest import wait_for
from tests.realkube.test_operator import NS, RealStack, real

__all__ = ["real"]  # the fixture

CHART_VALUES: dict[str, Any] = {
    "watch": {"scope": "all"},
    "replicas": 2,
    "sharding": {"leaseSeconds": 3},
}
EXPORTS = [f"share-{i}" for i in range(4)]
SPAN = 10_000


def delivered(real: RealStack) -> set[str]:
    return {f[0] for f in real.flows()}


def write(real: RealStack, start: int, count: int) -> set[str]:
    """`count` connections into each FlowExport's log group; their client addresses."""
    logs = real.aws("logs")
    sent = set()
    for k, name in enumerate(EXPORTS):
        put_connections(logs, f"/flowexport/{NS}/{name}", count, k * SPAN + start)
        sent |= {connection_address(k * SPAN + start + i) for i in range(count)}
    return sent


def test_two_replicas_share_and_take_over(real: RealStack, tmp_path: Path) -> None:
    first = real.operator
    assert any(a.startswith("--replica-id=") for a in first.args), first.args
    second = OperatorProcess(first.kubeconfig, tmp_path / "replica-1.log", None)
    ports = {str(first.port): str(second.port), str(first.metrics_port): str(second.metrics_port)}
    for given in first.args:  # the chart's arguments, with this replica's id and ports
        arg = given.replace("flowexport-0", "flowexport-1")
        for old, new in ports.items():
            arg = arg.replace(f"={old}", f"={new}").replace(f":{old}/", f":{new}/")
        second.args.append(arg)
    second.start()
    try:
        for name in EXPORTS:
            answer = real.admin.post(real.path(), json=real.flowexport(name))
            assert answer.status_code == 201, answer.text
        for name in EXPORTS:
            wait_for(
                lambda name=name: real.condition(name, "Ready") == ("True", "Ready"),
                90,
                f"{name} Ready",
            )
        leases = real.admin.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{RELEASE_NAMESPACE}/leases"
        ).json()["items"]
        holders = {lease["spec"].get("holderIdentity") for lease in leases}
        assert {"flowexport-0", "flowexport-1"} <= holders, leases
        sent = write(real, 0, 5)
        wait_for(lambda: delivered(real) >= sent, 90, "every FlowExport's first records")
        assert first.stop() == 0
        sent |= write(real, 5, 5)
        wait_for(lambda: delivered(real) >= sent, 120, "the records after the take-over")
    finally:
        second.stop()
        print(f"replica 1 log:\n{second.tail(80)}")
