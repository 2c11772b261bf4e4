"""Where a FlowExport without a cursor in the operator's memory starts reading: `startFrom`
when it is new; when the cursor it had was lost from its status, where its user says.

The cursor lives in status. Once one has been saved there, the operator marks the FlowExport
with the annotation `flowexport.io/cursor-since` (when it first saved one), which survives what
removes a status: `kubectl patch --subresource=status -p '{"status":null}'`, a restore from a
backup taken without status. A FlowExport with the mark and no `status.cursor` lost it, and
`startFrom` again would re-upload everything (`earliest`) or skip what came meanwhile (`now`):
the operator guesses neither. Ingesting and Ready turn False with reason `CursorLost` (a
Warning Event) and nothing is read until the user annotates `flowexport.io/resume-from` with an
RFC 3339 time (records ingested into the log group after it are read), `now` or `earliest`;
the operator resumes there, says so in a `CursorRestored` Event and removes the annotation.

While the operator runs, a wiped status loses nothing: the status writer holds the cursor and
writes the whole status back (see `status_writer`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from flowexport.api.conditions import ConditionType, ConditionUpdate
from flowexport.api.models import FlowExportSpec, IngestionSpec
from flowexport.aws.reader import initial_cursor
from flowexport.errors import Reason
from flowexport.kube.events import announce
from flowexport.kube.state import Export, Operator
from flowexport.pipeline import Progress

log = logging.getLogger("flowexport.operator")

#: Set by the operator once it saved a cursor in status: the FlowExport has one to lose.
CURSOR_MARK = "flowexport.io/cursor-since"
#: Set by the user: where to resume when the cursor is gone (consumed by the operator).
RESUME_FROM = "flowexport.io/resume-from"

LOST = (
    "status.cursor is gone (the status was wiped, or restored without it), so the operator "
    f"does not know what was read: set the annotation {RESUME_FROM} to an RFC 3339 time "
    "(records ingested after it are read), now (what arrived since the cursor was lost is "
    "skipped) or earliest (the log group is read again: flows are uploaded again)"
)


def annotations_of(body: Any) -> Mapping[str, str]:
    """The FlowExport's annotations."""
    found = (body.get("metadata") or {}).get("annotations")
    return found if isinstance(found, Mapping) else {}


def _choice(value: str) -> str | None:
    """The annotation's value if it is one `startFrom` takes, else None."""
    try:
        IngestionSpec.model_validate({"startFrom": value})
    except ValidationError:
        return None
    return value


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def begin(op: Operator, export: Export, body: Any, spec: FlowExportSpec) -> None:
    """Give the board a cursor if it has none: `startFrom` for a new FlowExport, the user's
    `resume-from` when there is one; a lost cursor without it is reported (`CursorLost`) and
    the board keeps none, so the worker waits."""
    board = export.board
    if board.progress is not None:
        return
    given = annotations_of(body)
    lost = CURSOR_MARK in given
    value = given.get(RESUME_FROM)
    now_ms = int(time.time() * 1000)
    if value is not None:
        choice = _choice(value)
        if choice is not None:
            cursor = initial_cursor(choice, now_ms)
            board.record(Progress(cursor))
            export.consumed = value
            update = ConditionUpdate(
                ConditionType.INGESTING, None, Reason.PENDING, f"resuming from {value}"
            )
            announce(op.events, body, board.apply([update]))
            op.events.post(
                body,
                "Normal",
                "CursorRestored",
                f"{RESUME_FROM}: {value}: reading records ingested after "
                f"{_rfc3339(cursor.ingested_through)}",
            )
            return
        if export.refused != value:
            export.refused = value
            op.events.post(
                body,
                "Warning",
                "ResumeFromInvalid",
                f"{RESUME_FROM}: {value!r} is not an RFC 3339 time with a zone, now or earliest",
            )
    if not lost:
        board.record(Progress(initial_cursor(spec.ingestion.start_from, now_ms)))
        return
    message = LOST
    if value is not None:
        message = f"{RESUME_FROM} {value!r} is not an RFC 3339 time, now or earliest; {LOST}"
    update = ConditionUpdate(ConditionType.INGESTING, False, Reason.CURSOR_LOST, message)
    announce(op.events, body, board.apply([update]))


async def mark(
    op: Operator, export: Export, body: Any, patch: dict[str, Any] | None = None
) -> None:
    """Once the cursor is saved in status: the mark, if missing, and the `resume-from` the
    operator applied (or that came while a cursor was there: ignored, said) removed. Through
    kopf's `patch` of the handler when given (applied with kopf's own patch, no request of its
    own), else with a request."""
    board = export.board
    if board.progress is None:
        return
    given = annotations_of(body)
    changes: dict[str, str | None] = {}
    if CURSOR_MARK not in given:
        changes[CURSOR_MARK] = _rfc3339(int(time.time() * 1000))
    value = given.get(RESUME_FROM)
    if value is None:
        export.consumed = None
    else:
        if value != export.consumed:
            export.consumed = value
            op.events.post(
                body,
                "Warning",
                "ResumeFromIgnored",
                f"{RESUME_FROM}: {value!r} ignored: status.cursor is intact (it applies only "
                "when the cursor is lost); removed",
            )
        changes[RESUME_FROM] = None
    if not changes:
        return
    if patch is not None:
        patch.setdefault("metadata", {}).setdefault("annotations", {}).update(changes)
        return
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    try:
        await op.api.annotate(namespace, name, changes)
    except Exception as exc:  # tried again at the next reconcile
        said = exc.status if isinstance(exc, ApiException) else type(exc).__name__
        log.warning("%s/%s: cannot annotate the FlowExport (%s)", namespace, name, said)
