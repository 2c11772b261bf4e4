"""Read one Kinesis shard's subscription-filter records, resumable from a small cursor.

Each Kinesis record is a gzip'd JSON document from CloudWatch Logs; a DATA_MESSAGE carries
`logEvents` (one flow-log record each), a CONTROL_MESSAGE nothing to upload. The cursor names
the last record handled (its sequence number), and how many of its events when only part of
a large record was, so a restarted reader resumes exactly after what the PCE accepted.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from flowexport.aws.errors import AwsError, classify, error_code
from flowexport.aws.reader import Chunk, Event
from flowexport.aws.session import AwsClients, RateLimiter
from flowexport.errors import Reason

log = logging.getLogger("flowexport.stream")

#: Records per GetRecords (the API's maximum).
RECORDS_LIMIT = 10_000
#: A shard takes 5 GetRecords per second, shared by every consumer.
READS_PER_SECOND = 5.0
#: Iterators expire after 5 minutes; one older than this is not reused.
ITERATOR_SECONDS = 240.0
#: Waits after ProvisionedThroughputExceeded before the pass gives up (and backs off longer).
THROTTLE_WAITS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class ShardCursor:
    """Where reading a shard resumes.

    `sequence` is the last record handled, wholly when `offset` is None, else through its
    first `offset` events. `arrived_ms` is that record's arrival time; `ended` says the shard
    was closed (resharded) and read to its end.
    """

    shard_id: str
    sequence: str | None = None
    offset: int | None = None
    arrived_ms: int | None = None
    ended: bool = False

    def to_status(self) -> dict[str, Any]:
        """The cursor as stored in the shard's status entry: every field named (null when
        unused), so no merge with an older cursor can leave a stale field."""
        return {
            "shardId": self.shard_id,
            "sequenceNumber": self.sequence,
            "eventOffset": self.offset,
            "arrivedAt": self.arrived_ms,
            "ended": self.ended,
        }

    @classmethod
    def from_status(cls, data: dict[str, Any]) -> ShardCursor:
        """Read a cursor back; raises ValueError if it is not one."""
        try:
            sequence = data.get("sequenceNumber")
            offset = data.get("eventOffset")
            arrived = data.get("arrivedAt")
            return cls(
                shard_id=str(data["shardId"]),
                sequence=str(sequence) if sequence is not None else None,
                offset=int(offset) if offset is not None and sequence is not None else None,
                arrived_ms=int(arrived) if arrived is not None else None,
                ended=bool(data.get("ended", False)),
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError("not a shard cursor") from None


def decode(data: bytes) -> list[Event] | None:
    """The flow-log events of one record's data: [] for a CONTROL_MESSAGE, None when the data
    is not a subscription-filter document (counted and skipped by the caller)."""
    try:
        document = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    if document.get("messageType") != "DATA_MESSAGE":
        return []
    events = []
    for item in document.get("logEvents") or []:
        if not isinstance(item, dict) or not isinstance(item.get("message"), str):
            continue
        try:
            stamp = int(item.get("timestamp") or 0)
        except (TypeError, ValueError):
            stamp = 0
        events.append(Event(stamp, stamp, item["message"]))
    return events


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(float(value) * 1000)


class ShardReader:
    """GetShardIterator/GetRecords on one shard, rate-limited, throttling and expiry survived."""

    def __init__(
        self,
        clients: AwsClients,
        stream_name: str,
        shard_id: str,
        since_ms: int,
        retention_hours: int = 24,
        limit: int = RECORDS_LIMIT,
        sleep: Any = time.sleep,
    ) -> None:
        self.clients = clients
        self.stream_name = stream_name
        self.shard_id = shard_id
        self.since_ms = since_ms
        self.retention_ms = retention_hours * 3_600_000
        self.limit = limit
        self.sleep = sleep
        self.limiter = RateLimiter(READS_PER_SECOND)
        #: From the last GetRecords: how far behind the stream's tip this shard's reading is.
        self.millis_behind: int | None = None
        #: Gaps found (records trimmed by retention before they were read), to be reported.
        self.lost: list[str] = []
        self.calls = 0
        self._iterator: str | None = None
        self._iterator_for: ShardCursor | None = None
        self._iterator_at = 0.0

    def chunks(self, cursor: ShardCursor, now_ms: int, chunk_size: int) -> Iterator[Chunk]:
        """Read from `cursor` until caught up with the shard (or its end, for a closed one).

        Yields chunks of at most `chunk_size` events, each with the cursor that is safe to save
        once they are uploaded; the last one (`final`) ends the pass.
        """
        if cursor.ended:
            yield Chunk([], cursor, final=True)
            return
        iterator = self._reusable(cursor) or self._new_iterator(cursor, now_ms)
        position = cursor
        while True:
            answer = self._get_records(iterator)
            if answer is None:  # the iterator expired: a new one from where reading is
                iterator = self._new_iterator(position, int(time.time() * 1000))
                continue
            records = answer.get("Records") or []
            behind = answer.get("MillisBehindLatest")
            self.millis_behind = int(behind) if behind is not None else None
            undecodable = 0
            for record in records:
                sequence = str(record["SequenceNumber"])
                arrived = _ms(record.get("ApproximateArrivalTimestamp", now_ms / 1000))
                events = decode(record.get("Data") or b"")
                if events is None:
                    undecodable += 1
                    log.warning(
                        "shard %s record %s is not a subscription-filter document: skipped",
                        self.shard_id,
                        sequence,
                    )
                    events = []
                skip = position.offset if position.sequence == sequence else None
                for at in range(skip or 0, len(events), chunk_size):
                    done = min(at + chunk_size, len(events))
                    partial = done if done < len(events) else None
                    yield Chunk(
                        events[at:done],
                        ShardCursor(self.shard_id, sequence, partial, arrived),
                        undecodable=undecodable,
                    )
                    undecodable = 0
                position = ShardCursor(self.shard_id, sequence, None, arrived)
            following = answer.get("NextShardIterator")
            if following is None:  # a closed shard, read to its end
                self._iterator = None
                yield Chunk([], replace(position, ended=True), final=True, undecodable=undecodable)
                return
            iterator = following
            caught_up = not self.millis_behind
            if undecodable:
                yield Chunk([], position, undecodable=undecodable)
            if caught_up and len(records) < self.limit:
                break
        self._iterator, self._iterator_for = iterator, position
        self._iterator_at = time.monotonic()
        yield Chunk([], position, final=True)

    def _reusable(self, cursor: ShardCursor) -> str | None:
        fresh = time.monotonic() - self._iterator_at < ITERATOR_SECONDS
        if self._iterator is not None and cursor == self._iterator_for and fresh:
            return self._iterator
        return None

    def _new_iterator(self, cursor: ShardCursor, now_ms: int) -> str:
        kw: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": self.shard_id}
        horizon = now_ms - self.retention_ms
        if cursor.sequence is None:
            if self.since_ms < horizon:
                self._lose(self.since_ms, horizon)
            kw["ShardIteratorType"] = "AT_TIMESTAMP"
            kw["Timestamp"] = datetime.fromtimestamp(self.since_ms / 1000, UTC)
        else:
            if cursor.arrived_ms is not None and cursor.arrived_ms < horizon:
                self._lose(cursor.arrived_ms, horizon)
            partial = cursor.offset is not None
            kw["ShardIteratorType"] = "AT_SEQUENCE_NUMBER" if partial else "AFTER_SEQUENCE_NUMBER"
            kw["StartingSequenceNumber"] = cursor.sequence
        self.limiter.wait()
        self.calls += 1
        try:
            answer = self.clients.kinesis.get_shard_iterator(**kw)
        except Exception as exc:
            if error_code(exc) == "InvalidArgumentException" and cursor.sequence is not None:
                # The checkpointed record is past the stream's retention: from the oldest kept.
                self._lose(cursor.arrived_ms or 0, horizon)
                return self._horizon_iterator()
            raise self._error(exc, "GetShardIterator") from None
        return str(answer["ShardIterator"])

    def _horizon_iterator(self) -> str:
        self.calls += 1
        try:
            answer = self.clients.kinesis.get_shard_iterator(
                StreamName=self.stream_name,
                ShardId=self.shard_id,
                ShardIteratorType="TRIM_HORIZON",
            )
        except Exception as exc:
            raise self._error(exc, "GetShardIterator") from None
        return str(answer["ShardIterator"])

    def _lose(self, since_ms: int, until_ms: int) -> None:
        start = datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(timespec="seconds")
        end = datetime.fromtimestamp(until_ms / 1000, UTC).isoformat(timespec="seconds")
        message = (
            f"shard {self.shard_id}: records that arrived from {start} to {end} were past the "
            "stream's retention before they were read, and are lost"
        )
        log.warning("%s", message)
        self.lost.append(message.replace("+00:00", "Z"))

    def _get_records(self, iterator: str) -> dict[str, Any] | None:
        """One GetRecords; None when the iterator expired. Throttling is waited out a few
        times, then raised (retryable: the pipeline backs off)."""
        for wait in (*THROTTLE_WAITS, None):
            self.limiter.wait()
            self.calls += 1
            try:
                answer: dict[str, Any] = self.clients.kinesis.get_records(
                    ShardIterator=iterator, Limit=self.limit
                )
                return answer
            except Exception as exc:
                code = error_code(exc)
                if code == "ExpiredIteratorException":
                    self._iterator = None
                    return None
                if code == "ProvisionedThroughputExceededException" and wait is not None:
                    self.sleep(wait)
                    continue
                raise self._error(exc, "GetRecords") from None
        raise AssertionError("unreachable")

    def _error(self, exc: Exception, operation: str) -> AwsError:
        self._iterator = None
        if error_code(exc) == "ResourceNotFoundException":
            return AwsError(
                f"Kinesis stream {self.stream_name} (shard {self.shard_id}) does not exist",
                Reason.STREAM_NOT_FOUND,
            )
        return classify(exc, "kinesis", operation)
