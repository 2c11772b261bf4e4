"""A fault-injecting reverse proxy in front of an AWS emulator (moto in server mode).

boto3 clients get `endpoint_url=<proxy URL>`; every request is forwarded unchanged to the
upstream URL (method, path, query, headers but Host and hop-by-hop ones, body) and the answer
is relayed (status, headers but hop-by-hop ones and the framing of the body, body). SigV4
signatures are left as they are: moto does not verify them.

Each request is named by its service and operation:
- service: the SigV4 credential scope (`Credential=AKID/20260101/us-east-1/ec2/aws4_request`,
  in the `Authorization` header or a presigned URL's `X-Amz-Credential`); unsigned JSON
  requests fall back on the `X-Amz-Target` prefix (`Logs_20140328` -> `logs`);
- operation: the JSON protocol's `X-Amz-Target: Logs_20140328.FilterLogEvents`, or the query
  protocol's `Action=DescribeFlowLogs` in the query string or the form body.
Requests naming no operation (moto's own `/moto-api/`) are forwarded, never faulted or recorded.

Faults are `FaultRule`s, tried in order; the first matching rule with requests left applies:
it waits `delay_seconds`, then drops the connection without an answer (`drop`), or answers
the error `code` in the shape botocore parses into `ClientError` for that protocol (JSON
`__type` for logs, EC2's `<Response><Errors>`, `<ErrorResponse>` for sts, iam and other
query services), or, when `code` is empty, forwards the request (a delay alone).

Control: from Python (`set_faults`, `clear`, `hits`, `rules`; safe from any thread) or over
HTTP on the proxy itself, for a proxy in another process: `POST /_faults` with a JSON list of
rules replaces them, `DELETE /_faults` clears them and the hits, `GET /_faults` answers
`{"rules": [...], "hits": [...]}` (rules with their `remaining` counters as they stand).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any, NamedTuple
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from yarl import URL

CONTROL_PATH = "/_faults"

# RFC 9110 7.6.1 hop-by-hop headers, and those the proxy frames anew.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The proxy has read the whole body (and aiohttp's server has decoded a compressed one): it is
# forwarded as it stands, framed anew.
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "content-length", "content-encoding", "expect"}
_NOT_RELAYED = _HOP_BY_HOP | {"content-length"}
# Headers aiohttp's client would add on its own; the forwarded request carries only the caller's.
_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_CREDENTIAL_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass(config=ConfigDict(extra="forbid"))
class FaultRule:
    """One fault: which requests it matches (`*` = any) and what it does to them.

    `remaining` is how many matching requests it still applies to (None: all, until cleared);
    an empty `code` injects no error, so the rule only delays (or drops) what it matches.
    """

    operation: str = "*"
    service: str = "*"
    code: str = "ThrottlingException"
    status: Annotated[int, Field(ge=100, le=599)] = 400
    message: str = "injected"
    remaining: Annotated[int, Field(ge=0)] | None = None
    delay_seconds: Annotated[float, Field(ge=0)] = 0.0
    drop: bool = False

    def matches(self, service: str, operation: str) -> bool:
        """Whether this rule applies to a request for `service`'s `operation`."""
        return (
            self.remaining != 0
            and self.service in ("*", service)
            and self.operation in ("*", operation)
        )


_RULES = TypeAdapter(list[FaultRule])


class Hit(NamedTuple):
    """One AWS request seen by the proxy; `injected` when a rule applied to it."""

    service: str
    operation: str
    injected: bool


class Scope(NamedTuple):
    """A SigV4 credential scope: who signed, for which region and service ("" if unsigned)."""

    access_key: str
    region: str
    service: str


def credential_scope(headers: Mapping[str, str], query: Mapping[str, str]) -> Scope:
    """The credential scope of a request: its `Authorization` header's, or a presigned URL's
    `X-Amz-Credential`."""
    found = _CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
    if found:
        return Scope(found.group(1), found.group(2), found.group(3))
    parts = query.get("X-Amz-Credential", "").split("/")
    if len(parts) == 5:
        return Scope(parts[0], parts[2], parts[3])
    return Scope("", "", "")


def identify(headers: Mapping[str, str], query: Mapping[str, str], body: bytes) -> tuple[str, str]:
    """The (service, operation) a request calls; empty strings for what it does not name.

    `headers` are looked up by their canonical names (aiohttp's are case-insensitive).
    """
    service = credential_scope(headers, query).service
    target = headers.get("X-Amz-Target", "")
    if target:
        prefix, _, operation = target.rpartition(".")
        return service or prefix.split("_")[0].lower(), operation
    operation = query.get("Action", "")
    content_type = headers.get("Content-Type", "")
    if not operation and content_type.startswith("application/x-www-form-urlencoded"):
        form = parse_qs(body.decode("utf-8", "replace"))
        operation = form.get("Action", [""])[0]
    return service, operation


