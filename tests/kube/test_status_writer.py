"""The status board: one document, transitions for Events, writes throttled and deduplicated."""

from __future__ import annotations

from typing import Any

from flowexport.api.conditions import ConditionType, ConditionUpdate
from flowexport.aws.reader import ReaderCursor
from flowexport.errors import Reason
from flowexport.kube.status_writer import StatusWriter, merge_patch
from flowexport.pipeline import Progress
from tests.kube.fakes import FakeKube


class Recorder:
    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []

    async def __call__(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.writes.append(status)


def board(min_interval: float = 0.0) -> tuple[StatusWriter, Recorder]:
    recorder = Recorder()
    return StatusWriter("ns", "fe", recorder, min_interval=min_interval), recorder


def update(type_: str, ok: bool | None, reason: str, message: str) -> list[ConditionUpdate]:
    return [ConditionUpdate(ConditionType(type_), ok, Reason(reason), message)]


def test_transitions_name_what_changed_and_ready_follows_the_stages() -> None:
    b, _ = board()
    changes = b.apply(update("SubscriptionReady", False, "VPCNotFound", "no such VPC"), 1)
    assert {(c.type, c.ok, c.reason) for c in changes} == {
        ("SubscriptionReady", False, "VPCNotFound"),
        ("Ready", False, "VPCNotFound"),
        ("Stalled", True, "VPCNotFound"),  # terminal: kstatus reads it as Failed
    }
    assert b.apply(update("SubscriptionReady", False, "VPCNotFound", "no such VPC"), 1) == []
    for stage in ("SubscriptionReady", "PCEReachable", "WorkloadsSynced", "Ingesting"):
        changes = b.apply(update(stage, True, "Ready", "fine"), 1)
    assert ("Ready", True) in {(c.type, c.ok) for c in changes}


async def test_identical_documents_are_written_once() -> None:
    b, recorder = board()
    b.apply(update("Ingesting", True, "Ingesting", "caught up"), 1)
    await b.write()
    b.apply(update("Ingesting", True, "Ingesting", "caught up"), 1)
    await b.write()
    await b.write(force=True)
    assert len(recorder.writes) == 1


async def test_throttled_changes_stay_pending_and_force_writes_them() -> None:
    b, recorder = board(min_interval=3600)
    b.record(Progress(ReaderCursor(ingested_through=1)))
    await b.write()
    b.record(Progress(ReaderCursor(ingested_through=2), records_read=5))
    await b.write()  # throttled
    assert len(recorder.writes) == 1
    await b.write(force=True)
    assert recorder.writes[-1]["cursor"]["ingestedThrough"] == 2
    assert recorder.writes[-1]["counts"]["recordsRead"] == 5


def test_load_restores_conditions_ids_and_cursor_after_a_restart() -> None:
    stored = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Ready",
                "message": "ok",
                "lastTransitionTime": "2026-11-23T08:00:00Z",
            }
        ],
        "flowLogId": "fl-1",
        "cursor": {"ingestedThrough": 42},
        "counts": {"recordsRead": 7, "flowsUploaded": 3},
    }
    b, _ = board()
    b.load(stored)
    assert b.progress is not None
    assert b.progress.cursor.ingested_through == 42
    assert b.progress.flows_uploaded == 3
    document = b.document()
    assert document["flowLogId"] == "fl-1"
    assert document["conditions"][0]["type"] == "Ready"


def test_a_damaged_cursor_is_ignored_not_fatal() -> None:
    b, _ = board()
    b.load({"cursor": {"ingestedThrough": "not a number"}})
    assert b.progress is None


def test_merge_patch_nulls_what_the_document_no_longer_has() -> None:
    stored = {"cursor": {"ingestedThrough": 1, "sliceEnd": 9, "pageToken": "t@9"}, "lag": 3}
    wanted = {"cursor": {"ingestedThrough": 9}, "counts": {"recordsRead": 4}}
    assert merge_patch(stored, wanted) == {
        "lag": None,
        "cursor": {"ingestedThrough": 9, "sliceEnd": None, "pageToken": None},
        "counts": {"recordsRead": 4},
    }
    assert merge_patch(wanted, wanted) == {}


async def test_a_restarted_writer_clears_stale_paging_fields_from_the_stored_status() -> None:
    kube = FakeKube()
    stale = {"ingestedThrough": 5, "sliceEnd": 9, "pageToken": "t@9999", "pageOffset": 1700}
    await kube.patch_status("ns", "fe", {"cursor": stale})
    b = StatusWriter("ns", "fe", kube.patch_status, min_interval=0)
    b.load(kube.status("ns", "fe"))
    b.record(Progress(ReaderCursor(ingested_through=12)))
    await b.write(force=True)
    assert kube.status("ns", "fe")["cursor"] == {"ingestedThrough": 12}
    assert Progress.from_state(kube.status("ns", "fe")).cursor == ReaderCursor(12)


async def test_a_cursor_moving_over_an_idle_log_group_is_written_once_per_idle_interval() -> None:
    recorder = Recorder()
    b = StatusWriter("ns", "fe", recorder, min_interval=0.0, idle_interval=3600)
    b.record(Progress(ReaderCursor(ingested_through=1)))
    await b.write()
    b.record(Progress(ReaderCursor(ingested_through=2)))  # a poll that found nothing
    await b.write()
    assert len(recorder.writes) == 1, "an idle poll patched the status"
    b.record(Progress(ReaderCursor(ingested_through=3), records_read=4))  # it found records
    await b.write()
    assert len(recorder.writes) == 2
    assert recorder.writes[1]["cursor"]["ingestedThrough"] == 3
    b.record(Progress(ReaderCursor(ingested_through=4), records_read=4))
    await b.write(force=True)  # a stop or an upload: written whatever moved
    assert [w["cursor"]["ingestedThrough"] for w in recorder.writes] == [1, 3, 4]
