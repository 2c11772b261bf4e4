"""FlowExports of one account sharing AWS's FilterLogEvents quota (issue 27 item 5): the real
operator, moto behind the throttling proxy holding FilterLogEvents to 1 request/s per account
and region, and the operator's shared budget set higher (2/s, through its environment), so AWS
does throttle it: the budget slows down, the reader retries in it, and nothing shows outside
but a longer effective poll interval."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from flowexport.aws.budget import ENV_FILTER_LOG_EVENTS
from flowexport.sim.awsthrottle import AWSThrottleProxy
from flowexport.sim.serve import ServerThread
from tests.e2e.conftest import Stack, eventually
from tests.flowlines import connection_address, put_connections

NAMES = [f"vpc-{i}" for i in range(5)]
PER_GROUP = 6


@pytest.fixture
def budget_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's FilterLogEvents budget, from its environment (set before it starts)."""
    monkeypatch.setenv(ENV_FILTER_LOG_EVENTS, "2")


@pytest.fixture
def throttled(budget_of_two: None, stack: Stack) -> Iterator[tuple[Stack, AWSThrottleProxy, str]]:
    proxy = AWSThrottleProxy(stack.loop.moto_url, {"FilterLogEvents": (1.0, 1.0)})
    with ServerThread(proxy.app) as url:
        yield stack, proxy, url


class ReadyWatch(threading.Thread):
    """Every FlowExport's Ready, read from the API server's store every 0.1 s: which ever went
    from True to anything else."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.done = stack, threading.Event()
        self.ready: dict[str, bool] = {}
        self.fell_back: set[str] = set()

    def run(self) -> None:
        while not self.done.is_set():
            for obj in self.stack.sim.stored("flowexport.io", "flowexports"):
                name = obj["metadata"]["name"]
                conditions = (obj.get("status") or {}).get("conditions", [])
                ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
                if self.ready.get(name) and not ready:
                    self.fell_back.add(name)
                self.ready[name] = ready
            self.done.wait(0.1)


def test_flowexports_share_a_throttled_quota_losing_nothing_and_staying_ready(
    throttled: tuple[Stack, AWSThrottleProxy, str],
) -> None:
    stack, proxy, url = throttled
    watch = ReadyWatch(stack)
    watch.start()
    try:
        for name in NAMES:
            stack.apply(stack.flowexport(name, **{"aws.endpointUrl": url}))
        eventually(lambda: all(watch.ready.get(n) for n in NAMES), timeout=120, what="all Ready")
        logs = stack.aws("logs")
        for i, name in enumerate(NAMES):
            put_connections(logs, f"/flowexport/{name}", PER_GROUP, start=i * PER_GROUP)
        expected = {connection_address(i) for i in range(len(NAMES) * PER_GROUP)}
        eventually(
            lambda: {f[0] for f in stack.received()} >= expected,
            timeout=180,
            what="every flow of every log group at the PCE",
        )

        def effective() -> dict[str, int | None]:
            return {
                n: (stack.get(n).get("status", {}).get("source") or {}).get(
                    "effectivePollIntervalSeconds"
                )
                for n in NAMES
            }

        # Asked to poll every second, five log groups sharing at most 1-2 reads a second are
        # each read every few seconds, and their status says so.
        eventually(
            lambda: all((s or 0) >= 2 for s in effective().values()),
            timeout=120,
            what="the effective poll interval in every status",
        )
    finally:
        watch.done.set()
        watch.join(10)
    stats = proxy.stats()["FilterLogEvents"]
    print(f"FilterLogEvents: {stats.calls} calls, {stats.throttled} throttled")
    assert stats.throttled > 0, "the proxy never throttled: the test proves nothing"
    assert watch.fell_back == set()
    assert {f[0] for f in stack.received()} == expected
    for name in NAMES:
        assert stack.condition(name, "Ready") == ("True", "Ready")
