"""The background sync loop: backoff, terminal failures before and after the first sync, and
a failing status write that must not end the syncs."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from flowexport.api.conditions import ConditionUpdate
from flowexport.errors import FlowExportError, Reason
from flowexport.workloads import sync as sync_module
from flowexport.workloads.sync import SyncResult, keep_synced


class Syncer:
    """Answers each sync() with the next outcome (an exception or a result)."""

    def __init__(self, *outcomes: Any) -> None:
        self.spec = SimpleNamespace(refresh_seconds=0.05)
        self.outcomes = list(outcomes)
        self.calls = 0

    async def sync(self) -> SyncResult:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else SyncResult(managed=1)
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, SyncResult)
        return outcome


def retryable() -> FlowExportError:
    return FlowExportError("PCE down", Reason.PCE_UNAVAILABLE, retryable=True)


def terminal() -> FlowExportError:
    return FlowExportError("forbidden", Reason.PCE_FORBIDDEN, retryable=False)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_module, "RETRY_SECONDS", 0.01)


async def run(syncer: Syncer, report: Any, until: int) -> asyncio.Event:
    stop, first = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(keep_synced(syncer, stop, first, report))  # type: ignore[arg-type]
    for _ in range(400):
        if syncer.calls >= until or task.done():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    return first


async def test_retryable_failures_back_off_and_the_first_success_releases_uploads() -> None:
    reports: list[ConditionUpdate] = []

    async def report(update: ConditionUpdate) -> None:
        reports.append(update)

    first = await run(Syncer(retryable(), retryable(), SyncResult(managed=2)), report, 3)
    assert first.is_set()
    assert [(r.ok, r.reason) for r in reports[:3]] == [
        (False, Reason.PCE_UNAVAILABLE),
        (False, Reason.PCE_UNAVAILABLE),
        (True, Reason.SYNCED),
    ]
    assert reports[0].message.startswith("retrying: ")


async def test_a_terminal_failure_before_the_first_sync_is_raised() -> None:
    async def report(update: ConditionUpdate) -> None:
        pass

    stop, first = asyncio.Event(), asyncio.Event()
    with pytest.raises(FlowExportError, match="forbidden"):
        await keep_synced(Syncer(terminal()), stop, first, report)  # type: ignore[arg-type]
    assert not first.is_set()


async def test_after_the_first_sync_failures_and_a_failing_report_do_not_end_the_loop() -> None:
    seen: list[ConditionUpdate] = []

    async def report(update: ConditionUpdate) -> None:
        seen.append(update)
        if len(seen) == 1:
            raise RuntimeError("the API server refused the status patch")

    syncer = Syncer(SyncResult(managed=1), terminal(), SyncResult(managed=1))
    first = await run(syncer, report, 4)
    assert first.is_set() and syncer.calls >= 4
    assert [r.reason for r in seen[:3]] == [Reason.SYNCED, Reason.PCE_FORBIDDEN, Reason.SYNCED]


async def test_labels_left_for_later_bring_the_next_sync_sooner() -> None:
    async def report(update: ConditionUpdate) -> None:
        pass

    syncer = Syncer(SyncResult(managed=1, pending_labels=5), SyncResult(managed=1))
    syncer.spec.refresh_seconds = 30  # only a sooner sync can make the second call in time
    await run(syncer, report, 2)
    assert syncer.calls >= 2
