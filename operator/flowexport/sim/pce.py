"""A PCE simulator: the slice of the Illumio REST API the operator uses, served over real HTTP.

Honoured contract (see shared/reference/pce-api.md):
- HTTP Basic auth with API keys (401 otherwise); org-scoped paths (404 for an unknown org).
- `POST /api/v2/orgs/{org}/agents/bulk_traffic_flows`: `Content-Type: text/csv` (or none;
  anything else is 415), CSV `src_ip,dst_ip,dst_port,proto` without header; each bad line is
  listed in `failed_flows`, good lines are counted and recorded; answers 201 with
  `{num_flows_received, num_flows_failed, failed_flows}`. More than 1000 lines is refused whole
  with 413 and token `too_many_flows` (our choice: the PCE documents the limit, not the answer).
- A per-API-key rate limit (default 500 requests per rolling minute) answering 429, with a
  `Retry-After` header unless configured not to send one.
- Labels and workloads with the PCE's filters (`ip_address`, `hostname`, `name` and label
  `value` match partially; `managed=true|false` selects VEN-paired or unmanaged workloads;
  `max_results`, `X-Total-Count`), validation failures as 406 with `[{"token", "message"}]`
  bodies, async collections (`Prefer: respond-async`). Label keys are the configured
  `label_keys` (default `role`, `app`, `env`, `loc`; PCEs since 22.5 allow custom ones); any
  other key is 406 `label_key_invalid`.
- `PUT workloads/bulk_create`, `bulk_update` and `bulk_delete`: a JSON list of 1000 items at
  most (more is 413 `too_many_items`); a second bulk operation while one runs gets 429. Each
  item is answered in order: `{"href", "status": "created"|"updated"|"deleted", "errors": []}`,
  or on failure `{"href", "status": token, "token", "message", "errors": [{"token",
  "message"}]}` (illumio-py reads `token`/`message` when `status` is not the success one;
  bulk_delete failures carry `href` and `errors` only). `bulk_update` items are
  `{"href", <fields to change>}`: an unknown href (or one of another org) is `not_found`; an
  invalid value, a property that cannot be updated or the `interfaces` of a managed workload
  is `validation_failure`.
- `PUT workloads/{id}` changes the fields given (name, hostname, description, interfaces,
  labels, external_data_set, external_data_reference; the others stay, `updated_at` moves)
  with the same validation: 204 without a body, 404 unknown, 406 invalid.
- Managed (VEN-paired) workloads carry `ven: {"href": "/orgs/{org}/vens/<uuid>"}` and
  `agent: {"href": "/orgs/{org}/agents/<n>"}`; unmanaged ones carry neither. The API cannot
  create them (a VEN pairs them); their interfaces are the VEN's to report, and they are
  unpaired, not deleted: `DELETE` is 406 and `bulk_delete` answers `validation_failure`.
- `/api/v2/health` and `/api/v2/orgs/{org}/settings/workloads`, which clients use as probes.

Simulator-only endpoints live under `/_sim/` (no auth): recorded flows, uploads and requests,
stored workloads, managed workloads made as a VEN pairing would (`POST /_sim/workloads`, or
`PCESimulator.add_workload`), fault injection, reset. Faults: the first N matching requests
fail with a 5xx, are throttled with 429 (with or without Retry-After) or dropped without an
answer; every answer can be slowed; flow lines containing a given text are rejected as the PCE
rejects bad lines. Keys listed as read-only get 403 on every change, like an API key whose role
only allows reading.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import ipaddress
import itertools
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BULK_ITEMS = 1000
MAX_RESULTS_DEFAULT = 500
LABEL_KEYS = frozenset({"role", "app", "env", "loc"})
# The workload fields a client may set, in the order public views show them.
WORKLOAD_FIELDS = (
    "name",
    "hostname",
    "description",
    "interfaces",
    "labels",
    "external_data_set",
    "external_data_reference",
)
_TEXT_FIELDS = ("name", "hostname", "description", "external_data_set", "external_data_reference")


@dataclass
class Faults:
    """Injected failures, consumed by matching requests (`path_contains` empty = every API path)."""

    fail_first: int = 0
    fail_status: int = 503
    throttle_first: int = 0
    retry_after: float | None = 1.0
    drop_first: int = 0
    delay_seconds: float = 0.0
    path_contains: str = ""
    reject_flows_containing: str = ""


@dataclass
class PCESimConfig:
    """What the simulated PCE accepts."""

    api_keys: dict[str, str] = field(default_factory=lambda: {"api_simulator": "simulator"})
    read_only_keys: frozenset[str] = frozenset()
    orgs: frozenset[int] = frozenset({1})
    rate_limit_per_minute: int = 500
    send_retry_after: bool = True
    bulk_seconds: float = 0.0
    async_retry_after: int = 1
    label_keys: frozenset[str] = LABEL_KEYS


@dataclass
class _State:
    flows: list[tuple[str, str, int, int]] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[int, dict[str, Any]] = field(default_factory=dict)
    datafiles: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    windows: dict[str, deque[float]] = field(default_factory=dict)
    bulk_busy: bool = False


def _errors(status: int, token: str, message: str, **headers: str) -> web.Response:
    return web.json_response([{"token": token, "message": message}], status=status, headers=headers)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PCESimulator:
    """The simulated PCE; `app` is the aiohttp application to serve."""

    def __init__(self, config: PCESimConfig | None = None) -> None:
        self.config = config or PCESimConfig()
        self.faults = Faults()
        self.state = _State()
        self._label_ids = itertools.count(1)
        self._agent_ids = itertools.count(1)
        self.app = web.Application(middlewares=[self._record, self._faults, self._gate])
        self._routes()

    # -- inspection helpers (tests call these through ServerThread.call) ---------------

    def reset(self) -> None:
        """Forget everything recorded and stored; clear faults."""
        self.state = _State()
        self.faults = Faults()
        self._label_ids = itertools.count(1)
        self._agent_ids = itertools.count(1)

    def set_faults(self, **values: Any) -> None:
        """Replace the fault settings."""
        self.faults = Faults(**values)

    def add_workload(
        self, body: dict[str, Any], managed: bool = True, org: str = "1"
    ) -> dict[str, Any]:
        """Store a workload as a VEN pairing (`managed`) or the API would; its public view.

        Raises ValueError when `body` is not a valid workload or `org` is not served.
        """
        org = str(org)
        if not org.isdigit() or int(org) not in self.config.orgs:
            raise ValueError(f"organization {org} is not served")
        problem = self._workload_problem(org, body)
        if problem is not None:
            raise ValueError(problem)
        return copy.deepcopy(_public(self._store_workload(org, body, managed)))

    # -- middleware ---------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        entry: dict[str, Any] = {"method": request.method, "path": request.path, "status": None}
        if not request.path.startswith("/_sim/"):
            self.state.requests.append(entry)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            entry["status"] = exc.status
            raise
        entry["status"] = response.status
        return response

    @web.middleware
    async def _faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        faults = self.faults
        if request.path.startswith("/_sim/") or faults.path_contains not in request.path:
            return await handler(request)
        if faults.delay_seconds:
            await asyncio.sleep(faults.delay_seconds)
        if faults.drop_first > 0:
            faults.drop_first -= 1
            await request.read()
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)  # never reaches the client: the socket is gone
        if faults.fail_first > 0:
            faults.fail_first -= 1
            return _errors(faults.fail_status, "internal_error", "injected failure")
        if faults.throttle_first > 0:
            faults.throttle_first -= 1
            headers = {}
            if faults.retry_after is not None:
                headers["Retry-After"] = str(faults.retry_after)
            return _errors(429, "too_many_requests", "injected throttling", **headers)
        return await handler(request)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Authentication, org and rate limit, in that order, for every API path."""
        if request.path.startswith("/_sim/"):
            return await handler(request)
        username = self._authenticate(request.headers.get("Authorization", ""))
        if username is None:
            return _errors(
                401,
                "authentication_required",
                "Authentication required",
                **{"WWW-Authenticate": 'Basic realm="PCE"'},
            )
        org = request.match_info.get("org")
        if org is not None and (not org.isdigit() or int(org) not in self.config.orgs):
            return _errors(404, "not_found", f"Organization {org} not found")
        if request.method != "GET" and username in self.config.read_only_keys:
            return _errors(403, "forbidden", "the API key's role does not allow this change")
        limited = self._rate_limited(username)
        if limited is not None:
            return limited
        return await handler(request)

    def _authenticate(self, header: str) -> str | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            username, _, secret = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.config.api_keys.get(username)
        return username if expected is not None and expected == secret else None

    def _rate_limited(self, username: str) -> web.Response | None:
        limit = self.config.rate_limit_per_minute
        if limit <= 0:
            return None
        now = time.monotonic()
        window = self.state.windows.setdefault(username, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= limit:
            headers = {}
            if self.config.send_retry_after:
                headers["Retry-After"] = str(max(1, int(window[0] + 60 - now) + 1))
            return _errors(429, "too_many_requests", "API rate limit exceeded", **headers)
        window.append(now)
        return None

    # -- routes -------------------------------------------------------------------------

    def _routes(self) -> None:
        org = "/api/v2/orgs/{org}"
        add = self.app.router.add_route
        add("GET", "/api/v2/health", self._health)
        add("GET", f"{org}/settings/workloads", self._settings)
        add("POST", f"{org}/agents/bulk_traffic_flows", self._bulk_traffic_flows)
        add("GET", f"{org}/labels", self._list_labels)
        add("POST", f"{org}/labels", self._create_label)
        add("GET", f"{org}/labels/{{id}}", self._get_label)
        add("GET", f"{org}/workloads", self._list_workloads)
        add("POST", f"{org}/workloads", self._create_workload)
        add("PUT", f"{org}/workloads/bulk_create", self._bulk_create)
        add("PUT", f"{org}/workloads/bulk_update", self._bulk_update)
        add("PUT", f"{org}/workloads/bulk_delete", self._bulk_delete)
        add("GET", f"{org}/workloads/{{id}}", self._get_workload)
        add("PUT", f"{org}/workloads/{{id}}", self._update_workload)
        add("DELETE", f"{org}/workloads/{{id}}", self._delete_workload)
        add("GET", f"{org}/jobs/{{id}}", self._get_job)
        add("GET", f"{org}/datafiles/{{id}}", self._get_datafile)
        add("GET", "/_sim/flows", self._sim_flows)
        add("GET", "/_sim/uploads", self._sim_uploads)
        add("GET", "/_sim/requests", self._sim_requests)
        add("GET", "/_sim/workloads", self._sim_workloads)
        add("POST", "/_sim/workloads", self._sim_add_workloads)
        add("POST", "/_sim/faults", self._sim_faults)
        add("POST", "/_sim/reset", self._sim_reset)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response([{"status": "normal", "type": "snc0", "generated_at": _now()}])

    async def _settings(self, request: web.Request) -> web.Response:
        org = request.match_info["org"]
        return web.json_response({"href": f"/orgs/{org}/settings/workloads"})

    async def _bulk_traffic_flows(self, request: web.Request) -> web.Response:
        content_type = request.headers.get("Content-Type", "")
        if content_type and content_type.split(";")[0].strip().lower() != "text/csv":
            return _errors(415, "unsupported_media_type", "Content-Type must be text/csv")
        try:
            text = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            return _errors(400, "invalid_body", "body is not UTF-8 text")
        lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
        if not lines:
            return _errors(400, "empty_body", "no flows in the request body")
        if len(lines) > MAX_BULK_ITEMS:
            return _errors(413, "too_many_flows", f"at most {MAX_BULK_ITEMS} flows per request")
        failed = []
        reject = self.faults.reject_flows_containing
        for line in lines:
            flow = _parse_flow_line(line)
            if flow is None or (reject and reject in line):
                failed.append(line)
            else:
                self.state.flows.append(flow)
        org = int(request.match_info["org"])
        self.state.uploads.append(
            {"org": org, "lines": len(lines), "received": len(lines), "failed": len(failed)}
        )
        return web.json_response(
            {
                "num_flows_received": len(lines),
                "num_flows_failed": len(failed),
                "failed_flows": failed,
            },
            status=201,
        )

    # labels

    async def _list_labels(self, request: web.Request) -> web.StreamResponse:
        org = request.match_info["org"]
        key, value = request.query.get("key"), request.query.get("value")
        found = [
            label
            for label in self.state.labels.values()
            if label["org"] == org
            and (key is None or label["key"] == key)
            and (value is None or value.lower() in label["value"].lower())
        ]
        return self._collection(request, [_public(label) for label in found])

    async def _create_label(self, request: web.Request) -> web.Response:
        org = request.match_info["org"]
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _errors(406, "invalid_json", "expected a JSON object")
        key, value = body.get("key"), body.get("value")
        keys = self.config.label_keys
        if key not in keys:
            return _errors(406, "label_key_invalid", f"label key must be one of {sorted(keys)}")
        if not isinstance(value, str) or not value.strip():
            return _errors(406, "label_value_invalid", "label value must be a non-empty string")
        for label in self.state.labels.values():
            if label["org"] == org and label["key"] == key and label["value"] == value:
                return _errors(406, "label_key_value_pair_exists", "label already exists")
        number = next(self._label_ids)
        label = {
            "href": f"/orgs/{org}/labels/{number}",
            "key": key,
            "value": value,
            "created_at": _now(),
            "org": org,
        }
        self.state.labels[number] = label
        return web.json_response(_public(label), status=201)

    async def _get_label(self, request: web.Request) -> web.Response:
        org, ident = request.match_info["org"], request.match_info["id"]
        label = self.state.labels.get(int(ident)) if ident.isdigit() else None
        if label is None or label["org"] != org:
            return _errors(404, "not_found", "label not found")
        return web.json_response(_public(label))

    # workloads

    async def _list_workloads(self, request: web.Request) -> web.StreamResponse:
        org, query = request.match_info["org"], request.query
        found = [w for w in self.state.workloads.values() if w["org"] == org]
        managed = query.get("managed", "").lower()
        if managed in ("true", "false"):
            found = [w for w in found if _is_managed(w) == (managed == "true")]
        for param in ("name", "hostname"):
            if param in query:
                found = [w for w in found if query[param].lower() in (w.get(param) or "").lower()]
        if "ip_address" in query:
            needle = query["ip_address"]
            found = [
                w for w in found if any(needle in (i.get("address") or "") for i in w["interfaces"])
            ]
        for param in ("external_data_set", "external_data_reference"):
            if param in query:
                found = [w for w in found if w.get(param) == query[param]]
        return self._collection(request, [_public(w) for w in found])

    async def _create_workload(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        created = self._new_workload(request.match_info["org"], body)
        if isinstance(created, str):
            return _errors(406, "validation_failure", created)
        return web.json_response(_public(created), status=201)

    async def _update_workload(self, request: web.Request) -> web.Response:
        workload = self._workload(request)
        if workload is None:
            return _errors(404, "not_found", "workload not found")
        problem = self._change_workload(workload, await _json_body(request))
        if problem is not None:
            return _errors(406, "validation_failure", problem)
        return web.Response(status=204)

    async def _bulk(
        self, request: web.Request, what: str, apply: Callable[[str, Any], dict[str, Any]]
    ) -> web.Response:
        """A bulk operation: a JSON list of at most 1000 items, one operation at a time."""
        body = await _json_body(request)
        if not isinstance(body, list):
            return _errors(406, "invalid_json", f"expected a JSON list of {what}")
        if len(body) > MAX_BULK_ITEMS:
            return _errors(413, "too_many_items", f"at most {MAX_BULK_ITEMS} items per request")
        async with self._bulk_operation() as busy:
            if busy is not None:
                return busy
            results = [apply(request.match_info["org"], item) for item in body]
        return web.json_response(results)

    async def _bulk_create(self, request: web.Request) -> web.Response:
        return await self._bulk(request, "workloads", self._bulk_create_one)

    async def _bulk_update(self, request: web.Request) -> web.Response:
        return await self._bulk(request, "{href, <fields>}", self._bulk_update_one)

    async def _bulk_delete(self, request: web.Request) -> web.Response:
        return await self._bulk(request, "{href}", self._bulk_delete_one)

    def _bulk_create_one(self, org: str, item: Any) -> dict[str, Any]:
        created = self._new_workload(org, item)
        if isinstance(created, str):
            return _failure(None, "validation_failure", created)
        return {"href": created["href"], "status": "created", "errors": []}

    def _bulk_update_one(self, org: str, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            return _failure(None, "validation_failure", "each item must be a JSON object")
        href = item.get("href")
        workload = self._workload_by_href(org, href)
        if workload is None:
            return _failure(href, "not_found", f"{href} not found")
        problem = self._change_workload(workload, {k: v for k, v in item.items() if k != "href"})
        if problem is not None:
            return _failure(href, "validation_failure", problem)
        return {"href": href, "status": "updated", "errors": []}

    def _bulk_delete_one(self, org: str, item: Any) -> dict[str, Any]:
        href = item.get("href") if isinstance(item, dict) else None
        workload = self._workload_by_href(org, href)
        if workload is None:
            return {
                "href": href,
                "errors": [{"token": "not_found", "message": f"{href} not found"}],
            }
        if _is_managed(workload):
            error = {"token": "validation_failure", "message": _MANAGED_DELETE}
            return {"href": href, "errors": [error]}
        del self.state.workloads[_ident(workload)]
        return {"href": href, "status": "deleted", "errors": []}

    async def _get_workload(self, request: web.Request) -> web.Response:
        workload = self._workload(request)
        if workload is None:
            return _errors(404, "not_found", "workload not found")
        return web.json_response(_public(workload))

    async def _delete_workload(self, request: web.Request) -> web.Response:
        workload = self._workload(request)
        if workload is None:
            return _errors(404, "not_found", "workload not found")
        if _is_managed(workload):
            return _errors(406, "validation_failure", _MANAGED_DELETE)
        del self.state.workloads[request.match_info["id"]]
        return web.Response(status=204)

    # async collections

    async def _get_job(self, request: web.Request) -> web.Response:
        org, ident = request.match_info["org"], request.match_info["id"]
        if ident not in self.state.datafiles:
            return _errors(404, "not_found", "job not found")
        return web.json_response(
            {
                "href": f"/orgs/{org}/jobs/{ident}",
                "job_type": "collection",
                "status": "done",
                "result": {"href": f"/orgs/{org}/datafiles/{ident}"},
                "completed_at": _now(),
            }
        )

    async def _get_datafile(self, request: web.Request) -> web.Response:
        data = self.state.datafiles.get(request.match_info["id"])
        if data is None:
            return _errors(404, "not_found", "datafile not found")
        return web.json_response(data)

    # simulator-only

    async def _sim_flows(self, request: web.Request) -> web.Response:
        flows = self.state.flows
        return web.json_response(
            {"flows": [list(f) for f in flows], "received": len(flows), "unique": len(set(flows))}
        )

    async def _sim_uploads(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.uploads)

    async def _sim_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.requests)

    async def _sim_workloads(self, request: web.Request) -> web.Response:
        return web.json_response([_public(w) for w in self.state.workloads.values()])

    async def _sim_add_workloads(self, request: web.Request) -> web.Response:
        """Workloads as a VEN pairing makes them: `managed` (default true), `org` (default 1)."""
        body = await _json_body(request)
        items = body if isinstance(body, list) else [body]
        plans = []
        for item in items:
            if not isinstance(item, dict):
                return _errors(400, "invalid_json", "expected a workload object or a list of them")
            fields = {k: v for k, v in item.items() if k not in ("managed", "org")}
            managed, org = item.get("managed", True), str(item.get("org", "1"))
            if not isinstance(managed, bool):
                return _errors(400, "validation_failure", "managed must be true or false")
            if not org.isdigit() or int(org) not in self.config.orgs:
                return _errors(400, "validation_failure", f"organization {org} is not served")
            problem = self._workload_problem(org, fields)
            if problem is not None:
                return _errors(400, "validation_failure", problem)
            plans.append((fields, managed, org))
        created = [self.add_workload(f, managed=m, org=o) for f, m, o in plans]
        return web.json_response(created if isinstance(body, list) else created[0], status=201)

    async def _sim_faults(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _errors(400, "invalid_json", "expected a JSON object of fault settings")
        try:
            self.set_faults(**body)
        except TypeError as exc:
            return _errors(400, "invalid_faults", str(exc))
        return web.json_response(asdict(self.faults))

    async def _sim_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    # -- helpers ------------------------------------------------------------------------

    def _collection(self, request: web.Request, items: list[dict[str, Any]]) -> web.StreamResponse:
        """A synchronous (capped by max_results) or async (`Prefer: respond-async`) answer."""
        total = len(items)
        if "respond-async" in request.headers.get("Prefer", ""):
            ident = uuid.uuid4().hex
            self.state.datafiles[ident] = items
            org = request.match_info["org"]
            return web.json_response(
                {},
                status=202,
                headers={
                    "Location": f"/orgs/{org}/jobs/{ident}",
                    "Retry-After": str(self.config.async_retry_after),
                },
            )
        raw = request.query.get("max_results", str(MAX_RESULTS_DEFAULT))
        if not raw.isdigit():
            return _errors(406, "invalid_max_results", "max_results must be a whole number")
        return web.json_response(items[: int(raw)], headers={"X-Total-Count": str(total)})

    def _bulk_operation(self) -> _BulkSlot:
        return _BulkSlot(self)

    def _workload(self, request: web.Request) -> dict[str, Any] | None:
        workload = self.state.workloads.get(request.match_info["id"])
        if workload is None or workload["org"] != request.match_info["org"]:
            return None
        return workload

    def _workload_by_href(self, org: str, href: Any) -> dict[str, Any] | None:
        workload = self.state.workloads.get(str(href).rsplit("/", 1)[-1])
        if workload is None or workload["org"] != org or workload["href"] != href:
            return None
        return workload

    def _new_workload(self, org: str, body: Any) -> dict[str, Any] | str:
        """Create an unmanaged workload from a request body, or say what is wrong with it."""
        problem = self._workload_problem(org, body)
        if problem is not None:
            return problem
        return self._store_workload(org, body, managed=False)

    def _workload_problem(self, org: str, body: Any) -> str | None:
        """What is wrong with a workload's fields (all of them, as they would be stored)."""
        if not isinstance(body, dict):
            return "a workload must be a JSON object"
        if not body.get("name") and not body.get("hostname"):
            return "a workload needs a name or a hostname"
        for name in _TEXT_FIELDS:
            if not isinstance(body.get(name), str | None):
                return f"{name} must be a string"
        interfaces = body.get("interfaces") or []
        if not isinstance(interfaces, list):
            return "interfaces must be a list"
        for interface in interfaces:
            if not isinstance(interface, dict) or not isinstance(interface.get("name"), str):
                return "each interface needs a name"
            try:
                ipaddress.ip_address(str(interface.get("address")))
            except ValueError:
                return f"interface address {interface.get('address')!r} is not an IP address"
        labels = body.get("labels") or []
        if not isinstance(labels, list):
            return "labels must be a list"
        known = {label["href"] for label in self.state.labels.values() if label["org"] == org}
        for label in labels:
            if not isinstance(label, dict) or label.get("href") not in known:
                return f"label {label!r} does not exist"
        return None

    def _store_workload(self, org: str, body: dict[str, Any], managed: bool) -> dict[str, Any]:
        """Store a valid workload; a managed one gets the VEN and agent a pairing gives it."""
        ident = str(uuid.uuid4())
        workload: dict[str, Any] = {"href": f"/orgs/{org}/workloads/{ident}"}
        workload.update({name: None for name in WORKLOAD_FIELDS})
        workload.update(interfaces=[], labels=[])
        workload.update(_stored_fields(body))
        if managed:
            workload["ven"] = {"href": f"/orgs/{org}/vens/{uuid.uuid4()}"}
            workload["agent"] = {"href": f"/orgs/{org}/agents/{next(self._agent_ids)}"}
        workload.update(online=True, created_at=_now(), updated_at=_now(), org=org)
        self.state.workloads[ident] = workload
        return workload

    def _change_workload(self, workload: dict[str, Any], changes: Any) -> str | None:
        """Apply a PUT's changes to a stored workload, or say why they are refused."""
        if not isinstance(changes, dict):
            return "an update must be a JSON object"
        unknown = sorted(set(changes) - set(WORKLOAD_FIELDS))
        if unknown:
            return f"properties that cannot be updated: {', '.join(unknown)}"
        if "interfaces" in changes and _is_managed(workload):
            return "interfaces of a managed workload are reported by its VEN"
        merged = {name: workload[name] for name in WORKLOAD_FIELDS} | changes
        problem = self._workload_problem(workload["org"], merged)
        if problem is not None:
            return problem
        workload.update(_stored_fields(changes), updated_at=_now())
        return None


class _BulkSlot:
    """Only one bulk operation at a time: the second one meanwhile is answered 429."""

    def __init__(self, sim: PCESimulator) -> None:
        self.sim = sim
        self.acquired = False

    async def __aenter__(self) -> web.Response | None:
        if self.sim.state.bulk_busy:
            return _errors(429, "bulk_operation_in_progress", "another bulk operation is running")
        self.sim.state.bulk_busy = self.acquired = True
        if self.sim.config.bulk_seconds:
            await asyncio.sleep(self.sim.config.bulk_seconds)
        return None

    async def __aexit__(self, *exc: object) -> None:
        if self.acquired:
            self.sim.state.bulk_busy = False


_MANAGED_DELETE = "a managed workload is unpaired, not deleted: unpair its VEN"


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "org"}


def _is_managed(workload: dict[str, Any]) -> bool:
    return "ven" in workload


def _ident(workload: dict[str, Any]) -> str:
    return str(workload["href"]).rsplit("/", 1)[-1]


def _failure(href: Any, token: str, message: str) -> dict[str, Any]:
    """A failed bulk item as the PCE answers it (illumio-py reads `token` and `message`)."""
    error = {"token": token, "message": message}
    return {"href": href, "status": token, **error, "errors": [error]}


def _stored_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The settable fields `body` gives, as a workload stores them."""
    fields = {name: body[name] for name in WORKLOAD_FIELDS if name in body}
    if "interfaces" in fields:
        fields["interfaces"] = [
            {"name": i["name"], "address": i["address"], "link_state": i.get("link_state")}
            for i in fields["interfaces"] or []
        ]
    if "labels" in fields:
        fields["labels"] = [{"href": label["href"]} for label in fields["labels"] or []]
    return fields


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def _parse_flow_line(line: str) -> tuple[str, str, int, int] | None:
    """A valid `src_ip,dst_ip,dst_port,proto` line as a tuple, else None."""
    parts = line.split(",")
    if len(parts) != 4:
        return None
    src_text, dst_text, port_text, proto_text = (p.strip() for p in parts)
    try:
        src, dst = ipaddress.ip_address(src_text), ipaddress.ip_address(dst_text)
        port, proto = int(port_text), int(proto_text)
    except ValueError:
        return None
    if src.version != dst.version or not 0 <= port <= 65535 or not 0 <= proto <= 255:
        return None
    return (src.compressed, dst.compressed, port, proto)
