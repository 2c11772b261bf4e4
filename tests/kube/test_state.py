"""When a FlowExport is reconciled next: resync, backoff, terminal delay, never."""

from __future__ import annotations

import time

from flowexport.kube.state import TERMINAL_RETRY_SECONDS, TRANSIENT_RETRY_SECONDS, Export
from flowexport.kube.status_writer import StatusWriter


async def _noop(namespace: str, name: str, status: dict[str, object]) -> None:
    return None


def export() -> Export:
    return Export(StatusWriter("ns", "fe", _noop), resync_seconds=120)


def test_a_new_export_is_due_at_once() -> None:
    assert export().due


def test_transient_failures_back_off_up_to_the_cap_and_success_resets() -> None:
    e = export()
    first, longest = TRANSIENT_RETRY_SECONDS
    delays = [e.schedule_retry(terminal=False) for _ in range(8)]
    assert delays[0] == first
    assert delays[1] == 2 * first
    assert max(delays) == longest == delays[-1]
    assert not e.due
    e.schedule_resync()
    assert e.schedule_retry(terminal=False) == first


def test_terminal_failures_wait_long_and_resync_follows_its_period() -> None:
    e = export()
    assert e.schedule_retry(terminal=True) == TERMINAL_RETRY_SECONDS
    e.schedule_resync()
    assert 100 < e.next_reconcile - time.monotonic() <= 120
    e.request_reconcile()
    assert e.due
    e.schedule_never()
    assert not e.due
