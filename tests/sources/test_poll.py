"""Mode poll's reports: Ingesting True once polling starts (not after a failure, so Ready
does not blink between two), and the effective poll interval kept in status.source."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from flowexport.api.conditions import ConditionUpdate
from flowexport.aws.errors import AwsError
from flowexport.errors import Reason
from flowexport.sources.base import Reading
from flowexport.sources.poll import PollSource
from tests.sources.test_take_over import Store, subscription, valid_spec

Callback = Callable[[], Awaitable[None]]


class ScriptedPipeline:
    """`run_forever` calls back as scripted: "ok" a successful poll, "error" a failed one."""

    def __init__(self, script: list[str]) -> None:
        self.script = script

    async def run_forever(
        self,
        stop: asyncio.Event,
        poll_seconds: float,
        on_error: Callable[[Any], Awaitable[None]],
        on_success: Callback,
    ) -> None:
        for step in self.script:
            if step == "ok":
                await on_success()
            else:
                await on_error(AwsError("AWS throttled logs:FilterLogEvents", Reason.AWS_THROTTLED))


async def read(script: list[str], store: Store, group: str) -> list[ConditionUpdate]:
    reports: list[ConditionUpdate] = []

    async def report(update: ConditionUpdate) -> None:
        reports.append(update)

    sub = subscription()
    sub.log_group_arn = group
    reading = Reading(
        valid_spec(),
        sub,
        clients=None,  # type: ignore[arg-type]
        pce=None,  # type: ignore[arg-type]
        pipeline=ScriptedPipeline(script),  # type: ignore[arg-type]
        store=store,
        stop=asyncio.Event(),
        report=report,
    )
    await PollSource().read(reading)
    return reports


async def test_polling_is_reported_before_the_first_read_and_the_interval_after_two() -> None:
    store = Store()
    reports = await read(["ok", "ok"], store, "arn:group:first")
    assert [(r.ok, r.message.split(" ")[0]) for r in reports] == [
        (True, "polling"),
        (True, "caught"),
        (True, "caught"),
    ]
    assert store.source is not None and store.source.mode == "poll"
    assert store.source.effective_poll_interval_seconds == 1  # two polls at once: at least 1


async def test_after_a_failure_polling_is_not_reported_before_a_read_succeeds() -> None:
    group = "arn:group:failing"
    first = await read(["error"], Store(), group)
    assert [r.ok for r in first] == [True, False]  # a new pipeline: polling, then the failure
    again = await read(["error", "ok"], Store(), group)
    assert [r.ok for r in again] == [False, True]  # no True before the read says so
    after = await read([], Store(), group)
    assert [r.ok for r in after] == [True]  # the last read succeeded: polling at once
