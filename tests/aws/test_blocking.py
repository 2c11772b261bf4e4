"""Blocking AWS work off the event loop, and stops that do not wait for it: a hanging read or
upload is abandoned when asked to stop, and nothing is checkpointed past what was accepted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from flowexport import pipeline as pipeline_module
from flowexport.aws import blocking
from flowexport.aws.blocking import off_loop, until_stopped
from flowexport.aws.reader import LogReader, ReaderCursor
from flowexport.aws.session import AwsClients, AwsTarget, RateLimiter
from flowexport.core.flows import Flow
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.core.normalise import FlowFilter
from flowexport.pce.client import BatchResult, UploadSummary
from flowexport.pipeline import Pipeline, Progress
from tests.flowlines import line


async def test_off_loop_runs_in_a_daemon_thread_and_hands_back_results_and_errors() -> None:
    def where() -> tuple[bool, bool]:
        thread = threading.current_thread()
        return thread is threading.main_thread(), thread.daemon

    assert await off_loop(where) == (False, True)

    def fail() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await off_loop(fail)


async def test_a_hanging_call_is_abandoned_when_asked_to_stop() -> None:
    release = threading.Event()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    assert await until_stopped(off_loop(release.wait), stop) is None
    release.set()
    assert await until_stopped(off_loop(lambda: 7), None) == 7


class HangingLogs:
    """One page of events, then a read that hangs until released."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        self.release = threading.Event()
        self.calls = 0

    def filter_log_events(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if kwargs.get("nextToken"):
            self.release.wait(30)
            return {"events": []}
        events = [{"timestamp": 50, "ingestionTime": 50, "message": m} for m in self.messages]
        return {"events": events, "nextToken": "more"}


class HangingPCE:
    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.accepted: list[Flow] = []

    async def upload_all(self, flows: list[Flow], batch_size: int) -> UploadSummary:
        if self.hang:
            await asyncio.sleep(3600)
        self.accepted.extend(flows)
        summary = UploadSummary()
        summary.add(BatchResult(len(flows), len(flows), 0, []))
        return summary


def build(logs: HangingLogs, pce: HangingPCE, saved: list[Progress]) -> Pipeline:
    clients = AwsClients(ec2=None, logs=logs, target=AwsTarget("us-east-1"))
    reader = LogReader(clients, "/g", 60, settle_seconds=0, limiter=RateLimiter(1e6))

    async def checkpoint(progress: Progress) -> None:
        saved.append(progress)

    return Pipeline(
        reader,
        PIPELINE_FORMAT,
        FlowFilter(),
        pce,  # type: ignore[arg-type]
        Progress(ReaderCursor(10)),
        checkpoint,
        batch_size=100,
        clock=lambda: 0.1,
    )


async def test_a_stop_during_a_hanging_read_uploads_what_was_read_and_returns() -> None:
    logs = HangingLogs([line(PIPELINE_FORMAT, srcaddr=f"10.0.0.{i}") for i in range(1, 4)])
    pce, saved = HangingPCE(hang=False), []
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    progress = await build(logs, pce, saved).run_once(stop)
    logs.release.set()
    assert len(pce.accepted) == 3, "what was read before the stop is uploaded"
    assert saved and saved[-1].cursor.page_offset == 3  # resumes after those three
    assert progress.cursor == saved[-1].cursor


async def test_a_stop_after_records_with_no_new_flow_checkpoints_what_was_read() -> None:
    # Every record read is skipped (NODATA): nothing to upload, but the records were read and
    # counted, so the stop must checkpoint past them (else the counts say more than the cursor).
    logs = HangingLogs([line(PIPELINE_FORMAT, log_status="NODATA") for _ in range(3)])
    pce, saved = HangingPCE(hang=False), []
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    progress = await build(logs, pce, saved).run_once(stop)
    logs.release.set()
    assert pce.accepted == []
    assert saved and saved[-1].cursor.page_offset == 3
    assert progress.cursor == saved[-1].cursor and progress.records_read == 3


async def test_an_upload_hanging_past_the_grace_is_abandoned_and_not_checkpointed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline_module, "STOP_GRACE_SECONDS", 0.2)
    logs = HangingLogs([line(PIPELINE_FORMAT, srcaddr="10.0.0.1")])
    pce, saved = HangingPCE(hang=True), []
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    progress = await build(logs, pce, saved).run_once(stop)
    logs.release.set()
    assert saved == [] and pce.accepted == []
    assert progress.cursor == ReaderCursor(10), "rolled back to the last checkpoint"


async def test_threads_are_reused_and_a_hanging_call_holds_only_its_own() -> None:
    """Calls one after the other share one daemon thread (no thread start on the event loop
    per call); while one hangs, the next runs in another thread, not behind it."""
    workers = blocking._Workers()
    loop = asyncio.get_running_loop()

    async def run(fn: Any) -> Any:
        future = loop.create_future()

        def call() -> Callable[[], None]:
            result = fn()
            return lambda: loop.call_soon_threadsafe(future.set_result, result)

        workers.submit(call)
        return await future

    names = [await run(lambda: threading.current_thread().ident) for _ in range(5)]
    assert len(set(names)) == 1 and workers.started == 1
    release = threading.Event()
    hanging = asyncio.ensure_future(run(lambda: release.wait(30)))
    assert await asyncio.wait_for(run(lambda: 7), 30) == 7, "queued behind the hanging call"
    assert workers.started == 2
    release.set()
    assert await asyncio.wait_for(hanging, 30) is True


def test_an_idle_thread_ends_unless_a_call_was_promised_to_it() -> None:
    workers = blocking._Workers(idle_seconds=0.01)
    done = threading.Event()
    workers.submit(lambda: done.set)
    assert done.wait(30)
    for _ in range(3000):  # bounded wait for the idle thread to time out and end
        if workers.idle == 0:
            break
        threading.Event().wait(0.01)
    assert workers.idle == 0
    again = threading.Event()
    workers.submit(lambda: again.set)  # no idle thread: a new one
    assert again.wait(30) and workers.started == 2
