"""In-memory stand-ins for the operator's Kubernetes edges: the API wrapper, Events, a daemon's
stop flag, and FlowExport bodies. They let reconcile, worker, Secrets and clean-up run
in-process against moto and the PCE simulator, in milliseconds per step."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flowexport.kube.client import SecretRecord
from flowexport.kube.events import EventType
from flowexport.kube.state import Operator
from flowexport.secrets import SECRET_TYPE_LABEL, SecretKind
from flowexport.urls import endpoint_of


class FakeKube:
    """`KubeClient` in memory: Secrets with resourceVersions, status patches recorded."""

    def __init__(self, serves: bool = True) -> None:
        self.secrets: dict[tuple[str, str], SecretRecord] = {}
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        #: Annotations set on each FlowExport (`annotate`), as the API server keeps them.
        self.annotations: dict[tuple[str, str], dict[str, str]] = {}
        #: Each FlowExport's resourceVersion, moved by every write here.
        self.versions: dict[tuple[str, str], str] = {}
        self.secret_reads = 0
        self.serves = serves
        self._versions = itertools.count(1)

    def put_secret(
        self,
        namespace: str,
        name: str,
        values: dict[str, str],
        kind: SecretKind | None = None,
        not_text: tuple[str, ...] = (),
    ) -> None:
        """Create or replace a Secret (a new resourceVersion each time), labelled for `kind`."""
        labels = {SECRET_TYPE_LABEL: str(kind)} if kind else {}
        version = str(next(self._versions))
        self.secrets[(namespace, name)] = SecretRecord(dict(values), version, labels, not_text)

    def delete_secret(self, namespace: str, name: str) -> None:
        self.secrets.pop((namespace, name), None)

    async def read_secret(self, namespace: str, name: str) -> SecretRecord | None:
        self.secret_reads += 1
        return self.secrets.get((namespace, name))

    async def serves_flowexports(self) -> bool:
        return self.serves

    async def set_secret_finalizer(
        self, namespace: str, name: str, finalizer: str, present: bool
    ) -> None:
        found = self.secrets.get((namespace, name))
        if found is None:
            return
        others = tuple(f for f in found.finalizers if f != finalizer)
        finalizers = (*others, finalizer) if present else others
        if finalizers != found.finalizers:  # as the API server: any change, a new version
            version = str(next(self._versions))
            self.secrets[(namespace, name)] = dataclasses.replace(
                found, finalizers=finalizers, version=version
            )

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> Any:
        """A JSON merge patch of the status, as the API server applies it; answers the object
        (its resourceVersion and status) as the API server does."""
        self.patches.append((namespace, name, copy.deepcopy(status)))
        stored = self.statuses.setdefault((namespace, name), {})
        _merge(stored, status)
        version = self.versions[(namespace, name)] = str(next(self._versions))
        return {"metadata": {"resourceVersion": version}, "status": copy.deepcopy(stored)}

    def wipe_status(self, namespace: str, name: str) -> None:
        """`kubectl patch --subresource=status --type=merge -p '{"status":null}'`."""
        self.statuses[(namespace, name)] = {}
        self.versions[(namespace, name)] = str(next(self._versions))

    async def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        """Set (None: remove) annotations, as a merge patch of the metadata does."""
        kept = self.annotations.setdefault((namespace, name), {})
        for key, value in annotations.items():
            if value is None:
                kept.pop(key, None)
            else:
                kept[key] = value
        self.versions[(namespace, name)] = str(next(self._versions))

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return self.statuses.get((namespace, name), {})

    def condition(self, namespace: str, name: str, type_: str) -> tuple[str, str] | None:
        for c in self.status(namespace, name).get("conditions", []):
            if c["type"] == type_:
                return c["status"], c["reason"]
        return None


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386: null removes, an object merges (into an empty one where there was none)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


@dataclass
class RecordingEvents:
    """`EventSink` that keeps every Event posted."""

    posted: list[tuple[str, str, str]] = field(default_factory=list)

    def post(self, body: Any, type_: EventType, reason: str, message: str) -> None:
        self.posted.append((type_, reason, message))

    def reasons(self, type_: str | None = None) -> set[str]:
        return {r for t, r, _ in self.posted if type_ is None or t == type_}


class Stopped:
    """A daemon's stop flag, as kopf hands it (`bool(stopped)`, `await stopped.wait(t)`)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> Stopped:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self


class LiveBody(dict[str, Any]):
    """A FlowExport as kopf's live body shows it to a daemon: the spec and generation as the
    test sets them; the status, resourceVersion and annotations as `kube` holds them now."""

    def __init__(self, kube: FakeKube, base: dict[str, Any]) -> None:
        super().__init__(base)
        self.kube = kube
        self.key = (base["metadata"]["namespace"], base["metadata"]["name"])

    def __getitem__(self, key: str) -> Any:
        if key == "status":
            return copy.deepcopy(self.kube.statuses.get(self.key, {}))
        value = super().__getitem__(key)
        if key == "metadata":
            value["resourceVersion"] = self.kube.versions.get(self.key, "0")
            value["annotations"] = dict(self.kube.annotations.get(self.key, {}))
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key == "status" or key in self else default


def body(namespace: str, name: str, spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    """A FlowExport object as kopf hands it to handlers (a mapping)."""
    return {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "FlowExport",
        "metadata": {"namespace": namespace, "name": name, "generation": generation},
        "spec": copy.deepcopy(spec),
    }


def operator(
    api: FakeKube,
    events: RecordingEvents,
    settle_seconds: float = 0.0,
    allowed_pce_urls: Sequence[str] = (),
) -> Operator:
    """An Operator wired to the fakes, allowed to send API keys to the PCEs of those URLs."""
    return Operator(
        api,
        events,
        settle_seconds=settle_seconds,
        resync_seconds=300.0,
        allowed_pce_hosts=frozenset(endpoint_of(url) for url in allowed_pce_urls),
    )