def error_response(rule: FaultRule, service: str, json_protocol: bool) -> web.Response:
    """The error answer botocore turns into a `ClientError` with `rule.code`."""
    request_id = str(uuid.uuid4())
    if json_protocol:
        return web.json_response(
            {"__type": rule.code, "message": rule.message},
            status=rule.status,
            content_type="application/x-amz-json-1.1",
            headers={"x-amzn-RequestId": request_id},
        )
    code, message = escape(rule.code), escape(rule.message)
    if service == "ec2":
        text = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
    else:
        text = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>"
        )
    return web.Response(status=rule.status, text=text, content_type="text/xml")


class AWSFaultProxy:
    """The proxy: serve `app` (e.g. with `ServerThread`) and point boto3 at it."""

    def __init__(self, upstream: str, timeout: float = 60.0) -> None:
        self.upstream = upstream.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._lock = threading.Lock()  # the app's loop and callers' threads share what follows
        self._rules: list[FaultRule] = []
        self._hits: list[Hit] = []
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application()
        self.app.cleanup_ctx.append(self._client)
        self.app.router.add_get(CONTROL_PATH, self._get_control)
        self.app.router.add_post(CONTROL_PATH, self._post_control)
        self.app.router.add_delete(CONTROL_PATH, self._delete_control)
        self._add_routes(self.app.router)
        self.app.router.add_route("*", "/{tail:.*}", self._proxy)

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """More control routes of a subclass (before the catch-all that proxies)."""

    # -- control -------------------------------------------------------------------------

    def set_faults(self, rules: Sequence[FaultRule]) -> None:
        """Replace the rules (copies: the caller's objects are not counted down)."""
        copies = [dataclasses.replace(rule) for rule in rules]
        with self._lock:
            self._rules = copies

    def clear(self) -> None:
        """Remove every rule and forget the hits."""
        with self._lock:
            self._rules = []
            self._hits = []

    @property
    def rules(self) -> list[FaultRule]:
        """The rules as they stand (copies, with their `remaining` counters)."""
        with self._lock:
            return [dataclasses.replace(rule) for rule in self._rules]

    @property
    def hits(self) -> list[Hit]:
        """Every AWS request seen since the last `clear`, in order."""
        with self._lock:
            return list(self._hits)

    def _apply(self, service: str, operation: str) -> FaultRule | None:
        """Record the request; take one use of the first matching rule, if any."""
        with self._lock:
            rule = next((r for r in self._rules if r.matches(service, operation)), None)
            if rule is not None and rule.remaining is not None:
                rule.remaining -= 1
            self._hits.append(Hit(service, operation, rule is not None))
            return None if rule is None else dataclasses.replace(rule)

    async def _get_control(self, request: web.Request) -> web.Response:
        with self._lock:
            rules = rules_json(self._rules)
            hits = [hit._asdict() for hit in self._hits]
        return web.json_response({"rules": rules, "hits": hits})

    async def _post_control(self, request: web.Request) -> web.Response:
        try:
            rules = _RULES.validate_json(await request.read())
        except ValidationError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.set_faults(rules)
        return web.json_response({"rules": len(rules)})

    async def _delete_control(self, request: web.Request) -> web.Response:
        self.clear()
        return web.Response(status=204)

    # -- proxying ------------------------------------------------------------------------

    async def _client(self, app: web.Application) -> AsyncIterator[None]:
        # A fresh connection each time: no stale keep-alive to the emulator.
        connector = aiohttp.TCPConnector(force_close=True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False
        )
        yield
        await self._session.close()
        self._session = None

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        service, operation = identify(request.headers, request.query, body)
        if operation:
            answer = await self._intercept(request, service, operation)
            if answer is not None:
                return answer
        rule = self._apply(service, operation) if operation else None
        if rule is not None:
            if rule.delay_seconds:
                await asyncio.sleep(rule.delay_seconds)
            if rule.drop:
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=499)  # never reaches the client: the socket is gone
            if rule.code:
                json_protocol = "X-Amz-Target" in request.headers
                return error_response(rule, service, json_protocol)
        return await self._forward(request, body)

    async def _intercept(
        self, request: web.Request, service: str, operation: str
    ) -> web.StreamResponse | None:
        """A subclass's answer to an AWS request before the rules apply (None: go on)."""
        return None

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None, "the app is not running"
        headers = CIMultiDict[str](
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _NOT_FORWARDED
        )
        url = URL(self.upstream + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                skip_auto_headers=_AUTO_HEADERS,
                allow_redirects=False,
            ) as upstream:
                answer = await upstream.read()
                relayed = CIMultiDict[str](
                    (name, value)
                    for name, value in upstream.headers.items()
                    if name.lower() not in _NOT_RELAYED
                )
                return web.Response(
                    status=upstream.status,
                    reason=upstream.reason,
                    headers=relayed,
                    body=answer,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=502, text=f"upstream {self.upstream} failed: {exc!r}")


def rules_json(rules: Sequence[FaultRule]) -> list[dict[str, Any]]:
    """`rules` as the JSON body `POST /_faults` takes."""
    return [dataclasses.asdict(rule) for rule in rules]
