"""Read a flow-log group without losing late events, resumable from a small cursor.

Flow-log events reach CloudWatch Logs minutes after their timestamp and out of order, so a
reader that scans `[last timestamp, now]` loses the late ones. This reader works in slices of
*ingestion* time instead: a slice takes every event ingested in `(ingested_through, slice_end]`,
scanning event timestamps from `ingested_through - lookback` (late events have old
timestamps) with paged `FilterLogEvents`. Every event is ingested exactly once, so slices
partition the events: nothing is read twice and no event-id set has to be kept. `slice_end`
stays `settle` seconds behind the clock, so events ingested but not yet searchable are left
for the next slice. An event whose timestamp is older than its ingestion time minus the
look-back is the one thing that can be missed: the look-back must exceed the delivery delay.

The cursor (a few numbers and one page token) is saved only after the flows of everything
before it were accepted by the PCE, and a restarted reader resumes exactly there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowexport.aws.budget import THROTTLE_CODES, FairBudget, attach, filter_log_events_budget
from flowexport.aws.errors import AwsError, classify, error_code
from flowexport.aws.session import AwsClients, RateLimiter
from flowexport.errors import Reason

#: Events per FilterLogEvents page (the API's maximum is 10,000).
PAGE_LIMIT = 10_000
#: With a shared budget, a throttled page is retried inside it; it is reported (AWSThrottled)
#: only once it was throttled this many times in a row over at least this many seconds.
THROTTLED_TRIES = 4
THROTTLED_SECONDS = 20.0
#: The longest pause between two tries of a throttled page (beside the budget's own wait).
MAX_THROTTLE_PAUSE = 8.0


@dataclass(frozen=True)
class ReaderCursor:
    """Where reading resumes.

    Every event ingested at or before `ingested_through` has been handled. When a slice is in
    progress, `slice_end` closes it, `page_token` is the page being read (None: the first) and
    `page_offset` counts that page's events of the slice already handled. `log_group` is the
    ARN of the log group the cursor belongs to (None: not known yet, or written by a version
    that did not record it): a cursor is never replayed against another log group.
    """

    ingested_through: int
    slice_end: int | None = None
    page_token: str | None = None
    page_offset: int = 0
    log_group: str | None = None

    def to_status(self) -> dict[str, Any]:
        """The cursor as stored in the FlowExport's status: a whole value, every field named
        (null when unused), so no merge with an older cursor can leave a stale field."""
        in_slice = self.slice_end is not None
        return {
            "ingestedThrough": self.ingested_through,
            "sliceEnd": self.slice_end,
            "pageToken": self.page_token if in_slice else None,
            "pageOffset": self.page_offset if in_slice else None,
            "logGroup": self.log_group,
        }

    @classmethod
    def from_status(cls, data: dict[str, Any]) -> ReaderCursor:
        """Read a cursor back; raises ValueError if it is not one."""
        try:
            ingested = int(data["ingestedThrough"])
            slice_end = data.get("sliceEnd")
            group = data.get("logGroup")
            log_group = str(group) if group is not None else None
            if slice_end is None:  # between slices: paging fields mean nothing
                return cls(ingested_through=ingested, log_group=log_group)
            token = data.get("pageToken")
            return cls(
                ingested_through=ingested,
                slice_end=int(slice_end),
                page_token=str(token) if token is not None else None,
                page_offset=int(data.get("pageOffset") or 0),
                log_group=log_group,
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError("status.cursor is not a reader cursor") from None


def initial_cursor(start_from: str, now_ms: int, log_group: str | None = None) -> ReaderCursor:
    """The cursor of a new FlowExport (or a new log group): `now`, `earliest` or an RFC 3339
    time."""
    if start_from == "now":
        return ReaderCursor(now_ms, log_group=log_group)
    if start_from == "earliest":
        return ReaderCursor(0, log_group=log_group)
    when = datetime.fromisoformat(start_from.replace("z", "Z").replace("Z", "+00:00"))
    return ReaderCursor(int(when.timestamp() * 1000), log_group=log_group)


@dataclass(frozen=True)
class Event:
    """One flow-log record as delivered."""

    timestamp: int
    ingestion_time: int
    message: str


@dataclass(frozen=True)
class Chunk:
    """Some events, and the cursor that is safe to save once their flows are uploaded.

    `final` marks the last chunk of a read (caught up); `undecodable` counts records before
    these events that held nothing readable (skipped, and counted as such).
    """

    events: list[Event]
    cursor: Any
    final: bool = False
    undecodable: int = 0


class LogReader:
    """Paged, rate-limited reads of one log group.

    `limiter` caps this reader alone (spec.aws.apiRequestsPerSecond). With `shared_budget`
    each page also waits for its turn in the FilterLogEvents budget of the account and
    region (`flowexport.aws.budget`, made on the first page), shared fairly with every
    other reader of the process, and a throttled page is retried in it (the budget lowering
    its rate) instead of failing the read.
    """

    def __init__(
        self,
        clients: AwsClients,
        log_group: str,
        lookback_seconds: int,
        settle_seconds: float = 15.0,
        page_limit: int = PAGE_LIMIT,
        limiter: RateLimiter | None = None,
        log_group_arn: str | None = None,
        *,
        shared_budget: bool = False,
        budget: FairBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients = clients
        self.log_group = log_group
        #: What the cursors this reader makes belong to.
        self.log_group_arn = log_group_arn
        self.lookback_ms = lookback_seconds * 1000
        self.settle_ms = int(settle_seconds * 1000)
        self.page_limit = page_limit
        self.limiter = limiter or RateLimiter(clients.target.requests_per_second)
        self.calls = 0
        #: Calls AWS throttled (each retried in the budget).
        self.throttled = 0
        self._budget = budget
        self._find_budget = shared_budget and budget is None
        #: This reader's turn in the budget: one per log group.
        self.budget_key = log_group_arn or f"{clients.target.region}:{log_group}"
        self._sleep = sleep
        self._clock = clock

    @property
    def budget(self) -> FairBudget | None:
        """The shared budget this reader waits in (None: none, or not yet known)."""
        return self._budget

    def _shared(self) -> FairBudget | None:
        if self._find_budget:
            self._budget = filter_log_events_budget(self.clients)
            self._find_budget = False
            if self._budget is not None:
                attach(self.clients)  # a throttle is retried here, in the budget
        return self._budget

    def chunks(self, cursor: ReaderCursor, now_ms: int, chunk_size: int) -> Iterator[Chunk]:
        """Read one slice from `cursor` (opening one that ends `settle` before `now_ms`).

        Yields chunks of at most `chunk_size` events; the last chunk's cursor closes the slice.
        A slice with no new events still yields one (empty) closing chunk.
        """
        if cursor.slice_end is None:
            end = now_ms - self.settle_ms
            if end <= cursor.ingested_through:
                return
            cursor = ReaderCursor(cursor.ingested_through, end, None, 0, self.log_group_arn)
        assert cursor.slice_end is not None
        start, end = cursor.ingested_through, cursor.slice_end
        token, offset = cursor.page_token, cursor.page_offset
        while True:
            page, next_token = self._page(max(0, start - self.lookback_ms), token)
            events = [e for e in page if start < e.ingestion_time <= end]
            for at in range(offset, len(events), chunk_size):
                done = min(at + chunk_size, len(events))
                position = ReaderCursor(start, end, token, done, self.log_group_arn)
                yield Chunk(events[at:done], position)
            if next_token is None or next_token == token:
                break
            token, offset = next_token, 0
        yield Chunk([], ReaderCursor(end, log_group=self.log_group_arn), final=True)

    def _page(self, start_time: int, token: str | None) -> tuple[list[Event], str | None]:
        kwargs: dict[str, Any] = {
            "logGroupName": self.log_group,
            "startTime": start_time,
            "limit": self.page_limit,
        }
        if token is not None:
            kwargs["nextToken"] = token
        budget = self._shared()
        tries, first_throttle = 0, 0.0
        while True:
            self.limiter.wait()
            if budget is not None:
                budget.acquire(self.budget_key, retry=tries > 0)
            self.calls += 1
            try:
                answer = self.clients.logs.filter_log_events(**kwargs)
            except Exception as exc:
                if budget is not None and error_code(exc) in THROTTLE_CODES:
                    budget.throttled()
                    self.throttled += 1
                    now = self._clock()
                    tries, first_throttle = tries + 1, first_throttle if tries else now
                    if tries >= THROTTLED_TRIES and now - first_throttle >= THROTTLED_SECONDS:
                        raise AwsError(
                            f"AWS throttled logs:FilterLogEvents {tries} times in a row over "
                            f"{now - first_throttle:.0f}s (the budget of {budget.name} is now "
                            f"{budget.current_rate:.2f}/s, shared by {budget.sharing()} log "
                            "groups): another client may use the account's quota, or it is "
                            "lower than --filter-log-events-rps; backing off",
                            Reason.AWS_THROTTLED,
                        ) from None
                    pause = min(MAX_THROTTLE_PAUSE, 0.5 * 2**tries)
                    self._sleep(pause * random.uniform(0.5, 1.0))
                    continue
                error = classify(exc, "logs", "FilterLogEvents")
                if "same next token" in str(exc).lower():
                    return [], None
                if error_code(exc) == "ResourceNotFoundException":
                    raise AwsError(
                        f"log group {self.log_group} does not exist", Reason.LOG_GROUP_NOT_FOUND
                    ) from None
                raise error from None
            if budget is not None:
                budget.succeeded()
            break
        events = [
            Event(int(e["timestamp"]), int(e.get("ingestionTime", e["timestamp"])), e["message"])
            for e in answer.get("events", [])
        ]
        return events, answer.get("nextToken")
