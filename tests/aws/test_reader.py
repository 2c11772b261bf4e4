"""The CloudWatch Logs reader against moto server: late events, paging, resume, throttling."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from flowexport.aws.errors import AwsError
from flowexport.aws.reader import Chunk, LogReader, ReaderCursor, initial_cursor
from tests.cloud import Cloud

GROUP = "/flowexport/reader"


def now_ms() -> int:
    return int(time.time() * 1000)


def put(
    cloud: Cloud, messages: list[str], age_seconds: float = 0, stream: str = "eni-1-all"
) -> None:
    logs = cloud.clients.logs
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    stamp = now_ms() - int(age_seconds * 1000)
    logs.put_log_events(
        logGroupName=GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": stamp, "message": m} for m in messages],
    )


@pytest.fixture
def group(cloud: Cloud) -> Cloud:
    cloud.clients.logs.create_log_group(logGroupName=GROUP)
    return cloud


def reader(cloud: Cloud, **kwargs: Any) -> LogReader:
    kwargs.setdefault("lookback_seconds", 1200)
    kwargs.setdefault("settle_seconds", 0)
    return LogReader(cloud.clients, GROUP, **kwargs)


def read_all(
    r: LogReader, cursor: ReaderCursor, chunk: int = 1000
) -> tuple[list[str], ReaderCursor]:
    messages: list[str] = []
    last: Chunk | None = None
    for last in r.chunks(cursor, now_ms() + 1, chunk):
        messages += [e.message for e in last.events]
    return messages, (last.cursor if last else cursor)


def test_reads_new_events_once_and_picks_up_late_ones(group: Cloud) -> None:
    r = reader(group)
    cursor = initial_cursor("now", now_ms() - 1)
    put(group, ["a", "b"])
    first, cursor = read_all(r, cursor)
    assert first == ["a", "b"]
    assert cursor.slice_end is None
    # A late event: its timestamp is 10 minutes old, older than anything read so far.
    time.sleep(0.01)
    put(group, ["late"], age_seconds=600, stream="eni-2-all")
    put(group, ["c"])
    second, cursor = read_all(r, cursor)
    assert sorted(second) == ["c", "late"]
    third, _ = read_all(r, cursor)
    assert third == []


def test_events_older_than_the_lookback_are_out_of_reach(group: Cloud) -> None:
    put(group, ["ancient"], age_seconds=3600)
    messages, _ = read_all(reader(group, lookback_seconds=600), initial_cursor("now", now_ms() - 1))
    assert messages == []


def test_earliest_reads_history_and_rfc3339_starts_at_a_time(group: Cloud) -> None:
    put(group, ["old"], age_seconds=3000)
    messages, _ = read_all(reader(group), initial_cursor("earliest", now_ms()))
    assert messages == ["old"]
    assert initial_cursor("2026-01-01T00:00:00Z", 0).ingested_through == 1767225600000
    assert initial_cursor("2026-01-01T01:00:00+01:00", 0).ingested_through == 1767225600000


def test_settle_leaves_just_ingested_events_for_the_next_slice(group: Cloud) -> None:
    put(group, ["fresh"])
    r = reader(group, settle_seconds=60)
    assert list(r.chunks(initial_cursor("now", now_ms() - 5000), now_ms(), 100)) == []


def test_pages_and_chunks_with_resume_from_any_cursor(group: Cloud) -> None:
    put(group, [f"m{i}" for i in range(25)])
    r = reader(group, page_limit=10)
    start = initial_cursor("now", now_ms() - 60_000)
    chunks = list(r.chunks(start, now_ms() + 1, 4))
    got = [e.message for c in chunks for e in c.events]
    assert sorted(got) == sorted(f"m{i}" for i in range(25))
    assert len(got) == 25
    assert all(len(c.events) <= 4 for c in chunks)
    assert chunks[-1].cursor.slice_end is None
    # Resuming from every intermediate cursor yields exactly the rest, never a repeat.
    for at, chunk in enumerate(chunks[:-1]):
        rest = [e.message for c in r.chunks(chunk.cursor, now_ms() + 1, 4) for e in c.events]
        assert rest == got[sum(len(c.events) for c in chunks[: at + 1]) :]


def test_cursor_round_trips_through_status() -> None:
    cursor = ReaderCursor(5, 9, "tok", 3)
    assert ReaderCursor.from_status(cursor.to_status()) == cursor
    assert ReaderCursor.from_status(ReaderCursor(5).to_status()) == ReaderCursor(5)
    with pytest.raises(ValueError, match="not a reader cursor"):
        ReaderCursor.from_status({"something": "else"})


def test_throttling_is_survived(group: Cloud) -> None:
    put(group, ["x"])
    throttled = {"left": 3}

    def throttle(**kwargs: Any) -> AWSResponse | None:
        if throttled["left"] <= 0:
            return None
        throttled["left"] -= 1
        body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
        return AWSResponse(
            kwargs["request"].url, 400, {"x-amzn-ErrorType": "ThrottlingException"}, _Raw(body)
        )

    group.clients.logs.meta.events.register("before-send.logs.FilterLogEvents", throttle)
    messages, _ = read_all(reader(group), initial_cursor("now", now_ms() - 60_000))
    assert messages == ["x"]
    assert throttled["left"] == 0


def test_missing_group_is_terminal(cloud: Cloud) -> None:
    with pytest.raises(AwsError) as caught:
        read_all(reader(cloud), initial_cursor("now", now_ms() - 1000))
    assert not caught.value.retryable and caught.value.reason == "LogGroupNotFound"


class _Raw:
    """The minimal raw-body object botocore reads from an injected response."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs: Any) -> Any:
        yield self.body

    def read(self, *args: Any) -> bytes:
        return self.body
