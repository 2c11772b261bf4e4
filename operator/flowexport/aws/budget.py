"""AWS read budgets shared by every FlowExport of one process, per account and region.

AWS counts its API quotas per account and region, not per caller: FilterLogEvents is 5
requests/s (raised in some regions and on request), and every FlowExport polling a log group
of that account and region draws on the same 5. Each FlowExport limiting itself alone (as
`spec.aws.apiRequestsPerSecond` does) lets 300 of them ask for far more than there is, and
AWS answers the rest with `ThrottlingException`.

So one process keeps:

- one `FairBudget` per (account, region) for FilterLogEvents: a rate (default 5/s, set with
  `configure`), handed out in turns, round-robin over the FlowExports waiting for it (each a
  `key`): one FlowExport paging through a backlog takes one turn in N, it cannot starve the
  others. A throttle that still happens (the quota is lower than configured, or another
  client of the account reads too) lowers the rate at once (multiplicative decrease) and it
  climbs back linearly while calls succeed (AIMD, as TCP does);
- one adaptive token bucket per (account, region, API) for the other reads a reconcile makes
  (EC2 Describe*, CloudWatch Logs Describe*/List*; AWS counts these per API), at the rate of
  the API's family, applied inside botocore (`attach`) so each attempt, retries included,
  takes its token.

With several operator replicas (sharding), each keeps 1/n of every budget, n the live
replicas (`share_among`, told by the replicas' Leases): the FlowExports of an account are
spread over the replicas by hash, so with the many FlowExports per account where the quota
matters each replica reads about 1/n of its log groups.

The account comes from the role ARN when there is one, else from STS GetCallerIdentity, once
per set of credentials. The scheduling itself (`FairShare`, `AdaptiveRate`, `TokenBucket`)
is pure: it takes the time as an argument and never sleeps; `FairBudget` is its blocking face
for the reader threads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from flowexport.aws.session import CLIENT_CONFIG, AwsClients, AwsTarget

log = logging.getLogger("flowexport.aws.budget")

#: AWS's FilterLogEvents quota per account and region (older published value; many regions
#: allow more, and it can be raised: `--filter-log-events-rps`).
FILTER_LOG_EVENTS_PER_SECOND = 5.0
#: The other read quotas kept per account and region, by API family (requests/s, burst):
#: EC2's non-mutating actions are a bucket of 100 refilled at 20/s; CloudWatch Logs publishes
#: a quota per action (Describe* between 5 and 25 TPS, not confirmed here), so its budget
#: starts at 20/s and, like EC2's, halves on each throttle AWS answers and climbs back after.
READ_FAMILIES: dict[str, tuple[float, float]] = {
    "logs": (20.0, 40.0),
    "ec2": (20.0, 100.0),
}
#: Environment variables that set the same (the chart's `aws.*PerSecond` values).
ENV_FILTER_LOG_EVENTS = "FLOWEXPORT_FILTER_LOG_EVENTS_PER_SECOND"
ENV_READS = "FLOWEXPORT_AWS_READS_PER_SECOND"

#: AIMD: a throttle multiplies the rate by this ...
DECREASE = 0.5
#: ... at most once per this many seconds (one burst of throttles is one signal) ...
DECREASE_HOLD_SECONDS = 2.0
#: ... never below this share of the configured rate; and the rate climbs back by this share
#: of the configured rate per second of success.
FLOOR_SHARE = 0.1
RECOVER_SHARE_PER_SECOND = 1.0 / 30.0

_ARN_ACCOUNT = re.compile(r"^arn:[^:]+:[^:]*:[^:]*:(\d{12}):")


class TokenBucket:
    """`rate` tokens a second, up to `burst` kept; pure (the caller passes the time)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
            self._at = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was there, else the seconds until one will be (none is
        taken then)."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class AdaptiveRate:
    """A rate that halves on a throttle and climbs back while calls succeed (AIMD); pure."""

    def __init__(self, ceiling: float, now: float) -> None:
        if ceiling <= 0:
            raise ValueError("rate must be positive")
        self.ceiling = ceiling
        self.rate = ceiling
        self.floor = ceiling * FLOOR_SHARE
        self._updated = now
        self._decreased: float | None = None
        self.throttles = 0

    def throttled(self, now: float) -> None:
        """A call was throttled: cut the rate (once per `DECREASE_HOLD_SECONDS`)."""
        self.throttles += 1
        self._recover(now)
        if self._decreased is not None and now - self._decreased < DECREASE_HOLD_SECONDS:
            return
        self.rate = max(self.floor, self.rate * DECREASE)
        self._decreased = now

    def succeeded(self, now: float) -> None:
        """A call went through: the rate climbs back toward the ceiling."""
        self._recover(now)

    def rescale(self, ceiling: float, now: float) -> None:
        """A new ceiling (this process's share of the quota changed): the current rate, its
        floor and the climb scale with it."""
        if ceiling <= 0:
            raise ValueError("rate must be positive")
        self._recover(now)
        ratio = ceiling / self.ceiling
        self.ceiling, self.floor = ceiling, ceiling * FLOOR_SHARE
        self.rate = min(ceiling, max(self.floor, self.rate * ratio))

    def _recover(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        if self._decreased is not None and now - self._decreased < DECREASE_HOLD_SECONDS:
            return  # no climbing in the hold after a cut
        self.rate = min(self.ceiling, self.rate + elapsed * self.ceiling * RECOVER_SHARE_PER_SECOND)


@dataclass(eq=False)
class Ticket:
    """One caller's place in the queue for one call."""

    key: Hashable
    granted: bool = False
    cancelled: bool = False
    cond: Any = field(default=None, repr=False)


class FairShare:
    """Turns at `rate` a second, handed round-robin over the keys waiting; pure.

    Each key's tickets are served in order; the keys take turns, so a key with many tickets
    waiting gets one turn per round like any other. At most one turn per `1 / rate` seconds
    (no burst: evenly spaced calls never exceed a quota counted over any second).
    """

    def __init__(self, rate: AdaptiveRate) -> None:
        self.rate = rate
        self._ring: OrderedDict[Hashable, deque[Ticket]] = OrderedDict()
        self._next = 0.0
        #: When each key last got a turn (for `sharing`).
        self._served: dict[Hashable, float] = {}
        self.granted = 0

    def join(self, key: Hashable, first: bool = False) -> Ticket:
        """A new ticket for `key`, queued behind the key's earlier ones; `first`: at the head
        of the round (a call retried after a throttle keeps the turn it had, rather than
        waiting a whole round again)."""
        ticket = Ticket(key)
        queue = self._ring.setdefault(key, deque())
        if first:
            queue.appendleft(ticket)
            self._ring.move_to_end(key, last=False)
        else:
            queue.append(ticket)
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """Withdraw a ticket not yet granted."""
        queue = self._ring.get(ticket.key)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._ring[ticket.key]
        ticket.cancelled = True

    def head(self) -> Ticket | None:
        """The ticket whose turn is next."""
        for queue in self._ring.values():
            return queue[0]
        return None

    def waiting(self) -> int:
        """Tickets queued."""
        return sum(len(q) for q in self._ring.values())

    def grant(self, now: float) -> tuple[Ticket | None, float]:
        """The head's turn if it is due (the ticket, 0.0), else (None, seconds to wait; 0.0
        when nobody waits)."""
        if not self._ring:
            return None, 0.0
        if now < self._next:
            return None, self._next - now
        key, queue = next(iter(self._ring.items()))
        ticket = queue.popleft()
        if queue:
            self._ring.move_to_end(key)  # the key's next ticket waits a round
        else:
            del self._ring[key]
        ticket.granted = True
        self._next = max(now, self._next) + 1.0 / self.rate.rate
        self._served[key] = now
        self.granted += 1
        return ticket, 0.0

    def sharing(self, now: float, within: float) -> int:
        """Keys that got a turn in the last `within` seconds or wait for one."""
        for key, at in list(self._served.items()):
            if now - at > within:
                del self._served[key]
        return len(set(self._served) | set(self._ring))


class FairBudget:
    """The blocking face of a `FairShare` for reader threads, with throttle feedback.

    `acquire(key)` blocks the calling thread until `key`'s turn. Only the thread holding the
    head ticket waits on the clock; the others sleep until they are at the head.
    """

    def __init__(
        self,
        rate: float,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self.rate = AdaptiveRate(rate, clock())
        self._share = FairShare(self.rate)
        self.calls = 0
        self.throttles = 0

    def acquire(
        self, key: Hashable, stop: threading.Event | None = None, retry: bool = False
    ) -> float:
        """Block until `key` may make one call; the seconds waited. A set `stop` (checked at
        least every second) gives the place up and returns at once. A `retry` of a throttled
        call goes first (its turn was taken by the throttle)."""
        started = self._clock()
        with self._lock:
            ticket = self._share.join(key, first=retry)
            ticket.cond = threading.Condition(self._lock)
            while not ticket.granted:
                if stop is not None and stop.is_set():
                    self._share.leave(ticket)
                    self._wake_head()
                    return self._clock() - started
                if self._share.head() is ticket:
                    granted, wait = self._share.grant(self._clock())
                    if granted is not None:
                        self._wake_head()
                        continue
                    ticket.cond.wait(min(wait, 1.0) if stop is not None else wait)
                else:
                    ticket.cond.wait(1.0 if stop is not None else None)
            self.calls += 1
        return self._clock() - started

    def _wake_head(self) -> None:
        head = self._share.head()
        if head is not None and head.cond is not None:
            head.cond.notify()

    def throttled(self) -> None:
        """A call made in a turn was throttled anyway: lower the rate."""
        with self._lock:
            self.throttles += 1
            before = self.rate.rate
            self.rate.throttled(self._clock())
            after = self.rate.rate
        if after < before:
            log.info("%s throttled: rate %.2f/s -> %.2f/s", self.name, before, after)

    def succeeded(self) -> None:
        """A call made in a turn went through."""
        with self._lock:
            self.rate.succeeded(self._clock())

    def rescale(self, rate: float) -> None:
        """This process's share of the quota is now `rate` a second."""
        with self._lock:
            self.rate.rescale(rate, self._clock())
            self._wake_head()

    def sharing(self, within: float = 300.0) -> int:
        """How many keys used or wait for this budget (in the last `within` seconds)."""
        with self._lock:
            return self._share.sharing(self._clock(), within)

    @property
    def current_rate(self) -> float:
        """The rate turns are handed out at now."""
        with self._lock:
            return self.rate.rate


class BlockingBucket:
    """A `TokenBucket` callers wait on (any order: for the reconcile's occasional reads), its
    rate adaptive: a throttle halves it, success brings it back (`AdaptiveRate`)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._bucket = TokenBucket(rate, burst, clock())
        self.rate = AdaptiveRate(rate, clock())
        self.calls = 0

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Block until a token is taken."""
        while True:
            with self._lock:
                now = self._clock()
                self.rate.succeeded(now)
                self._bucket.rate = self.rate.rate
                wait = self._bucket.take(now)
                if wait == 0.0:
                    self.calls += 1
                    return
            sleep(wait)

    def throttled(self) -> None:
        """A call was throttled: lower the rate."""
        with self._lock:
            self.rate.throttled(self._clock())

    def rescale(self, rate: float, burst: float) -> None:
        """This process's share of the quota is now `rate` a second, `burst` at once."""
        with self._lock:
            self.rate.rescale(rate, self._clock())
            self._bucket.rate = self.rate.rate
            self._bucket.burst = burst
            self._bucket.tokens = min(self._bucket.tokens, burst)


# -- the process's budgets ---------------------------------------------------------------------


@dataclass
class Settings:
    """The process's budgets: FilterLogEvents per account and region (0: none, each
    FlowExport only keeps its own apiRequestsPerSecond, as before), and the other reads'
    rate per API family (0: none)."""

    filter_log_events_per_second: float = FILTER_LOG_EVENTS_PER_SECOND
    reads_per_second: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(READ_FAMILIES)
    )
    #: Live operator replicas sharing these quotas (`share_among`): each keeps 1/n of them.
    replicas: int = 1


def _from_env() -> Settings:
    settings = Settings()
    raw = os.environ.get(ENV_FILTER_LOG_EVENTS)
    if raw:
        settings.filter_log_events_per_second = float(raw)
    reads = os.environ.get(ENV_READS)
    if reads:
        settings.reads_per_second = _scaled(float(reads))
    return settings


def _scaled(logs_rate: float) -> dict[str, tuple[float, float]]:
    """The read families with CloudWatch Logs' rate set to `logs_rate`, EC2's in step."""
    if logs_rate <= 0:
        return {}
    scale = logs_rate / READ_FAMILIES["logs"][0]
    return {name: (r * scale, max(1.0, b * scale)) for name, (r, b) in READ_FAMILIES.items()}


_settings = _from_env()
_lock = threading.Lock()
_budgets: dict[tuple[str, str], FairBudget] = {}
_buckets: dict[tuple[str, str, str, str], BlockingBucket] = {}
_accounts: dict[AwsTarget, str] = {}
_account_locks: dict[AwsTarget, threading.Lock] = {}


def _filter_rate() -> float:
    return _settings.filter_log_events_per_second / _settings.replicas


def _read_rate(family: str) -> tuple[float, float] | None:
    """A read family's (rate, burst) for this process's share; None: no budget."""
    found = _settings.reads_per_second.get(family)
    if found is None:
        return None
    rate, burst = found
    return rate / _settings.replicas, max(1.0, burst / _settings.replicas)


def share_among(replicas: int) -> None:
    """The live operator replicas now number `replicas`: each keeps 1/n of every budget
    (FilterLogEvents and the reads), since AWS counts the quotas per account and region
    across all of them. The budgets already made are rescaled in place (their queues kept)."""
    replicas = max(1, replicas)
    with _lock:
        if replicas == _settings.replicas:
            return
        _settings.replicas = replicas
        for budget in _budgets.values():
            budget.rescale(_filter_rate())
        for (_, _, family, _), bucket in _buckets.items():
            share = _read_rate(family)
            if share is not None:
                bucket.rescale(*share)
        filter_rate = _filter_rate()
    log.info(
        "AWS read budgets shared by %d operator replica(s): FilterLogEvents %.2f/s per "
        "account and region in this one",
        replicas,
        filter_rate,
    )


def sharing_replicas() -> int:
    """How many operator replicas this process takes its share of the quotas with."""
    return _settings.replicas


def configure(
    filter_log_events_per_second: float | None = None, reads_per_second: float | None = None
) -> Settings:
    """Set the process's budgets (before any FlowExport reads); None keeps a setting. A rate
    of 0 turns that budget off. Budgets already made are dropped (made anew at the new rate)."""
    with _lock:
        rate = _settings.filter_log_events_per_second
        reads = _settings.reads_per_second
        if filter_log_events_per_second is not None:
            if filter_log_events_per_second < 0:
                raise ValueError("the FilterLogEvents rate must be >= 0")
            rate = filter_log_events_per_second
        if reads_per_second is not None:
            if reads_per_second < 0:
                raise ValueError("the read rate must be >= 0")
            reads = _scaled(reads_per_second)
        _settings.filter_log_events_per_second, _settings.reads_per_second = rate, reads
        _budgets.clear()
        _buckets.clear()
        return dataclasses.replace(_settings)


def settings() -> Settings:
    """The process's budgets as configured (a copy)."""
    return dataclasses.replace(_settings)


def _credentials_key(target: AwsTarget) -> AwsTarget:
    return dataclasses.replace(target, requests_per_second=1.0)


def account_of(clients: AwsClients) -> str:
    """The AWS account the clients act in: the role ARN's, else STS GetCallerIdentity's (one
    call per set of credentials, remembered); "" when STS cannot tell (the budgets of every
    such FlowExport are then one, the cautious choice). Blocking."""
    target = clients.target
    if target.role_arn:
        found = _ARN_ACCOUNT.match(target.role_arn)
        if found:
            return found.group(1)
    key = _credentials_key(target)
    with _lock:
        known = _accounts.get(key)
        if known is not None:
            return known
        one = _account_locks.setdefault(key, threading.Lock())
    with one:
        with _lock:
            if key in _accounts:
                return _accounts[key]
        account = ""
        try:
            sts = clients.session.client(
                "sts", endpoint_url=target.endpoint("sts"), config=CLIENT_CONFIG
            )
            account = str(sts.get_caller_identity()["Account"])
        except Exception as exc:  # no STS: one budget for all of them
            log.warning(
                "cannot tell the AWS account (%s): budgets shared by all", type(exc).__name__
            )
        with _lock:
            _accounts[key] = account
        return account


def filter_log_events_budget(clients: AwsClients) -> FairBudget | None:
    """The FilterLogEvents budget of the clients' account and region (None: budgets off).
    Blocking on the first call for a set of credentials (see `account_of`)."""
    rate = _settings.filter_log_events_per_second
    if rate <= 0:
        return None
    place = (account_of(clients), clients.target.region)
    with _lock:
        budget = _budgets.get(place)
        if budget is None:
            name = f"FilterLogEvents in {place[0] or 'the account'}/{place[1]}"
            budget = _budgets[place] = FairBudget(_filter_rate(), name)
        return budget


def read_bucket(account: str, region: str, family: str, operation: str) -> BlockingBucket | None:
    """The read budget of one API in an account and region (None: off). AWS counts these
    quotas per API (EC2: each Describe* its own bucket), so each operation has its own,
    at its family's rate."""
    with _lock:
        share = _read_rate(family)
        if share is None:
            return None
        key = (account, region, family, operation)
        bucket = _buckets.get(key)
        if bucket is None:
            bucket = _buckets[key] = BlockingBucket(*share)
        return bucket


#: Read operations kept to the read budgets (FilterLogEvents has its own).
_READ_PREFIXES = ("Describe", "List", "Get")
_UNIQUE = "flowexport-budget"


def attach(clients: AwsClients) -> AwsClients:
    """Keep the clients' EC2 and CloudWatch Logs reads to the per-account read budgets, and
    leave a throttled FilterLogEvents to its reader (no botocore retry outside the budget).

    Hooks are registered once per client object (shared clients are shared by many
    FlowExports of one account). Blocking (may call STS once). Returns `clients`.
    """
    account = ""
    for client, family in ((clients.ec2, "ec2"), (clients.logs, "logs")):
        events = getattr(getattr(client, "meta", None), "events", None)
        if events is None:
            continue
        if getattr(client, "_flowexport_budget", False):
            continue
        account = account or account_of(clients)
        service = client.meta.service_model.service_id.hyphenize()
        if family in _settings.reads_per_second:
            place = (account, clients.target.region, family)
            events.register(f"before-send.{service}", _read_hook(place), unique_id=f"{_UNIQUE}-r")
            events.register(
                f"needs-retry.{service}", _throttle_seen(place), unique_id=f"{_UNIQUE}-t"
            )
        if family == "logs" and _settings.filter_log_events_per_second > 0:
            events.register(
                f"needs-retry.{service}.FilterLogEvents",
                _no_throttle_retry,
                unique_id=f"{_UNIQUE}-filter-retry",
            )
        client._flowexport_budget = True
    return clients


def _read_operation(event_name: str) -> str | None:
    """The read operation an event is about (None: a write, or FilterLogEvents)."""
    operation = event_name.rsplit(".", 1)[-1]
    if operation.startswith(_READ_PREFIXES) and operation != "FilterLogEvents":
        return operation
    return None


def _read_hook(place: tuple[str, str, str]) -> Callable[..., None]:
    def before_send(event_name: str = "", **kwargs: Any) -> None:
        operation = _read_operation(event_name)
        bucket = read_bucket(*place, operation) if operation else None
        if bucket is not None:
            bucket.acquire()

    return before_send


def _throttle_seen(place: tuple[str, str, str]) -> Callable[..., None]:
    def needs_retry(event_name: str = "", response: Any = None, **kwargs: Any) -> None:
        operation = _read_operation(event_name)
        if operation and _throttle_code(response):
            bucket = read_bucket(*place, operation)
            if bucket is not None:
                bucket.throttled()

    return needs_retry


def _throttle_code(response: Any) -> bool:
    """Whether a botocore (http response, parsed) pair is a throttle."""
    if isinstance(response, tuple) and len(response) == 2:
        parsed = response[1] or {}
        code = (parsed.get("Error") or {}).get("Code") if isinstance(parsed, dict) else None
        return code in THROTTLE_CODES
    return False


#: The error codes a throttled call answers.
THROTTLE_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
)


def _no_throttle_retry(response: Any = None, **kwargs: Any) -> bool | None:
    """botocore's needs-retry hook for FilterLogEvents: a throttle is not retried by botocore
    (False ends its retries; the reader retries inside its budget), anything else is left to
    botocore's own handler (None)."""
    return False if _throttle_code(response) else None


def reset() -> None:
    """Forget every budget and account, and the replicas sharing them (tests)."""
    with _lock:
        _settings.replicas = 1
        _budgets.clear()
        _buckets.clear()
        _accounts.clear()
        _account_locks.clear()
