"""Run an aiohttp application on loopback: in a background thread (tests) or until a signal."""

from __future__ import annotations

import asyncio
import signal
import ssl
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web


async def start_site(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[web.AppRunner, str]:
    """Start serving `app`; returns the runner and the base URL (the real port if 0 was asked)."""
    # A stand-in needs no long grace: open watches and keep-alives are cut after a second.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    server = site._server  # aiohttp does not expose the bound port any other way
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise RuntimeError(f"server on {host}:{port} did not open a socket")
    sockname = sockets[0].getsockname()
    scheme = "https" if ssl_context else "http"
    shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    return runner, f"{scheme}://{shown}:{sockname[1]}"


class ServerThread:
    """An aiohttp app served from its own event loop in a daemon thread.

    `with ServerThread(app) as url:` serves until the block ends; startup and shutdown are
    bounded by `timeout` seconds so a broken server cannot hang a test.
    """

    def __init__(
        self,
        app: web.Application,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.url = ""
        self._host, self._port, self._ssl = host, port, ssl_context
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop (to touch its state safely) and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(self._timeout)

    def start(self) -> str:
        """Start the thread and the server; returns the base URL."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            start_site(self.app, self._host, self._port, self._ssl), self._loop
        )
        self._runner, self.url = future.result(self._timeout)
        return self.url

    def stop(self) -> None:
        """Stop the server and its loop."""
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(self._timeout)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve_until_signalled(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    on_ready: Callable[[str], None],
) -> None:
    """Serve until SIGINT or SIGTERM; `on_ready(url)` is called once listening."""
    runner, url = await start_site(app, host, port, ssl_context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    on_ready(url)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
