"""A Kubernetes API server simulator: the semantics kopf and kubectl rely on, over real HTTP.

Served: `/version`, discovery (`/api`, `/api/v1`, `/apis`, group versions), OpenAPI v3 for
`kubectl explain`; core `namespaces`, `secrets`, `events`, `configmaps`; CRDs
(`apiextensions.k8s.io/v1`), which register their resources when created. Objects get `uid`,
`creationTimestamp`, a `resourceVersion` that every write bumps, and a `generation` that only
changes when the spec does. Custom resources are pruned, defaulted and validated against their
schema (422 `Invalid`; 400 for unknown fields under `fieldValidation=Strict`). Writes support
create, replace (409 on a stale resourceVersion), merge patch, strategic merge patch (as merge
patch) and JSON patch (with `test`: 422 on mismatch); the `/status` subresource changes only
`.status` and main-object writes ignore `.status`. Deletion honours finalizers
(`deletionTimestamp`, removal when the last one goes). Lists and watches take label and field
(`metadata.name`, `metadata.namespace`) selectors; watches replay from a `resourceVersion`,
send bookmarks when asked, end after `timeoutSeconds`, and answer a version older than the
retained history with a 410 `Expired` event. `kubectl get` receives server-side Tables built
from the CRD's printer columns.

Authentication and RBAC: requests without a token, or with the kubeconfig's default token, are
unrestricted; a token from `service_account_token` authenticates as that ServiceAccount, and
so does an unrestricted request impersonating it (`Impersonate-User`, i.e. `kubectl --as`);
such requests are authorized by the Roles, ClusterRoles and bindings stored in the simulator
(403 `Forbidden` otherwise, see `kuberbac.py`); an unknown token gets 401. Every request is
recorded in `requests` with its user and RBAC attributes.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonpatch
from aiohttp import web

from flowexport.sim.kubeproto import ProtobufError, decode_object
from flowexport.sim.kuberbac import RbacObjects, attributes, service_account_user
from flowexport.sim.kubeschema import human_age, json_path, prune_and_default, validate

HISTORY = 5000
RBAC = "rbac.authorization.k8s.io"
#: The token of the simulator's kubeconfig, and requests without a token: unrestricted.
ADMIN_TOKEN = "kube-sim"
ADMIN = "kube-sim:admin"
AUDIT = web.RequestKey("audit", dict)


@dataclass
class ResourceType:
    """One served resource."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status: bool = False
    schema: dict[str, Any] | None = None
    columns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


