"""Shard checkpoints in the FlowExport's status: written per shard, read back only for the
same stream start, counted into status.counts, and retention gaps reported."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from flowexport.aws.kinesis_reader import ShardCursor
from flowexport.aws.reader import ReaderCursor
from flowexport.errors import Reason
from flowexport.kube.shard_book import MAX_GAPS, KubeShardBook
from flowexport.kube.status_writer import StatusWriter
from flowexport.pipeline import Progress
from flowexport.sources.shards import ShardError
from tests.kube.fakes import FakeKube, RecordingEvents

NS, NAME = "security", "prod"


def board(kube: FakeKube) -> StatusWriter:
    made = StatusWriter(NS, NAME, kube.patch_status, min_interval=0)
    made.load(kube.status(NS, NAME) if (NS, NAME) in kube.statuses else None)
    return made


async def test_checkpoints_counts_gaps_and_a_new_stream_start() -> None:
    kube, events = FakeKube(), RecordingEvents()
    first = board(kube)
    first.record(Progress(ReaderCursor(900), records_read=5))  # the log group, before the stream
    book = KubeShardBook(first, events, {"metadata": {"name": NAME}}, 1000, "replica-a")
    shard = "shardId-000000000000"
    progress = Progress(ShardCursor(shard, "42", None, 5000), records_read=7, flows_uploaded=3)
    progress.batches_uploaded = 1
    await book.save(shard, progress, 0)
    for i in range(MAX_GAPS + 1):
        await book.lost(shard, f"gap {i}")
    status = kube.status(NS, NAME)
    entry = status["shards"][shard]
    assert entry["cursor"]["sequenceNumber"] == "42" and entry["since"] == 1000
    assert entry["replica"] == "replica-a" and entry["millisBehindLatest"] == 0
    assert entry["lost"] == [f"gap {i}" for i in range(1, MAX_GAPS + 1)]
    assert status["counts"]["recordsRead"] == 12 and status["counts"]["flowsUploaded"] == 3
    assert events.reasons("Warning") == {"StreamRecordsLost"}

    # Read back after a restart: the same start resumes, the counts are not doubled.
    again = board(kube)
    assert again.document()["counts"]["recordsRead"] == 12
    assert again.progress is not None and again.progress.records_read == 5
    resumed = KubeShardBook(again, events, {}, 1000, "replica-a")
    assert resumed.progress(shard) == progress
    # A later switch to mode stream does not resume the old start's checkpoints.
    assert KubeShardBook(board(kube), events, {}, 2000, "replica-a").progress(shard) is None


def shard(i: int) -> str:
    return f"shardId-{i:012d}"


def checkpoint(i: int, sequence: str, uploaded: int) -> Progress:
    progress = Progress(ShardCursor(shard(i), sequence, None, 5000), flows_uploaded=uploaded)
    progress.batches_uploaded = uploaded
    return progress


STREAM_SOURCE = {"mode": "stream", "streamArn": "arn:s", "since": 1000}


async def test_two_replicas_write_only_their_own_shard_entries() -> None:
    kube, events = FakeKube(), RecordingEvents()
    holder = board(kube)
    holder.update(source=STREAM_SOURCE)
    holder.apply([], 1)
    await holder.write(force=True)
    mine = KubeShardBook(holder, events, {}, 1000, "r0", lambda s: s == shard(0))
    await mine.save(shard(0), checkpoint(0, "10", 3), 0)
    # The other replica: a shards-only board over the stored status.
    other = StatusWriter(NS, NAME, kube.patch_status, min_interval=0, shards_only=True)
    other.load(kube.status(NS, NAME))
    body = {"status": kube.status(NS, NAME)}
    theirs = KubeShardBook(other, events, body, 1000, "r1", lambda s: s == shard(1), prunes=False)
    await theirs.save(shard(1), checkpoint(1, "20", 4), 5)
    status = kube.status(NS, NAME)
    assert status["source"] == STREAM_SOURCE, "the shards-only board touched other fields"
    assert {s: e["replica"] for s, e in status["shards"].items()} == {
        shard(0): "r0",
        shard(1): "r1",
    }
    # The holder writes again: the other replica's entry stays, and is counted once observed.
    await mine.save(shard(0), checkpoint(0, "11", 5), 0)
    assert kube.status(NS, NAME)["shards"][shard(1)]["cursor"]["sequenceNumber"] == "20"
    assert holder.observe_shards(kube.status(NS, NAME)["shards"])
    await holder.write(force=True)
    assert kube.status(NS, NAME)["counts"]["flowsUploaded"] == 9

    # Shard 1 moves to the holder: it resumes from the other replica's stored checkpoint.
    mine._owns = lambda s: True
    assert mine.progress(shard(1)) == checkpoint(1, "20", 4)
    # A stale copy in memory never wins over a further checkpoint in status.
    mine.held[shard(1)] = checkpoint(1, "19", 3)
    assert mine.progress(shard(1)) == checkpoint(1, "20", 4)
    # The other replica no longer owns it: released, and it never writes that entry again.
    theirs._owns = lambda s: False
    assert not theirs.owns(shard(1)) and shard(1) not in other.own_shards
    await mine.save(shard(1), checkpoint(1, "30", 6), 0)
    await other.write(force=True)
    assert kube.status(NS, NAME)["shards"][shard(1)]["cursor"]["sequenceNumber"] == "30"
    assert kube.status(NS, NAME)["shards"][shard(1)]["replica"] == "r0"


async def test_failures_on_another_replicas_shard_reach_the_holder() -> None:
    kube, events = FakeKube(), RecordingEvents()
    holder = board(kube)
    holder.update(source=STREAM_SOURCE)
    await holder.write(force=True)
    other = StatusWriter(NS, NAME, kube.patch_status, min_interval=0, shards_only=True)
    theirs = KubeShardBook(other, events, {}, 1000, "r1", prunes=False)
    await theirs.failed(shard(2), ShardError(Reason.PCE_UNAUTHORIZED, "401 from the PCE"))
    mine = KubeShardBook(holder, events, {}, 1000, "r0", lambda s: False)
    holder.observe_shards(kube.status(NS, NAME)["shards"])
    (found,) = mine.errors().values()
    assert found.reason == Reason.PCE_UNAUTHORIZED and "replica r1: 401" in found.message
    await theirs.save(shard(2), checkpoint(2, "5", 1), 0)
    await theirs.failed(shard(2), None)
    holder.observe_shards(kube.status(NS, NAME)["shards"])
    assert mine.errors() == {}


async def test_listing_tidies_old_starts_and_expired_shards() -> None:
    kube, events = FakeKube(), RecordingEvents()
    holder = board(kube)
    holder.update(source=STREAM_SOURCE)
    old = KubeShardBook(holder, events, {}, 500, "r0")
    await old.save(shard(9), checkpoint(9, "1", 1), 0)  # an older stream start's entry
    book = KubeShardBook(holder, events, {}, 1000, "r0")
    ended = checkpoint(0, "7", 2)
    ended.cursor = dataclasses.replace(ended.cursor, ended=True)
    await book.save(shard(0), ended, 0)
    await book.save(shard(1), checkpoint(1, "8", 3), 0)
    await book.listed({shard(1)})  # shard 0 expired from the stream
    shards = kube.status(NS, NAME)["shards"]
    assert set(shards) == {shard(0), shard(1)}
    assert shards[shard(0)]["expired"] is True and "window" not in shards[shard(0)]
    assert shards[shard(0)]["counts"]["flowsUploaded"] == 2
    assert kube.status(NS, NAME)["counts"]["flowsUploaded"] == 5  # the old start's not counted
    # A new stream start deletes every entry, the other replicas' too.
    holder.clear_shards()
    await holder.write(force=True)
    assert "shards" not in kube.status(NS, NAME)


async def test_a_new_holder_counts_the_log_group_once_whatever_the_shards_did_meanwhile() -> None:
    kube, events = FakeKube(), RecordingEvents()
    holder = board(kube)
    holder.update(source=STREAM_SOURCE)
    holder.record(Progress(ReaderCursor(900), records_read=100))
    book = KubeShardBook(holder, events, {}, 1000, "r0", lambda s: s == shard(0))
    progress = checkpoint(0, "1", 0)
    progress.records_read = 50
    await book.save(shard(0), progress, 0)
    assert kube.status(NS, NAME)["counts"]["recordsRead"] == 150
    # The holder goes; another replica's shard entry moves on before a new holder loads.
    other = StatusWriter(NS, NAME, kube.patch_status, min_interval=0, shards_only=True)
    theirs = KubeShardBook(other, events, {"status": kube.status(NS, NAME)}, 1000, "r1")
    progress = checkpoint(0, "9", 0)
    progress.records_read = 400
    await theirs.save(shard(0), progress, 0)
    again = board(kube)
    assert again.progress is not None and again.progress.records_read == 100
    assert again.document()["counts"]["recordsRead"] == 500


async def test_a_taken_over_entry_loses_the_former_readers_error_and_offset() -> None:
    kube, events = FakeKube(), RecordingEvents()
    body: dict[str, Any] = {"status": {}}
    mine = StatusWriter(NS, NAME, kube.patch_status, min_interval=0, shards_only=True)
    mine.load({})  # loaded before the other replica wrote anything
    book = KubeShardBook(mine, events, body, 1000, "r1")
    other = StatusWriter(NS, NAME, kube.patch_status, min_interval=0, shards_only=True)
    theirs = KubeShardBook(other, events, {}, 1000, "r0")
    partly = Progress(ShardCursor(shard(0), "50", 3, 5000))
    await theirs.save(shard(0), partly, 0)
    await theirs.failed(shard(0), ShardError(Reason.PCE_UNAUTHORIZED, "boom"))
    body["status"] = copy.deepcopy(kube.status(NS, NAME))  # what the watch shows
    assert book.progress(shard(0)) == partly
    await book.save(shard(0), Progress(ShardCursor(shard(0), "60", None, 6000)), 0)
    await book.failed(shard(0), None)  # the read succeeded (the runner says so after each)
    entry = kube.status(NS, NAME)["shards"][shard(0)]
    assert entry["cursor"]["sequenceNumber"] == "60" and "eventOffset" not in entry["cursor"]
    assert "error" not in entry and entry["replica"] == "r1"
