"""The shared AWS read budgets: fair turns, the adaptive rate, the token bucket (pure, on a
fake clock), the blocking budget from threads, the reader retrying a throttle inside its
budget, and the botocore hooks through moto behind the throttling proxy."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from flowexport.aws import budget
from flowexport.aws.budget import (
    DECREASE_HOLD_SECONDS,
    AdaptiveRate,
    FairBudget,
    FairShare,
    TokenBucket,
)
from flowexport.aws.errors import AwsError
from flowexport.aws.reader import THROTTLED_SECONDS, THROTTLED_TRIES, LogReader, ReaderCursor
from flowexport.aws.session import AwsClients, AwsTarget, RateLimiter, make_clients
from flowexport.errors import Reason
from flowexport.sim.awsthrottle import AWSThrottleProxy
from flowexport.sim.serve import ServerThread
from flowexport.sources.poll import EffectiveInterval
from tests.cloud import KEYS, REGION
from tests.moto_server import reset

# -- fair turns ------------------------------------------------------------------------------


def drain(share: FairShare, start: float = 0.0) -> list[tuple[Any, float]]:
    """Every ticket granted in turn on a fake clock: (key, time granted)."""
    now, granted = start, []
    while True:
        ticket, wait = share.grant(now)
        if ticket is not None:
            granted.append((ticket.key, now))
        elif wait == 0.0:
            return granted
        else:
            now += wait


def test_a_backlog_takes_one_turn_a_round() -> None:
    share = FairShare(AdaptiveRate(5.0, 0.0))
    for _ in range(10):
        share.join("busy")
    for key in ("b", "c", "d"):
        share.join(key)
    order = [key for key, _ in drain(share)]
    assert order[:8] == ["busy", "b", "c", "d", "busy", "busy", "busy", "busy"]
    assert order.count("busy") == 10


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=30),
    rate=st.floats(min_value=0.5, max_value=50.0),
)
def test_turns_go_round_robin_at_the_rate(counts: list[int], rate: float) -> None:
    """Whatever the backlogs: round r serves each key with more than r tickets once, in the
    order the keys came; no two turns closer than 1/rate."""
    share = FairShare(AdaptiveRate(rate, 0.0))
    for key, count in enumerate(counts):
        for _ in range(count):
            share.join(key)
    granted = drain(share)
    expected = [k for r in range(max(counts)) for k, c in enumerate(counts) if c > r]
    assert [key for key, _ in granted] == expected
    times = [at for _, at in granted]
    assert all(b - a >= 1.0 / rate - 1e-9 for a, b in itertools.pairwise(times))


@settings(max_examples=100, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), st.floats(min_value=0, max_value=3)),
        min_size=1,
        max_size=60,
    )
)
def test_a_key_waiting_is_served_before_any_key_gets_two_turns(
    arrivals: list[tuple[int, float]],
) -> None:
    """Tickets arriving over time (as readers come back for their next page): once a key
    waits, no other key is served twice before it is."""
    share = FairShare(AdaptiveRate(10.0, 0.0))
    now = 0.0
    waiting_since: dict[int, list[int]] = {}  # key -> turns of each other key since it waited
    for key, later in arrivals:
        now += later
        while True:  # the turns due by now
            ticket, _ = share.grant(now)
            if ticket is None:
                break
            served = ticket.key
            for other, seen in waiting_since.items():
                if other != served:
                    seen.append(served)
                    assert seen.count(served) <= 1, (other, seen)
            waiting_since.pop(served, None)
            if any(t.key == served for q in share._ring.values() for t in q):
                waiting_since[served] = []
        share.join(key)
        waiting_since.setdefault(key, [])


def test_a_retry_after_a_throttle_goes_first() -> None:
    share = FairShare(AdaptiveRate(5.0, 0.0))
    for key in ("a", "b", "c"):
        share.join(key)
    share.join("c", first=True)  # c's throttled call, again
    assert [key for key, _ in drain(share)] == ["c", "a", "b", "c"]


def test_a_withdrawn_ticket_leaves_its_place() -> None:
    share = FairShare(AdaptiveRate(1.0, 0.0))
    first, second = share.join("a"), share.join("b")
    share.leave(first)
    assert first.cancelled and share.head() is second
    assert [key for key, _ in drain(share)] == ["b"]


def test_sharing_counts_keys_served_lately_or_waiting() -> None:
    share = FairShare(AdaptiveRate(100.0, 0.0))
    for key in ("a", "b", "c"):
        share.join(key)
    drain(share)
    share.join("d")
    assert share.sharing(1.0, within=10.0) == 4
    assert share.sharing(100.0, within=10.0) == 1  # only d, still waiting


# -- the adaptive rate and the bucket -----------------------------------------------------


def test_a_throttle_halves_the_rate_once_per_hold_then_it_climbs_back() -> None:
    rate = AdaptiveRate(10.0, 0.0)
    rate.throttled(1.0)
    assert rate.rate == 5.0
    rate.throttled(1.0 + DECREASE_HOLD_SECONDS / 2)  # the same burst of throttles
    assert rate.rate == 5.0
    rate.throttled(1.0 + DECREASE_HOLD_SECONDS)  # a new burst: halved again
    assert rate.rate < 3.0
    cut = rate.rate
    rate.succeeded(1.0 + DECREASE_HOLD_SECONDS + 1)  # in the hold: no climbing yet
    assert rate.rate == cut
    rate.succeeded(1.0 + 2 * DECREASE_HOLD_SECONDS + 1)
    assert cut < rate.rate < 10.0
    rate.succeeded(1000.0)
    assert rate.rate == 10.0


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.booleans(), st.floats(min_value=0, max_value=20)), min_size=1, max_size=50
    ),
    ceiling=st.floats(min_value=0.5, max_value=100),
)
def test_the_rate_stays_between_its_floor_and_the_quota(
    steps: list[tuple[bool, float]], ceiling: float
) -> None:
    rate, now = AdaptiveRate(ceiling, 0.0), 0.0
    for throttle, later in steps:
        now += later
        (rate.throttled if throttle else rate.succeeded)(now)
        assert ceiling * budget.FLOOR_SHARE - 1e-9 <= rate.rate <= ceiling + 1e-9


def test_the_token_bucket_gives_its_burst_then_the_rate() -> None:
    bucket = TokenBucket(2.0, 3.0, 0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) > 0.0
    assert bucket.take(100.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # burst - 1


# -- the blocking budget ----------------------------------------------------------------------


def test_threads_take_their_turns_and_a_stop_gives_a_place_up() -> None:
    shared = FairBudget(1000.0, "test")
    done: list[str] = []

    def reader(key: str) -> None:
        for _ in range(20):
            shared.acquire(key)
            done.append(key)

    threads = [threading.Thread(target=reader, args=(k,)) for k in "abcde"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(done) == sorted(k for k in "abcde" for _ in range(20))
    assert shared.calls == 100
    slow = FairBudget(0.001, "slow")  # one turn per 1000 s
    slow.acquire("first")
    stop = threading.Event()
    stop.set()
    slow.acquire("second", stop)  # returns at once, without a turn
    assert slow.calls == 1 and slow._share.waiting() == 0


# -- the reader inside its budget -------------------------------------------------------------


def throttle() -> ClientError:
    return ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "FilterLogEvents"
    )


class ThrottlingLogs:
    """filter_log_events throttled `throttles` times, then one event."""

    def __init__(self, throttles: int) -> None:
        self.throttles = throttles
        self.calls = 0

    def filter_log_events(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.throttles:
            raise throttle()
        return {"events": [{"timestamp": 40, "ingestionTime": 50, "message": "m"}]}


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def throttled_reader(logs: ThrottlingLogs, shared: FairBudget, time: FakeTime) -> LogReader:
    clients = AwsClients(ec2=None, logs=logs, target=AwsTarget("us-east-1"))
    return LogReader(
        clients,
        "/g",
        60,
        settle_seconds=0,
        limiter=RateLimiter(1e6),
        budget=shared,
        sleep=time.sleep,
        clock=time.clock,
    )


def test_a_throttled_page_is_retried_in_the_budget_which_slows_down() -> None:
    logs, time = ThrottlingLogs(2), FakeTime()
    shared = FairBudget(1000.0, "test")
    reader = throttled_reader(logs, shared, time)
    chunks = list(reader.chunks(ReaderCursor(10), 100, 10))
    assert [e.message for c in chunks for e in c.events] == ["m"]
    assert logs.calls == 3 and reader.throttled == 2 and shared.throttles == 2
    assert shared.current_rate < 1000.0
    assert len(time.slept) == 2 and all(s > 0 for s in time.slept)


def test_sustained_throttling_is_reported_as_throttled() -> None:
    logs, time = ThrottlingLogs(10**6), FakeTime()
    reader = throttled_reader(logs, FairBudget(1000.0, "test"), time)
    with pytest.raises(AwsError) as caught:
        list(reader.chunks(ReaderCursor(10), 100, 10))
    assert caught.value.reason is Reason.AWS_THROTTLED and caught.value.retryable
    assert logs.calls >= THROTTLED_TRIES and time.now >= THROTTLED_SECONDS


def test_without_a_budget_a_throttle_fails_the_read_as_before() -> None:
    logs = ThrottlingLogs(1)
    clients = AwsClients(ec2=None, logs=logs, target=AwsTarget("us-east-1"))
    reader = LogReader(clients, "/g", 60, settle_seconds=0, limiter=RateLimiter(1e6))
    with pytest.raises(AwsError) as caught:
        list(reader.chunks(ReaderCursor(10), 100, 10))
    assert caught.value.reason is Reason.AWS_THROTTLED and logs.calls == 1


# -- the effective poll interval ----------------------------------------------------------------


def test_the_effective_interval_is_the_smoothed_time_between_polls() -> None:
    interval = EffectiveInterval()
    assert interval.polled(0.0) is None  # one poll: nothing to tell
    assert interval.polled(30.2) == 30
    assert interval.polled(60.3) is None  # still 30: nothing new to write
    assert interval.polled(150.3) == 60  # 30 + (90 - 30) / 2
    assert interval.polled(150.4) == 30  # (60 + 0.1) / 2
    assert interval.polled(150.5) == 15


# -- the hooks, through moto behind the throttling proxy --------------------------------------


@pytest.fixture
def throttling(moto_url: str) -> Iterator[tuple[AWSThrottleProxy, str]]:
    reset(moto_url)
    budget.reset()
    proxy = AWSThrottleProxy(moto_url, {"FilterLogEvents": (0.001, 1.0)})
    with ServerThread(proxy.app) as url:
        yield proxy, url
    budget.reset()
    budget.configure(budget.FILTER_LOG_EVENTS_PER_SECOND, budget.READ_FAMILIES["logs"][0])


def test_attached_clients_leave_a_throttle_to_the_reader_and_keep_reads_to_a_budget(
    throttling: tuple[AWSThrottleProxy, str],
) -> None:
    proxy, url = throttling
    clients = make_clients(AwsTarget(REGION, url, keys=KEYS))
    clients.logs.create_log_group(logGroupName="/g")
    clients.logs.filter_log_events(logGroupName="/g")  # the proxy's one token
    with pytest.raises(ClientError):
        clients.logs.filter_log_events(logGroupName="/g")
    assert proxy.stats()["FilterLogEvents"].calls == 5  # botocore retried it 3 times
    budget.attach(clients)
    budget.attach(clients)  # once per client
    with pytest.raises(ClientError):
        clients.logs.filter_log_events(logGroupName="/g")
    assert proxy.stats()["FilterLogEvents"].calls == 6  # no retry: the reader's to do
    clients.logs.describe_log_groups()
    clients.ec2.describe_vpcs()
    account = budget.account_of(clients)
    assert account == "123456789012"
    logs_reads = budget.read_bucket(account, REGION, "logs", "DescribeLogGroups")
    assert logs_reads is not None and logs_reads.calls == 1
    vpc_reads = budget.read_bucket(account, REGION, "ec2", "DescribeVpcs")
    assert vpc_reads is not None and vpc_reads.calls == 1
    # One bucket per API, as AWS counts them; writes take none.
    flow_log_reads = budget.read_bucket(account, REGION, "ec2", "DescribeFlowLogs")
    assert flow_log_reads is not None and flow_log_reads.calls == 0
    budget.account_of(clients)
    assert proxy.stats()["GetCallerIdentity"].calls == 1  # once per credentials
    proxy.set_quota("DescribeLogGroups", 0.001, 1.0)
    clients.logs.describe_log_groups()
    with pytest.raises(ClientError):  # throttled, retried by botocore, throttled again
        clients.logs.describe_log_groups()
    assert logs_reads.rate.rate < logs_reads.rate.ceiling  # each throttle seen lowers it


def test_the_account_comes_from_the_role_arn_without_a_call() -> None:
    target = AwsTarget(REGION, role_arn="arn:aws:iam::210987654321:role/flowexport")
    clients = AwsClients(ec2=None, logs=None, target=target)
    assert budget.account_of(clients) == "210987654321"


def test_readers_of_one_account_and_region_share_one_budget_and_zero_turns_it_off(
    throttling: tuple[AWSThrottleProxy, str],
) -> None:
    _, url = throttling
    east = make_clients(AwsTarget(REGION, url, keys=KEYS, requests_per_second=1.0))
    again = make_clients(AwsTarget(REGION, url, keys=KEYS, requests_per_second=3.0))
    west = make_clients(AwsTarget("us-west-2", url, keys=KEYS))
    shared = budget.filter_log_events_budget(east)
    assert shared is not None and budget.filter_log_events_budget(again) is shared
    assert budget.filter_log_events_budget(west) is not shared
    assert shared.current_rate == budget.FILTER_LOG_EVENTS_PER_SECOND
    budget.configure(filter_log_events_per_second=0)
    assert budget.filter_log_events_budget(east) is None
    with pytest.raises(ValueError):
        budget.configure(filter_log_events_per_second=-1)


# -- replicas share the quota ------------------------------------------------------------------


def test_a_rescaled_rate_keeps_its_place_between_floor_and_ceiling() -> None:
    rate = AdaptiveRate(10.0, now=0.0)
    rate.throttled(0.0)  # 5.0
    rate.rescale(5.0, now=0.0)  # half the share: half the rate
    assert (rate.ceiling, rate.rate, rate.floor) == (5.0, 2.5, 0.5)
    rate.rescale(10.0, now=0.0)
    assert rate.rate == 5.0
    rate.succeeded(DECREASE_HOLD_SECONDS + 1000.0)  # climbs to the new ceiling, no further
    assert rate.rate == 10.0
    with pytest.raises(ValueError):
        rate.rescale(0.0, now=0.0)


@pytest.fixture
def quotas() -> Iterator[None]:
    budget.reset()
    budget.configure(budget.FILTER_LOG_EVENTS_PER_SECOND, budget.READ_FAMILIES["logs"][0])
    yield
    budget.reset()
    budget.configure(budget.FILTER_LOG_EVENTS_PER_SECOND, budget.READ_FAMILIES["logs"][0])


def test_each_live_replica_keeps_its_share_of_every_budget(quotas: None) -> None:
    target = AwsTarget(REGION, role_arn="arn:aws:iam::210987654321:role/flowexport")
    clients = AwsClients(ec2=None, logs=None, target=target)
    before = budget.filter_log_events_budget(clients)
    reads = budget.read_bucket("210987654321", REGION, "ec2", "DescribeVpcs")
    assert before is not None and reads is not None
    budget.share_among(2)
    assert budget.sharing_replicas() == 2
    # Made before: rescaled in place (its queue and its readers kept); made after: the share.
    assert budget.filter_log_events_budget(clients) is before
    assert before.current_rate == budget.FILTER_LOG_EVENTS_PER_SECOND / 2
    assert reads.rate.ceiling == budget.READ_FAMILIES["ec2"][0] / 2
    assert reads._bucket.burst == budget.READ_FAMILIES["ec2"][1] / 2
    west = AwsClients(ec2=None, logs=None, target=AwsTarget("us-west-2", role_arn=target.role_arn))
    made_after = budget.filter_log_events_budget(west)
    assert made_after is not None
    assert made_after.current_rate == budget.FILTER_LOG_EVENTS_PER_SECOND / 2
    logs = budget.read_bucket("210987654321", REGION, "logs", "DescribeLogGroups")
    assert logs is not None and logs.rate.ceiling == budget.READ_FAMILIES["logs"][0] / 2
    # A replica gone: the survivor takes the whole quota back; never fewer than one.
    budget.share_among(0)
    assert budget.sharing_replicas() == 1
    assert before.current_rate == made_after.current_rate == budget.FILTER_LOG_EVENTS_PER_SECOND
    assert reads.rate.ceiling == budget.READ_FAMILIES["ec2"][0]


def test_a_throttled_budget_rescaled_stays_below_its_new_ceiling(quotas: None) -> None:
    shared = FairBudget(5.0, "test")
    shared.throttled()  # 2.5
    shared.rescale(2.5)
    assert shared.current_rate == 1.25
    shared.rescale(5.0)
    assert shared.current_rate == 2.5