BUILTINS = [
    ResourceType("", "v1", "Namespace", "namespaces", "namespace", False, ["ns"]),
    ResourceType("", "v1", "Secret", "secrets", "secret", True),
    ResourceType("", "v1", "ConfigMap", "configmaps", "configmap", True, ["cm"]),
    ResourceType("", "v1", "Event", "events", "event", True, ["ev"]),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True, ["sa"]),
    ResourceType(RBAC, "v1", "Role", "roles", "role", True),
    ResourceType(RBAC, "v1", "RoleBinding", "rolebindings", "rolebinding", True),
    ResourceType(RBAC, "v1", "ClusterRole", "clusterroles", "clusterrole", False),
    ResourceType(
        RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", False
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        False,
        ["crd", "crds"],
    ),
]
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class ApiError(Exception):
    """An error answered as a Kubernetes Status object."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def response(self) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }
        return web.json_response(body, status=self.code)


@dataclass
class _Watch:
    kind: ResourceType
    namespace: str | None
    name: str | None
    labels: dict[str, str]
    queue: asyncio.Queue[dict[str, Any]]


class KubeSimulator:
    """The simulated API server; `app` is the aiohttp application to serve."""

    def __init__(self, history: int = HISTORY) -> None:
        self.types: dict[tuple[str, str], ResourceType] = {t.key: t for t in BUILTINS}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.revision = 0
        self.history: deque[tuple[int, tuple[str, str], str, dict[str, Any]]] = deque(
            maxlen=history
        )
        self.watches: list[_Watch] = []
        self.requests: list[dict[str, Any]] = []
        self.tokens: dict[str, str] = {ADMIN_TOKEN: ADMIN}
        self.app = web.Application(middlewares=[self._errors])
        self.app.router.add_get("/version", self._version)
        self.app.router.add_get("/api", self._api_versions)
        self.app.router.add_get("/apis", self._api_groups)
        self.app.router.add_get("/openapi/v3", self._openapi_index)
        self.app.router.add_get("/openapi/v3/{path:.*}", self._openapi_document)
        self.app.router.add_route("*", "/api/{path:.*}", self._dispatch)
        self.app.router.add_route("*", "/apis/{path:.*}", self._dispatch)
        for name in ("default", "kube-system"):
            self._store(
                self.types[("", "namespaces")],
                _new_meta({"metadata": {"name": name}}, None),
                "ADDED",
            )

    # -- plumbing -------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        entry = {
            "method": request.method,
            "path": request.path_qs,
            "content_type": request.headers.get("Content-Type", ""),
            "status": 0,
        }
        self.requests.append(entry)
        request[AUDIT] = entry
        try:
            entry["user"] = self._authenticate(request)
            response: web.StreamResponse = await handler(request)
        except ApiError as exc:
            response = exc.response()
        entry["status"] = response.status
        return response

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token that authenticates as the ServiceAccount; RBAC then applies to it."""
        token = f"sa-{namespace}-{name}-{uuid.uuid4().hex}"
        self.tokens[token] = service_account_user(namespace, name)
        return token

    def _authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        user: str | None = ADMIN
        if header:
            scheme, _, token = header.partition(" ")
            user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        # `kubectl --as` (and a kubeconfig's `as:`) impersonates; only the admin may.
        wanted = request.headers.get("Impersonate-User")
        if wanted and wanted != user:
            if user != ADMIN:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'users "{wanted}" is forbidden: User "{user}" cannot '
                    'impersonate resource "users" in API group "" at the cluster scope',
                )
            return wanted
        return user

    def _authorize(self, request: web.Request, route: tuple[Any, ...]) -> None:
        entry = request[AUDIT]
        kind, namespace, name, sub = route
        attrs = attributes(
            request.method,
            kind.group,
            kind.plural,
            sub,
            namespace,
            name,
            request.query.get("watch") in ("1", "true"),
        )
        entry["attributes"] = attrs
        if entry["user"] == ADMIN:
            return
        if not self._rbac().allows(entry["user"], attrs):
            resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            named = f' "{name}"' if name else ""
            user = entry["user"]
            raise ApiError(
                403,
                "Forbidden",
                f'{resource}{named} is forbidden: User "{user}" {attrs.describe()}',
                {"group": kind.group, "kind": kind.plural, **({"name": name} if name else {})},
            )

    def _rbac(self) -> RbacObjects:
        def bucket(plural: str) -> dict[tuple[str, str], dict[str, Any]]:
            return self.objects.get((RBAC, plural), {})

        return RbacObjects(
            bucket("roles"),
            bucket("clusterroles"),
            bucket("rolebindings"),
            bucket("clusterrolebindings"),
        )

    def _store(self, kind: ResourceType, obj: dict[str, Any], event: str) -> dict[str, Any]:
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
        for watch in self.watches:
            if watch.kind.key == kind.key and _matches(
                snapshot, watch.namespace, watch.name, watch.labels
            ):
                watch.queue.put_nowait({"type": event, "object": snapshot})
        if kind.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register(snapshot, event)
        return obj

    def _register(self, crd: dict[str, Any], event: str) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            kind = ResourceType(
                spec.get("group", ""),
                version["name"],
                names.get("kind", ""),
                names.get("plural", ""),
                names.get("singular", names.get("plural", "")),
                spec.get("scope") == "Namespaced",
                names.get("shortNames", []),
                names.get("categories", []),
                "status" in version.get("subresources", {}),
                version.get("schema", {}).get("openAPIV3Schema"),
                version.get("additionalPrinterColumns", []),
            )
            if event == "DELETED":
                self.types.pop(kind.key, None)
                self.objects.pop(kind.key, None)
            else:
                self.types[kind.key] = kind

    # -- discovery ------------------------------------------------------------------------

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-flowexport-sim",
                "platform": "linux/amd64",
                "goVersion": "go1.22",
            }
        )

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        )

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for kind in self.types.values():
            if kind.group and kind.version not in groups.setdefault(kind.group, []):
                groups[kind.group].append(kind.version)
        return groups

    async def _api_groups(self, request: web.Request) -> web.Response:
        groups = [
            {
                "name": name,
                "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
                "preferredVersion": {
                    "groupVersion": f"{name}/{versions[0]}",
                    "version": versions[0],
                },
            }
            for name, versions in sorted(self._groups().items())
        ]
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for kind in self.types.values():
            if (kind.group, kind.version) != (group, version):
                continue
            resources.append(
                {
                    "name": kind.plural,
                    "singularName": kind.singular,
                    "namespaced": kind.namespaced,
                    "kind": kind.kind,
                    "verbs": _VERBS,
                    "shortNames": kind.short_names,
                    "categories": kind.categories,
                }
            )
            if kind.status:
                resources.append(
                    {
                        "name": f"{kind.plural}/status",
                        "singularName": "",
                        "namespaced": kind.namespaced,
                        "kind": kind.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not resources:
            raise ApiError(404, "NotFound", f"the server could not find {group}/{version}")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    async def _openapi_index(self, request: web.Request) -> web.Response:
        paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"}}
        for group, versions in self._groups().items():
            for version in versions:
                paths[f"apis/{group}/{version}"] = {
                    "serverRelativeURL": f"/openapi/v3/apis/{group}/{version}?hash={self.revision}"
                }
        return web.json_response({"paths": paths})

    async def _openapi_document(self, request: web.Request) -> web.Response:
        """Schemas of a group version, and its paths with their query parameters: kubectl
        looks for `fieldValidation` there to know that the server validates fields itself."""
        parts = request.match_info["path"].split("/")
        group, version = ("", parts[-1]) if parts[0] == "api" else (parts[1], parts[2])
        schemas: dict[str, Any] = {}
        paths: dict[str, Any] = {}
        for kind in self.types.values():
            if (kind.group, kind.version) != (group, version):
                continue
            gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
            if kind.schema is not None:
                reversed_group = ".".join(reversed(kind.group.split(".")))
                schemas[f"{reversed_group}.{kind.version}.{kind.kind}"] = {
                    **kind.schema,
                    "x-kubernetes-group-version-kind": [gvk],
                }
            prefix = f"/apis/{kind.group}/{kind.version}" if kind.group else "/api/v1"
            scope = "/namespaces/{namespace}" if kind.namespaced else ""
            operation = {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                ],
            }
            paths[f"{prefix}{scope}/{kind.plural}"] = {"post": operation}
            paths[f"{prefix}{scope}/{kind.plural}/{{name}}"] = {
                "put": operation,
                "patch": operation,
            }
        return web.json_response(
            {
                "openapi": "3.0.0",
                "info": {"title": "flowexport kube-sim", "version": "v1"},
                "paths": paths,
                "components": {"schemas": schemas},
            }
        )

    # -- REST -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route = self._route(request.path)
        if route is None:
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource ({request.path})",
            )
        if isinstance(route, dict):
            return web.json_response(route)
        self._authorize(request, route)
        kind, namespace, name, sub = route
        method = request.method
        if sub not in (None, "status") or (sub == "status" and not kind.status):
            raise ApiError(404, "NotFound", f"no subresource {sub} on {kind.plural}")
        if name is None:
            if method == "GET":
                if request.query.get("watch") in ("1", "true"):
                    return await self._watch(request, kind, namespace)
                return self._list(request, kind, namespace)
            if method == "POST":
                return web.json_response(
                    self._create(kind, namespace, await _body(request), request.query), status=201
                )
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        if method == "GET":
            return web.json_response(self._get(kind, namespace, name))
        if method == "PUT":
            body = await _body(request)
            return web.json_response(self._replace(kind, namespace, name, body, sub, request.query))
        if method == "PATCH":
            patch_text = await request.text()
            content_type = request.headers.get("Content-Type", "")
            return web.json_response(
                self._patch(kind, namespace, name, patch_text, content_type, sub, request.query)
            )
        if method == "DELETE":
            return web.json_response(self._delete(kind, namespace, name))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed")

    def _route(
        self, path: str
    ) -> tuple[ResourceType, str | None, str | None, str | None] | dict[str, Any] | None:
        parts = [p for p in path.split("/") if p]
        if parts[0] == "api":
            if len(parts) < 2:
                return None
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 2:
                versions = self._groups().get(parts[1])
                if not versions:
                    return None
                return {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    "name": parts[1],
                    "versions": [
                        {"groupVersion": f"{parts[1]}/{v}", "version": v} for v in versions
                    ],
                    "preferredVersion": {
                        "groupVersion": f"{parts[1]}/{versions[0]}",
                        "version": versions[0],
                    },
                }
            if len(parts) < 3:
                return None
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return self._resource_list(group, version)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        kind = self.types.get((group, rest[0]))
        if kind is None or kind.version != version:
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if namespace is not None and not kind.namespaced:
            return None
        return kind, namespace, name, sub

    def _bucket(self, kind: ResourceType) -> dict[tuple[str, str], dict[str, Any]]:
        return self.objects.setdefault(kind.key, {})

    def _get(self, kind: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._bucket(kind).get((namespace or "", name))
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{kind.plural}.{kind.group or "core"} "{name}" not found',
                {"name": name, "group": kind.group, "kind": kind.plural},
            )
        return obj

    def _selected(
        self, request: web.Request, kind: ResourceType, namespace: str | None
    ) -> list[dict[str, Any]]:
        name, labels, field_namespace = _selectors(request)
        items = [
            o
            for o in self._bucket(kind).values()
            if _matches(o, namespace or field_namespace, name, labels)
        ]
        return sorted(
            items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    def _list(
        self, request: web.Request, kind: ResourceType, namespace: str | None
    ) -> web.Response:
        items = self._selected(request, kind, namespace)
        if "as=Table" in request.headers.get("Accept", ""):
            return web.json_response(self._table(kind, items))
        body = {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.revision)},
            "items": [_with_type(kind, o) for o in items],
        }
        return web.json_response(body)

    def _table(self, kind: ResourceType, items: list[dict[str, Any]]) -> dict[str, Any]:
        columns = [c for c in kind.columns if c.get("priority", 0) == 0]
        definitions = [
            {
                "name": "Name",
                "type": "string",
                "format": "name",
                "description": "Name of the object",
                "priority": 0,
            }
        ]
        definitions += [
            {
                "name": c["name"],
                "type": c.get("type", "string"),
                "format": c.get("format", ""),
                "description": c.get("description", ""),
                "priority": 0,
            }
            for c in columns
        ]
        if not any(c["name"] == "Age" for c in columns):
            definitions.append(
                {"name": "Age", "type": "string", "format": "", "description": "", "priority": 0}
            )
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for column in columns:
                found = json_path(obj, column["jsonPath"])
                value = found[0] if found else None
                if value is not None and column.get("type") == "date":
                    value = human_age(str(value))
                cells.append(value)
            if not any(c["name"] == "Age" for c in columns):
                cells.append(human_age(obj["metadata"]["creationTimestamp"]))
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"],
                    },
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self.revision)},
            "columnDefinitions": definitions,
            "rows": rows,
        }

    async def _watch(
        self, request: web.Request, kind: ResourceType, namespace: str | None
    ) -> web.StreamResponse:
        name, labels, field_namespace = _selectors(request)
        namespace = namespace or field_namespace
        since = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        watch = _Watch(kind, namespace, name, labels, asyncio.Queue())
        initial = request.query.get("sendInitialEvents") in ("1", "true")
        if since in ("", "0") or initial:
            for obj in self._selected(request, kind, namespace):
                watch.queue.put_nowait({"type": "ADDED", "object": copy.deepcopy(obj)})
            if initial:
                # WatchList (kubectl >= 1.32): a bookmark marks the end of the initial state.
                watch.queue.put_nowait(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "metadata": {
                                "resourceVersion": str(self.revision),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            }
                        },
                    }
                )
        else:
            oldest = self.history[0][0] if self.history else self.revision + 1
            if not since.isdigit() or (int(since) < oldest - 1 and int(since) < self.revision):
                gone = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 410,
                    "reason": "Expired",
                    "message": f"too old resource version: {since}",
                }
                await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                return response
            for revision, key, change, obj in self.history:
                if (
                    revision > int(since)
                    and key == kind.key
                    and _matches(obj, namespace, name, labels)
                ):
                    watch.queue.put_nowait({"type": change, "object": obj})
        self.watches.append(watch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    queued = await asyncio.wait_for(watch.queue.get(), timeout=min(left, 5.0))
                except TimeoutError:
                    if not bookmarks:
                        continue
                    queued = {
                        "type": "BOOKMARK",
                        "object": {"metadata": {"resourceVersion": str(self.revision)}},
                    }
                event: dict[str, Any] = {
                    "type": queued["type"],
                    "object": _with_type(kind, queued["object"]),
                }
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watches.remove(watch)
        return response

    def _admit(
        self, kind: ResourceType, obj: dict[str, Any], query: Iterable[tuple[str, str]]
    ) -> dict[str, Any]:
        """Prune, default and validate a custom resource against its schema; fold a Secret's
        `stringData` into base64 `data`, as the API server does on every write."""
        if kind.key == ("", "secrets") and obj.get("stringData"):
            data = obj.setdefault("data", {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        if kind.schema is None:
            return obj
        unknown: list[str] = []
        admitted: dict[str, Any] = prune_and_default(obj, kind.schema, unknown)
        if unknown and dict(query).get("fieldValidation") == "Strict":
            raise ApiError(
                400,
                "BadRequest",
                f'{kind.kind} in version "{kind.version}" cannot be handled '
                f"as a {kind.kind}: strict decoding error: unknown field "
                + ", ".join(f'"{u}"' for u in unknown),
            )
        problems = validate(admitted, kind.schema)
        if problems:
            name = obj.get("metadata", {}).get("name", "")
            raise ApiError(
                422,
                "Invalid",
                f'{kind.kind}.{kind.group} "{name}" is invalid: ' + "; ".join(problems),
                {
                    "name": name,
                    "group": kind.group,
                    "kind": kind.kind,
                    "causes": [
                        {
                            "reason": "FieldValueInvalid",
                            "field": p.split(": ", 1)[0],
                            "message": p.split(": ", 1)[-1],
                        }
                        for p in problems
                    ],
                },
            )
        return admitted

    def _create(
        self, kind: ResourceType, namespace: str | None, body: dict[str, Any], query: Any
    ) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if kind.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if ("", namespace) not in self._bucket(self.types[("", "namespaces")]):
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        if (namespace or "", meta["name"]) in self._bucket(kind):
            raise ApiError(409, "AlreadyExists", f'{kind.plural} "{meta["name"]}" already exists')
        obj = self._admit(
            kind, _new_meta(body, namespace if kind.namespaced else None), query.items()
        )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.status:
            obj.pop("status", None)
        return _with_type(kind, self._store(kind, obj, "ADDED"))

    def _write(
        self,
        kind: ResourceType,
        current: dict[str, Any],
        proposed: dict[str, Any],
        sub: str | None,
        query: Any = None,
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
        new = self._admit(kind, new, (query or {}).items())
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
            return self._store(kind, new, "DELETED")
        return self._store(kind, new, "MODIFIED")

    def _replace(
        self,
        kind: ResourceType,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        sub: str | None,
        query: Any = None,
    ) -> dict[str, Any]:
        current = self._get(kind, namespace, name)
        wanted = body.get("metadata", {}).get("resourceVersion")
        _check_version(kind, name, current, wanted)
        return _with_type(kind, self._write(kind, current, body, sub, query))

    def _patch(
        self,
        kind: ResourceType,
        namespace: str | None,
        name: str,
        body: str,
        content_type: str,
        sub: str | None,
        query: Any = None,
    ) -> dict[str, Any]:
        current = self._get(kind, namespace, name)
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
        return _with_type(kind, self._write(kind, current, proposed, sub, query))

    def _delete(self, kind: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        current = self._get(kind, namespace, name)
        if current["metadata"].get("finalizers"):
            if not current["metadata"].get("deletionTimestamp"):
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                return _with_type(kind, self._store(kind, new, "MODIFIED"))
            return _with_type(kind, current)
        gone = copy.deepcopy(current)
        self._store(kind, gone, "DELETED")
        return _with_type(kind, gone)

    # -- helpers for tests --------------------------------------------------------------

    def stored(self, group: str, plural: str) -> list[dict[str, Any]]:
        """Everything stored of a resource (a copy)."""
        return copy.deepcopy(list(self.objects.get((group, plural), {}).values()))


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


def _with_type(kind: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": kind.api_version, "kind": kind.kind, **obj}


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


def _selectors(request: web.Request) -> tuple[str | None, dict[str, str], str | None]:
    name = namespace = None
    for term in filter(None, request.query.get("fieldSelector", "").split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name":
            name = value.lstrip("=")
        elif key == "metadata.namespace":
            namespace = value.lstrip("=")
    labels = {}
    for term in filter(None, request.query.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        labels[key] = value.lstrip("=")
    return name, labels, namespace


def _matches(
    obj: dict[str, Any], namespace: str | None, name: str | None, labels: dict[str, str]
) -> bool:
    meta = obj["metadata"]
    if namespace is not None and meta.get("namespace", "") != namespace:
        return False
    if name is not None and meta["name"] != name:
        return False
    have = meta.get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


async def _body(request: web.Request) -> dict[str, Any]:
    if "protobuf" in request.headers.get("Content-Type", ""):
        try:
            return decode_object(await request.read())
        except ProtobufError as exc:
            raise ApiError(415, "UnsupportedMediaType", str(exc)) from None
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "BadRequest", "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the request body must be an object")
    return body


def kubeconfig(url: str, token: str = ADMIN_TOKEN, as_user: str | None = None) -> dict[str, Any]:
    """A kubeconfig for the simulator (plain HTTP on loopback): unrestricted by default, or as
    a ServiceAccount with a token from `KubeSimulator.service_account_token`. kubectl sends no
    token over plain HTTP, so for it say `as_user` too: it then impersonates the account."""
    user: dict[str, Any] = {"token": token}
    if as_user:
        user["as"] = as_user
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kube-sim",
        "clusters": [{"name": "kube-sim", "cluster": {"server": url}}],
        "users": [{"name": "kube-sim", "user": user}],
        "contexts": [
            {
                "name": "kube-sim",
                "context": {"cluster": "kube-sim", "user": "kube-sim", "namespace": "default"},
            }
        ],
    }
