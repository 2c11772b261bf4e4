"""Mode poll: FilterLogEvents on the log group, slice by slice (no other AWS resource).

Bounded by the account's FilterLogEvents quota (5 requests/s per account and region), which
every FlowExport of the process polling that account and region shares in turns
(`flowexport.aws.budget`): with many log groups each gets polled less often than
`pollIntervalSeconds` asks, and `status.source.effectivePollIntervalSeconds` says how often
it really is. See docs/cost.md for when mode stream or s3 is the better choice.
"""

from __future__ import annotations

import time

from flowexport.api.conditions import ConditionType, ConditionUpdate, caught_up, failed
from flowexport.api.models import AwsSpec, SourceSpec, SourceStatus
from flowexport.aws.session import AwsClients
from flowexport.aws.subscription import Subscription
from flowexport.errors import FlowExportError, Reason
from flowexport.pipeline import Progress
from flowexport.sources.base import Reading, Source, SourceStore


class PollSource(Source):
    """Reads the log group itself: the log group's pipeline is the whole source."""

    mode = "poll"

    def ensure(
        self, clients: AwsClients, aws: AwsSpec, owner: str, spec: SourceSpec, sub: Subscription
    ) -> None:
        """Nothing beside the log group and the flow log."""

    def continues(self, stored: SourceStatus, sub: Subscription) -> bool:
        """Polling resumes from the log group's cursor whatever came before."""
        return stored.mode == self.mode

    async def begin(self, store: SourceStore, progress: Progress) -> None:
        """Say that the log group is polled (once: not on every restart)."""
        stored = store.stored()
        if stored is None or stored.mode != self.mode:
            await store.switch(SourceStatus(mode=self.mode), progress)

    async def read(self, reading: Reading) -> None:
        """Poll every `pollIntervalSeconds` (with `once`: one slice, until caught up)."""
        pipeline, stop, report = reading.pipeline, reading.stop, reading.report
        if reading.once:
            await pipeline.run_once(stop)
            await report(caught_up())
            return

        group = reading.subscription.log_group_arn or reading.spec.aws.log_group_name or ""

        async def on_error(exc: FlowExportError) -> None:
            _failing.add(group)
            await report(failed(ConditionType.INGESTING, exc))

        interval = EffectiveInterval()

        async def on_success() -> None:
            _failing.discard(group)
            seconds = interval.polled(time.monotonic())
            if seconds is not None:
                reading.store.keep(
                    SourceStatus(mode=self.mode, effective_poll_interval_seconds=seconds)
                )
            await report(caught_up())

        poll = float(reading.spec.ingestion.poll_interval_seconds)
        # Ready does not wait for the first read: with many log groups in one account it
        # waits its turn in the shared quota (up to N / budget seconds), and a read that
        # then fails says so at once. Not after a failure, though (a pipeline started again
        # after one): Ready would blink True between two failures.
        if group not in _failing:
            await report(polling(reading.spec.ingestion.poll_interval_seconds))
        try:
            await pipeline.run_forever(stop, poll, on_error, on_success)
        except FlowExportError:
            _failing.add(group)  # terminal: the worker reports it and starts again later
            raise


#: The log groups whose last read in this process failed.
_failing: set[str] = set()


def polling(interval: int) -> ConditionUpdate:
    """Ingesting when polling starts, before the first read."""
    return ConditionUpdate(
        ConditionType.INGESTING,
        True,
        Reason.INGESTING,
        f"polling the log group every {interval}s or as the account's FilterLogEvents quota "
        "allows (shared in turns; status.source.effectivePollIntervalSeconds)",
    )


class EffectiveInterval:
    """How often the log group is really read: the time between the ends of successive
    successful polls (the poll interval plus the wait for a turn in the account's budget
    and the read itself), smoothed over a few polls and in whole seconds."""

    #: The weight of the newest poll in the average.
    WEIGHT = 0.5

    def __init__(self) -> None:
        self._last: float | None = None
        self._average: float | None = None
        self._reported: int | None = None

    def polled(self, now: float) -> int | None:
        """A poll ended at `now` (monotonic seconds): the effective interval when it changed
        (None: not known yet, or the same whole number as last reported)."""
        last, self._last = self._last, now
        if last is None:
            return None
        took = now - last
        average = self._average
        self._average = took if average is None else average + self.WEIGHT * (took - average)
        seconds = max(1, round(self._average))
        if seconds == self._reported:
            return None
        self._reported = seconds
        return seconds
