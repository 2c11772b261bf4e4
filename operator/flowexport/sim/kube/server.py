"""The simulated API server: its aiohttp application, authentication, RBAC and routing.

Requests without a token, or with the kubeconfig's default token, are unrestricted; a token
from `service_account_token` authenticates as that ServiceAccount, and so does an unrestricted
request impersonating it (`Impersonate-User`, i.e. `kubectl --as`); such requests are
authorized by the Roles, ClusterRoles and bindings in the store (403 `Forbidden` otherwise,
see `rbac.py`); an unknown token gets 401. Every request is recorded in `requests` with its
user and RBAC attributes. Resource paths are routed to the store (`store.py`) with the
write's options (`dryRun=All`, `fieldManager`, `force`), watches to `watch.py`, reads asked
as Tables to `tables.py`, and discovery to `discovery.py`. Faults (`faults.py`: errors such as
409 and 500, hangs, dropped connections) are injected before any of that.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from flowexport.sim.kube.discovery import Discovery
from flowexport.sim.kube.errors import WARNINGS, ApiError, warning_headers
from flowexport.sim.kube.faults import CONTROL_PATH, KubeFaults
from flowexport.sim.kube.proto import ProtobufError, decode_object
from flowexport.sim.kube.rbac import RbacObjects, attributes, service_account_user
from flowexport.sim.kube.resources import RBAC, ResourceType, with_type
from flowexport.sim.kube.store import HISTORY, Options, Store
from flowexport.sim.kube.tables import table, wants_table
from flowexport.sim.kube.watch import watch

#: The token of the simulator's kubeconfig, and requests without a token: unrestricted.
ADMIN_TOKEN = "kube-sim"
ADMIN = "kube-sim:admin"
AUDIT = web.RequestKey("audit", dict)

#: (resource type, namespace, name, subresource) of a resource path
Route = tuple[ResourceType, str | None, str | None, str | None]


class KubeSimulator:
    """The simulated API server; `app` is the aiohttp application to serve."""

    def __init__(self, history: int = HISTORY) -> None:
        self.store = Store(history)
        self.discovery = Discovery(self.store)
        self.requests: list[dict[str, Any]] = []
        self.tokens: dict[str, str] = {ADMIN_TOKEN: ADMIN}
        #: Injected errors and hangs (see `faults.py`), also set over HTTP at `/_faults`.
        self.faults = KubeFaults()
        self.app = web.Application(middlewares=[self._errors])
        self.faults.routes(self.app)
        self.app.router.add_get("/version", self.discovery.version)
        self.app.router.add_get("/api", self.discovery.api_versions)
        self.app.router.add_get("/apis", self.discovery.api_groups)
        self.app.router.add_get("/openapi/v3", self.discovery.openapi_index)
        self.app.router.add_get("/openapi/v3/{path:.*}", self.discovery.openapi_document)
        self.app.router.add_route("*", "/api/{path:.*}", self._dispatch)
        self.app.router.add_route("*", "/apis/{path:.*}", self._dispatch)

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token that authenticates as the ServiceAccount; RBAC then applies to it."""
        token = f"sa-{namespace}-{name}-{uuid.uuid4().hex}"
        self.tokens[token] = service_account_user(namespace, name)
        return token

    def stored(self, group: str, plural: str) -> list[dict[str, Any]]:
        """Everything stored of a resource (a copy)."""
        return self.store.stored(group, plural)

    # -- authentication and authorization ------------------------------------------------

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
        warnings: list[str] = []
        token = WARNINGS.set(warnings)
        try:
            injected = None if request.path == CONTROL_PATH else await self.faults.apply(request)
            if injected is not None:
                entry["status"] = injected.status
                return injected
            entry["user"] = self._authenticate(request)
            response: web.StreamResponse = await handler(request)
        except ApiError as exc:
            response = exc.response()
        finally:
            WARNINGS.reset(token)
        if not response.prepared:
            for value in warning_headers(warnings):
                response.headers.add("Warning", value)
        entry["status"] = response.status
        return response

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

    def _authorize(self, request: web.Request, route: Route) -> None:
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
            return self.store.objects.get((RBAC, plural), {})

        return RbacObjects(
            bucket("roles"),
            bucket("clusterroles"),
            bucket("rolebindings"),
            bucket("clusterrolebindings"),
        )

    # -- routing --------------------------------------------------------------------------

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
        store = self.store
        if sub not in (None, "status") or (sub == "status" and not kind.status):
            raise ApiError(404, "NotFound", f"no subresource {sub} on {kind.plural}")
        if name is None:
            if method == "GET":
                if request.query.get("watch") in ("1", "true"):
                    return await watch(request, store, kind, namespace)
                return self._list(request, kind, namespace)
            if method == "POST":
                options = await _options(request, "CreateOptions")
                body = await _body(request)
                return web.json_response(store.create(kind, namespace, body, options), status=201)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        if method == "GET":
            obj = store.get(kind, namespace, name)
            if wants_table(request.headers.get("Accept", "")):
                return web.json_response(table(kind, [obj], store.revision))
            return web.json_response(obj)
        if method == "PUT":
            options = await _options(request, "UpdateOptions")
            body = await _body(request)
            return web.json_response(store.replace(kind, namespace, name, body, sub, options))
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "")
            apply = "apply-patch" in content_type
            options = await _options(request, "PatchOptions", apply)
            patch_text = await request.text()
            if apply:
                obj, created = store.apply(kind, namespace, name, patch_text, sub, options)
                return web.json_response(obj, status=201 if created else 200)
            return web.json_response(
                store.patch(kind, namespace, name, patch_text, content_type, sub, options)
            )
        if method == "DELETE":
            options = await _options(request, "DeleteOptions")
            return web.json_response(store.delete(kind, namespace, name, options))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed")

    def _route(self, path: str) -> Route | dict[str, Any] | None:
        """What a path under /api or /apis names: a resource route, a discovery document,
        or nothing (None)."""
        parts = [p for p in path.split("/") if p]
        if parts[0] == "api":
            if len(parts) < 2:
                return None
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 2:
                return self.discovery.api_group(parts[1])
            if len(parts) < 3:
                return None
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return self.discovery.resource_list(group, version)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        kind = self.store.types.get((group, rest[0]))
        if kind is None or kind.version != version:
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if namespace is not None and not kind.namespaced:
            return None
        return kind, namespace, name, sub

    def _list(
        self, request: web.Request, kind: ResourceType, namespace: str | None
    ) -> web.Response:
        items = self.store.select(kind, namespace, request.query)
        if wants_table(request.headers.get("Accept", "")):
            return web.json_response(table(kind, items, self.store.revision))
        body = {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.store.revision)},
            "items": [with_type(kind, o) for o in items],
        }
        return web.json_response(body)


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


