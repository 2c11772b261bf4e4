"""The PCE simulator's contract, checked with plain HTTP requests."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flowexport.sim.pce import LABEL_KEYS, PCESimulator
from flowexport.sim.serve import ServerThread
from tests.pcesim import API_KEY, API_SECRET, SimPCE, make_config

AUTH = (API_KEY, API_SECRET)
FLOWS = "/api/v2/orgs/1/agents/bulk_traffic_flows"
WORKLOADS = "/api/v2/orgs/1/workloads"
VEN_HREF = re.compile(r"/orgs/1/vens/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
AGENT_HREF = re.compile(r"/orgs/1/agents/[0-9]+")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    sim = PCESimulator(
        make_config(
            rate_limit_per_minute=20,
            read_only_keys=frozenset({"api_ro"}),
            api_keys={API_KEY: API_SECRET, "api_ro": "ro"},
        )
    )
    with ServerThread(sim.app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def csv(text: str) -> dict[str, str]:
    return {"Content-Type": "text/csv"}


def test_auth_is_required(http: httpx.Client) -> None:
    assert http.get("/api/v2/orgs/1/labels").status_code == 401
    assert http.get("/api/v2/orgs/1/labels", auth=(API_KEY, "nope")).status_code == 401
    response = http.get("/api/v2/orgs/1/labels", auth=AUTH)
    assert response.status_code == 200
    assert response.json() == []


def test_unknown_org_is_404(http: httpx.Client) -> None:
    response = http.get("/api/v2/orgs/2/labels", auth=AUTH)
    assert response.status_code == 404
    assert response.json()[0]["token"] == "not_found"


def test_bulk_flows_counts_good_lines_and_lists_bad_ones(http: httpx.Client) -> None:
    body = (
        "10.0.0.1,10.0.0.2,443,6\n"
        "10.0.0.1,10.0.0.2,http,6\n"
        "10.0.0.1,2001:db8::1,443,6\n"
        "10.0.0.1,10.0.0.2,443\n"
        "2001:DB8::1,2001:db8::2,53,17\r\n\n"
    )
    response = http.post(FLOWS, content=body, headers=csv(body), auth=AUTH)
    assert response.status_code == 201
    assert response.json() == {
        "num_flows_received": 5,
        "num_flows_failed": 3,
        "failed_flows": [
            "10.0.0.1,10.0.0.2,http,6",
            "10.0.0.1,2001:db8::1,443,6",
            "10.0.0.1,10.0.0.2,443",
        ],
    }
    recorded = http.get("/_sim/flows").json()
    assert recorded["flows"] == [
        ["10.0.0.1", "10.0.0.2", 443, 6],
        ["2001:db8::1", "2001:db8::2", 53, 17],
    ]


def test_bulk_flows_limits_and_media_type(http: httpx.Client) -> None:
    too_many = "".join(f"10.0.{i // 250}.{i % 250},10.1.0.1,443,6\n" for i in range(1001))
    response = http.post(FLOWS, content=too_many, headers=csv(""), auth=AUTH)
    assert response.status_code == 413
    assert response.json()[0]["token"] == "too_many_flows"
    assert http.post(FLOWS, content="", headers=csv(""), auth=AUTH).status_code == 400
    json_body = http.post(FLOWS, json=[["10.0.0.1"]], auth=AUTH)
    assert json_body.status_code == 415
    no_type = http.post(FLOWS, content=b"10.0.0.1,10.0.0.2,22,6\n", auth=AUTH)
    assert no_type.status_code == 201
    assert http.get("/_sim/flows").json()["received"] == 1


def test_rate_limit_answers_429_with_retry_after(http: httpx.Client) -> None:
    statuses = [http.get("/api/v2/health", auth=AUTH).status_code for _ in range(21)]
    assert statuses[:20] == [200] * 20
    assert statuses[20] == 429
    throttled = http.get("/api/v2/health", auth=AUTH)
    assert 1 <= int(throttled.headers["Retry-After"]) <= 61
    # Another key has its own budget.
    assert http.get("/api/v2/health", auth=("api_ro", "ro")).status_code == 200


def test_rate_limit_can_omit_retry_after() -> None:
    sim = PCESimulator(make_config(rate_limit_per_minute=1, send_retry_after=False))
    with ServerThread(sim.app) as url, httpx.Client(base_url=url) as http:
        http.get("/api/v2/health", auth=AUTH)
        throttled = http.get("/api/v2/health", auth=AUTH)
        assert throttled.status_code == 429
        assert "Retry-After" not in throttled.headers


def test_read_only_key_cannot_change_anything(http: httpx.Client) -> None:
    ro = ("api_ro", "ro")
    assert http.get("/api/v2/orgs/1/workloads", auth=ro).status_code == 200
    response = http.post(FLOWS, content="10.0.0.1,10.0.0.2,22,6\n", headers=csv(""), auth=ro)
    assert response.status_code == 403


def test_workload_filters_are_partial_and_collections_capped(http: httpx.Client) -> None:
    for i in (1, 10, 100):
        body = {
            "name": f"web{i}",
            "hostname": f"web{i}.example",
            "interfaces": [{"name": "eth0", "address": f"10.0.0.{i}"}],
            "external_data_set": "flowexport",
            "external_data_reference": str(i),
        }
        assert http.post("/api/v2/orgs/1/workloads", json=body, auth=AUTH).status_code == 201
    by_ip = http.get("/api/v2/orgs/1/workloads", params={"ip_address": "10.0.0.1"}, auth=AUTH)
    assert sorted(w["name"] for w in by_ip.json()) == ["web1", "web10", "web100"]
    exact = http.get(
        "/api/v2/orgs/1/workloads", params={"external_data_reference": "10"}, auth=AUTH
    )
    assert [w["name"] for w in exact.json()] == ["web10"]
    capped = http.get("/api/v2/orgs/1/workloads", params={"max_results": 0}, auth=AUTH)
    assert capped.json() == []
    assert capped.headers["X-Total-Count"] == "3"
    managed = http.get("/api/v2/orgs/1/workloads", params={"managed": "true"}, auth=AUTH)
    assert managed.json() == []
    invalid = {"name": "x", "interfaces": [{"name": "eth0", "address": "nope"}]}
    response = http.post("/api/v2/orgs/1/workloads", json=invalid, auth=AUTH)
    assert response.status_code == 406


def test_async_collection(http: httpx.Client) -> None:
    http.post("/api/v2/orgs/1/labels", json={"key": "env", "value": "prod"}, auth=AUTH)
    started = http.get("/api/v2/orgs/1/labels", headers={"Prefer": "respond-async"}, auth=AUTH)
    assert started.status_code == 202
    job = http.get(f"/api/v2{started.headers['Location']}", auth=AUTH).json()
    assert job["status"] == "done"
    data = http.get(f"/api/v2{job['result']['href']}", auth=AUTH).json()
    assert [label["value"] for label in data] == ["prod"]


def test_bulk_limits(http: httpx.Client) -> None:
    items = [{"name": f"w{i}", "interfaces": []} for i in range(1001)]
    response = http.put("/api/v2/orgs/1/workloads/bulk_create", json=items, auth=AUTH)
    assert response.status_code == 413
    created = http.put("/api/v2/orgs/1/workloads/bulk_create", json=items[:2], auth=AUTH).json()
    assert [r["status"] for r in created] == ["created", "created"]
    hrefs = [{"href": r["href"]} for r in created] + [{"href": "/orgs/1/workloads/x"}]
    deleted = http.put("/api/v2/orgs/1/workloads/bulk_delete", json=hrefs, auth=AUTH).json()
    assert [r.get("status") for r in deleted] == ["deleted", "deleted", None]
    assert deleted[2]["errors"][0]["token"] == "not_found"


def test_faults_and_reset_over_http(http: httpx.Client) -> None:
    http.post("/_sim/faults", json={"fail_first": 1, "fail_status": 500, "path_contains": "labels"})
    assert http.get("/api/v2/health", auth=AUTH).status_code == 200  # path not matched
    assert http.get("/api/v2/orgs/1/labels", auth=AUTH).status_code == 500
    assert http.get("/api/v2/orgs/1/labels", auth=AUTH).status_code == 200
    http.post("/_sim/faults", json={"drop_first": 1})
    with pytest.raises(httpx.TransportError):
        http.get("/api/v2/health", auth=AUTH)
    assert http.post("/_sim/faults", json={"bogus": 1}).status_code == 400
    requests = http.get("/_sim/requests").json()
    assert [r["status"] for r in requests][:3] == [200, 500, 200]
    http.post("/_sim/reset")
    assert http.get("/_sim/requests").json() == []


# -- workload updates, managed workloads, label keys --------------------------------------


def workload(i: int, **extra: Any) -> dict[str, Any]:
    body = {"name": f"web{i}", "interfaces": [{"name": "eth0", "address": f"10.0.0.{i}"}]}
    return body | extra


def create(http: httpx.Client, *bodies: dict[str, Any]) -> list[str]:
    answer = http.put(f"{WORKLOADS}/bulk_create", json=list(bodies), auth=AUTH)
    assert answer.status_code == 200
    assert [r["status"] for r in answer.json()] == ["created"] * len(bodies)
    return [r["href"] for r in answer.json()]


def get(http: httpx.Client, href: str) -> dict[str, Any]:
    response = http.get(f"/api/v2{href}", auth=AUTH)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def label(http: httpx.Client, key: str, value: str) -> str:
    response = http.post("/api/v2/orgs/1/labels", json={"key": key, "value": value}, auth=AUTH)
    assert response.status_code == 201
    href: str = response.json()["href"]
    return href


def test_bulk_update_changes_only_the_given_fields(http: httpx.Client) -> None:
    role = label(http, "role", "web")
    first, second = create(http, workload(1, description="old"), workload(2))
    before = get(http, first)
    items = [
        {"href": first, "labels": [{"href": role}], "description": "new"},
        {"href": second, "name": "renamed", "external_data_set": "flowexport"},
    ]
    answer = http.put(f"{WORKLOADS}/bulk_update", json=items, auth=AUTH)
    assert answer.status_code == 200
    assert answer.json() == [
        {"href": first, "status": "updated", "errors": []},
        {"href": second, "status": "updated", "errors": []},
    ]
    after = get(http, first)
    assert after["labels"] == [{"href": role}]
    assert after["description"] == "new"
    assert after["name"] == "web1"
    assert after["interfaces"] == before["interfaces"]
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]
    other = get(http, second)
    assert (other["name"], other["external_data_set"]) == ("renamed", "flowexport")
    assert other["labels"] == []


def test_bulk_update_failures_answer_token_and_message(http: httpx.Client) -> None:
    role = label(http, "role", "db")
    (href,) = create(http, workload(1))
    managed = http.post("/_sim/workloads", json={"hostname": "ven1", "interfaces": []}).json()
    items = [
        {"href": "/orgs/1/workloads/nope", "name": "x"},
        {"href": href, "interfaces": [{"name": "eth0", "address": "not-an-ip"}]},
        {"href": href, "labels": [{"href": "/orgs/1/labels/999"}]},
        {"href": href, "name": None},
        {"href": href, "online": False, "name": "ignored"},
        {"href": managed["href"], "interfaces": [{"name": "eth1", "address": "10.9.9.9"}]},
        {"href": managed["href"], "labels": [{"href": role}]},
    ]
    answer = http.put(f"{WORKLOADS}/bulk_update", json=items, auth=AUTH).json()
    assert answer[0] == {
        "href": "/orgs/1/workloads/nope",
        "status": "not_found",
        "token": "not_found",
        "message": "/orgs/1/workloads/nope not found",
        "errors": [{"token": "not_found", "message": "/orgs/1/workloads/nope not found"}],
    }
    assert [r["status"] for r in answer] == [
        "not_found",
        "validation_failure",
        "validation_failure",
        "validation_failure",
        "validation_failure",
        "validation_failure",
        "updated",
    ]
    for result in answer[1:6]:
        assert result["href"] in (href, managed["href"])
        assert result["token"] == "validation_failure"
        assert result["errors"] == [{"token": "validation_failure", "message": result["message"]}]
    assert "not-an-ip" in answer[1]["message"]
    assert "does not exist" in answer[2]["message"]
    assert answer[3]["message"] == "a workload needs a name or a hostname"
    assert "online" in answer[4]["message"]
    assert answer[5]["message"] == "interfaces of a managed workload are reported by its VEN"
    unchanged = get(http, href)
    assert unchanged["name"] == "web1"
    assert unchanged["interfaces"] == [{"name": "eth0", "address": "10.0.0.1", "link_state": None}]
    assert unchanged["labels"] == []
    assert get(http, managed["href"])["labels"] == [{"href": role}]


def test_bulk_update_of_another_orgs_workload_is_not_found() -> None:
    sim = PCESimulator(make_config(orgs=frozenset({1, 2})))
    with ServerThread(sim.app) as url, httpx.Client(base_url=url) as http:
        answer = http.put(
            "/api/v2/orgs/2/workloads/bulk_create", json=[workload(1)], auth=AUTH
        ).json()
        href = answer[0]["href"]
        assert href.startswith("/orgs/2/workloads/")
        cross = http.put(f"{WORKLOADS}/bulk_update", json=[{"href": href, "name": "x"}], auth=AUTH)
        assert cross.json()[0]["token"] == "not_found"
        assert (
            http.put(
                f"/api/v2/orgs/1/workloads/{href.rsplit('/', 1)[-1]}", json={"name": "x"}, auth=AUTH
            ).status_code
            == 404
        )
        assert get(http, href)["name"] == "web1"


def test_bulk_update_limits_and_one_bulk_operation_at_a_time() -> None:
    sim = PCESimulator(make_config(bulk_seconds=0.5))
    server = ServerThread(sim.app)
    with server as url, httpx.Client(base_url=url, timeout=10) as http:
        items = [{"href": f"/orgs/1/workloads/{i}", "name": "x"} for i in range(1001)]
        too_many = http.put(f"{WORKLOADS}/bulk_update", json=items, auth=AUTH)
        assert too_many.status_code == 413
        assert too_many.json()[0]["token"] == "too_many_items"
        (href,) = create(http, workload(1))
        slow: list[httpx.Response] = []
        update = [{"href": href, "name": "first"}]

        def first() -> None:
            with httpx.Client(base_url=url, timeout=10) as other:
                slow.append(other.put(f"{WORKLOADS}/bulk_update", json=update, auth=AUTH))

        thread = threading.Thread(target=first)
        thread.start()
        deadline = time.monotonic() + 5
        while not server.call(lambda: sim.state.bulk_busy):
            assert time.monotonic() < deadline, "the first bulk_update never started"
            time.sleep(0.01)
        second = [{"href": href, "name": "second"}]
        busy = http.put(f"{WORKLOADS}/bulk_update", json=second, auth=AUTH)
        assert busy.status_code == 429
        assert busy.json()[0]["token"] == "bulk_operation_in_progress"
        assert http.put(f"{WORKLOADS}/bulk_delete", json=[], auth=AUTH).status_code == 429
        thread.join(10)
        assert slow[0].status_code == 200
        assert slow[0].json()[0]["status"] == "updated"
        assert get(http, href)["name"] == "first"


def test_single_update(http: httpx.Client) -> None:
    (href,) = create(http, workload(1, hostname="web1.lab"))
    before = get(http, href)
    changed = http.put(
        f"/api/v2{href}",
        json={"interfaces": [{"name": "eth1", "address": "10.0.5.5", "link_state": "up"}]},
        auth=AUTH,
    )
    assert changed.status_code == 204
    assert changed.content == b""
    after = get(http, href)
    assert after["interfaces"] == [{"name": "eth1", "address": "10.0.5.5", "link_state": "up"}]
    assert (after["name"], after["hostname"]) == ("web1", "web1.lab")
    assert after["updated_at"] > before["updated_at"]
    unknown = http.put(f"{WORKLOADS}/0f0f", json={"name": "x"}, auth=AUTH)
    assert unknown.status_code == 404
    assert unknown.json()[0]["token"] == "not_found"
    for body in (
        {"labels": [{"href": "/orgs/1/labels/1"}]},
        {"name": 5},
        {"href": href, "name": "x"},
        ["not", "an", "object"],
    ):
        invalid = http.put(f"/api/v2{href}", json=body, auth=AUTH)
        assert invalid.status_code == 406, body
        [error] = invalid.json()
        assert error["token"] == "validation_failure"
        assert isinstance(error["message"], str) and error["message"]
    assert get(http, href)["name"] == "web1"


def test_sim_endpoint_makes_managed_and_unmanaged_workloads(http: httpx.Client) -> None:
    one = http.post("/_sim/workloads", json={"hostname": "ven1.lab", "interfaces": []})
    assert one.status_code == 201
    managed = one.json()
    assert VEN_HREF.fullmatch(managed["ven"]["href"])
    assert AGENT_HREF.fullmatch(managed["agent"]["href"])
    assert managed["hostname"] == "ven1.lab"
    assert managed["href"].startswith("/orgs/1/workloads/")
    several = http.post(
        "/_sim/workloads",
        json=[workload(2, managed=False, org="1"), workload(3, managed=True, org=1)],
    )
    assert several.status_code == 201
    unmanaged, second = several.json()
    assert "ven" not in unmanaged and "agent" not in unmanaged
    assert second["agent"]["href"] != managed["agent"]["href"]
    assert second["ven"]["href"] != managed["ven"]["href"]
    for view in (managed, unmanaged, second, *http.get("/_sim/workloads").json()):
        assert "org" not in view and "managed" not in view
    assert get(http, unmanaged["href"]) == unmanaged
    assert get(http, managed["href"]) == managed
    assert http.post("/_sim/workloads", json=workload(4, org="7")).status_code == 400
    bad = http.post("/_sim/workloads", json=[workload(5), {"name": "x", "labels": "nope"}])
    assert bad.status_code == 400
    assert bad.json()[0]["token"] == "validation_failure"
    assert len(http.get("/_sim/workloads").json()) == 3  # nothing of the refused list stored


def test_managed_filter_selects_exactly_the_managed_workloads(pce: SimPCE) -> None:
    made = pce.call(lambda: pce.sim.add_workload(workload(1, hostname="ven1")))
    assert VEN_HREF.fullmatch(made["ven"]["href"]) and AGENT_HREF.fullmatch(made["agent"]["href"])
    plain = pce.call(lambda: pce.sim.add_workload(workload(2), managed=False))
    assert "ven" not in plain and "agent" not in plain and "org" not in plain
    with pytest.raises(ValueError, match="not an IP address"):
        pce.call(lambda: pce.sim.add_workload({"name": "x", "interfaces": [{"name": "e"}]}))
    with pytest.raises(ValueError, match="not served"):
        pce.call(lambda: pce.sim.add_workload(workload(3), org="2"))
    with httpx.Client(base_url=pce.url) as http:
        (created,) = create(http, workload(4))

        def names(managed: str | None) -> list[str]:
            params = {} if managed is None else {"managed": managed}
            response = http.get(WORKLOADS, params=params, auth=AUTH)
            return sorted(w["name"] for w in response.json())

        assert names("true") == ["web1"]
        assert names("True") == ["web1"]
        assert names("false") == ["web2", "web4"]
        assert names(None) == ["web1", "web2", "web4"]
        listed = http.get(WORKLOADS, params={"managed": "true"}, auth=AUTH).json()
        assert listed == [made]
        assert "ven" not in get(http, created) and "agent" not in get(http, created)


def test_managed_workload_interfaces_and_deletion_are_refused(http: httpx.Client) -> None:
    managed = http.post("/_sim/workloads", json=workload(1)).json()
    href = managed["href"]
    refused = http.put(
        f"/api/v2{href}", json={"interfaces": [{"name": "eth0", "address": "10.1.1.1"}]}, auth=AUTH
    )
    assert refused.status_code == 406
    assert refused.json() == [
        {
            "token": "validation_failure",
            "message": "interfaces of a managed workload are reported by its VEN",
        }
    ]
    assert http.put(f"/api/v2{href}", json={"description": "db"}, auth=AUTH).status_code == 204
    deleted = http.delete(f"/api/v2{href}", auth=AUTH)
    assert deleted.status_code == 406
    [error] = deleted.json()
    assert error["token"] == "validation_failure"
    assert "unpaired, not deleted" in error["message"]
    bulk = http.put(f"{WORKLOADS}/bulk_delete", json=[{"href": href}], auth=AUTH).json()
    assert [e["token"] for e in bulk[0]["errors"]] == ["validation_failure"]
    assert "unpaired, not deleted" in bulk[0]["errors"][0]["message"]
    assert bulk[0].get("status") != "deleted"
    after = get(http, href)
    assert after["interfaces"] == managed["interfaces"]
    assert after["description"] == "db"
    assert after["ven"] == managed["ven"]


def test_label_keys_are_configurable() -> None:
    assert PCESimulator().config.label_keys == LABEL_KEYS == {"role", "app", "env", "loc"}
    custom = PCESimulator(make_config(label_keys=LABEL_KEYS | {"bu"}))
    with ServerThread(custom.app) as url, httpx.Client(base_url=url) as http:
        assert label(http, "bu", "finance") == "/orgs/1/labels/1"
        assert label(http, "role", "web") == "/orgs/1/labels/2"
        other = http.post("/api/v2/orgs/1/labels", json={"key": "os", "value": "x"}, auth=AUTH)
        assert other.status_code == 406
        assert other.json()[0]["token"] == "label_key_invalid"
    default = PCESimulator(make_config())
    with ServerThread(default.app) as url, httpx.Client(base_url=url) as http:
        refused = http.post("/api/v2/orgs/1/labels", json={"key": "bu", "value": "x"}, auth=AUTH)
        assert refused.status_code == 406
        assert refused.json()[0]["token"] == "label_key_invalid"
