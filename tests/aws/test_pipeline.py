"""The ingestion pipeline end to end through moto server and the PCE simulator."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from flowexport.aws.reader import LogReader, initial_cursor
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.core.normalise import FlowFilter
from flowexport.pce.client import PCEClient
from flowexport.pce.errors import PCEUnavailableError
from flowexport.pipeline import CheckpointNotSavedError, Pipeline, Progress
from tests.cloud import Cloud
from tests.flowlines import line
from tests.pcesim import SimPCE

GROUP = "/flowexport/pipeline"


@pytest.fixture
def group(cloud: Cloud) -> Cloud:
    cloud.clients.logs.create_log_group(logGroupName=GROUP)
    cloud.clients.logs.create_log_stream(logGroupName=GROUP, logStreamName="eni-a-all")
    return cloud


def put(cloud: Cloud, lines: list[str], age_seconds: float = 0) -> None:
    stamp = int(time.time() * 1000 - age_seconds * 1000)
    cloud.clients.logs.put_log_events(
        logGroupName=GROUP,
        logStreamName="eni-a-all",
        logEvents=[{"timestamp": stamp, "message": text} for text in lines],
    )


def flow_line(i: int, **values: Any) -> str:
    return line(
        PIPELINE_FORMAT,
        srcaddr=f"10.0.{i // 200}.{i % 200 + 1}",
        dstaddr="10.1.0.9",
        srcport=40000 + i,
        dstport=5432,
        **values,
    )


class Saver:
    """A checkpoint that keeps every saved state (and can fail on a given call)."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.saved: list[dict[str, Any]] = []
        self.fail_on = fail_on

    async def __call__(self, progress: Progress) -> None:
        if self.fail_on is not None and len(self.saved) + 1 == self.fail_on:
            self.fail_on = None
            raise RuntimeError("the process died before the checkpoint was written")
        self.saved.append(progress.to_state())


def pipeline(
    cloud: Cloud, client: PCEClient, saver: Saver, progress: Progress | None = None, **kwargs: Any
) -> Pipeline:
    reader = LogReader(cloud.clients, GROUP, lookback_seconds=1200, settle_seconds=0)
    progress = progress or Progress(initial_cursor("now", int(time.time() * 1000) - 5000))
    return Pipeline(reader, PIPELINE_FORMAT, FlowFilter(), client, progress, saver, **kwargs)


def received(pce: SimPCE) -> list[tuple[str, str, int, int]]:
    return list(pce.call(lambda: list(pce.sim.state.flows)))


async def test_records_become_flows_at_the_pce(
    group: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    nodata = line(
        PIPELINE_FORMAT,
        srcaddr="-",
        dstaddr="-",
        srcport="-",
        dstport="-",
        protocol="-",
        action="-",
        log_status="NODATA",
    )
    response_leg = line(
        PIPELINE_FORMAT,
        srcaddr="10.1.0.9",
        dstaddr="10.0.0.1",
        srcport=5432,
        dstport=40000,
        tcp_flags=18,
    )
    put(group, [flow_line(0), response_leg, flow_line(1), nodata, "garbage"])
    saver = Saver()
    progress = await pipeline(group, client, saver).run_once()
    assert sorted(received(pce)) == [
        ("10.0.0.1", "10.1.0.9", 5432, 6),
        ("10.0.0.2", "10.1.0.9", 5432, 6),
    ]
    assert progress.records_read == 5
    assert progress.records_skipped == {"nodata": 1, "field_count": 1}
    assert (progress.flows_uploaded, progress.flows_failed, progress.batches_uploaded) == (2, 0, 1)
    assert progress.lag_seconds is not None and progress.lag_seconds < 60
    assert {k for k, v in saver.saved[-1]["cursor"].items() if v is not None} == {
        "ingestedThrough",
        "window",
    }


async def test_late_events_are_uploaded_once(group: Cloud, pce: SimPCE, client: PCEClient) -> None:
    saver = Saver()
    runner = pipeline(group, client, saver, window_seconds=0)
    put(group, [flow_line(0)])
    await runner.run_once()
    time.sleep(0.01)
    put(group, [flow_line(1)], age_seconds=900)  # delivered 15 minutes late
    await runner.run_once()
    await runner.run_once()
    assert sorted(received(pce)) == [
        ("10.0.0.1", "10.1.0.9", 5432, 6),
        ("10.0.0.2", "10.1.0.9", 5432, 6),
    ]


async def test_a_restart_from_the_cursor_loses_nothing_and_repeats_at_most_one_batch(
    group: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    put(group, [flow_line(i) for i in range(60)])
    saver = Saver(fail_on=3)  # the third checkpoint never makes it to disk
    with pytest.raises(RuntimeError, match="died"):
        await pipeline(group, client, saver, batch_size=10).run_once()
    assert len(saver.saved) == 2
    restarted = Progress.from_state(saver.saved[-1])
    await pipeline(group, client, saver, restarted, batch_size=10).run_once()
    flows = received(pce)
    assert len(set(flows)) == 60, "nothing lost"
    assert len(flows) - 60 <= 10, "at most one batch uploaded twice"
    assert max(u["lines"] for u in pce.call(lambda: list(pce.sim.state.uploads))) <= 10


async def test_a_flow_is_uploaded_once_per_window(
    group: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    runner = pipeline(group, client, Saver(), window_seconds=1.5)
    for _ in range(3):
        put(group, [flow_line(0), flow_line(0)])
        time.sleep(0.01)
        await runner.run_once()
    assert received(pce) == [("10.0.0.1", "10.1.0.9", 5432, 6)]
    time.sleep(1.6)  # the window closes: the next sighting is uploaded again
    await runner.run_once()
    put(group, [flow_line(0)])
    time.sleep(0.01)
    await runner.run_once()
    assert len(received(pce)) == 2
    assert runner.progress.records_read == 7


async def test_a_pce_outage_rolls_back_to_the_checkpoint(
    group: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    put(group, [flow_line(0), flow_line(1)])
    saver = Saver()
    runner = pipeline(group, client, saver)
    before = runner.progress.cursor
    pce.faults(fail_first=100)
    with pytest.raises(PCEUnavailableError):
        await runner.run_once()
    assert runner.progress.cursor == before
    assert runner.progress.records_read == 0
    assert saver.saved == []
    pce.faults()
    progress = await runner.run_once()
    assert progress.records_read == 2
    assert len(received(pce)) == 2


async def test_a_checkpoint_not_saved_at_a_stop_ends_the_run_uploading_nothing_more(
    group: Cloud, pce: SimPCE, client: PCEClient
) -> None:
    put(group, [flow_line(i) for i in range(60)])
    saved: list[Progress] = []

    async def unsaved_after_the_first(progress: Progress) -> None:
        if saved:  # the API server no longer answers, and the worker is stopping
            raise CheckpointNotSavedError
        saved.append(copy.deepcopy(progress))

    runner = pipeline(group, client, unsaved_after_the_first, batch_size=10)  # type: ignore[arg-type]
    progress = await runner.run_once()  # returns: no error to retry
    assert progress.to_state() == saved[0].to_state(), "not rolled back to the saved one"
    # Flushes of half a batch: the one saved, and the one whose checkpoint was not.
    assert len(received(pce)) == 10, "uploaded on past a checkpoint it could not save"


def test_progress_state_round_trips() -> None:
    progress = Progress(initial_cursor("earliest", 0), 5, {"nodata": 1}, 3, 1, 2, None, 7)
    assert Progress.from_state(progress.to_state()) == progress
    with pytest.raises(ValueError, match="not a saved pipeline state"):
        Progress.from_state({"counts": {}})
