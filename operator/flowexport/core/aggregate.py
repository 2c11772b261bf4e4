"""Aggregate duplicate flows within a window; memory grows with unique flows, not records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from flowexport.core.flows import Flow


@dataclass(slots=True)
class FlowCounts:
    """What one aggregated flow stands for: records, packets and bytes seen in the window."""

    records: int = 0
    packets: int = 0
    bytes: int = 0


class Aggregator:
    """Unique flows of the current window, each with its counts, in first-seen order."""

    __slots__ = ("_flows",)

    def __init__(self) -> None:
        self._flows: dict[Flow, FlowCounts] = {}

    def add(self, flow: Flow, records: int = 1, packets: int = 0, bytes_: int = 0) -> None:
        """Count one (or `records`) occurrence(s) of `flow`."""
        counts = self._flows.get(flow)
        if counts is None:
            self._flows[flow] = FlowCounts(records, packets, bytes_)
        else:
            counts.records += records
            counts.packets += packets
            counts.bytes += bytes_

    def merge(self, other: Aggregator) -> None:
        """Fold another window's flows into this one."""
        for flow, counts in other.items():
            self.add(flow, counts.records, counts.packets, counts.bytes)

    def items(self) -> Iterator[tuple[Flow, FlowCounts]]:
        """The flows and their counts, in first-seen order."""
        return iter(self._flows.items())

    def flows(self) -> list[Flow]:
        """The unique flows, in first-seen order."""
        return list(self._flows)

    def drain(self) -> list[tuple[Flow, FlowCounts]]:
        """Close the window: return its flows and start an empty one."""
        drained = list(self._flows.items())
        self._flows = {}
        return drained

    @property
    def table(self) -> dict[Flow, FlowCounts]:
        """The live flow table, for hot loops that update counts in place."""
        return self._flows

    def __len__(self) -> int:
        return len(self._flows)

    def __contains__(self, flow: object) -> bool:
        return flow in self._flows
