"""The operator's Secrets from one label-selected watch, against the Kubernetes API simulator:
each read once per change, changes seen, unmarked and missing Secrets still said as such."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flowexport.kube.client import KubeApi
from flowexport.secrets import SECRET_TYPE_LABEL, SecretKind
from flowexport.sim.kube import KubeSimulator, kubeconfig
from flowexport.sim.serve import ServerThread

NS = "security"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
LABELS = {SECRET_TYPE_LABEL: str(SecretKind.PCE_CREDENTIALS)}


def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[KubeSimulator, httpx.Client, KubeApi]]:
    sim = KubeSimulator()
    with ServerThread(sim.app) as url, httpx.Client(base_url=url, timeout=10) as admin:
        config = tmp_path / "kubeconfig"
        config.write_text(yaml.safe_dump(kubeconfig(url)))
        monkeypatch.setenv("KUBECONFIG", str(config))
        admin.post("/api/v1/namespaces", json={"metadata": {"name": NS}}).raise_for_status()
        api = KubeApi()
        try:
            yield sim, admin, api
        finally:
            if api.secret_watch is not None:
                api.secret_watch.stop()


def put(admin: httpx.Client, name: str, password: str, labels: dict[str, str]) -> None:
    body = {
        "metadata": {"name": name, "labels": labels},
        "stringData": {"username": "key", "password": password},
    }
    answer = admin.post(SECRETS, json=body)
    if answer.status_code == 409:
        answer = admin.put(f"{SECRETS}/{name}", json=body)
    answer.raise_for_status()


def reads_of(sim: KubeSimulator, name: str) -> int:
    return sum(
        r["method"] == "GET" and r["path"].split("?")[0] == f"{SECRETS}/{name}"
        for r in sim.requests
    )


async def test_a_marked_secret_is_read_once_per_change(
    cluster: tuple[KubeSimulator, httpx.Client, KubeApi],
) -> None:
    sim, admin, api = cluster
    put(admin, "pce-key", "one", LABELS)
    api.watch_secrets([NS])
    assert api.secret_watch is not None
    eventually(lambda: api.secret_watch and api.secret_watch.synced(NS), "the watch in sync")
    for _ in range(20):
        found = await api.read_secret(NS, "pce-key")
        assert found is not None and found.values["password"] == "one"
    assert reads_of(sim, "pce-key") == 0, "a watched Secret was read from the API"
    put(admin, "pce-key", "two", LABELS)
    watch = api.secret_watch
    eventually(lambda: watch.get(NS, "pce-key").values["password"] == "two", "the change")
    changed = await api.read_secret(NS, "pce-key")
    assert changed is not None and changed.version != found.version
    assert reads_of(sim, "pce-key") == 0
    lists = [r for r in sim.requests if r["path"].startswith(SECRETS + "?")]
    assert lists and all("labelSelector=" in r["path"] for r in lists), "only marked Secrets"


async def test_unmarked_and_missing_secrets_are_read_to_say_so(
    cluster: tuple[KubeSimulator, httpx.Client, KubeApi],
) -> None:
    sim, admin, api = cluster
    put(admin, "plain", "x", {})
    api.watch_secrets([NS])
    eventually(lambda: api.secret_watch and api.secret_watch.synced(NS), "the watch in sync")
    plain = await api.read_secret(NS, "plain")
    assert plain is not None and SECRET_TYPE_LABEL not in plain.labels
    assert await api.read_secret(NS, "absent") is None
    # Marked later: from then on it comes from the watch; unmarked again: read, as it is.
    put(admin, "plain", "x", LABELS)
    watch = api.secret_watch
    assert watch is not None
    eventually(lambda: watch.get(NS, "plain") is not None, "the marked Secret watched")
    before = reads_of(sim, "plain")
    assert (await api.read_secret(NS, "plain")) is not None and reads_of(sim, "plain") == before
    put(admin, "plain", "x", {})
    eventually(lambda: watch.get(NS, "plain") is None, "the unmarked Secret dropped")
    unmarked = await api.read_secret(NS, "plain")
    assert unmarked is not None and not unmarked.labels
    admin.delete(f"{SECRETS}/plain").raise_for_status()
    assert await api.read_secret(NS, "plain") is None
