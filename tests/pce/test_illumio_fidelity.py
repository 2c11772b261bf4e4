"""A client nobody here wrote (illumio-py, Illumio's own SDK) against the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from illumio import IllumioApiException, Interface, Label, PolicyComputeEngine, Workload

from flowexport.sim.pce import PCESimulator
from flowexport.sim.serve import ServerThread
from tests.pcesim import API_KEY, API_SECRET, make_config


@dataclass
class Served:
    """illumio-py's client, and the simulator it talks to with the thread serving it."""

    pce: PolicyComputeEngine
    sim: PCESimulator
    server: ServerThread


@pytest.fixture
def served() -> Iterator[Served]:
    sim = PCESimulator(make_config(async_retry_after=0))
    server = ServerThread(sim.app)
    with server as url:
        parts = urlsplit(url)
        pce = PolicyComputeEngine(
            f"http://{parts.hostname}", port=str(parts.port), org_id="1", retry_count=0
        )
        pce.set_credentials(API_KEY, API_SECRET)
        yield Served(pce, sim, server)


@pytest.fixture
def illumio_pce(served: Served) -> PolicyComputeEngine:
    return served.pce


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


def test_bulk_update_and_update(illumio_pce: PolicyComputeEngine) -> None:
    role = illumio_pce.labels.create(Label(key="role", value="R-Web"))
    env = illumio_pce.labels.create(Label(key="env", value="E-Prod"))
    created = illumio_pce.workloads.bulk_create(
        [
            Workload(name=f"web{i}", interfaces=[Interface(name="eth0", address=f"10.0.2.{i}")])
            for i in (1, 2)
        ]
    )
    hrefs = [r["href"] for r in created]
    results = illumio_pce.workloads.bulk_update(
        [Workload(href=href, labels=[role, env]) for href in hrefs]
    )
    assert results == [{"href": href, "errors": []} for href in hrefs]
    for href in hrefs:
        fetched = illumio_pce.workloads.get_by_reference(href)
        assert sorted(label.href for label in fetched.labels) == sorted([role.href, env.href])
        assert fetched.interfaces[0].address.startswith("10.0.2.")  # not given, so kept

    illumio_pce.workloads.update(
        hrefs[0], {"description": "front end", "labels": [{"href": env.href}]}
    )
    fetched = illumio_pce.workloads.get_by_reference(hrefs[0])
    assert fetched.description == "front end"
    assert [label.href for label in fetched.labels] == [env.href]
    assert fetched.name == "web1"
    with pytest.raises(IllumioApiException, match="406"):
        illumio_pce.workloads.update(hrefs[0], {"labels": [{"href": "/orgs/1/labels/99"}]})


def test_bulk_update_of_an_unknown_workload_comes_back_with_an_error(
    illumio_pce: PolicyComputeEngine,
) -> None:
    (created,) = illumio_pce.workloads.bulk_create(
        [Workload(name="web1", interfaces=[Interface(name="eth0", address="10.0.3.1")])]
    )
    results = illumio_pce.workloads.bulk_update(
        [
            Workload(href="/orgs/1/workloads/missing", name="x"),
            Workload(href=created["href"], name="renamed"),
        ]
    )
    assert results[0]["href"] == "/orgs/1/workloads/missing"
    # illumio-py adds the result's own token/message to its `errors` when status isn't "updated".
    assert [e["token"] for e in results[0]["errors"]] == ["not_found", "not_found"]
    assert results[1] == {"href": created["href"], "errors": []}
    assert illumio_pce.workloads.get_by_reference(created["href"]).name == "renamed"


def test_managed_filter_and_ven(served: Served) -> None:
    pce, sim = served.pce, served.sim
    managed = served.server.call(
        lambda: sim.add_workload(
            {"hostname": "app01.lab", "interfaces": [{"name": "eth0", "address": "10.0.4.1"}]}
        )
    )
    pce.workloads.create(
        Workload(name="unmanaged", interfaces=[Interface(name="eth0", address="10.0.4.2")])
    )
    found = pce.workloads.get(params={"managed": True})
    assert [w.href for w in found] == [managed["href"]]
    assert found[0].ven.href == managed["ven"]["href"]
    assert found[0].ven.href.startswith("/orgs/1/vens/")
    assert found[0].agent.href == managed["agent"]["href"]
    unmanaged = pce.workloads.get(params={"managed": False})
    assert [w.name for w in unmanaged] == ["unmanaged"]
    assert unmanaged[0].ven is None and unmanaged[0].agent is None
    results = pce.workloads.bulk_delete([managed["href"]])
    assert [e["token"] for e in results[0]["errors"]] == ["validation_failure"]
    assert [w.href for w in pce.workloads.get(params={"managed": True})] == [managed["href"]]
