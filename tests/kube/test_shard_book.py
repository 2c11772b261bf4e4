"""Shard checkpoints in the FlowExport's status: written per shard, read back only for the
same stream start, counted into status.counts, and retention gaps reported."""

from __future__ import annotations

from flowexport.aws.kinesis_reader import ShardCursor
from flowexport.aws.reader import ReaderCursor
from flowexport.kube.board import StatusBoard
from flowexport.kube.shard_book import MAX_GAPS, KubeShardBook
from flowexport.pipeline import Progress
from tests.kube.fakes import FakeKube, RecordingEvents

NS, NAME = "security", "prod"


def board(kube: FakeKube) -> StatusBoard:
    made = StatusBoard(NS, NAME, kube.patch_status, min_interval=0)
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
