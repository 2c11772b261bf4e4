"""The simulator's object store: objects by resource, their metadata, and every change.

Objects get `uid`, `creationTimestamp`, a `resourceVersion` that every write bumps, and a
`generation` that only changes when the spec does. Writes are create, replace (409 on a stale
resourceVersion), merge patch, strategic merge patch (as merge patch) and JSON patch (with
`test`: 422 on mismatch); the `/status` subresource changes only `.status` and main-object
writes ignore `.status`. Deletion honours finalizers (`deletionTimestamp`, removal when the
last one goes). Each change is kept in a bounded history and handed to the subscriptions it
matches (the open watches); storing a CRD registers or removes its resources.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonpatch

from flowexport.sim.kube.admission import admit
from flowexport.sim.kube.errors import ApiError
from flowexport.sim.kube.resources import (
    BUILTINS,
    CRDS,
    ResourceType,
    crd_resource_types,
    with_type,
)

#: How many changes the store remembers for watches that resume from a resourceVersion.
HISTORY = 5000

Key = tuple[str, str]
Bucket = dict[Key, dict[str, Any]]
#: (revision, resource key, event type, the object as it was then)
Change = tuple[int, Key, str, dict[str, Any]]


@dataclass
class Subscription:
    """An open watch: the changes it selects are put on its queue."""

    kind: ResourceType
    namespace: str | None
    name: str | None
    labels: dict[str, str]
    queue: asyncio.Queue[dict[str, Any]]


class Store:
    """Everything stored, by resource `(group, plural)` and then `(namespace, name)`."""

    def __init__(self, history: int = HISTORY) -> None:
        self.types: dict[Key, ResourceType] = {t.key: t for t in BUILTINS}
        self.objects: dict[Key, Bucket] = {}
        self.revision = 0
        self.history: deque[Change] = deque(maxlen=history)
        self.subscriptions: list[Subscription] = []
        for name in ("default", "kube-system"):
            self.save(
                self.types[("", "namespaces")],
                _new_meta({"metadata": {"name": name}}, None),
                "ADDED",
            )

    def save(self, kind: ResourceType, obj: dict[str, Any], event: str) -> dict[str, Any]:
        """Record a change (ADDED, MODIFIED or DELETED) under a new resourceVersion."""
        self.revision += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.revision)
        key = (meta.get("namespace", ""), meta["name"])
        bucket = self.objects.setdefault(kind.key, {})
        if event == "DELETED":
            bucket.pop(key, None)
        else:
            bucket[key] = obj
        snapshot = copy.deepcopy(obj)
        self.history.append((self.revision, kind.key, event, snapshot))
        for subscription in self.subscriptions:
            if subscription.kind.key == kind.key and matches(
                snapshot, subscription.namespace, subscription.name, subscription.labels
            ):
                subscription.queue.put_nowait({"type": event, "object": snapshot})
        if kind.key == CRDS:
            self._register(snapshot, event)
        return obj

    def _register(self, crd: dict[str, Any], event: str) -> None:
        for kind in crd_resource_types(crd):
            if event == "DELETED":
                self.types.pop(kind.key, None)
                self.objects.pop(kind.key, None)
            else:
                self.types[kind.key] = kind

    def bucket(self, kind: ResourceType) -> Bucket:
        """The objects of one resource (live, not a copy)."""
        return self.objects.setdefault(kind.key, {})

    def get(self, kind: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        """One object; 404 NotFound if there is none."""
        obj = self.bucket(kind).get((namespace or "", name))
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{kind.plural}.{kind.group or "core"} "{name}" not found',
                {"name": name, "group": kind.group, "kind": kind.plural},
            )
        return obj

    def select(
        self, kind: ResourceType, namespace: str | None, query: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """The objects a list request selects (in `namespace`, by the query's field and
        label selectors), ordered by namespace and name."""
        name, labels, field_namespace = selectors(query)
        items = [
            o
            for o in self.bucket(kind).values()
            if matches(o, namespace or field_namespace, name, labels)
        ]
        return sorted(
            items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    def create(
        self,
        kind: ResourceType,
        namespace: str | None,
        body: dict[str, Any],
        query: Mapping[str, str],
    ) -> dict[str, Any]:
        """POST: a new object (409 if it exists, 404 if its namespace does not)."""
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if kind.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if ("", namespace) not in self.bucket(self.types[("", "namespaces")]):
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        if (namespace or "", meta["name"]) in self.bucket(kind):
            raise ApiError(409, "AlreadyExists", f'{kind.plural} "{meta["name"]}" already exists')
        obj = admit(kind, _new_meta(body, namespace if kind.namespaced else None), query.items())
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.status:
            obj.pop("status", None)
        return with_type(kind, self.save(kind, obj, "ADDED"))

    def _write(
        self,
        kind: ResourceType,
        current: dict[str, Any],
        proposed: dict[str, Any],
        sub: str | None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Apply an update: status/main split, immutable metadata, generation, finalizers."""
        new = copy.deepcopy(current)
        if sub == "status":
            new["status"] = proposed.get("status")
            if new["status"] is None:
                new.pop("status")
        else:
            for key, value in proposed.items():
                if key in ("metadata", "apiVersion", "kind") or (key == "status" and kind.status):
                    continue
                new[key] = value
            for key in [
                k
                for k in new
                if k not in proposed and k not in ("metadata", "apiVersion", "kind", "status")
            ]:
                del new[key]
            meta = proposed.get("metadata", {})
            for key in ("labels", "annotations", "finalizers", "ownerReferences"):
                if meta.get(key) is not None:
                    new["metadata"][key] = meta[key]
                else:
                    new["metadata"].pop(key, None)
        new = admit(kind, new, (query or {}).items())
        spec_of = {
            k: v for k, v in new.items() if k not in ("metadata", "status", "apiVersion", "kind")
        }
        old_spec = {
            k: v
            for k, v in current.items()
            if k not in ("metadata", "status", "apiVersion", "kind")
        }
        if spec_of != old_spec:
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if new == current:
            return current
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self.save(kind, new, "DELETED")
        return self.save(kind, new, "MODIFIED")

    def replace(
        self,
        kind: ResourceType,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        sub: str | None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """PUT: the object (or, with `sub="status"`, its status) becomes `body`."""
        current = self.get(kind, namespace, name)
        wanted = body.get("metadata", {}).get("resourceVersion")
        _check_version(kind, name, current, wanted)
        return with_type(kind, self._write(kind, current, body, sub, query))

    def patch(
        self,
        kind: ResourceType,
        namespace: str | None,
        name: str,
        body: str,
        content_type: str,
        sub: str | None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """PATCH: a JSON patch, or a merge patch (strategic merge patches are merged so)."""
        current = self.get(kind, namespace, name)
        try:
            patch = json.loads(body)
        except ValueError:
            raise ApiError(400, "BadRequest", "the patch is not JSON") from None
        if "json-patch" in content_type:
            try:
                proposed: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(current), patch)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise ApiError(422, "Invalid", f"the JSON patch test failed: {exc}") from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from None
        elif "merge-patch" in content_type:
            proposed = _merge(copy.deepcopy(current), patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
        wanted = (
            patch.get("metadata", {}).get("resourceVersion") if isinstance(patch, dict) else None
        )
        _check_version(kind, name, current, wanted)
        return with_type(kind, self._write(kind, current, proposed, sub, query))

    def delete(self, kind: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        """DELETE: gone at once, or marked for deletion while finalizers remain."""
        current = self.get(kind, namespace, name)
        if current["metadata"].get("finalizers"):
            if not current["metadata"].get("deletionTimestamp"):
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                return with_type(kind, self.save(kind, new, "MODIFIED"))
            return with_type(kind, current)
        gone = copy.deepcopy(current)
        self.save(kind, gone, "DELETED")
        return with_type(kind, gone)

    def stored(self, group: str, plural: str) -> list[dict[str, Any]]:
        """Everything stored of a resource (a copy)."""
        return copy.deepcopy(list(self.objects.get((group, plural), {}).values()))


def selectors(query: Mapping[str, str]) -> tuple[str | None, dict[str, str], str | None]:
    """(name, labels, namespace) from a request's `fieldSelector` and `labelSelector`."""
    name = namespace = None
    for term in filter(None, query.get("fieldSelector", "").split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name":
            name = value.lstrip("=")
        elif key == "metadata.namespace":
            namespace = value.lstrip("=")
    labels = {}
    for term in filter(None, query.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        labels[key] = value.lstrip("=")
    return name, labels, namespace


def matches(
    obj: dict[str, Any], namespace: str | None, name: str | None, labels: dict[str, str]
) -> bool:
    """Whether `obj` is in `namespace` (None: any), named `name` (None: any), with `labels`."""
    meta = obj["metadata"]
    if namespace is not None and meta.get("namespace", "") != namespace:
        return False
    if name is not None and meta["name"] != name:
        return False
    have = meta.get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def _check_version(kind: ResourceType, name: str, current: dict[str, Any], wanted: Any) -> None:
    """Optimistic concurrency: a write naming a stale resourceVersion is a 409 Conflict."""
    if wanted and wanted != current["metadata"]["resourceVersion"]:
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {kind.plural} "{name}": '
            "the object has been modified; please apply your changes to the latest version",
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_meta(body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    obj = copy.deepcopy(body)
    meta = obj.setdefault("metadata", {})
    for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(key, None)
    meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
    if namespace is not None:
        meta["namespace"] = namespace
    return obj


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target
