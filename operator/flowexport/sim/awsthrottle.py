"""A throttling proxy in front of an AWS emulator: AWS's per-account, per-region API quotas.

moto has no quotas; AWS counts them per account and region, whoever calls. This proxy (the
fault proxy of `awsfaults` with quotas in front of its rules) keeps one token bucket per
(account, region, action) for each action given a quota - FilterLogEvents 5/s with a burst of
5 by default (CloudWatch Logs' published quota; AWS documents no burst for it) - and answers a
request over it as AWS does:

- CloudWatch Logs and other JSON services: HTTP 400, `{"__type": "ThrottlingException",
  "message": "Rate exceeded"}`;
- EC2: HTTP 503, `<Response><Errors><Error><Code>RequestLimitExceeded</Code>...`;
- other query services (STS, IAM): HTTP 400 `<ErrorResponse>` with code `Throttling`.

The account is moto's: the request's `x-moto-account-id` header if any, else the account of
its SigV4 access key, asked of the emulator once per key with STS GetCallerIdentity (moto
verifies no signature; keys from an AssumeRole into another account act in that account).
The region is the credential scope's.

Every request naming an operation is counted per action (`calls`, `throttled`): from Python
(`stats`, `reset_stats`, `set_quota`) or over HTTP on the proxy: `GET /_stats` answers
`{"actions": {action: {"calls": n, "throttled": n}}, "quotas": {action: {"rate", "burst"}}}`,
`DELETE /_stats` zeroes the counts and refills the buckets, `POST /_quotas` with
`{action: {"rate": r, "burst": b}}` sets quotas (a rate of 0 removes one).

Run alone: `python -m flowexport.sim.awsthrottle --upstream http://127.0.0.1:5000 --port 5001
[--quota FilterLogEvents=5:5 ...]`.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from flowexport.aws.budget import TokenBucket
from flowexport.sim.awsfaults import AWSFaultProxy, FaultRule, credential_scope, error_response
from flowexport.sim.serve import ServerThread

STATS_PATH = "/_stats"
QUOTAS_PATH = "/_quotas"
#: CloudWatch Logs' FilterLogEvents quota per account and region (requests/s, burst).
DEFAULT_QUOTAS: dict[str, tuple[float, float]] = {"FilterLogEvents": (5.0, 5.0)}
_ACCOUNT = re.compile(r"<Account>(\d+)</Account>")
_MOTO_ACCOUNT = "x-moto-account-id"


@dataclass
class ActionStats:
    """Requests of one action the proxy saw, and how many it throttled."""

    calls: int = 0
    throttled: int = 0

    @property
    def throttled_share(self) -> float:
        """Throttled requests as a share of all (0.0 when none)."""
        return self.throttled / self.calls if self.calls else 0.0


def throttle_answer(service: str, json_protocol: bool) -> web.Response:
    """What AWS answers a request over its quota, in the service's protocol."""
    if json_protocol:
        rule = FaultRule(code="ThrottlingException", status=400, message="Rate exceeded")
    elif service == "ec2":
        rule = FaultRule(code="RequestLimitExceeded", status=503, message="Request limit exceeded.")
    else:
        rule = FaultRule(code="Throttling", status=400, message="Rate exceeded")
    return error_response(rule, service, json_protocol)


