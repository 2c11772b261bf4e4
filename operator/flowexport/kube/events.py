"""Kubernetes Events for condition transitions (one per change, so nothing floods).

`EventSink` is what the operator's parts post to: `KopfEvents` through kopf's event poster
(reporting component `flowexport-operator`, set in `handlers.configure`), the tests' recorder in
memory.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Literal, Protocol

import kopf

from flowexport.api.conditions import ABNORMAL_TRUE, ConditionType, Transition
from flowexport.errors import Reason

log = logging.getLogger("flowexport.operator")

EventType = Literal["Normal", "Warning"]

#: Who reports the Events (`kubectl describe`'s "From", an Event's `reportingComponent`).
REPORTING_COMPONENT = "flowexport-operator"


def configure_posting(settings: kopf.OperatorSettings) -> None:
    """Name the operator and its pod as the Events' reporter, not kopf's defaults (kopf/dev)."""
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = socket.gethostname()  # the pod's name in a cluster
    settings.posting.event_name_prefix = f"{REPORTING_COMPONENT}-"


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
    """A log line per transition, and an Event: Normal when a condition turned True, Warning
    when it turned False. `Reconciling` and `Stalled` only log: they restate `Ready`, whose
    Event (and the stage's) says it already."""
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
        if change.type in ABNORMAL_TRUE:
            continue
        if change.type == ConditionType.READY and change.ok:
            events.post(body, "Normal", Reason.READY, change.message)
        elif change.ok is False:
            events.post(body, "Warning", change.reason, f"{change.type}: {change.message}")
        elif change.ok:
            events.post(body, "Normal", change.reason, f"{change.type}: {change.message}")
