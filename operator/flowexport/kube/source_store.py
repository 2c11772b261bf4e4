"""The operator's `SourceStore`: a FlowExport's source state in its status.

`status.source` (the typed `SourceStatus`), the checkpoints of the source's parts in
`status.shards` (written per key by the replica reading each, see `shard_book.py`) and the log
group's progress, all through the FlowExport's `StatusWriter`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flowexport.api.models import SourceStatus
from flowexport.kube.events import EventSink
from flowexport.kube.metrics import count_part_failure
from flowexport.kube.replicas import STOP_SECONDS
from flowexport.kube.shard_book import KubeShardBook
from flowexport.kube.status_writer import StatusWriter
from flowexport.pipeline import Progress

#: Seconds between checks for what ends a worker's run (a new generation, the holder, ...).
WAKE_SECONDS = 1.0
#: Seconds the holder waits before reading parts the other replicas read until now (another
#: mode, another stream, workloads Sync): time for them to notice and stop.
TAKE_BACK_SECONDS = WAKE_SECONDS + STOP_SECONDS + 1.0


class KubeSourceStore:
    """The source state of one FlowExport this replica holds."""

    def __init__(
        self,
        board: StatusWriter,
        events: EventSink,
        body: Any,
        replica: str,
        stopped: Any,
        owns: Callable[[str], bool] | None,
    ) -> None:
        """`owns(part)` says whether this replica reads a part (None: not shared, all)."""
        self.board, self.events, self.body = board, events, body
        self.replica = replica
        self.stopped = stopped
        self.owns = owns
        #: The book of part checkpoints, once the source asked for one.
        self.shard_book: KubeShardBook | None = None

    @property
    def shared(self) -> bool:
        """Whether the parts are spread over the replicas."""
        return self.owns is not None

    def stored(self) -> SourceStatus | None:
        """status.source as this replica knows it."""
        return self.board.source

    def parts(self) -> Mapping[str, Mapping[str, Any]]:
        """status.shards as this replica knows it."""
        return self.board.shards

    def keep(self, status: SourceStatus) -> None:
        """status.source for the next write."""
        self.board.source = status

    async def switch(self, status: SourceStatus, progress: Progress) -> None:
        """A new start: the log group's progress and status.source replace what was stored,
        every shard entry goes (other replicas' too); written at once."""
        self.board.record(progress)
        self.board.clear_shards()
        self.board.source = status
        if self.shard_book is not None and status.since is not None:
            self.shard_book.start(status.since)
        await self.board.write(force=True)

    async def others_stopped(self) -> bool:
        """Wait `TAKE_BACK_SECONDS`, then take the other replicas' last checkpoints."""
        await self.stopped.wait(TAKE_BACK_SECONDS)
        if self.stopped:
            return False
        self.board.observe_shards((self.body.get("status") or {}).get("shards"))
        return True

    def book(self, since: int | None) -> KubeShardBook:
        """The FlowExport's shard book (one per run; `switch` moves it to a new start)."""
        if self.shard_book is None:
            self.shard_book = KubeShardBook(
                self.board, self.events, self.body, since, self.replica, self.owns
            )
        return self.shard_book

    def announce(
        self, reason: str, message: str, *, warning: bool = False, part: str | None = None
    ) -> None:
        """An Event on the FlowExport (and, about a part, flowexport_part_failures_total)."""
        self.events.post(self.body, "Warning" if warning else "Normal", reason, message)
        if part is not None:
            meta = self.body.get("metadata") or {}
            count_part_failure(
                str(meta.get("namespace", "")), str(meta.get("name", "")), part, reason
            )
