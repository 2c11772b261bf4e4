"""Kubernetes Events for condition transitions (one per change, so nothing floods)."""

from __future__ import annotations

import logging

import kopf

from flowexport.kube.board import Transition

log = logging.getLogger("flowexport.operator")


def announce(body: kopf.Body, transitions: list[Transition]) -> None:
    """Post an Event per transition: Normal when a condition turned True, Warning when False."""
    for change in transitions:
        state = {True: "True", False: "False", None: "Unknown"}[change.ok]
        log.info(
            "%s/%s: %s=%s (%s) %s",
            body.metadata.namespace,
            body.metadata.name,
            change.type,
            state,
            change.reason,
            change.message,
        )
        if change.type == "Ready" and change.ok:
            kopf.info(body, reason="Ready", message=change.message)
        elif change.ok is False:
            kopf.warn(body, reason=change.reason, message=f"{change.type}: {change.message}")
        elif change.ok:
            kopf.info(body, reason=change.reason, message=f"{change.type}: {change.message}")


def note(body: kopf.Body, reason: str, message: str) -> None:
    """A Normal Event for something done (a subscription created, a resource deleted)."""
    kopf.info(body, reason=reason, message=message)


def warn(body: kopf.Body, reason: str, message: str) -> None:
    """A Warning Event outside the conditions (e.g. clean-up failed)."""
    kopf.warn(body, reason=reason, message=message)
