"""Run the operator: the kopf event loop with this package's handlers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import kopf

from flowexport.kube import handlers  # noqa: F401 - registers the handlers with kopf
from flowexport.kube.api import KubeApi
from flowexport.kube.events import KopfEvents
from flowexport.kube.state import RESYNC_SECONDS, Operator

#: Characters that make a kopf namespace argument a pattern rather than a name.
PATTERN_CHARACTERS = frozenset("!*?,")


def has_patterns(namespaces: Sequence[str]) -> bool:
    """Whether any namespace argument is a pattern (kopf must then watch namespaces)."""
    return any(PATTERN_CHARACTERS & set(ns) for ns in namespaces)


def run(
    namespaces: Sequence[str] = (),
    clusterwide: bool = False,
    liveness: str | None = None,
    settle_seconds: float = 15.0,
    resync_seconds: float = RESYNC_SECONDS,
    stop_flag: threading.Event | asyncio.Event | None = None,
    ready_flag: threading.Event | asyncio.Event | None = None,
    allowed_pce_hosts: frozenset[str] = frozenset(),
) -> None:
    """Run until signalled (or `stop_flag` is set): standalone, no peering, one replica."""
    operator = Operator(
        KubeApi(),
        KopfEvents(),
        settle_seconds,
        resync_seconds,
        scan_cluster=has_patterns(namespaces),
        allowed_pce_hosts=allowed_pce_hosts,
    )
    kopf.run(
        standalone=True,
        namespaces=list(namespaces),
        clusterwide=clusterwide,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=kopf.Memo(operator=operator),
    )
