"""Mode poll: FilterLogEvents on the log group, slice by slice (no other AWS resource).

Bounded by the account's FilterLogEvents quota (5 requests/s per account and region): see
docs/operator.md for when mode stream is the better choice.
"""

from __future__ import annotations

from flowexport.api.conditions import ConditionType, caught_up, failed
from flowexport.api.models import AwsSpec, SourceSpec, SourceStatus
from flowexport.aws.session import AwsClients
from flowexport.aws.subscription import Subscription
from flowexport.errors import FlowExportError
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

        async def on_error(exc: FlowExportError) -> None:
            await report(failed(ConditionType.INGESTING, exc))

        async def on_success() -> None:
            await report(caught_up())

        poll = float(reading.spec.ingestion.poll_interval_seconds)
        await pipeline.run_forever(stop, poll, on_error, on_success)
