"""Run the operator: the kopf event loop with this package's handlers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import kopf

from flowexport.kube import handlers
from flowexport.kube.state import RESYNC_SECONDS


def run(
    namespaces: Sequence[str] = (),
    clusterwide: bool = False,
    liveness: str | None = None,
    settle_seconds: float = 15.0,
    resync_seconds: float = RESYNC_SECONDS,
    stop_flag: threading.Event | asyncio.Event | None = None,
    ready_flag: threading.Event | asyncio.Event | None = None,
) -> None:
    """Run until signalled (or `stop_flag` is set): standalone, no peering, one replica."""
    handlers.reset(settle_seconds, resync_seconds)
    kopf.run(
        standalone=True,
        namespaces=list(namespaces),
        clusterwide=clusterwide,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
