"""The API server semantics kopf relies on, checked with plain HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flowexport.sim.kube import KubeSimulator
from flowexport.sim.kube.proto import ProtobufError, decode_object
from flowexport.sim.serve import ServerThread

ROOT = Path(__file__).resolve().parents[2]
FE = "/apis/flowexport.io/v1alpha1/namespaces/default/flowexports"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def api() -> Iterator[httpx.Client]:
    sim = KubeSimulator(history=50)
    with ServerThread(sim.app) as url, httpx.Client(base_url=url, timeout=30) as client:
        crd = yaml.safe_load((ROOT / "crds" / "flowexport.yaml").read_text())
        assert (
            client.post(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
            ).status_code
            == 201
        )
        yield client


def flowexport(name: str = "x", **spec: Any) -> dict[str, Any]:
    body = yaml.safe_load(
        (ROOT / "examples" / "flowexport-minimal.yaml").read_text().split("---")[0]
    )
    body["metadata"] = {"name": name}
    body["spec"].update(spec)
    return body


def test_discovery(api: httpx.Client) -> None:
    groups = api.get("/apis").json()["groups"]
    assert {
        "name": "flowexport.io",
        "versions": [{"groupVersion": "flowexport.io/v1alpha1", "version": "v1alpha1"}],
        "preferredVersion": {"groupVersion": "flowexport.io/v1alpha1", "version": "v1alpha1"},
    } in groups
    resources = {r["name"]: r for r in api.get("/apis/flowexport.io/v1alpha1").json()["resources"]}
    assert resources["flowexports"]["shortNames"] == ["fe"]
    assert resources["flowexports"]["namespaced"] is True
    assert "flowexports/status" in resources
    assert api.get("/version").json()["major"] == "1"
    assert {r["name"] for r in api.get("/api/v1").json()["resources"]} >= {
        "namespaces",
        "secrets",
        "events",
    }


def test_metadata_on_create(api: httpx.Client) -> None:
    created = api.post(FE, json=flowexport()).json()
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    assert api.post(FE, json=flowexport()).status_code == 409
    assert (
        api.post(
            "/apis/flowexport.io/v1alpha1/namespaces/nope/flowexports", json=flowexport()
        ).status_code
        == 404
    )


def test_status_subresource_is_separate(api: httpx.Client) -> None:
    api.post(FE, json=flowexport())
    ignored = api.patch(f"{FE}/x", json={"status": {"lagSeconds": 5}}, headers=MERGE).json()
    assert "status" not in ignored
    both = {"status": {"lagSeconds": 5}, "spec": {"suspend": True}}
    written = api.patch(f"{FE}/x/status", json=both, headers=MERGE).json()
    assert written["status"] == {"lagSeconds": 5}
    assert written["spec"]["suspend"] is False
    assert written["metadata"]["generation"] == 1


def test_generation_and_resource_version(api: httpx.Client) -> None:
    rv0 = api.post(FE, json=flowexport()).json()["metadata"]["resourceVersion"]
    annotated = api.patch(
        f"{FE}/x", json={"metadata": {"annotations": {"a": "b"}}}, headers=MERGE
    ).json()
    assert annotated["metadata"]["generation"] == 1
    assert int(annotated["metadata"]["resourceVersion"]) > int(rv0)
    edited = api.patch(f"{FE}/x", json={"spec": {"suspend": True}}, headers=MERGE).json()
    assert edited["metadata"]["generation"] == 2
    stale = {**edited, "metadata": {**edited["metadata"], "resourceVersion": rv0}}
    assert api.put(f"{FE}/x", json=stale).status_code == 409


def test_json_patch_test_op(api: httpx.Client) -> None:
    api.post(FE, json=flowexport())
    headers = {"Content-Type": "application/json-patch+json"}
    failed = api.patch(
        f"{FE}/x",
        json=[
            {"op": "test", "path": "/spec/suspend", "value": True},
            {"op": "replace", "path": "/spec/suspend", "value": True},
        ],
        headers=headers,
    )
    assert failed.status_code == 422
    passed = api.patch(
        f"{FE}/x",
        json=[
            {"op": "test", "path": "/spec/suspend", "value": False},
            {"op": "replace", "path": "/spec/suspend", "value": True},
        ],
        headers=headers,
    )
    assert passed.json()["spec"]["suspend"] is True


def test_schema_validation(api: httpx.Client) -> None:
    bad = flowexport()
    bad["spec"]["ingestion"] = {"batchSize": 5000}
    answer = api.post(FE, json=bad)
    assert answer.status_code == 422
    assert answer.json()["reason"] == "Invalid"
    assert answer.json()["details"]["causes"][0]["field"] == "spec.ingestion.batchSize"


def test_finalizers(api: httpx.Client) -> None:
    body = flowexport()
    body["metadata"]["finalizers"] = ["flowexport.io/cleanup"]
    api.post(FE, json=body)
    deleting = api.delete(f"{FE}/x").json()
    assert deleting["metadata"]["deletionTimestamp"]
    assert api.get(f"{FE}/x").status_code == 200
    api.patch(f"{FE}/x", json={"metadata": {"finalizers": None}}, headers=MERGE)
    assert api.get(f"{FE}/x").status_code == 404


def watch(
    client: httpx.Client, path: str, results: list[dict[str, Any]], **params: Any
) -> threading.Thread:
    def run() -> None:
        with client.stream("GET", path, params={"watch": "true", **params}) as response:
            for line in response.iter_lines():
                if line:
                    results.append(json.loads(line))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_list_then_watch_from_the_resource_version(api: httpx.Client) -> None:
    api.post(FE, json=flowexport("a"))
    listed = api.get(FE).json()
    version = listed["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    events: list[dict[str, Any]] = []
    thread = watch(api, FE, events, resourceVersion=version, timeoutSeconds=3)
    time.sleep(0.3)
    api.post(FE, json=flowexport("b"))
    api.patch(f"{FE}/b", json={"spec": {"suspend": True}}, headers=MERGE)
    api.delete(f"{FE}/b")
    thread.join(10)
    assert not thread.is_alive(), "the watch ends after timeoutSeconds"
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "b"),
        ("DELETED", "b"),
    ]
    assert events[0]["object"]["kind"] == "FlowExport"


def test_watch_replays_history_and_expires_stale_versions(api: httpx.Client) -> None:
    first = api.post(FE, json=flowexport("a")).json()["metadata"]["resourceVersion"]
    api.patch(f"{FE}/a", json={"spec": {"suspend": True}}, headers=MERGE)
    events: list[dict[str, Any]] = []
    watch(api, FE, events, resourceVersion=first, timeoutSeconds=1).join(10)
    assert [e["type"] for e in events] == ["MODIFIED"]
    for i in range(60):  # push the first version out of the retained history (50)
        api.patch(f"{FE}/a", json={"metadata": {"annotations": {"n": str(i)}}}, headers=MERGE)
    expired: list[dict[str, Any]] = []
    watch(api, FE, expired, resourceVersion=first, timeoutSeconds=1).join(10)
    assert expired[0]["type"] == "ERROR" and expired[0]["object"]["code"] == 410


def test_many_watches_get_every_event_in_order_while_requests_are_answered(
    api: httpx.Client,
) -> None:
    """Twenty watches open while 40 changes are written (as an operator's and its tools'
    watches under a burst of writes): every watch gets all of them, in resourceVersion order,
    queued events going out together; the server answers reads meanwhile."""
    version = api.get(FE).json()["metadata"]["resourceVersion"]
    streams: list[list[dict[str, Any]]] = [[] for _ in range(20)]
    threads = [
        watch(api, FE, events, resourceVersion=version, timeoutSeconds=3) for events in streams
    ]
    for i in range(20):
        assert api.post(FE, json=flowexport(f"x{i}")).status_code == 201
        status = {"status": {"observedGeneration": 1}}
        assert api.patch(f"{FE}/x{i}/status", json=status, headers=MERGE).status_code == 200
        assert api.get(f"{FE}/x{i}").status_code == 200
    for thread in threads:
        thread.join(15)
        assert not thread.is_alive()
    for events in streams:
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED"] * 20
        versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert versions == sorted(versions) and len(set(versions)) == 40


def test_bookmarks_and_field_selectors(api: httpx.Client) -> None:
    api.post(FE, json=flowexport("a"))
    api.post(FE, json=flowexport("b"))
    version = api.get(FE).json()["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []
    thread = watch(
        api,
        FE,
        events,
        resourceVersion=version,
        timeoutSeconds=7,
        allowWatchBookmarks="true",
        fieldSelector="metadata.name=b",
    )
    time.sleep(0.3)
    api.patch(f"{FE}/a", json={"spec": {"suspend": True}}, headers=MERGE)
    api.patch(f"{FE}/b", json={"spec": {"suspend": True}}, headers=MERGE)
    thread.join(15)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "MODIFIED" and events[0]["object"]["metadata"]["name"] == "b"
    assert "BOOKMARK" in kinds[1:]
    assert len(api.get(FE, params={"fieldSelector": "metadata.name=a"}).json()["items"]) == 1


def test_protobuf_decoding() -> None:
    # A Secret as kubectl encodes it: magic, Unknown{typeMeta{v1, Secret}, raw{metadata, data}}.
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    entry = field(1, b"password") + field(2, b"\x00\xffsecret")
    raw = field(1, field(1, b"pce") + field(3, b"security")) + field(2, entry) + field(3, b"Opaque")
    body = b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"Secret")) + field(2, raw)
    decoded = decode_object(body)
    assert decoded == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pce", "namespace": "security"},
        "data": {"password": "AP9zZWNyZXQ="},
        "type": "Opaque",
    }
    with pytest.raises(ProtobufError):
        decode_object(b"not protobuf")


def test_cel_rules_are_ratcheted_on_update() -> None:
    """As kube-apiserver >= 1.30 (CRD validation ratcheting): an update is not refused for a
    rule failing on a value it leaves unchanged (an object stored before the rule), so a status
    write does not re-evaluate the spec's rules; a changed value is checked."""
    sim = KubeSimulator(history=50)
    server = ServerThread(sim.app)
    url = server.start()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            crd = yaml.safe_load((ROOT / "crds" / "flowexport.yaml").read_text())
            client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
            assert client.post(FE, json=flowexport("old")).status_code == 201
            refused = flowexport("new")
            refused["spec"]["aws"]["logFormat"] = "${srcaddr} ${no-such-field}"
            assert client.post(FE, json=refused).status_code == 422  # the rule, on create

            def stored_before_the_rule() -> None:
                stored = sim.store.objects[("flowexport.io", "flowexports")][("default", "old")]
                stored["spec"]["aws"]["logFormat"] = "${srcaddr} ${no-such-field}"

            server.call(stored_before_the_rule)  # the store is the simulator loop's
            status = {"status": {"observedGeneration": 1}}
            answer = client.patch(f"{FE}/old/status", json=status, headers=MERGE)
            assert answer.status_code == 200, answer.text
            other = {"spec": {"ingestion": {"batchSize": 500}}}
            assert client.patch(f"{FE}/old", json=other, headers=MERGE).status_code == 200
            changed = {"spec": {"aws": {"logFormat": "${dstaddr} ${no-such-field}"}}}
            answer = client.patch(f"{FE}/old", json=changed, headers=MERGE)
            assert answer.status_code == 422
            assert answer.json()["details"]["causes"][0]["field"] == "spec.aws.logFormat"
    finally:
        server.stop()
