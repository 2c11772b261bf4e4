"""An async client for the Illumio PCE REST API: flow uploads, probe, workloads and labels.

One client per PCE target and API key: it owns the connection pool, the rate limiter and the
retry policy. Secrets live only inside the httpx auth object; nothing here logs or raises them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from flowexport import __version__
from flowexport.core.encode import PCE_MAX_BATCH, batched, check_batch_size, encode_csv
from flowexport.core.flows import Flow
from flowexport.pce.errors import (
    PCEAuthError,
    PCEConfigError,
    PCEError,
    PCENotFoundError,
    PCEPermissionError,
    PCEProtocolError,
    PCERequestError,
    PCETLSError,
    PCEUnavailableError,
)
from flowexport.pce.ratelimit import TokenBucket
from flowexport.urls import check_pce_url

log = logging.getLogger("flowexport.pce")

#: Requests per minute per API key; the PCE allows 500, we leave room for other users of the key.
DEFAULT_RATE_PER_MINUTE = 450
#: The PCE's default cap on synchronous collection GETs.
MAX_RESULTS = 500
#: How long an asynchronous collection job may take before the PCE counts as unavailable.
MAX_JOB_SECONDS = 600.0
#: How long a 429's Retry-After may make us wait before we treat it as an outage.
MAX_RETRY_AFTER = 300.0

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: OpenSSL's verify codes for a certificate that does not name the host or address asked for.
_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
#: ... and for one whose issuer is not trusted (unknown CA, self-signed).
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})
#: OpenSSL's reasons when the peer's first bytes are not TLS (e.g. an HTTP answer).
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG"})


@dataclass(frozen=True)
class PCECredentials:
    """An API key: its auth username (`api_...`) and secret."""

    username: str
    secret: str = field(repr=False)


def username_problem(username: str) -> str | None:
    """What is wrong with an API key's auth username for HTTP Basic authentication (None: it
    is usable). The text never repeats the username."""
    if ":" in username:
        return (
            "holds a ':', which HTTP Basic authentication cannot carry (RFC 7617: the PCE "
            "takes everything after the first ':' for the password, and answers 401); the API "
            "key's auth username (api_...) has none: check the key was not pasted as "
            "username:secret"
        )
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request, and exponential backoff with full jitter between them."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return random.uniform(0.5, 1.0) * ceiling


@dataclass
class BatchResult:
    """What the PCE said about one upload request."""

    sent: int
    received: int
    failed: int
    failed_flows: list[str]

    @property
    def accepted(self) -> int:
        """Flows the PCE took: received minus rejected (unaccounted lines count as rejected)."""
        return max(0, min(self.received, self.sent) - self.failed)


@dataclass
class UploadSummary:
    """Totals over several upload requests."""

    batches: int = 0
    flows: int = 0
    accepted: int = 0
    failed: int = 0
    failed_flows: list[str] = field(default_factory=list)

    def add(self, batch: BatchResult) -> None:
        """Count one batch; keeps a sample of rejected lines for the user."""
        self.batches += 1
        self.flows += batch.sent
        self.accepted += batch.accepted
        self.failed += batch.sent - batch.accepted
        room = 100 - len(self.failed_flows)
        if room > 0:
            self.failed_flows.extend(batch.failed_flows[:room])


@dataclass
class WorkloadsResult:
    """Outcome of ensuring unmanaged workloads for a set of addresses."""

    existing: int = 0
    created: int = 0
    failed: dict[str, str] = field(default_factory=dict)


_BULK_LOCKS: dict[tuple[asyncio.AbstractEventLoop, str, int], asyncio.Lock] = {}


def _bulk_lock(base_url: str, org_id: int) -> asyncio.Lock:
    """One lock per PCE org (and event loop) in this process: FlowExports sharing a PCE run
    their bulk operations one at a time, as the PCE allows, instead of meeting its 429s."""
    key = (asyncio.get_running_loop(), base_url, org_id)
    lock = _BULK_LOCKS.get(key)
    if lock is None:
        if len(_BULK_LOCKS) > 1024:  # loops of finished tests or commands: drop the idle ones
            for stale in [k for k, v in _BULK_LOCKS.items() if not v.locked()]:
                del _BULK_LOCKS[stale]
        lock = _BULK_LOCKS[key] = asyncio.Lock()
    return lock


def tls_verify(ca_pem: str | None, insecure: bool) -> ssl.SSLContext | bool:
    """httpx's `verify` for a PCE: system CAs, a PEM bundle, or (explicitly) nothing."""
    if insecure:
        if ca_pem:
            raise PCEConfigError("a CA bundle and insecure TLS exclude each other")
        return False
    if not ca_pem:
        return True
    try:
        return ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError):
        raise PCEConfigError("the PCE CA bundle is not valid PEM") from None


