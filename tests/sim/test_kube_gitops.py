"""What GitOps tools do to the API server, checked over HTTP against the kube simulator:
dry runs, server-side apply with field managers, single-object Tables, namespace deletion."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flowexport.api.crd import build_crd
from flowexport.sim.kube import KubeSimulator
from flowexport.sim.serve import ServerThread
from tests.sim.test_kube_semantics import watch

ROOT = Path(__file__).resolve().parents[2]
FES = "/apis/flowexport.io/v1alpha1/namespaces/default/flowexports"
MERGE = {"Content-Type": "application/merge-patch+json"}
APPLY = {"Content-Type": "application/apply-patch+yaml"}
DRY = {"dryRun": "All"}


@pytest.fixture
def api() -> Iterator[httpx.Client]:
    sim = KubeSimulator()
    with ServerThread(sim.app) as url, httpx.Client(base_url=url, timeout=30) as client:
        created = client.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=build_crd()
        )
        assert created.status_code == 201, created.text
        yield client


def flowexport(name: str = "x", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples" / "flowexport-minimal.yaml").read_text().split("---")[0]
    )
    body["metadata"] = {"name": name}
    body["spec"].update(spec)
    return body


def revision(api: httpx.Client) -> str:
    return str(api.get(FES).json()["metadata"]["resourceVersion"])


def managers(obj: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """managedFields by (manager, operation, subresource) -> fieldsV1."""
    return {
        (e["manager"], e["operation"], e.get("subresource", "")): e["fieldsV1"]
        for e in obj["metadata"].get("managedFields", [])
    }


def apply(
    api: httpx.Client, body: dict[str, Any], manager: str | None, path: str = "", **params: str
) -> httpx.Response:
    name = body["metadata"]["name"]
    query = {"fieldManager": manager, **params} if manager else params
    return api.patch(
        f"{FES}/{name}{path}", content=yaml.safe_dump(body), headers=APPLY, params=query
    )


# -- dryRun=All -----------------------------------------------------------------------------


def test_dry_run_create_answers_the_admitted_object_and_stores_nothing(api: httpx.Client) -> None:
    before = revision(api)
    answer = api.post(FES, json=flowexport(), params=DRY)
    assert answer.status_code == 201
    would = answer.json()
    assert would["spec"]["ingestion"]["batchSize"] == 1000  # defaulted
    assert would["metadata"]["uid"] and "resourceVersion" not in would["metadata"]
    assert api.get(f"{FES}/x").status_code == 404
    assert revision(api) == before
    bad = flowexport()
    bad["spec"]["pce"]["orgId"] = 0
    assert api.post(FES, json=bad, params=DRY).status_code == 422  # validated all the same
    api.post(FES, json=flowexport())
    assert api.post(FES, json=flowexport(), params=DRY).status_code == 409


def test_dry_run_updates_patches_and_deletes_change_nothing(api: httpx.Client) -> None:
    body = flowexport()
    body["metadata"]["finalizers"] = ["flowexport.io/cleanup"]
    live = api.post(FES, json=body).json()
    version = live["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []
    thread = watch(api, FES, events, resourceVersion=version, timeoutSeconds=2)
    time.sleep(0.3)
    patched = api.patch(
        f"{FES}/x", json={"spec": {"suspend": True}}, headers=MERGE, params=DRY
    ).json()
    assert patched["spec"]["suspend"] is True and patched["metadata"]["generation"] == 2
    assert patched["metadata"]["resourceVersion"] == version
    replaced = {**live, "spec": {**live["spec"], "suspend": True}}
    assert api.put(f"{FES}/x", json=replaced, params=DRY).json()["metadata"]["generation"] == 2
    status = api.patch(
        f"{FES}/x/status", json={"status": {"lagSeconds": 5}}, headers=MERGE, params=DRY
    )
    assert status.json()["status"] == {"lagSeconds": 5}
    labelled = flowexport()
    labelled["metadata"]["labels"] = {"team": "sec"}
    applied = apply(api, labelled, "flux", dryRun="All")
    assert applied.status_code == 200, applied.text
    assert applied.json()["metadata"]["labels"] == {"team": "sec"}
    assert applied.json()["metadata"]["resourceVersion"] == version
    deleting = api.delete(f"{FES}/x", params=DRY).json()
    assert deleting["metadata"]["deletionTimestamp"]
    api.request("DELETE", f"{FES}/x", json={"dryRun": ["All"]})  # kubectl's DeleteOptions body
    stored = api.get(f"{FES}/x").json()
    assert stored == live
    thread.join(10)
    assert events == []
    assert revision(api) == version


def test_dry_run_values_are_checked(api: httpx.Client) -> None:
    answer = api.post(FES, json=flowexport(), params={"dryRun": "Yes"})
    assert answer.status_code == 422
    assert answer.json()["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: '
        'dryRun: Unsupported value: []string{"Yes"}: supported values: "All"'
    )
    assert api.get(f"{FES}/x").status_code == 404


# -- server-side apply ----------------------------------------------------------------------


def test_apply_needs_a_field_manager_and_a_matching_object(api: httpx.Client) -> None:
    missing = apply(api, flowexport(), None)
    assert missing.status_code == 422
    assert "fieldManager: Required value: is required for apply patch" in missing.json()["message"]
    wrong = {**flowexport(), "apiVersion": "flowexport.io/v1"}
    assert apply(api, wrong, "flux").status_code == 400
    renamed = api.patch(
        f"{FES}/y",
        content=yaml.safe_dump(flowexport()),
        headers=APPLY,
        params={"fieldManager": "flux"},
    )
    assert renamed.status_code == 400 and "does not match the name" in renamed.json()["message"]
    assert apply(api, flowexport(), "flux", "/status").status_code == 404
    assert api.post(FES, json=flowexport()).status_code == 201
    merge_with_force = api.patch(
        f"{FES}/x", json={"spec": {"suspend": True}}, headers=MERGE, params={"force": "true"}
    )
    assert merge_with_force.status_code == 422


def test_apply_creates_then_updates_and_owns_what_it_names(api: httpx.Client) -> None:
    created = apply(api, flowexport(), "flux")
    assert created.status_code == 201
    obj = created.json()
    assert obj["spec"]["ingestion"]["batchSize"] == 1000
    (entry,) = obj["metadata"]["managedFields"]
    assert entry["manager"] == "flux" and entry["operation"] == "Apply"
    assert entry["apiVersion"] == "flowexport.io/v1alpha1" and entry["fieldsType"] == "FieldsV1"
    spec = entry["fieldsV1"]["f:spec"]
    assert spec["f:aws"]["f:vpcId"] == {} and spec["f:pce"]["f:orgId"] == {}
    assert "f:ingestion" not in spec, "defaulted fields are nobody's"
    again = apply(api, flowexport(), "flux")
    assert again.status_code == 200
    assert again.json()["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    changed = apply(api, flowexport(suspend=True), "flux").json()
    assert changed["spec"]["suspend"] is True and changed["metadata"]["generation"] == 2
    assert "f:suspend" in managers(changed)[("flux", "Apply", "")]["f:spec"]


def test_apply_conflicts_shares_and_forces(api: httpx.Client) -> None:
    apply(api, flowexport(suspend=False), "flux")
    refused = apply(api, flowexport(suspend=True), "ops")
    assert refused.status_code == 409
    status = refused.json()
    assert status["reason"] == "Conflict"
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "flux": .spec.suspend'
    assert status["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "flux"',
            "field": ".spec.suspend",
        }
    ]
    assert api.get(f"{FES}/x").json()["spec"]["suspend"] is False
    shared = apply(api, flowexport(suspend=False), "ops").json()
    owners = managers(shared)
    assert "f:suspend" in owners[("flux", "Apply", "")]["f:spec"]
    assert "f:suspend" in owners[("ops", "Apply", "")]["f:spec"]
    forced = apply(api, flowexport(suspend=True), "ops", force="true").json()
    assert forced["spec"]["suspend"] is True
    owners = managers(forced)
    assert "f:suspend" not in owners[("flux", "Apply", "")]["f:spec"]
    assert "f:suspend" in owners[("ops", "Apply", "")]["f:spec"]


def test_updates_take_fields_and_conflict_with_appliers(api: httpx.Client) -> None:
    apply(api, flowexport(suspend=False), "flux")
    api.patch(
        f"{FES}/x",
        json={"spec": {"suspend": True}},
        headers={**MERGE, "User-Agent": "kopf/1.37.2"},
    )
    edited = api.get(f"{FES}/x").json()
    owners = managers(edited)
    assert owners[("kopf", "Update", "")] == {"f:spec": {"f:suspend": {}}}
    assert "f:suspend" not in owners[("flux", "Apply", "")]["f:spec"]
    refused = apply(api, flowexport(suspend=False), "flux")
    assert refused.status_code == 409
    assert (
        'conflict with "kopf" using flowexport.io/v1alpha1: .spec.suspend'
        in (refused.json()["message"])
    )


def test_apply_removes_what_the_applier_no_longer_names(api: httpx.Client) -> None:
    first = flowexport(ingestion={"batchSize": 50})
    first["metadata"]["labels"] = {"team": "sec"}
    apply(api, first, "flux")
    api.patch(
        f"{FES}/x",
        json={"metadata": {"labels": {"owner": "ops"}}},
        headers=MERGE,
        params={"fieldManager": "ops"},
    )
    second = apply(api, flowexport(), "flux").json()
    assert second["metadata"]["labels"] == {"owner": "ops"}, "ops' label stays"
    assert second["spec"]["ingestion"]["batchSize"] == 1000, "dropped, so defaulted again"
    assert "f:metadata" not in managers(second)[("flux", "Apply", "")]


def test_set_lists_merge_element_by_element(api: httpx.Client) -> None:
    apply(api, flowexport(ingestion={"actions": ["ACCEPT"]}), "flux")
    both = apply(api, flowexport(ingestion={"actions": ["REJECT"]}), "ops").json()
    assert both["spec"]["ingestion"]["actions"] == ["ACCEPT", "REJECT"]
    owners = managers(both)
    assert owners[("ops", "Apply", "")]["f:spec"]["f:ingestion"]["f:actions"] == {'v:"REJECT"': {}}
    assert 'v:"ACCEPT"' in owners[("flux", "Apply", "")]["f:spec"]["f:ingestion"]["f:actions"]


def test_status_apply_and_updates_record_the_subresource(api: httpx.Client) -> None:
    api.post(FES, json=flowexport(), headers={"User-Agent": "kubectl/v1.31.0 (linux/amd64)"})
    ready = {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "FlowExport",
        "metadata": {"name": "x"},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ready",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        },
    }
    obj = apply(api, ready, "operator", "/status").json()
    assert obj["status"]["conditions"][0]["status"] == "True"
    assert obj["metadata"]["generation"] == 1
    owners = managers(obj)
    condition = owners[("operator", "Apply", "status")]["f:status"]["f:conditions"]
    assert condition['k:{"type":"Ready"}']["f:status"] == {}
    assert "f:status" not in owners[("kubectl", "Update", "")]
    ready["status"]["conditions"][0]["status"] = "False"
    refused = apply(api, ready, "rival", "/status")
    assert refused.status_code == 409
    assert (
        refused.json()["details"]["causes"][0]["field"] == '.status.conditions[type="Ready"].status'
    )
    assert 'conflict with "operator" with subresource "status"' in refused.json()["message"]
    lag = api.patch(
        f"{FES}/x/status",
        json={"status": {"lagSeconds": 3}},
        headers=MERGE,
        params={"fieldManager": "writer"},
    ).json()
    assert managers(lag)[("writer", "Update", "status")] == {"f:status": {"f:lagSeconds": {}}}


def test_managed_fields_reset_with_an_empty_entry(api: httpx.Client) -> None:
    apply(api, flowexport(), "flux")
    kept = api.patch(f"{FES}/x", json={"metadata": {"managedFields": []}}, headers=MERGE).json()
    assert managers(kept)
    reset = api.patch(f"{FES}/x", json={"metadata": {"managedFields": [{}]}}, headers=MERGE)
    assert "managedFields" not in reset.json()["metadata"]


# -- Tables ---------------------------------------------------------------------------------


def test_a_single_object_is_a_table_with_the_list_columns(api: httpx.Client) -> None:
    api.post(FES, json=flowexport())
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    one = api.get(f"{FES}/x", headers=accept).json()
    listed = api.get(FES, headers=accept).json()
    assert one["kind"] == "Table"
    assert one["columnDefinitions"] == listed["columnDefinitions"]
    columns = build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in one["columnDefinitions"]] == ["Name"] + [
        c["name"] for c in columns if c.get("priority", 0) == 0
    ]
    assert one["rows"][0]["cells"][:-1] == listed["rows"][0]["cells"][:-1]  # but Age
    assert one["rows"][0]["cells"][0] == "x"
    assert api.get(f"{FES}/x").json()["kind"] == "FlowExport"
    namespace = api.get("/api/v1/namespaces/default", headers=accept).json()
    assert [c["name"] for c in namespace["columnDefinitions"]] == ["Name", "Status", "Age"]
    assert namespace["rows"][0]["cells"][:2] == ["default", "Active"]


# -- namespace deletion ---------------------------------------------------------------------


def test_deleting_a_namespace_deletes_its_content_then_itself(api: httpx.Client) -> None:
    team = api.post("/api/v1/namespaces", json={"metadata": {"name": "team"}}).json()
    assert team["spec"] == {"finalizers": ["kubernetes"]}
    assert team["status"] == {"phase": "Active"}
    fes = "/apis/flowexport.io/v1alpha1/namespaces/team/flowexports"
    secrets = "/api/v1/namespaces/team/secrets"
    kept = flowexport("kept")
    kept["metadata"]["finalizers"] = ["flowexport.io/cleanup"]
    assert api.post(fes, json=kept).status_code == 201
    assert api.post(fes, json=flowexport("plain")).status_code == 201
    assert api.post(secrets, json={"metadata": {"name": "key"}}).status_code == 201
    assert api.post(FES, json=flowexport("elsewhere")).status_code == 201
    version = revision(api)
    events: list[dict[str, Any]] = []
    threads = [
        watch(api, fes, events, resourceVersion=version, timeoutSeconds=4),
        watch(api, secrets, events, resourceVersion=version, timeoutSeconds=4),
        watch(api, "/api/v1/namespaces", events, resourceVersion=version, timeoutSeconds=4),
    ]
    time.sleep(0.3)

    deleting = api.delete("/api/v1/namespaces/team")
    assert deleting.status_code == 200
    terminating = deleting.json()
    assert terminating["status"]["phase"] == "Terminating"
    assert terminating["metadata"]["deletionTimestamp"]
    assert terminating["spec"]["finalizers"] == ["kubernetes"]
    assert api.get(f"{secrets}/key").status_code == 404
    assert api.get(f"{fes}/plain").status_code == 404
    assert api.get(f"{fes}/kept").json()["metadata"]["deletionTimestamp"]
    assert api.get(f"{FES}/elsewhere").status_code == 200
    remaining = api.get("/api/v1/namespaces/team").json()["status"]["conditions"]
    # the five conditions of kube-controller-manager's namespace controller, True ones last
    assert {c["type"]: c["message"] for c in remaining if c["status"] == "True"} == {
        "NamespaceContentRemaining": "Some resources are remaining: "
        "flowexports.flowexport.io has 1 resource instances",
        "NamespaceFinalizersRemaining": "Some content in the namespace has finalizers "
        "remaining: flowexport.io/cleanup in 1 resource instances",
    }
    refused = api.post(secrets, json={"metadata": {"name": "late"}})
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        'secrets "late" is forbidden: unable to create new content in namespace team '
        "because it is being terminated"
    )
    assert api.delete("/api/v1/namespaces/team").status_code == 200  # still terminating

    api.patch(f"{fes}/kept", json={"metadata": {"finalizers": None}}, headers=MERGE)
    assert api.get(f"{fes}/kept").status_code == 404
    assert api.get("/api/v1/namespaces/team").status_code == 404
    for thread in threads:
        thread.join(10)
    deleted = {
        (e["object"]["kind"], e["object"]["metadata"]["name"])
        for e in events
        if e["type"] == "DELETED"
    }
    assert deleted == {
        ("FlowExport", "kept"),
        ("FlowExport", "plain"),
        ("Secret", "key"),
        ("Namespace", "team"),
    }


def test_the_system_namespaces_cannot_be_deleted(api: httpx.Client) -> None:
    answer = api.delete("/api/v1/namespaces/default")
    assert answer.status_code == 403
    assert (
        answer.json()["message"]
        == 'namespaces "default" is forbidden: this namespace may not be deleted'
    )
    assert api.get("/api/v1/namespaces/default").json()["status"]["phase"] == "Active"


def test_a_dry_run_namespace_deletion_deletes_nothing(api: httpx.Client) -> None:
    api.post("/api/v1/namespaces", json={"metadata": {"name": "team"}})
    api.post("/api/v1/namespaces/team/secrets", json={"metadata": {"name": "key"}})
    answer = api.delete("/api/v1/namespaces/team", params=DRY).json()
    assert answer["status"]["phase"] == "Terminating"
    assert api.get("/api/v1/namespaces/team").json()["status"]["phase"] == "Active"
    assert api.get("/api/v1/namespaces/team/secrets/key").status_code == 200
