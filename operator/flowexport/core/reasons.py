"""Why a flow-log line did not become a flow. Every line read ends as a flow or one of these."""

from __future__ import annotations

from enum import StrEnum


class SkipReason(StrEnum):
    """The reason a line was skipped; the value is the key used in counts and metrics."""

    EMPTY = "empty"
    TOO_LONG = "too_long"
    HEADER = "header"
    NODATA = "nodata"
    SKIPDATA = "skipdata"
    FIELD_COUNT = "field_count"
    BAD_IP = "bad_ip"
    BAD_INT = "bad_int"
    BAD_VALUE = "bad_value"
    MISSING_FIELD = "missing_field"
    ACTION_FILTERED = "action_filtered"
    CIDR_FILTERED = "cidr_filtered"

    @property
    def malformed(self) -> bool:
        """True when the line itself is broken, not merely uninteresting."""
        return self in _MALFORMED


_MALFORMED = frozenset(
    {
        SkipReason.TOO_LONG,
        SkipReason.FIELD_COUNT,
        SkipReason.BAD_IP,
        SkipReason.BAD_INT,
        SkipReason.BAD_VALUE,
        SkipReason.MISSING_FIELD,
    }
)