async def _options(request: web.Request, kind: str, apply: bool = False) -> Options:
    """A write's options from its query (and a DELETE's `DeleteOptions` body), checked as the
    API server checks them (422 `Invalid`). Without `fieldManager` an Update is recorded
    under the user agent's product name (`kubectl/v1.31.0 ...` -> `kubectl`)."""
    query = request.query
    dry_run = query.getall("dryRun", [])
    if kind == "DeleteOptions" and request.can_read_body:
        try:
            body = json.loads(await request.text() or "{}")
        except ValueError:
            body = {}
        if isinstance(body, dict) and isinstance(body.get("dryRun"), list):
            dry_run = [*dry_run, *map(str, body["dryRun"])]
    manager = query.get("fieldManager", "")
    problems = []
    if apply and not manager:
        problems.append("fieldManager: Required value: is required for apply patch")
    if kind == "PatchOptions" and not apply and "force" in query:
        problems.append("force: Forbidden: may not be specified for non-apply patch")
    if len(manager) > 128:
        problems.append("fieldManager: Too long: may not be more than 128 bytes")
    if any(value != "All" for value in dry_run):
        shown = ", ".join(json.dumps(v) for v in dry_run)
        problems.append(f'dryRun: Unsupported value: []string{{{shown}}}: supported values: "All"')
    if problems:
        listed = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
        raise ApiError(
            422,
            "Invalid",
            f'{kind}.meta.k8s.io "" is invalid: {listed}',
            {"group": "meta.k8s.io", "kind": kind},
        )
    if not manager:
        agent = request.headers.get("User-Agent", "")
        manager = "".join(c for c in agent.split("/")[0] if c.isprintable())[:128]
    force = query.get("force", "").lower() in ("1", "t", "true")
    return Options(manager, bool(dry_run), force, query, request[AUDIT]["user"])


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
