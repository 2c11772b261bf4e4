"""The simulator's object store: objects by resource, their metadata, and every change.

Objects get `uid`, `creationTimestamp`, a `resourceVersion` that every write bumps, and a
`generation` that only changes when the spec does. Writes are create, replace (409 on a stale
resourceVersion), merge patch, strategic merge patch (as merge patch), JSON patch (with
`test`: 422 on mismatch) and server-side apply; each records its field manager in
`metadata.managedFields` (`fields.py`). The `/status` subresource changes only `.status` and
main-object writes ignore `.status`. A dry run (`Options.dry_run`) admits and answers the
write and keeps nothing. Deletion honours finalizers (`deletionTimestamp`, removal when the
last one goes); deleting a namespace terminates it: no new objects in it, everything in it
deleted, the namespace gone when they all are. Each change is kept in a bounded history and
handed to the subscriptions it matches (the open watches); storing a CRD registers or
removes its resources.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonpatch
import yaml

from flowexport.sim.kube import policies
from flowexport.sim.kube.admission import admit, pruned
from flowexport.sim.kube.errors import ApiError
from flowexport.sim.kube.fields import (
    APPLY,
    UPDATE,
    Entry,
    Path,
    applied_paths,
    drop_unapplied,
    entries,
    merge_applied,
    track,
)
from flowexport.sim.kube.resources import (
    BUILTINS,
    CRDS,
    ResourceType,
    crd_resource_types,
    with_type,
)
from flowexport.sim.kube.selectors import Selector, as_seen_by, parse_label_selector, selects

#: How many changes the store remembers for watches that resume from a resourceVersion.
HISTORY = 5000

Key = tuple[str, str]
Bucket = dict[Key, dict[str, Any]]
#: (revision, resource key, event type, the object as it was then)
#: (revision, resource, event, the object after, the object before (None if new))
Change = tuple[int, Key, str, dict[str, Any], dict[str, Any] | None]
NAMESPACES = ("", "namespaces")
#: Namespaces the API server refuses to delete.
IMMORTAL = ("default", "kube-system", "kube-public")


@dataclass(frozen=True)
class Options:
    """How a write is made: its field manager, whether it is a dry run, whether an apply
    forces conflicts, and the request's query (for `fieldValidation`)."""

    manager: str = ""
    dry_run: bool = False
    force: bool = False
    query: Mapping[str, str] = field(default_factory=dict)
    #: Who writes (for ValidatingAdmissionPolicies' `request.userInfo`).
    user: str = ""


DEFAULT = Options()


