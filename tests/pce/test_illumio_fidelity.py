"""A client nobody here wrote (illumio-py, Illumio's own SDK) against the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from illumio import Interface, Label, PolicyComputeEngine, Workload

from flowexport.sim.pce import PCESimulator
from flowexport.sim.serve import ServerThread
from tests.pcesim import API_KEY, API_SECRET, make_config


@pytest.fixture
def illumio_pce() -> Iterator[PolicyComputeEngine]:
    sim = PCESimulator(make_config(async_retry_after=0))
    with ServerThread(sim.app) as url:
        parts = urlsplit(url)
        pce = PolicyComputeEngine(
            f"http://{parts.hostname}", port=str(parts.port), org_id="1", retry_count=0
        )
        pce.set_credentials(API_KEY, API_SECRET)
        yield pce


def test_connection_check(illumio_pce: PolicyComputeEngine) -> None:
    assert illumio_pce.check_connection()
    illumio_pce.set_credentials(API_KEY, "wrong")
    assert not illumio_pce.check_connection()


def test_labels(illumio_pce: PolicyComputeEngine) -> None:
    created = illumio_pce.labels.create(Label(key="role", value="R-Web"))
    assert created.href == "/orgs/1/labels/1"
    illumio_pce.labels.create(Label(key="role", value="R-Web-Admin"))
    found = illumio_pce.labels.get(params={"key": "role", "value": "R-Web"})
    assert sorted(label.value for label in found) == ["R-Web", "R-Web-Admin"]  # partial match
    assert illumio_pce.labels.get_by_reference(created.href).value == "R-Web"


def test_workloads(illumio_pce: PolicyComputeEngine) -> None:
    role = illumio_pce.labels.create(Label(key="role", value="R-DB"))
    workload = illumio_pce.workloads.create(
        Workload(
            name="db01",
            hostname="db01.lab",
            labels=[role],
            interfaces=[Interface(name="eth0", address="10.0.0.5", link_state="up")],
        )
    )
    assert workload.href.startswith("/orgs/1/workloads/")
    fetched = illumio_pce.workloads.get_by_reference(workload.href)
    assert fetched.interfaces[0].address == "10.0.0.5"
    assert fetched.labels[0].href == role.href
    by_ip = illumio_pce.workloads.get(params={"ip_address": "10.0.0.5", "managed": False})
    assert [w.name for w in by_ip] == ["db01"]

    results = illumio_pce.workloads.bulk_create(
        [
            Workload(name=f"web{i}", interfaces=[Interface(name="eth0", address=f"10.0.1.{i}")])
            for i in range(1, 6)
        ]
    )
    assert all(not r["errors"] for r in results)
    assert len(illumio_pce.workloads.get_all()) == 6
    assert len(illumio_pce.workloads.get_async()) == 6

    illumio_pce.workloads.bulk_delete([r["href"] for r in results])
    illumio_pce.workloads.delete(workload.href)
    assert illumio_pce.workloads.get_all() == []
