"""Resuming from any checkpoint ever written never skips a record, and repeats at most the
batch in flight: random kill points over multi-page slices, the cursor read back from the
status exactly as the operator's status writer left it (JSON merge patches)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowexport.aws.reader import LogReader, ReaderCursor
from flowexport.aws.session import AwsClients, AwsTarget, RateLimiter
from flowexport.core.flows import Flow
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.core.normalise import FlowFilter
from flowexport.kube.status_writer import StatusWriter
from flowexport.pce.client import BatchResult, UploadSummary
from flowexport.pipeline import Pipeline, Progress
from tests.flowlines import line
from tests.kube.fakes import FakeKube


class ProcessKilledError(Exception):
    """The process died here (SIGKILL): nothing after this point happens."""


class Pages:
    """FilterLogEvents over fixed pages (token i -> page i), as moto cannot page on demand."""

    def __init__(self, pages: Sequence[Sequence[str]]) -> None:
        self.pages = pages

    def filter_log_events(self, **kwargs: Any) -> dict[str, Any]:
        index = int(kwargs.get("nextToken") or 0)
        events = [
            {"timestamp": 50, "ingestionTime": 50, "message": message}
            for message in self.pages[index]
        ]
        answer: dict[str, Any] = {"events": events}
        if index + 1 < len(self.pages):
            answer["nextToken"] = str(index + 1)
        return answer


class PCE:
    """Records what it accepted; dies (after accepting) at the given upload call."""

    def __init__(self) -> None:
        self.accepted: list[Flow] = []
        self.calls = 0
        self.kill_at: int | None = None

    async def upload_all(self, flows: list[Flow], batch_size: int) -> UploadSummary:
        summary = UploadSummary()
        summary.add(BatchResult(len(flows), len(flows), 0, []))
        self.accepted.extend(flows)
        self.calls += 1
        if self.calls == self.kill_at:
            raise ProcessKilledError
        return summary


def flow_line(i: int) -> str:
    return line(PIPELINE_FORMAT, srcaddr=f"10.{i // 250}.0.{i % 250 + 1}", srcport=40000 + i)


class Run:
    """One life of the process: the status writer restored from the stored status, a
    checkpoint that may die before writing, a pipeline over the same pages and PCE."""

    def __init__(self, kube: FakeKube, pce: PCE, clients: AwsClients, batch: int) -> None:
        self.board = StatusWriter("ns", "fe", kube.patch_status, min_interval=0)
        self.board.load(kube.status("ns", "fe"))
        self.writes = 0
        self.die_at_write: int | None = None
        reader = LogReader(
            clients, "/g", 60, settle_seconds=0, page_limit=10, limiter=RateLimiter(1e6)
        )
        progress = self.board.progress or Progress(ReaderCursor(10))
        self.pipeline = Pipeline(
            reader,
            PIPELINE_FORMAT,
            FlowFilter(),
            pce,  # type: ignore[arg-type]
            progress,
            self.checkpoint,
            batch_size=batch,
            clock=lambda: 0.1,
        )

    async def checkpoint(self, saved: Progress) -> None:
        self.writes += 1
        if self.writes == self.die_at_write:
            raise ProcessKilledError  # dead before the status was written
        self.board.record(saved)
        await self.board.write(force=True)


async def run_with_kills(pages: list[list[str]], batch: int, kills: list[tuple[str, int]]) -> PCE:
    """Run until caught up, killing the process at each kill point in turn; each restart
    starts afresh from the status the writer stored."""
    kube, pce = FakeKube(), PCE()
    clients = AwsClients(ec2=None, logs=Pages(pages), target=AwsTarget("us-east-1"))
    for where, at in [*kills, ("never", 0)]:
        run = Run(kube, pce, clients, batch)
        run.die_at_write = at if where == "checkpoint" else None
        pce.kill_at = pce.calls + at if where == "upload" else None
        with contextlib.suppress(ProcessKilledError):
            await run.pipeline.run_once()
    return pce


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    # Each page's records: connections drawn from a small pool, so flows repeat across pages
    # and slices as they do in a real window.
    pages=st.lists(st.lists(st.integers(0, 40), max_size=25), min_size=1, max_size=5),
    batch=st.integers(2, 12),
    kills=st.lists(
        st.tuples(st.sampled_from(["upload", "checkpoint"]), st.integers(1, 6)), max_size=4
    ),
)
def test_every_record_is_delivered_whatever_the_kill_points(
    pages: list[list[int]], batch: int, kills: list[tuple[str, int]]
) -> None:
    pce = asyncio.run(run_with_kills([[flow_line(i) for i in p] for p in pages], batch, kills))
    expected = {f"10.{i // 250}.0.{i % 250 + 1}" for page in pages for i in page}
    assert {f.client_ip for f in pce.accepted} == expected, "a record was lost"
    # The window record is checkpointed with the cursor: a flow is repeated only when a
    # kill fell between the PCE's acceptance and the checkpoint (the batch in flight).
    repeats = len(pce.accepted) - len(expected)
    assert repeats <= len(kills) * batch
