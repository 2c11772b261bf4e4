"""Aggregate duplicate flows within a window; memory grows with unique flows, not records."""

from __future__ import annotations

from collections.abc import Iterator

from flowexport.core.flows import Flow


class Aggregator:
    """Unique flows of the current window, each with the number of records behind it."""

    __slots__ = ("_flows",)

    def __init__(self) -> None:
        self._flows: dict[Flow, int] = {}

    def add(self, flow: Flow, records: int = 1) -> None:
        """Count `records` occurrence(s) of `flow`."""
        self._flows[flow] = self._flows.get(flow, 0) + records

    def merge(self, other: Aggregator) -> None:
        """Fold another window's flows into this one."""
        for flow, records in other.items():
            self.add(flow, records)

    def items(self) -> Iterator[tuple[Flow, int]]:
        """The flows and their record counts, in first-seen order."""
        return iter(self._flows.items())

    def flows(self) -> list[Flow]:
        """The unique flows, in first-seen order."""
        return list(self._flows)

    def drain(self) -> list[tuple[Flow, int]]:
        """Close the window: return its flows with record counts and start an empty one."""
        drained = list(self._flows.items())
        self._flows = {}
        return drained

    @property
    def table(self) -> dict[Flow, int]:
        """The live flow table, for hot loops that update counts in place."""
        return self._flows

    @property
    def records(self) -> int:
        """Records behind the window's flows."""
        return sum(self._flows.values())

    def __len__(self) -> int:
        return len(self._flows)

    def __contains__(self, flow: object) -> bool:
        return flow in self._flows
