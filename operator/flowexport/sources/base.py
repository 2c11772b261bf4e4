"""What every source is, and what it needs from the front end that runs it.

A `Source` is one `spec.source.mode`: it ensures its part of AWS beside the log group and the
flow log, takes over from whatever mode the stored status was in (without a gap), reads until
stopped, and says what replicas that do not hold the FlowExport may read of it (`Share`).

A front end keeps a source's state in a `SourceStore`: the FlowExport's status for the
operator, the `--state` file for `flowexport sync`. The store holds the typed
`SourceStatus`, the checkpoints of the source's parts (Kinesis shards) and the log group's
progress; sources never see where it is written.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from flowexport.api.conditions import Report
from flowexport.api.models import AwsSpec, FlowExportSpec, SourceSpec, SourceStatus
from flowexport.aws.session import AwsClients
from flowexport.aws.subscription import Subscription
from flowexport.pce.client import PCEClient
from flowexport.pipeline import Pipeline, Progress
from flowexport.sources.shards import ShardBook


class SourceStore(Protocol):
    """Where a front end keeps a source's state between runs."""

    @property
    def shared(self) -> bool:
        """Whether this front end spreads a source's parts over several replicas."""
        ...

    def stored(self) -> SourceStatus | None:
        """The source status as last stored (None: never written)."""
        ...

    def parts(self) -> Mapping[str, Mapping[str, Any]]:
        """The stored checkpoints of the source's parts (status.shards), by id."""
        ...

    def keep(self, status: SourceStatus) -> None:
        """The same source goes on: refresh its status (written with the next write)."""
        ...

    async def switch(self, status: SourceStatus, progress: Progress) -> None:
        """A new start: the log group's `progress` and `status` replace what was stored, the
        parts' checkpoints are forgotten; written at once."""
        ...

    async def others_stopped(self) -> bool:
        """Wait until other replicas stopped reading parts of this FlowExport; False when
        this front end is stopping meanwhile."""
        ...

    def book(self, since: int | None) -> ShardBook:
        """The book of part checkpoints for the source start `since` (None: not started)."""
        ...

    def announce(
        self, reason: str, message: str, *, warning: bool = False, part: str | None = None
    ) -> None:
        """Tell the user of a change (an Event, a log line); `warning` when data may be read
        twice or not at all; `part`: the part it is about (mode s3: the key of an object that
        could not be read), counted by reason in the operator's metric."""
        ...


@dataclass
class Reading:
    """What a source reads with."""

    spec: FlowExportSpec
    subscription: Subscription
    clients: AwsClients
    pce: PCEClient
    #: The log group's pipeline (reads the log group; its `prepare` runs before each upload).
    pipeline: Pipeline
    store: SourceStore
    stop: asyncio.Event
    report: Report
    once: bool = False
    on_upload: Callable[[float], None] | None = None


@dataclass(frozen=True)
class Share:
    """What a replica that does not hold a FlowExport reads of it (equal shares: the same
    work), from the holder's stored source status."""

    source: Source
    #: The source start the parts' checkpoints belong to.
    since: int
    #: What the source needs to read its parts (its own frozen dataclass).
    target: Any


class Source(ABC):
    """One read mode."""

    #: The `spec.source.mode` (and `status.source.mode`) this source is.
    mode: ClassVar[str]
    #: Whether it reads a log group a VPC's flow log delivers to (mode s3 reads objects).
    reads_log_group: ClassVar[bool] = True

    # -- AWS: blocking, run in a thread -----------------------------------------------------

    @abstractmethod
    def ensure(
        self, clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec, sub: Subscription
    ) -> None:
        """Ensure this mode's AWS resources beside the log group and flow log; add what it
        changed and made to `sub`."""

    def release(
        self, clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec, sub: Subscription
    ) -> None:
        """The mode is another one now: remove what this FlowExport made for this mode
        (noted in `sub.changes`). Nothing by default."""
        return

    def remove(self, clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec) -> list[str]:
        """On deletion with policy Delete: remove what this FlowExport made for this mode;
        what was removed. Nothing by default."""
        return []

    def describe(self, sub: Subscription) -> str:
        """What SubscriptionReady's message adds for this mode (starting with "; ")."""
        return ""

    # -- reading -----------------------------------------------------------------------------

    @abstractmethod
    def continues(self, stored: SourceStatus, sub: Subscription) -> bool:
        """Whether the stored status is this very source (its checkpoints resume)."""

    async def hand_back(
        self, store: SourceStore, stored: SourceStatus, progress: Progress
    ) -> Progress:
        """Leaving this (stored) source for another: the log group's progress to go on from
        (recorded in `store` if it changed). Unchanged by default."""
        return progress

    @abstractmethod
    async def begin(self, store: SourceStore, progress: Progress) -> None:
        """Taking over from another source (or none): record the start as far as it is
        known before reading."""

    @abstractmethod
    async def read(self, reading: Reading) -> None:
        """Read until `reading.stop` (with `once`, until caught up); report Ingesting as it
        goes. Terminal failures are raised."""

    def share(self, spec: FlowExportSpec, stored: SourceStatus | None) -> Share | None:
        """What replicas that do not hold the FlowExport read (None: nothing)."""
        return None

    async def read_share(
        self,
        share: Share,
        spec: FlowExportSpec,
        clients: AwsClients,
        pce: PCEClient,
        book: ShardBook,
        *,
        stop: asyncio.Event,
        report: Report,
        on_upload: Callable[[float], None] | None = None,
    ) -> None:
        """Read this replica's parts of `share` until `stop`."""
        raise NotImplementedError(f"mode {self.mode} has no shares")
