"""Faults the simulated API server injects: errors, hangs and dropped connections.

A `KubeFault` matches requests by method, a text their path contains and a text their
`User-Agent` contains (the operator's own calls say `OpenAPI-Generator`, kopf's `kopf/`); the
first matching rule with requests left applies: it waits `delay_seconds` (a hung API server),
then drops the connection without an answer (`drop`), or answers `status` as a Kubernetes
`Status` object (e.g. 409 `Conflict`, 500 `InternalError`), or, with `status` 0, lets the
request through (a delay alone).

Control: from Python (`KubeSimulator.faults`: `set`, `clear`, `rules`, `hits`; safe from any
thread) or over HTTP on the simulator itself, for one in another process (`flowexport
kube-sim`): `POST /_faults` with a JSON list of rules replaces them, `DELETE /_faults` clears
them and the hits, `GET /_faults` answers `{"rules": [...], "hits": [...]}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

from aiohttp import web
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from flowexport.sim.kube.errors import ApiError

CONTROL_PATH = "/_faults"

#: The `reason` of a Status object, by code (what the real API server says).
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(config=ConfigDict(extra="forbid"))
class KubeFault:
    """One fault: which requests it matches (`*` / empty = any) and what it does to them."""

    method: str = "*"
    path_contains: str = ""
    user_agent_contains: str = ""
    status: Annotated[int, Field(ge=0, le=599)] = 500
    message: str = "injected"
    #: How many matching requests it still applies to (None: all, until cleared).
    remaining: Annotated[int, Field(ge=0)] | None = None
    delay_seconds: Annotated[float, Field(ge=0)] = 0.0
    drop: bool = False

    def matches(self, method: str, path: str, user_agent: str) -> bool:
        """Whether this rule applies to a request."""
        return (
            self.remaining != 0
            and self.method in ("*", method)
            and self.path_contains in path
            and self.user_agent_contains in user_agent
        )

    def error(self, path: str) -> ApiError:
        """The error this rule answers with."""
        reason = REASONS.get(self.status, "InternalError")
        message = self.message
        if self.status == 409 and message == "injected":
            message = (
                f"Operation cannot be fulfilled on {path}: the object has been modified; "
                "please apply your changes to the latest version and try again"
            )
        return ApiError(self.status, reason, message)


_RULES = TypeAdapter(list[KubeFault])


class KubeHit(NamedTuple):
    """One request seen while faults were set; `injected` when a rule applied to it."""

    method: str
    path: str
    injected: bool


class KubeFaults:
    """The rules and what they hit (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[KubeFault] = []
        self._hits: list[KubeHit] = []

    def set(self, rules: Sequence[KubeFault]) -> None:
        """Replace the rules (copies: the caller's objects are not counted down)."""
        copies = [dataclasses.replace(rule) for rule in rules]
        with self._lock:
            self._rules = copies

    def clear(self) -> None:
        """Remove every rule and forget the hits."""
        with self._lock:
            self._rules, self._hits = [], []

    @property
    def rules(self) -> list[KubeFault]:
        """The rules as they stand (copies, with their `remaining` counters)."""
        with self._lock:
            return [dataclasses.replace(rule) for rule in self._rules]

    @property
    def hits(self) -> list[KubeHit]:
        """The requests matched or seen while rules were set, in order."""
        with self._lock:
            return list(self._hits)

    def take(self, method: str, path: str, user_agent: str) -> KubeFault | None:
        """One use of the first rule matching the request, if any (recorded)."""
        with self._lock:
            if not self._rules:
                return None
            rule = next((r for r in self._rules if r.matches(method, path, user_agent)), None)
            if rule is not None and rule.remaining is not None:
                rule.remaining -= 1
            self._hits.append(KubeHit(method, path, rule is not None))
            return None if rule is None else dataclasses.replace(rule)

    async def apply(self, request: web.Request) -> web.StreamResponse | None:
        """Inject the fault that matches `request`: None to let it through."""
        rule = self.take(request.method, request.path, request.headers.get("User-Agent", ""))
        if rule is None:
            return None
        if rule.delay_seconds:
            await asyncio.sleep(rule.delay_seconds)
        if rule.drop:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)  # never reaches the client: the socket is gone
        if rule.status:
            return rule.error(request.path).response()
        return None

    # -- over HTTP -------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        """Serve the control endpoint on `app`."""
        app.router.add_get(CONTROL_PATH, self._get)
        app.router.add_post(CONTROL_PATH, self._post)
        app.router.add_delete(CONTROL_PATH, self._delete)

    async def _get(self, request: web.Request) -> web.Response:
        rules = [dataclasses.asdict(rule) for rule in self.rules]
        hits = [hit._asdict() for hit in self.hits]
        return web.json_response({"rules": rules, "hits": hits})

    async def _post(self, request: web.Request) -> web.Response:
        try:
            rules = _RULES.validate_json(await request.read())
        except ValidationError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.set(rules)
        return web.json_response({"rules": len(rules)})

    async def _delete(self, request: web.Request) -> web.Response:
        self.clear()
        return web.Response(status=204)


def rules_json(rules: Sequence[KubeFault]) -> list[dict[str, Any]]:
    """`rules` as the JSON body `POST /_faults` takes."""
    return [dataclasses.asdict(rule) for rule in rules]
