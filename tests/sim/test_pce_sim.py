"""The PCE simulator's contract, checked with plain HTTP requests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from flowexport.sim.pce import PCESimulator
from flowexport.sim.serve import ServerThread
from tests.pcesim import API_KEY, API_SECRET, make_config

AUTH = (API_KEY, API_SECRET)
FLOWS = "/api/v2/orgs/1/agents/bulk_traffic_flows"


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