@dataclass
class Subscription:
    """An open watch: the changes it selects are put on its queue."""

    kind: ResourceType
    namespace: str | None
    name: str | None
    labels: Selector
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
            namespace = _namespace_defaults(_new_meta({"metadata": {"name": name}}, None))
            self.save(self.types[NAMESPACES], namespace, "ADDED")

    def save(self, kind: ResourceType, obj: dict[str, Any], event: str) -> dict[str, Any]:
        """Record a change (ADDED, MODIFIED or DELETED) under a new resourceVersion."""
        self.revision += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.revision)
        key = (meta.get("namespace", ""), meta["name"])
        bucket = self.objects.setdefault(kind.key, {})
        before = copy.deepcopy(bucket.get(key)) if event != "ADDED" else None
        if event == "DELETED":
            bucket.pop(key, None)
        else:
            bucket[key] = obj
        snapshot = copy.deepcopy(obj)
        self.history.append((self.revision, kind.key, event, snapshot, before))
        for subscription in self.subscriptions:
            if subscription.kind.key != kind.key or not matches(
                snapshot, subscription.namespace, subscription.name, ()
            ):
                continue
            seen = as_seen_by(subscription.labels, event, before, snapshot)
            if seen is not None:
                subscription.queue.put_nowait({"type": seen, "object": snapshot})
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
        options: Options = DEFAULT,
        applied: set[Path] | None = None,
    ) -> dict[str, Any]:
        """POST: a new object (409 if it exists, 404 if its namespace does not, 403 if that is
        being terminated); `applied`: made by an apply naming those fields."""
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if kind.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            self._check_namespace(kind, namespace, meta["name"])
        if (namespace or "", meta["name"]) in self.bucket(kind):
            raise ApiError(
                409, "AlreadyExists", f'{_resource(kind)} "{meta["name"]}" already exists'
            )
        obj = admit(
            kind, _new_meta(body, namespace if kind.namespaced else None), options.query.items()
        )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        self._policies(kind, "CREATE", obj, None, options)
        if kind.status:
            obj.pop("status", None)
        actor = Entry(
            options.manager, UPDATE if applied is None else APPLY, kind.api_version, _now()
        )
        _set_managed(obj, track({}, obj, kind.schema, actor, applied))
        if kind.key == NAMESPACES:
            _namespace_defaults(obj)
        if options.dry_run:
            return with_type(kind, obj)
        return with_type(kind, self.save(kind, obj, "ADDED"))

    def _policies(
        self,
        kind: ResourceType,
        operation: str,
        obj: dict[str, Any] | None,
        old: dict[str, Any] | None,
        options: Options,
        sub: str | None = None,
    ) -> None:
        """Refuse a write a bound ValidatingAdmissionPolicy denies (`policies.py`)."""
        bindings = self.objects.get((policies.GROUP, "validatingadmissionpolicybindings"), {})
        found = self.objects.get((policies.GROUP, "validatingadmissionpolicies"), {})
        policies.check(found, bindings, kind, operation, obj, old, options.user, sub)

    def _check_namespace(self, kind: ResourceType, namespace: str, name: str) -> None:
        found = self.bucket(self.types[NAMESPACES]).get(("", namespace))
        if found is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        if found["metadata"].get("deletionTimestamp"):
            resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise ApiError(
                403,
                "Forbidden",
                f'{resource} "{name}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                {
                    "name": name,
                    "group": kind.group,
                    "kind": kind.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def _write(
        self,
        kind: ResourceType,
        current: dict[str, Any],
        proposed: dict[str, Any],
        sub: str | None,
        options: Options,
        applied: set[Path] | None = None,
    ) -> dict[str, Any]:
        """Apply an update: status/main split, immutable metadata, generation, finalizers,
        managed fields (an Update, or with `applied` an Apply)."""
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
            if kind.key == NAMESPACES:  # spec.finalizers and status are the server's
                for key in ("spec", "status"):
                    if key in current:
                        new[key] = {**new.get(key, {}), **copy.deepcopy(current[key])}
        _no_new_finalizers(kind, current, new)
        new = admit(kind, new, options.query.items(), current)
        self._policies(kind, "UPDATE", new, current, options, sub)
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
        operation = UPDATE if applied is None else APPLY
        actor = Entry(options.manager, operation, kind.api_version, _now(), sub or "")
        requested = proposed.get("metadata", {}).get("managedFields")
        _set_managed(
            new, track(current, new, kind.schema, actor, applied, options.force, requested)
        )
        if new == current:
            return current
        if options.dry_run:
            return new
        if _finalized(kind, new):
            self.save(kind, new, "DELETED")
            if kind.namespaced:
                self._reap(new["metadata"]["namespace"])
            return new
        return self.save(kind, new, "MODIFIED")

    def replace(
        self,
        kind: ResourceType,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        sub: str | None,
        options: Options = DEFAULT,
    ) -> dict[str, Any]:
        """PUT: the object (or, with `sub="status"`, its status) becomes `body`."""
        current = self.get(kind, namespace, name)
        wanted = body.get("metadata", {}).get("resourceVersion")
        _check_version(kind, name, current, wanted)
        return with_type(kind, self._write(kind, current, body, sub, options))

    def patch(
        self,
        kind: ResourceType,
        namespace: str | None,
        name: str,
        body: str,
        content_type: str,
        sub: str | None,
        options: Options = DEFAULT,
    ) -> dict[str, Any]:
        """PATCH: a JSON patch, or a merge patch (strategic merge patches of built-in types are
        merged so; a custom resource takes none, 415 as from the API server)."""
        current = self.get(kind, namespace, name)
        try:
            patch = json.loads(body)
        except ValueError:
            raise ApiError(400, "BadRequest", "the patch is not JSON") from None
        if "json-patch" in content_type:
            try:
                proposed: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(current), patch)
            except jsonpatch.JsonPatchTestFailed:
                raise ApiError(
                    422, "Invalid", "the server rejected our request due to an error in our request"
                ) from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from None
        elif "application/merge-patch" in content_type or (
            "strategic-merge-patch" in content_type and kind.schema is None
        ):
            proposed = _merge(copy.deepcopy(current), patch)
        else:
            # custom resources take no strategic merge patch (kubectl knows, and merges)
            types = ["application/json-patch+json", "application/merge-patch+json"]
            types += [] if kind.schema is not None else ["application/strategic-merge-patch+json"]
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join([*types, "application/apply-patch+yaml"]),
            )
        wanted = (
            patch.get("metadata", {}).get("resourceVersion") if isinstance(patch, dict) else None
        )
        _check_version(kind, name, current, wanted)
        return with_type(kind, self._write(kind, current, proposed, sub, options))

    def apply(
        self,
        kind: ResourceType,
        namespace: str | None,
        name: str,
        body: str,
        sub: str | None,
        options: Options,
    ) -> tuple[dict[str, Any], bool]:
        """PATCH `application/apply-patch+yaml`: server-side apply of a configuration by
        `options.manager`, creating the object if there is none; (object, whether created)."""
        config = pruned(
            kind, _apply_config(kind, namespace, name, body), options.query.items(), False
        )
        applied = applied_paths(config, kind.schema, sub, kind.status)
        live = self.bucket(kind).get((namespace or "", name))
        if live is None:
            if sub is not None:
                self.get(kind, namespace, name)
            return self.create(kind, namespace, config, options, applied), True
        _check_version(kind, name, live, config["metadata"].get("resourceVersion"))
        if sub == "status":
            config = {"status": config["status"]} if "status" in config else {}
        elif kind.status:
            config.pop("status", None)
        proposed = merge_applied(live, config, kind.schema)
        managers = entries(live["metadata"].get("managedFields"))
        me = (options.manager, APPLY, sub or "", "")
        drop_unapplied(
            proposed, managers, next((e for e in managers if e.identity == me), None), applied
        )
        return with_type(kind, self._write(kind, live, proposed, sub, options, applied)), False

    def delete(
        self, kind: ResourceType, namespace: str | None, name: str, options: Options = DEFAULT
    ) -> dict[str, Any]:
        """DELETE: gone at once, or marked for deletion while finalizers remain; a namespace
        is terminated (see `_terminate`)."""
        current = self.get(kind, namespace, name)
        if kind.key == NAMESPACES and not current["metadata"].get("deletionTimestamp"):
            return with_type(kind, self._terminate(kind, current, options.dry_run))
        if kind.key == NAMESPACES and current.get("spec", {}).get("finalizers"):
            return with_type(kind, current)
        self._policies(kind, "DELETE", None, current, options)
        gone = self._delete(kind, current, options.dry_run)
        if kind.namespaced and not options.dry_run:
            self._reap(gone["metadata"]["namespace"])
        return with_type(kind, gone)

    def _delete(self, kind: ResourceType, current: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        if current["metadata"].get("finalizers"):
            if current["metadata"].get("deletionTimestamp"):
                return current
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if "generation" in new["metadata"]:  # as the API server: deletion is a change
                new["metadata"]["generation"] += 1
            return new if dry_run else self.save(kind, new, "MODIFIED")
        gone = copy.deepcopy(current)
        if not dry_run:
            self.save(kind, gone, "DELETED")
        return gone

    def _terminate(
        self, kind: ResourceType, current: dict[str, Any], dry_run: bool
    ) -> dict[str, Any]:
        """Start a namespace's deletion as the API server and its namespace controller do:
        Terminating, then every object in it deleted (those with finalizers marked), the
        namespace itself going once they are all gone (`_reap`)."""
        name = current["metadata"]["name"]
        if name in IMMORTAL:
            raise ApiError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                {"name": name, "kind": "namespaces"},
            )
        new = copy.deepcopy(current)
        new["metadata"]["deletionTimestamp"] = _now()
        new.setdefault("status", {})["phase"] = "Terminating"
        if dry_run:
            return new
        terminating = copy.deepcopy(self.save(kind, new, "MODIFIED"))
        for content in list(self.types.values()):
            if content.namespaced:
                for key in [k for k in self.bucket(content) if k[0] == name]:
                    self._delete(content, self.bucket(content)[key], False)
        self._reap(name)
        return terminating

    def _reap(self, namespace: str) -> None:
        """If `namespace` is terminating: remove it when nothing is left in it, else say in its
        conditions what remains."""
        kind = self.types[NAMESPACES]
        current = self.bucket(kind).get(("", namespace))
        if current is None or not current["metadata"].get("deletionTimestamp"):
            return
        remaining = [
            (content, obj)
            for content in self.types.values()
            if content.namespaced
            for key, obj in self.bucket(content).items()
            if key[0] == namespace
        ]
        new = copy.deepcopy(current)
        if remaining:
            new["status"]["conditions"] = _remaining(remaining, current)
        else:
            spec = new.setdefault("spec", {})
            spec["finalizers"] = [f for f in spec.get("finalizers", []) if f != "kubernetes"]
            if _finalized(kind, new):
                self.save(kind, new, "DELETED")
                return
        if new != current:
            self.save(kind, new, "MODIFIED")

    def stored(self, group: str, plural: str) -> list[dict[str, Any]]:
        """Everything stored of a resource (a copy)."""
        return copy.deepcopy(list(self.objects.get((group, plural), {}).values()))