class PCEClient:
    """The PCE API for one org, with retries, rate limiting and clear errors."""

    def __init__(
        self,
        url: str,
        org_id: int,
        credentials: PCECredentials,
        *,
        ca_pem: str | None = None,
        insecure: bool = False,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        rate_per_minute: float = DEFAULT_RATE_PER_MINUTE,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        try:
            self.base_url = check_pce_url(url)
        except ValueError as exc:
            raise PCEConfigError(str(exc)) from None
        problem = username_problem(credentials.username)
        if problem is not None:
            raise PCEConfigError(f"the PCE API key's username {problem}")
        self.org_id = org_id
        #: Set: a dry run, each batch is handed here instead of being uploaded.
        self.dry_run: Callable[[Sequence[Flow]], None] | None = None
        self.retry = retry or RetryPolicy()
        self.retries = 0
        self._sleep = sleep
        self._limiter = TokenBucket(rate_per_minute, sleep=sleep)
        self._known_ips: set[str] = set()
        verify = tls_verify(ca_pem, insecure)
        if verify is False:
            log.warning(
                "TLS verification of the PCE at %s is DISABLED (insecure skip TLS verify); "
                "anyone on the path can read the API key. Use a CA bundle instead.",
                self.base_url,
            )
        self._http = httpx.AsyncClient(
            base_url=f"{self.base_url}/api/v2",
            auth=httpx.BasicAuth(credentials.username, credentials.secret),
            verify=verify,
            timeout=timeout or httpx.Timeout(30.0, connect=10.0),
            headers={"User-Agent": f"flowexport/{__version__}", "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"PCEClient({self.base_url!r}, org_id={self.org_id})"

    async def __aenter__(self) -> PCEClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    @property
    def org_path(self) -> str:
        """Org-scoped path prefix under /api/v2."""
        return f"/orgs/{self.org_id}"

    # -- flows --------------------------------------------------------------------------

    async def upload(self, flows: Sequence[Flow]) -> BatchResult:
        """Upload one batch (at most 1000 flows) with bulk_traffic_flows."""
        if not flows:
            return BatchResult(0, 0, 0, [])
        check_batch_size(len(flows))
        if self.dry_run is not None:
            self.dry_run(flows)
            return BatchResult(len(flows), len(flows), 0, [])
        response = await self._request(
            "POST",
            f"{self.org_path}/agents/bulk_traffic_flows",
            content=encode_csv(flows).encode(),
            headers={"Content-Type": "text/csv"},
        )
        result = _batch_result(len(flows), _json(response))
        log.debug(
            "uploaded batch: %d sent, %d accepted, %d failed",
            result.sent,
            result.accepted,
            result.failed,
        )
        return result

    async def upload_all(
        self,
        flows: Iterable[Flow],
        batch_size: int = PCE_MAX_BATCH,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> UploadSummary:
        """Upload flows in batches of `batch_size`; stops at the first batch that errors."""
        summary = UploadSummary()
        for batch in batched(flows, batch_size):
            result = await self.upload(batch)
            summary.add(result)
            if on_batch is not None:
                on_batch(result)
        return summary

    async def probe(self) -> None:
        """Cheap authenticated call proving URL, org and credentials; raises PCEError."""
        await self._request("GET", f"{self.org_path}/labels", params={"max_results": 1})

    # -- labels -------------------------------------------------------------------------

    async def find_label(self, key: str, value: str) -> dict[str, Any] | None:
        """The label with exactly this key and value (the PCE's value filter is partial)."""
        response = await self._request(
            "GET", f"{self.org_path}/labels", params={"key": key, "value": value}
        )
        for label in _json_list(response):
            if label.get("key") == key and label.get("value") == value:
                return label
        return None

    async def ensure_label(self, key: str, value: str) -> dict[str, Any]:
        """Find the label, or create it."""
        found = await self.find_label(key, value)
        return found if found is not None else await self.create_label(key, value)

    # -- workloads ----------------------------------------------------------------------

    async def find_workloads_by_ip(self, ip: str) -> list[dict[str, Any]]:
        """Workloads with an interface whose address is exactly `ip` (the filter is partial)."""
        wanted = ipaddress.ip_address(ip)
        response = await self._request(
            "GET",
            f"{self.org_path}/workloads",
            params={"ip_address": str(wanted), "max_results": MAX_RESULTS},
        )
        return [w for w in _json_list(response) if _has_address(w, wanted)]

    async def create_workload(self, workload: dict[str, Any]) -> dict[str, Any]:
        """Create one workload; returns the PCE's object (with its href)."""
        response = await self._request("POST", f"{self.org_path}/workloads", json=workload)
        created = _json(response)
        if not isinstance(created, dict) or "href" not in created:
            raise PCEProtocolError("creating a workload returned no href")
        return created

    async def bulk_create_workloads(
        self, workloads: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Create workloads with bulk_create, 1000 per request, one bulk operation at a time."""
        return await self.bulk("create", workloads)

    async def bulk(
        self, operation: Literal["create", "update", "delete"], items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """`PUT workloads/bulk_<operation>` in requests of at most 1000 items, one bulk
        operation at a time per PCE org in this process (the PCE answers a second one 429);
        one result per item (for delete, possibly only the failed ones)."""
        results: list[dict[str, Any]] = []
        async with _bulk_lock(self.base_url, self.org_id):
            for start in range(0, len(items), PCE_MAX_BATCH):
                chunk = list(items[start : start + PCE_MAX_BATCH])
                response = await self._request(
                    "PUT", f"{self.org_path}/workloads/bulk_{operation}", json=chunk
                )
                answer = _json_list(response)
                # bulk_delete may answer only the items that failed (illumio-py reads it so).
                whole = len(answer) == len(chunk)
                if not (whole or (operation == "delete" and len(answer) < len(chunk))):
                    raise PCEProtocolError(
                        f"bulk_{operation} answered {len(answer)} results for {len(chunk)} items"
                    )
                results.extend(answer)
        return results

    async def collection(self, what: str) -> list[dict[str, Any]]:
        """Every item of an org collection (`labels`, `workloads`): one synchronous GET when
        it holds at most MAX_RESULTS, else the PCE's asynchronous collection job."""
        path = f"{self.org_path}/{what}"
        response = await self._request("GET", path, params={"max_results": MAX_RESULTS})
        items = _json_list(response)
        total = response.headers.get("X-Total-Count", "")
        if not total.isdigit() or int(total) <= len(items):
            return items
        return await self._async_collection(path)

    async def _async_collection(self, path: str) -> list[dict[str, Any]]:
        response = await self._request("GET", path, headers={"Prefer": "respond-async"})
        job = response.headers.get("Location", "")
        if response.status_code != 202 or not job.startswith(f"{self.org_path}/jobs/"):
            raise PCEProtocolError(f"an asynchronous GET {path} answered no job to poll")
        waited = 0.0
        while True:
            polled = await self._request("GET", job)
            state = _json(polled)
            status = state.get("status") if isinstance(state, dict) else None
            if status == "done":
                result = state.get("result")
                href = result.get("href") if isinstance(result, dict) else None
                if not isinstance(href, str) or not href.startswith(f"{self.org_path}/"):
                    raise PCEProtocolError(f"the job for GET {path} is done without a result")
                return _json_list(await self._request("GET", href))
            if status == "failed":
                raise PCERequestError(f"the PCE's job for GET {path} failed")
            if waited >= MAX_JOB_SECONDS:
                raise PCEUnavailableError(
                    f"the PCE's job for GET {path} did not finish in {MAX_JOB_SECONDS:.0f}s"
                )
            hint = polled.headers.get("Retry-After") or response.headers.get("Retry-After")
            delay = min(_retry_after(hint) or 1.0, 30.0)
            await self._sleep(delay)
            waited += delay

    async def create_label(self, key: str, value: str) -> dict[str, Any]:
        """Create a label; one created meanwhile by someone else is found instead."""
        try:
            response = await self._request(
                "POST", f"{self.org_path}/labels", json={"key": key, "value": value}
            )
        except PCERequestError:
            found = await self.find_label(key, value)
            if found is None:
                raise
            return found
        created = _json(response)
        if not isinstance(created, dict) or "href" not in created:
            raise PCEProtocolError("creating a label returned no href")
        return created

    async def ensure_unmanaged_workloads(
        self,
        ips: Iterable[str],
        external_data_set: str,
        labels: Sequence[dict[str, Any]] = (),
    ) -> WorkloadsResult:
        """Make sure a workload exists for every address, creating unmanaged ones as needed.

        Created workloads carry `external_data_set` and, as `external_data_reference`, their
        address, so their owner can find and remove them later. Addresses already covered by
        any workload (managed or not) are left alone.
        """
        result = WorkloadsResult()
        missing = []
        for ip in dict.fromkeys(ipaddress.ip_address(a).compressed for a in ips):
            if ip in self._known_ips:
                result.existing += 1
            elif await self.find_workloads_by_ip(ip):
                self._known_ips.add(ip)
                result.existing += 1
            else:
                missing.append(ip)
        if not missing:
            return result
        bodies = [_unmanaged_workload(ip, external_data_set, labels) for ip in missing]
        for ip, answer in zip(missing, await self.bulk_create_workloads(bodies), strict=True):
            problems = bulk_errors(answer)
            if problems:
                result.failed[ip] = problems
            else:
                self._known_ips.add(ip)
                result.created += 1
        return result

    # -- transport ----------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with rate limiting; retry 429/5xx/timeouts/resets; raise a clear PCEError."""
        last_problem = ""
        for attempt in range(1, self.retry.attempts + 1):
            await self._limiter.acquire()
            wait: float | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TimeoutException:
                last_problem = "timed out"
            except httpx.TransportError as exc:
                tls_error = self._tls_error(exc)
                if tls_error is not None:
                    raise tls_error from None
                last_problem = f"connection failed ({type(exc).__name__})"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRY_STATUSES:
                    raise self._status_error(method, path, response)
                last_problem = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    wait = _retry_after(response.headers.get("Retry-After"))
            if attempt == self.retry.attempts:
                break
            self.retries += 1
            delay = wait if wait is not None else self.retry.backoff(attempt)
            log.info(
                "PCE %s %s: %s; retry %d/%d in %.1fs",
                method,
                path,
                last_problem,
                attempt,
                self.retry.attempts - 1,
                delay,
            )
            await self._sleep(delay)
        raise PCEUnavailableError(
            f"PCE at {self.base_url} unavailable: {method} {path} failed "
            f"{self.retry.attempts} times, last: {last_problem}"
        )

    def _tls_error(self, exc: httpx.TransportError) -> PCEError | None:
        """The error for a TLS failure that retrying cannot fix, or None."""
        where = f"the PCE at {self.base_url}"
        for cause in _causes(exc):
            if isinstance(cause, ssl.SSLCertVerificationError):
                if cause.verify_code in _NAME_MISMATCH:
                    host = urlsplit(self.base_url).hostname
                    return PCETLSError(
                        f"hostname mismatch: the certificate of {where} does not name {host}; "
                        "put a name it lists in the PCE URL (spec.pce.url / --pce-url)"
                    )
                if cause.verify_code in _UNKNOWN_ISSUER:
                    return PCETLSError(
                        f"{where} presented a certificate from an unknown issuer; supply its CA "
                        "bundle (caBundleSecretRef / --ca-bundle)"
                    )
                return PCETLSError(
                    f"{where} presented a certificate that could not be verified: "
                    f"{cause.verify_message}"
                )
            if isinstance(cause, ssl.SSLError) and cause.reason in _NOT_TLS:
                return PCEConfigError(
                    f"{where} answered without TLS (plain HTTP on an https URL?): check the port "
                    "in the PCE URL (spec.pce.url / --pce-url)"
                )
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return PCETLSError(f"{where} presented a certificate that could not be verified")
        return None

    def _status_error(self, method: str, path: str, response: httpx.Response) -> PCEError:
        status = response.status_code
        detail = _error_detail(response)
        where = f"{method} {path}"
        if status == 401:
            return PCEAuthError(
                f"the PCE rejected the API key (401 on {where}): check the key's auth username "
                "(api_...) and secret"
            )
        if status == 403:
            return PCEPermissionError(
                f"the API key lacks permission for {where} (403){detail}; it needs a role "
                f"that may write traffic flows and workloads in org {self.org_id}"
            )
        if status == 404:
            return PCENotFoundError(
                f"not found (404 on {where}){detail}: check the PCE URL ({self.base_url}) and "
                f"org id ({self.org_id})"
            )
        return PCERequestError(f"the PCE refused {where} ({status}){detail}")


def _batch_result(sent: int, body: Any) -> BatchResult:
    if not isinstance(body, dict):
        raise PCEProtocolError("bulk_traffic_flows answered something other than a JSON object")
    received, failed = body.get("num_flows_received"), body.get("num_flows_failed")
    failed_flows = body.get("failed_flows", [])
    if not isinstance(received, int) or not isinstance(failed, int):
        raise PCEProtocolError("bulk_traffic_flows answer lacks num_flows_received/failed")
    if not isinstance(failed_flows, list):
        failed_flows = []
    return BatchResult(sent, received, failed, [str(f) for f in failed_flows])


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PCEProtocolError(
            f"the PCE answered {response.status_code} with a body that is not JSON"
        ) from None


def _json_list(response: httpx.Response) -> list[dict[str, Any]]:
    body = _json(response)
    if not isinstance(body, list):
        raise PCEProtocolError("the PCE answered an object where a list was expected")
    return [item for item in body if isinstance(item, dict)]


def _error_detail(response: httpx.Response) -> str:
    """The PCE's error tokens (`[{"token": ..., "message": ...}]`), if any."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    items = body if isinstance(body, list) else [body]
    texts = []
    for item in items[:3]:
        if isinstance(item, dict):
            token, message = item.get("token"), item.get("message") or item.get("error")
            texts.append(": ".join(str(x) for x in (token, message) if x))
    return f": {'; '.join(t for t in texts if t)}" if any(texts) else ""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from, outermost first."""
    cause: BaseException | None = exc
    while cause is not None:
        yield cause
        cause = cause.__cause__ or cause.__context__


def _has_address(
    workload: dict[str, Any], wanted: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> bool:
    for interface in workload.get("interfaces") or []:
        try:
            if ipaddress.ip_address(str(interface.get("address"))) == wanted:
                return True
        except ValueError:
            continue
    return False


def _unmanaged_workload(
    ip: str, external_data_set: str, labels: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": f"flowexport {ip}",
        "hostname": ip,
        "interfaces": [{"name": "eth0", "address": ip, "link_state": "up"}],
        "labels": [{"href": label["href"]} for label in labels],
        "external_data_set": external_data_set,
        "external_data_reference": ip,
    }


def bulk_errors(answer: dict[str, Any]) -> str:
    """The problems a bulk operation's result for one item reports, or '' when it worked."""
    problems = [
        f"{e.get('token', 'error')}: {e.get('message', '')}".rstrip(": ")
        for e in answer.get("errors") or []
        if isinstance(e, dict)
    ]
    if not answer.get("href") and not problems:
        problems.append(str(answer.get("message") or answer.get("token") or "not created"))
    return "; ".join(problems)
