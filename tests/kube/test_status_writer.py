"""The status board: one document, transitions for Events, writes throttled and deduplicated."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from flowexport.api.conditions import ConditionType, ConditionUpdate
from flowexport.aws.reader import ReaderCursor
from flowexport.errors import Reason
from flowexport.kube import status_writer
from flowexport.kube.status_writer import (
    StatusWriter,
    apply_merge_patch,
    merge_patch,
    merge_patch_over,
)
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


# -- the stored status, not the last write (issue 23, items 3 and 10) --------------------------


def test_a_patch_over_several_possible_stored_statuses_turns_each_into_the_wanted_one() -> None:
    wanted = {"cursor": {"ingestedThrough": 9}, "counts": {"recordsRead": 4}, "id": "fl-1"}
    mine = {"cursor": {"ingestedThrough": 9}, "counts": {"recordsRead": 4}, "id": "fl-1"}
    wiped: dict[str, Any] = {}
    stale = {"cursor": {"ingestedThrough": 1, "pageToken": "t"}, "lag": 3, "id": "fl-1"}
    patch = merge_patch_over([mine, wiped, stale], wanted)
    assert patch == {
        "lag": None,
        "cursor": {"ingestedThrough": 9, "pageToken": None},
        "counts": {"recordsRead": 4},
        "id": "fl-1",  # the wiped status lacks it
    }
    for stored in (mine, wiped, stale):
        assert apply_merge_patch(stored, patch) == wanted
    assert merge_patch_over([mine], wanted) == {}
    # An empty object is created where it is missing, and left where it is.
    assert merge_patch_over([{}], {"counts": {"skipped": {}}}) == {"counts": {"skipped": {}}}
    assert merge_patch_over([{"counts": {"skipped": {}}}], {"counts": {"skipped": {}}}) == {}


class Api:
    """A status subresource with resourceVersions, that fails on demand: `fail` holds what
    the next writes raise (an ApiException-like error with `status`, or a TimeoutError after
    applying the patch: an answer lost)."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] = {}
        self.version = 0
        self.writes: list[dict[str, Any]] = []
        self.fail: list[BaseException] = []
        self.hang = False

    def body(self) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": str(self.version)}, "status": self.stored}

    def wipe(self) -> None:
        self.stored = {}
        self.version += 1

    async def __call__(self, namespace: str, name: str, patch: dict[str, Any]) -> Any:
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            error = self.fail.pop(0)
            if isinstance(error, TimeoutError):  # applied, but the answer never came
                self.stored = apply_merge_patch(self.stored, patch)
                self.version += 1
            raise error
        self.writes.append(patch)
        self.stored = apply_merge_patch(self.stored, patch)
        self.version += 1
        return self.body()


class RefusedError(ApiException):
    """What the official client raises for an HTTP error answer."""

    def __init__(self, status: int) -> None:
        super().__init__(status=status, reason=f"HTTP {status}")


class LiveBody(dict[str, Any]):
    """kopf's live body: always the object as the API holds it now."""

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api

    def get(self, key: str, default: Any = None) -> Any:
        return self.api.body().get(key, default)


def tracked(api: Api) -> StatusWriter:
    b = StatusWriter("ns", "fe", api, min_interval=0.0)
    b.track(LiveBody(api))
    b.apply(update("Ingesting", True, "Ingesting", "caught up"), 1)
    b.generation = 1
    b.record(Progress(ReaderCursor(ingested_through=5), records_read=3))
    return b


async def test_a_wiped_status_is_written_back_whole_at_the_next_write() -> None:
    api = Api()
    b = tracked(api)
    assert await b.write(force=True)
    whole = copy.deepcopy(api.stored)
    assert {"conditions", "cursor", "counts", "observedGeneration"} <= whole.keys()
    assert await b.write()  # nothing differs: nothing written
    assert len(api.writes) == 1
    api.wipe()
    assert await b.write()
    assert api.stored == whole


async def test_the_watch_lagging_behind_the_writers_own_writes_costs_no_write() -> None:
    api = Api()
    b = tracked(api)
    await b.write(force=True)
    frozen = {"metadata": {"resourceVersion": str(api.version)}, "status": dict(api.stored)}
    b.track(frozen)  # the watch has delivered the first write
    b.record(Progress(ReaderCursor(ingested_through=6), records_read=4))
    await b.write(force=True)
    assert len(api.writes) == 2
    assert api.writes[1] == {"cursor": {"ingestedThrough": 6}, "counts": {"recordsRead": 4}}
    assert await b.write(force=True)  # the body still shows the first write: no rewrite
    assert len(api.writes) == 2


async def test_a_conflict_is_reapplied_at_once_and_nothing_raises() -> None:
    api = Api()
    b = tracked(api)
    api.fail = [RefusedError(409), RefusedError(409)]
    assert await b.write(force=True)
    assert b.failures == 0
    assert api.stored["cursor"] == {"ingestedThrough": 5}


async def test_refused_writes_stay_pending_and_save_retries_until_written() -> None:
    api = Api()
    b = tracked(api)
    api.fail = [RefusedError(500)]
    assert not await b.write(force=True)  # not raised: kept
    assert b.failures == 1
    assert not await b.write()  # unforced writes back off after a failure
    api.fail = [RefusedError(500), RefusedError(503), RefusedError(500)]
    assert await b.save()
    assert b.failures == 0
    assert api.stored["cursor"] == {"ingestedThrough": 5}


async def test_a_write_whose_answer_was_lost_is_corrected_whatever_it_did() -> None:
    api = Api()
    b = StatusWriter("ns", "fe", api, min_interval=0.0)
    b.record(Progress(ReaderCursor(ingested_through=5, slice_end=9, page_token="t@1")))
    await b.write(force=True)
    b.record(Progress(ReaderCursor(ingested_through=5, slice_end=9, page_token="t@2")))
    api.fail = [TimeoutError()]  # applied: the stored cursor has page token t@2
    assert not await b.write(force=True)
    b.record(Progress(ReaderCursor(ingested_through=5, slice_end=9, page_token="t@1")))
    assert await b.write(force=True)
    assert api.stored["cursor"]["pageToken"] == "t@1"


async def test_a_stopping_writer_abandons_a_hung_write_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(status_writer, "STOP_WRITE_SECONDS", 0.2)
    api = Api()
    b = tracked(api)
    api.hang = True
    writing = asyncio.create_task(b.save())
    await asyncio.sleep(0.1)
    started = time.monotonic()
    b.stopping()
    assert not await asyncio.wait_for(writing, 5)
    assert time.monotonic() - started < 1
    assert not await b.write(force=True)  # past the deadline: not even tried


async def test_a_field_the_api_server_does_not_keep_is_not_sent_again_and_again() -> None:
    api = Api()
    b = tracked(api)
    b.update(flowLogId="fl-1")

    async def pruning(namespace: str, name: str, patch: dict[str, Any]) -> Any:
        answer = await api(namespace, name, patch)
        api.stored.pop("flowLogId", None)  # not in the schema: pruned
        answer["status"].pop("flowLogId", None)
        return answer

    b.writer = pruning
    assert await b.write(force=True)
    assert await b.write(force=True)
    assert len(api.writes) == 1
