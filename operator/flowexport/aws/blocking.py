"""Blocking calls (boto3, STS) run off the event loop, in daemon threads.

`asyncio.to_thread` would do it too, but its threads are joined when the process exits: a
call hanging on an unreachable endpoint (connect timeouts times retries: minutes) would then
hold up a SIGTERM. A daemon thread is abandoned instead, and whoever awaits the call can stop
waiting at once (the result, if it ever comes, is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


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

    def call() -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            error: BaseException | None = exc
            result = None
        else:
            error = None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(
        target=call, name=f"off-loop {getattr(fn, '__name__', 'call')}", daemon=True
    ).start()
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
