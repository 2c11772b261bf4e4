"""Flow-log `LogFormat` strings: parse, validate, render."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flowexport.core.fields import (
    DEFAULT_V2_FIELDS,
    FIELDS_BY_NAME,
    PIPELINE_FIELDS,
    REQUIRED_FIELDS,
)

_TOKEN = re.compile(r"\$\{([a-z0-9-]+)\}")


class LogFormatError(ValueError):
    """A LogFormat string that the pipeline cannot use; the message says why."""


class MissingFieldsError(LogFormatError):
    """A format without a field every flow needs (addresses, ports, protocol)."""


@dataclass(frozen=True)
class LogFormat:
    """An ordered list of flow-log fields, as in `${version} ${srcaddr} ...`."""

    fields: tuple[str, ...]
    index: dict[str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse unknown or repeated fields, and formats without what every flow needs."""
        names = self.fields
        unknown = [n for n in names if n not in FIELDS_BY_NAME]
        if unknown:
            raise LogFormatError(f"unknown flow-log field(s): {', '.join(unknown)}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise LogFormatError(f"repeated flow-log field(s): {', '.join(repeated)}")
        missing = [n for n in REQUIRED_FIELDS if n not in names]
        if missing:
            raise MissingFieldsError(
                f"log format lacks field(s) every flow needs: {', '.join(missing)}"
            )
        object.__setattr__(self, "index", {name: i for i, name in enumerate(names)})

    @classmethod
    def parse(cls, text: str) -> LogFormat:
        """Parse a `${field} ${field} ...` string, or the bare field names of a file header.

        Raises LogFormatError naming the offending token for unknown or repeated fields, stray
        text, or a format without the fields every flow needs (addresses, ports, protocol).
        """
        text = text.strip()
        if not text:
            raise LogFormatError("log format is empty")
        if "$" in text:
            names = []
            for token in text.split():
                match = _TOKEN.fullmatch(token)
                if match is None:
                    raise LogFormatError(
                        f"log format token {token!r} is not of the form ${{field}}"
                    )
                names.append(match.group(1))
        else:
            names = text.split()
        return cls(tuple(names))

    @property
    def version(self) -> int:
        """The record version AWS writes for this format: the highest among its fields."""
        return max(FIELDS_BY_NAME[n].version for n in self.fields)

    def render(self) -> str:
        """The format as AWS's `LogFormat` parameter spells it."""
        return " ".join(f"${{{name}}}" for name in self.fields)

    def __contains__(self, name: object) -> bool:
        return name in self.index


#: AWS's default format (version 2).
DEFAULT_V2_FORMAT = LogFormat(DEFAULT_V2_FIELDS)

#: The format the operator asks for when the spec names none: every field the pipeline uses.
PIPELINE_FORMAT = LogFormat(PIPELINE_FIELDS)