def selectors(query: Mapping[str, str]) -> tuple[str | None, Selector, str | None]:
    """(name, label selector, namespace) from a request's `fieldSelector` and
    `labelSelector`."""
    name = namespace = None
    for term in filter(None, query.get("fieldSelector", "").split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name":
            name = value.lstrip("=")
        elif key == "metadata.namespace":
            namespace = value.lstrip("=")
    return name, parse_label_selector(query.get("labelSelector", "")), namespace


def matches(obj: dict[str, Any], namespace: str | None, name: str | None, labels: Selector) -> bool:
    """Whether `obj` is in `namespace` (None: any), named `name` (None: any), and selected by
    the label selector `labels`."""
    meta = obj["metadata"]
    if namespace is not None and meta.get("namespace", "") != namespace:
        return False
    if name is not None and meta["name"] != name:
        return False
    return selects(labels, obj)


def _no_new_finalizers(kind: ResourceType, current: dict[str, Any], new: dict[str, Any]) -> None:
    """An object being deleted takes no new finalizers (422, as the API server answers)."""
    if not current["metadata"].get("deletionTimestamp"):
        return
    before = set(current["metadata"].get("finalizers") or [])
    added = [f for f in new["metadata"].get("finalizers") or [] if f not in before]
    if added:
        name = current["metadata"]["name"]
        listed = ", ".join(json.dumps(f) for f in added)
        message = (
            "Forbidden: no new finalizers can be added if the object is being deleted, found "
            f"new finalizers []string{{{listed}}}"
        )
        resource = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
        raise ApiError(
            422,
            "Invalid",
            f'{resource} "{name}" is invalid: metadata.finalizers: {message}',
            {
                "name": name,
                "group": kind.group,
                "kind": kind.kind,
                "causes": [
                    {
                        "reason": "FieldValueForbidden",
                        "message": message,
                        "field": "metadata.finalizers",
                    }
                ],
            },
        )


def _resource(kind: ResourceType) -> str:
    """How the API server names a resource in messages: `flowexports.flowexport.io`,
    `secrets` (the core group)."""
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def _check_version(kind: ResourceType, name: str, current: dict[str, Any], wanted: Any) -> None:
    """Optimistic concurrency: a write naming a stale resourceVersion is a 409 Conflict."""
    if wanted and wanted != current["metadata"]["resourceVersion"]:
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {_resource(kind)} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
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


def _set_managed(obj: dict[str, Any], managed: list[dict[str, Any]]) -> None:
    if managed:
        obj["metadata"]["managedFields"] = managed
    else:
        obj["metadata"].pop("managedFields", None)


def _namespace_defaults(namespace: dict[str, Any]) -> dict[str, Any]:
    """A new namespace as the API server stores it: the `kubernetes` finalizer, Active."""
    namespace["spec"] = {"finalizers": ["kubernetes"]}
    namespace["status"] = {"phase": "Active"}
    return namespace


def _finalized(kind: ResourceType, obj: dict[str, Any]) -> bool:
    """Whether an object being deleted has no finalizers left (a namespace's spec ones too)."""
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    return not (kind.key == NAMESPACES and obj.get("spec", {}).get("finalizers"))


def _remaining(
    remaining: list[tuple[ResourceType, dict[str, Any]]], namespace: dict[str, Any]
) -> list[dict[str, Any]]:
    """The conditions of a terminating namespace, as kube-controller-manager's namespace
    controller writes them (all five, in its order), saying what is left in it."""
    counts: dict[str, int] = {}
    finalizers: dict[str, int] = {}
    for kind, obj in remaining:
        resource = f"{kind.plural}.{kind.group}"  # "configmaps." for the core group
        counts[resource] = counts.get(resource, 0) + 1
        for name in obj["metadata"].get("finalizers", []):
            finalizers[name] = finalizers.get(name, 0) + 1
    resources = ", ".join(f"{r} has {n} resource instances" for r, n in sorted(counts.items()))
    holding = ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers.items()))
    wanted = [
        (
            "NamespaceDeletionDiscoveryFailure",
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        (
            "NamespaceDeletionContentFailure",
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        (
            "NamespaceContentRemaining",
            "True",
            "SomeResourcesRemain",
            f"Some resources are remaining: {resources}",
        )
        if counts
        else (
            "NamespaceContentRemaining",
            "False",
            "ContentRemoved",
            "All content successfully removed",
        ),
        (
            "NamespaceFinalizersRemaining",
            "True",
            "SomeFinalizersRemain",
            f"Some content in the namespace has finalizers remaining: {holding}",
        )
        if finalizers
        else (
            "NamespaceFinalizersRemaining",
            "False",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        ),
    ]
    before = {c["type"]: c for c in namespace.get("status", {}).get("conditions", [])}
    conditions = []
    for type_, status, reason, message in wanted:
        same = before.get(type_, {})
        if same.get("status") == status and same.get("reason") == reason:
            conditions.append({**same, "message": message})
        else:
            conditions.append(
                {
                    "type": type_,
                    "status": status,
                    "lastTransitionTime": _now(),
                    "reason": reason,
                    "message": message,
                }
            )
    return conditions


def _apply_config(
    kind: ResourceType, namespace: str | None, name: str, body: str
) -> dict[str, Any]:
    """An apply request's configuration (YAML or JSON), checked against the request."""
    try:
        config = json.loads(body)
    except ValueError:
        try:
            config = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise ApiError(400, "BadRequest", f"error decoding YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ApiError(400, "BadRequest", "error decoding YAML: the configuration is no object")
    if config.get("apiVersion") != kind.api_version:
        raise ApiError(
            400,
            "BadRequest",
            "Incorrect version specified in apply patch. Specified patch version: "
            f"{config.get('apiVersion')}, expected: {kind.api_version}",
        )
    if config.get("kind") != kind.kind:
        raise ApiError(
            400, "BadRequest", f"the kind of the object ({config.get('kind')}) is not {kind.kind}"
        )
    meta = config.get("metadata")
    if not isinstance(meta, dict):
        meta = config["metadata"] = {}
    if meta.setdefault("name", name) != name:
        raise ApiError(
            400,
            "BadRequest",
            f"the name of the object ({meta['name']}) does not match the name on the URL ({name})",
        )
    if kind.namespaced and meta.get("namespace") not in (None, namespace):
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    if meta.get("managedFields") is not None:
        raise ApiError(400, "BadRequest", "metadata.managedFields must be nil")
    return config
