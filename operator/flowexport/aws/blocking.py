"""Blocking calls (boto3, STS) run off the event loop, in daemon threads.

`asyncio.to_thread` would do it too, but its threads are joined when the process exits: a
call hanging on an unreachable endpoint (connect timeouts times retries: minutes) would then
hold up a SIGTERM. A daemon thread is abandoned instead, and whoever awaits the call can stop
waiting at once (the result, if it ever comes, is dropped).

The daemon threads are kept and reused (`_Workers`): a call goes to an idle one, and a new
one is started only when none is idle, so no call ever queues behind another (one hanging
holds only its own thread). Starting a thread blocks the event loop until the new thread
runs, which, with hundreds of FlowExports' threads holding the GIL in turn, took the loop
(and its liveness answers) a share of every call; an idle thread ends after
`IDLE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


#: Seconds an idle worker thread waits for another call before it ends.
IDLE_SECONDS = 60.0


class _Workers:
    """Daemon threads running blocking calls, reused while calls keep coming.

    `idle` counts the threads waiting for a call and not yet promised one: a call takes one
    of them (and is queued for it) or starts a thread of its own, so there is never a queued
    call without a thread to take it. An idle thread that times out ends only if it is not
    promised (`idle` > 0); otherwise it waits for the call promised."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._calls: queue.SimpleQueue[Callable[[], Callable[[], None]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.idle = 0
        self.started = 0

    def submit(self, call: Callable[[], Callable[[], None]]) -> None:
        """Run `call` in an idle thread, or in a new one when none is idle; what it returns
        (handing its result over) is called once the thread counts as idle again, so the
        caller's next call finds it idle."""
        with self._lock:
            reuse = self.idle > 0
            if reuse:
                self.idle -= 1
            else:
                self.started += 1
            self._calls.put(call)
        if not reuse:
            threading.Thread(target=self._run, name="off-loop", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                call = self._calls.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self.idle > 0:  # nobody was promised this thread: it ends
                        self.idle -= 1
                        return
                continue  # a call was promised to an idle thread: this one takes it
            hand_over = call()
            with self._lock:
                self.idle += 1
            hand_over()


_workers = _Workers()


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in a daemon thread; cancelling the await abandons the call."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # the caller stopped waiting
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def call() -> Callable[[], None]:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            error: BaseException | None = exc
            result = None
        else:
            error = None

        def hand_over() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        return hand_over

    _workers.submit(call)
    return await future


async def until_stopped(awaitable: Awaitable[T], stop: asyncio.Event | None) -> T | None:
    """The awaitable's result, or None as soon as `stop` is set (the awaitable is cancelled)."""
    task = asyncio.ensure_future(awaitable)
    if stop is None:
        return await task
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return None