class AWSThrottleProxy(AWSFaultProxy):
    """The proxy: serve `app` (e.g. with `ServerThread`) and point boto3 at it."""

    def __init__(
        self,
        upstream: str,
        quotas: Mapping[str, tuple[float, float]] | None = None,
        timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._quota_lock = threading.Lock()
        self._quotas: dict[str, tuple[float, float]] = dict(
            DEFAULT_QUOTAS if quotas is None else quotas
        )
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._stats: dict[str, ActionStats] = {}
        self._accounts: dict[str, str] = {}
        super().__init__(upstream, timeout)

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(STATS_PATH, self._get_stats)
        router.add_delete(STATS_PATH, self._delete_stats)
        router.add_post(QUOTAS_PATH, self._post_quotas)

    # -- control -------------------------------------------------------------------------

    def set_quota(self, action: str, rate: float, burst: float | None = None) -> None:
        """Hold `action` to `rate` requests/s per account and region, `burst` at once (default:
        the rate, at least 1); a rate of 0 lifts its quota."""
        with self._quota_lock:
            if rate <= 0:
                self._quotas.pop(action, None)
            else:
                self._quotas[action] = (rate, max(1.0, burst if burst is not None else rate))
            for key in [k for k in self._buckets if k[2] == action]:
                del self._buckets[key]

    @property
    def quotas(self) -> dict[str, tuple[float, float]]:
        """The quotas as they stand: action -> (rate, burst)."""
        with self._quota_lock:
            return dict(self._quotas)

    def stats(self) -> dict[str, ActionStats]:
        """Counts per action since the last reset (copies)."""
        with self._quota_lock:
            return {k: ActionStats(v.calls, v.throttled) for k, v in self._stats.items()}

    def reset_stats(self) -> None:
        """Zero the counts and refill every bucket."""
        with self._quota_lock:
            self._stats.clear()
            self._buckets.clear()

    async def _get_stats(self, request: web.Request) -> web.Response:
        stats = self.stats()
        return web.json_response(
            {
                "actions": {
                    k: {"calls": v.calls, "throttled": v.throttled} for k, v in stats.items()
                },
                "quotas": {k: {"rate": r, "burst": b} for k, (r, b) in self.quotas.items()},
            }
        )

    async def _delete_stats(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.Response(status=204)

    async def _post_quotas(self, request: web.Request) -> web.Response:
        try:
            given = json.loads(await request.read())
            quotas = {
                str(action): (float(q["rate"]), float(q.get("burst", q["rate"])))
                for action, q in given.items()
            }
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return web.json_response({"error": f"not a quota map: {exc!r}"}, status=400)
        for action, (rate, burst) in quotas.items():
            self.set_quota(action, rate, burst)
        return web.json_response({"quotas": len(quotas)})

    # -- throttling ----------------------------------------------------------------------

    async def _intercept(
        self, request: web.Request, service: str, operation: str
    ) -> web.StreamResponse | None:
        scope = credential_scope(request.headers, request.query)
        with self._quota_lock:
            stats = self._stats.setdefault(operation, ActionStats())
            stats.calls += 1
            quota = self._quotas.get(operation)
        if quota is None:
            return None
        account = request.headers.get(_MOTO_ACCOUNT) or await self._account_of(scope.access_key)
        with self._quota_lock:
            key = (account, scope.region, operation)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(quota[0], quota[1], self._clock())
            if bucket.take(self._clock()) == 0.0:
                return None
            stats.throttled += 1
        return throttle_answer(service, "X-Amz-Target" in request.headers)

    async def _account_of(self, access_key: str) -> str:
        """moto's account for an access key (asked once; "" when it cannot tell)."""
        if not access_key:
            return ""
        known = self._accounts.get(access_key)
        if known is not None:
            return known
        assert self._session is not None, "the app is not running"
        headers = {
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={access_key}/20260101/us-east-1/sts/aws4_request, "
                "SignedHeaders=host, Signature=0"
            ),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        account = ""
        try:
            async with self._session.post(
                self.upstream + "/",
                data="Action=GetCallerIdentity&Version=2011-06-15",
                headers=headers,
            ) as answer:
                found = _ACCOUNT.search(await answer.text())
                account = found.group(1) if found else ""
        except Exception:  # the emulator is away: one bucket for all unknown keys
            return ""
        self._accounts[access_key] = account
        return account


def _quota(text: str) -> tuple[str, float, float]:
    action, _, numbers = text.partition("=")
    rate, _, burst = numbers.partition(":")
    return action, float(rate), float(burst or rate)


def main(argv: list[str] | None = None) -> None:
    """Serve the proxy until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the emulator's URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--quota",
        action="append",
        type=_quota,
        default=[],
        metavar="ACTION=RATE[:BURST]",
        help="a quota per account and region (default FilterLogEvents=5:5)",
    )
    args = parser.parse_args(argv)
    quotas = {a: (r, b) for a, r, b in args.quota} if args.quota else None
    proxy = AWSThrottleProxy(args.upstream, quotas)
    server = ServerThread(proxy.app, host=args.host, port=args.port)
    print(server.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
