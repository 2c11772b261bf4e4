"""Kubernetes Events for condition transitions (one per change, so nothing floods).

`EventSink` is what the operator's parts post to: `KopfEvents` through kopf's event poster,
the tests' recorder in memory.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

import kopf

from flowexport.api.conditions import ConditionType, Reason
from flowexport.status import Transition

log = logging.getLogger("flowexport.operator")

EventType = Literal["Normal", "Warning"]


class EventSink(Protocol):
    """Posts an Event on a FlowExport."""

    def post(self, body: Any, type_: EventType, reason: str, message: str) -> None:
        """Post one Event on the object `body`."""
        ...


class KopfEvents:
    """Events through kopf's poster (batched, off the handler's path)."""

    def post(self, body: Any, type_: EventType, reason: str, message: str) -> None:
        """Post one Event on the object `body`."""
        if type_ == "Warning":
            kopf.warn(body, reason=reason, message=message)
        else:
            kopf.info(body, reason=reason, message=message)


def announce(events: EventSink, body: Any, transitions: list[Transition]) -> None:
    """An Event and a log line per transition: Normal when a condition turned True, Warning
    when it turned False."""
    metadata = body["metadata"]
    for change in transitions:
        state = {True: "True", False: "False", None: "Unknown"}[change.ok]
        log.info(
            "%s/%s: %s=%s (%s) %s",
            metadata.get("namespace"),
            metadata.get("name"),
            change.type,
            state,
            change.reason,
            change.message,
        )
        if change.type == ConditionType.READY and change.ok:
            events.post(body, "Normal", Reason.READY, change.message)
        elif change.ok is False:
            events.post(body, "Warning", change.reason, f"{change.type}: {change.message}")
        elif change.ok:
            events.post(body, "Normal", change.reason, f"{change.type}: {change.message}")
