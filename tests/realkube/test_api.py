"""The FlowExport API on a real kube-apiserver, and the project's simulator beside it.

Each test makes the same requests to the real server and to the Kubernetes simulator
(`flowexport kube-sim`, which `make demo` and the other tests use) and checks both against
what the docs say, so any difference between the simulator and the real server fails here.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from flowexport.api.crd import PRINTER_COLUMNS
from flowexport.api.models import FlowExportSpec
from flowexport.sim.kube import KubeSimulator
from flowexport.sim.serve import ServerThread
from tests.realkube.conftest import CRD_FILE, CRD_NAME, CRD_PATH, FE_API, wait_for
from tests.realkube.controlplane import ControlPlane
from tests.realkube.corpus import BASE, FORMAT, ROLE

MERGE = {"Content-Type": "application/merge-patch+json"}
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


class Server:
    """One API server under test (real or simulated), an admin client and a namespace."""

    def __init__(self, name: str, client: httpx.Client, namespace: str) -> None:
        self.name, self.client, self.namespace = name, client, namespace

    def path(self, name: str = "") -> str:
        base = f"{FE_API}/namespaces/{self.namespace}/flowexports"
        return f"{base}/{name}" if name else base

    def create(self, body: dict[str, Any], **params: str) -> httpx.Response:
        body = copy.deepcopy(body)
        body["metadata"]["namespace"] = self.namespace
        return self.client.post(self.path(), json=body, params=params)


@pytest.fixture(scope="module")
def simulator() -> Iterator[httpx.Client]:
    """The Kubernetes simulator with the shipped CRD installed."""
    server = ServerThread(KubeSimulator().app)
    url = server.start()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            crd = yaml.safe_load(CRD_FILE.read_text())
            assert client.post(CRD_PATH, json=crd).status_code == 201
            yield client
    finally:
        server.stop()


@pytest.fixture
def servers(admin: httpx.Client, namespace: str, simulator: httpx.Client) -> tuple[Server, Server]:
    """(real, simulated), each with the same fresh namespace."""
    answer = simulator.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
    assert answer.status_code == 201, answer.text
    return Server("real", admin, namespace), Server("sim", simulator, namespace)


def named(body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"] = {"name": f"fe-{secrets.token_hex(3)}"}
    return body


def with_spec(**changes: Any) -> dict[str, Any]:
    body = named(BASE)
    for path, value in changes.items():
        node = body["spec"]
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return body


def test_the_crd_is_established_and_served_as_documented(
    admin: httpx.Client, crd: dict[str, Any], simulator: httpx.Client
) -> None:
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["NamesAccepted"] == "True"
    assert conditions["Established"] == "True"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["fe"]
    for client in (admin, simulator):
        resources = client.get(FE_API).json()["resources"]
        (main,) = [r for r in resources if r["name"] == "flowexports"]
        assert main["kind"] == "FlowExport"
        assert main["namespaced"] is True
        assert main["shortNames"] == ["fe"]
        assert main.get("categories") == ["illumio"]
        assert sorted(main["verbs"]) == sorted(
            ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
        )
        assert "flowexports/status" in {r["name"] for r in resources}
    # every CEL rule compiled within its cost budget: no warning on the CRD
    answer = admin.put(
        f"{CRD_PATH}/{CRD_NAME}",
        json={**yaml.safe_load(CRD_FILE.read_text()), "metadata": crd["metadata"]},
    )
    assert answer.status_code == 200, answer.text
    assert "warning" not in {k.lower() for k in answer.headers}, answer.headers.get("warning")


def test_defaults_are_the_models_defaults(servers: tuple[Server, Server]) -> None:
    body = named(BASE)
    stored = []
    for server in servers:
        answer = server.create(body)
        assert answer.status_code == 201, (server.name, answer.text)
        stored.append(answer.json()["spec"])
    real, sim = stored
    assert real == sim
    model = FlowExportSpec.model_validate(body["spec"]).model_dump(by_alias=True, mode="json")

    def same(found: Any, expected: Any, path: str) -> None:
        if isinstance(found, dict):
            for key, value in found.items():
                same(value, expected[key], f"{path}.{key}")
        else:
            assert found == expected, path

    same(real, model, "spec")
    # list defaults are the models' (a CRD default for them would be written into every object)
    assert "actions" not in real["ingestion"]
    assert real["ingestion"]["batchSize"] == 1000
    assert real["source"] == {"mode": "poll"}
    assert real["workloads"]["mode"] == "Off"
    assert real["aws"]["managementPolicy"] == "AdoptOrCreate"


def test_kms_key_id_null_means_no_encryption(servers: tuple[Server, Server]) -> None:
    stream = {"mode": "stream", "stream": {"subscriptionRoleArn": ROLE, "kmsKeyId": None}}
    unset = {"mode": "stream", "stream": {"subscriptionRoleArn": ROLE}}
    for server in servers:
        answer = server.create(with_spec(source=stream))
        assert answer.status_code == 201, (server.name, answer.text)
        kept = answer.json()["spec"]["source"]["stream"]
        assert "kmsKeyId" in kept, server.name
        assert kept["kmsKeyId"] is None, server.name
        parsed = FlowExportSpec.model_validate(answer.json()["spec"])
        assert parsed.source.stream is not None
        assert parsed.source.stream.kms_key_id is None
        answer = server.create(with_spec(source=unset))
        assert answer.json()["spec"]["source"]["stream"]["kmsKeyId"] == "alias/aws/kinesis"


@pytest.mark.parametrize("validation", ["", "Ignore", "Warn", "Strict"])
def test_unknown_fields_are_pruned_warned_or_refused(
    servers: tuple[Server, Server], validation: str
) -> None:
    body = with_spec(aws__bogus=1)
    body["extra"] = True
    params = {"fieldValidation": validation} if validation else {}
    seen = []
    for server in servers:
        answer = server.create(body, **params)
        warning = answer.headers.get("warning", "")
        seen.append((server.name, answer.status_code, "bogus" in warning, "extra" in warning))
        if answer.status_code == 201:
            assert "bogus" not in answer.json()["spec"]["aws"], server.name
            assert "extra" not in answer.json(), server.name
        else:
            assert answer.json()["reason"] == "BadRequest", (server.name, answer.text)
            assert "bogus" in answer.json()["message"], server.name
    expected = {
        "": (201, True, True),  # the API's default is Warn
        "Ignore": (201, False, False),
        "Warn": (201, True, True),
        "Strict": (400, False, False),
    }[validation]
    assert seen == [("real", *expected), ("sim", *expected)]


INVALID = {
    "org-id-string": ({"pce__orgId": "1"}, {"spec.pce.orgId"}),
    "org-id-zero": ({"pce__orgId": 0}, {"spec.pce.orgId"}),
    "batch-size": ({"ingestion__batchSize": 1001}, {"spec.ingestion.batchSize"}),
    "region": ({"aws__region": "EU"}, {"spec.aws.region"}),
    "retention": ({"aws__logGroupRetentionDays": 8}, {"spec.aws.logGroupRetentionDays"}),
    "actions-repeated": (
        {"ingestion__actions": ["ACCEPT", "ACCEPT"]},
        {"spec.ingestion.actions[1]"},
    ),
    "url-credentials": ({"pce__url": "http://u:p@pce.example.com"}, {"spec.pce"}),
    "log-format": ({"aws__logFormat": FORMAT + " ${bogus}"}, {"spec.aws.logFormat"}),
    "tls-choice": (
        {"pce__caBundleSecretRef": {"name": "ca"}, "pce__insecureSkipTLSVerify": True},
        {"spec.pce"},
    ),
    "stream-needs-settings": ({"source": {"mode": "stream"}}, {"spec.source"}),
    "name-template": ({"workloads__nameTemplate": "{bogus}"}, {"spec.workloads.nameTemplate"}),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_objects_are_refused_naming_the_field(
    servers: tuple[Server, Server], case: str
) -> None:
    changes, fields = INVALID[case]
    body = with_spec(**changes)
    seen = []
    for server in servers:
        answer = server.create(body)
        assert answer.status_code == 422, (server.name, answer.text)
        status = answer.json()
        assert status["reason"] == "Invalid", server.name
        causes = status["details"]["causes"]
        assert {c["field"] for c in causes} - {"<nil>"} == fields, (server.name, causes)
        if case == "url-credentials":
            assert "u:p@" not in answer.text, f"{server.name} echoed the credentials"
        message = status["message"].replace(body["metadata"]["name"], "NAME")
        seen.append((message, sorted(causes, key=lambda c: (c["field"], c["message"]))))
    real, sim = seen
    assert sim == real, "the simulator words the refusal differently"


def test_printer_columns_are_the_documented_ones(servers: tuple[Server, Server]) -> None:
    body = named(BASE)
    tables = []
    for server in servers:
        assert server.create(body).status_code == 201
        name = body["metadata"]["name"]
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "PCEUnreachable",
                        "message": "x",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
                "counts": {"flowsUploaded": 7},
                "lagSeconds": 3,
            }
        }
        answer = server.client.patch(f"{server.path(name)}/status", json=status, headers=MERGE)
        assert answer.status_code == 200, (server.name, answer.text)
        table = server.client.get(server.path(name), headers=TABLE).json()
        tables.append(table)
    for table in tables:
        assert table["kind"] == "Table"
        columns = [(c["name"], c["type"]) for c in table["columnDefinitions"]]
        assert columns == [("Name", "string")] + [(c["name"], c["type"]) for c in PRINTER_COLUMNS]
        cells = table["rows"][0]["cells"]
        assert cells[1:6] == ["False", "PCEUnreachable", BASE["spec"]["aws"]["vpcId"], 7, 3]
    real, sim = tables
    assert real["columnDefinitions"] == sim["columnDefinitions"]


def test_status_and_spec_writes_and_generation(servers: tuple[Server, Server]) -> None:
    body = named(BASE)
    body["status"] = {"lagSeconds": 9}
    name = body["metadata"]["name"]
    seen = []
    for server in servers:
        created = server.create(body).json()
        status_write = server.client.patch(
            f"{server.path(name)}/status",
            json={"status": {"lagSeconds": 1}, "spec": {"suspend": True}},
            headers=MERGE,
        ).json()
        spec_write = server.client.patch(
            server.path(name),
            json={"status": {"lagSeconds": 2}, "spec": {"suspend": True}},
            headers=MERGE,
        ).json()
        same = server.client.patch(
            server.path(name), json={"spec": {"suspend": True}}, headers=MERGE
        ).json()
        seen.append(
            (
                "status" in created,
                created["metadata"]["generation"],
                status_write["spec"]["suspend"],
                status_write["status"],
                status_write["metadata"]["generation"],
                spec_write["spec"]["suspend"],
                spec_write["status"],
                spec_write["metadata"]["generation"],
                same["metadata"]["generation"],
                same["metadata"]["resourceVersion"] == spec_write["metadata"]["resourceVersion"],
            )
        )
    expected = (False, 1, False, {"lagSeconds": 1}, 1, True, {"lagSeconds": 1}, 2, 2, True)
    assert seen == [expected, expected]


def test_finalizers_hold_deletion(servers: tuple[Server, Server]) -> None:
    body = named(BASE)
    body["metadata"]["finalizers"] = ["flowexport.io/test"]
    name = body["metadata"]["name"]
    for server in servers:
        assert server.create(body).status_code == 201
        deleted = server.client.delete(server.path(name))
        assert deleted.status_code in (200, 202), (server.name, deleted.text)
        marked = server.client.get(server.path(name)).json()
        assert marked["metadata"]["deletionTimestamp"], server.name
        assert marked["metadata"]["deletionGracePeriodSeconds"] == 0, server.name
        # a spec change is refused? no: allowed while terminating, but no new finalizers
        added = server.client.patch(
            server.path(name),
            json={"metadata": {"finalizers": ["flowexport.io/test", "other/x"]}},
            headers=MERGE,
        )
        assert added.status_code == 422, (server.name, added.status_code, added.text)
        gone = server.client.patch(
            server.path(name), json={"metadata": {"finalizers": None}}, headers=MERGE
        )
        assert gone.status_code == 200, (server.name, gone.text)
        assert server.client.get(server.path(name)).status_code == 404, server.name


def _watch(server: Server, since: str, count: int, found: list[dict[str, Any]]) -> None:
    params = {"watch": "1", "resourceVersion": since, "timeoutSeconds": "15"}
    with server.client.stream("GET", server.path(), params=params, timeout=20) as stream:
        for line in stream.iter_lines():
            if line.strip():
                found.append(json.loads(line))
            if len(found) >= count:
                return


def test_a_watch_sees_every_write_once_in_order(servers: tuple[Server, Server]) -> None:
    seen = []
    for server in servers:
        since = server.client.get(server.path()).json()["metadata"]["resourceVersion"]
        events: list[dict[str, Any]] = []
        watcher = threading.Thread(target=_watch, args=(server, since, 5, events), daemon=True)
        watcher.start()
        body = named(BASE)
        body["metadata"]["finalizers"] = ["flowexport.io/test"]
        name = body["metadata"]["name"]
        assert server.create(body).status_code == 201
        path = server.path(name)
        server.client.patch(f"{path}/status", json={"status": {"lagSeconds": 1}}, headers=MERGE)
        server.client.patch(path, json={"spec": {"suspend": True}}, headers=MERGE)
        server.client.delete(path)
        server.client.patch(path, json={"metadata": {"finalizers": None}}, headers=MERGE)
        watcher.join(20)
        seen.append(
            [
                (
                    e["type"],
                    e["object"]["metadata"]["generation"],
                    "deletionTimestamp" in e["object"]["metadata"],
                    e["object"].get("status"),
                )
                for e in events
            ]
        )
    real, sim = seen
    assert real == [
        ("ADDED", 1, False, None),
        ("MODIFIED", 1, False, {"lagSeconds": 1}),
        ("MODIFIED", 2, False, {"lagSeconds": 1}),
        ("MODIFIED", 3, True, {"lagSeconds": 1}),  # marking it for deletion bumps generation
        ("DELETED", 3, True, {"lagSeconds": 1}),
    ]
    assert sim == real


def test_a_terminating_namespace_says_what_remains(
    control_plane: ControlPlane, servers: tuple[Server, Server]
) -> None:
    if not control_plane.controller_manager:
        pytest.skip("namespace deletion needs kube-controller-manager (not built)")
    conditions = []
    for server in servers:
        name = f"ns-{secrets.token_hex(3)}"
        assert server.client.post("/api/v1/namespaces", json={"metadata": {"name": name}})
        body = named(BASE)
        body["metadata"]["finalizers"] = ["flowexport.io/test"]
        body["metadata"]["namespace"] = name
        path = f"{FE_API}/namespaces/{name}/flowexports"
        assert server.client.post(path, json=body).status_code == 201
        deleted = server.client.delete(f"/api/v1/namespaces/{name}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["status"]["phase"] == "Terminating"

        def remaining(name: str = name, server: Server = server) -> list[Any] | None:
            status = server.client.get(f"/api/v1/namespaces/{name}").json()["status"]
            found = {c["type"]: c for c in status.get("conditions") or []}
            if "NamespaceFinalizersRemaining" not in found:
                return None
            return sorted(
                (c["type"], c["status"], c["reason"], c.get("message")) for c in found.values()
            )

        conditions.append(wait_for(remaining, 30, f"{server.name}: the namespace's conditions"))
        fe = server.client.get(f"{path}/{body['metadata']['name']}").json()
        assert fe["metadata"]["deletionTimestamp"], server.name
        server.client.patch(
            f"{path}/{body['metadata']['name']}",
            json={"metadata": {"finalizers": None}},
            headers=MERGE,
        )
        wait_for(
            lambda name=name, server=server: (
                server.client.get(f"/api/v1/namespaces/{name}").status_code == 404
            ),
            30,
            f"{server.name}: the namespace gone",
        )
    real, sim = conditions
    assert sim == real


def test_errors_are_answered_alike(servers: tuple[Server, Server]) -> None:
    """Status codes, reasons and messages of the errors clients act on."""
    seen = []
    for server in servers:
        body = named(BASE)
        name = body["metadata"]["name"]
        created = server.create(body).json()
        stale = copy.deepcopy(created)
        server.client.patch(server.path(name), json={"spec": {"suspend": True}}, headers=MERGE)
        answers = {
            "stale-put": server.client.put(server.path(name), json=stale),
            "exists": server.create(body),
            "missing": server.client.get(server.path("nothing-here")),
            "no-namespace": server.client.post(
                f"{FE_API}/namespaces/nowhere/flowexports",
                json={**named(BASE), "metadata": {"name": "x"}},
            ),
            "json-patch-test": server.client.patch(
                server.path(name),
                json=[{"op": "test", "path": "/spec/suspend", "value": False}],
                headers={"Content-Type": "application/json-patch+json"},
            ),
            "bad-patch-type": server.client.patch(
                server.path(name), content=b"{}", headers={"Content-Type": "text/plain"}
            ),
            "strategic-merge-patch": server.client.patch(
                server.path(name),
                json={"spec": {"suspend": False}},
                headers={"Content-Type": "application/strategic-merge-patch+json"},
            ),
        }
        seen.append(
            {
                what: (
                    a.status_code,
                    a.json().get("reason"),
                    a.json().get("message", "").replace(name, "NAME"),
                )
                for what, a in answers.items()
            }
        )
    real, sim = seen
    assert sim == real
