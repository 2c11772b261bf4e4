"""Validate a FlowExport spec and say which field is wrong, in the API's own field names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from flowexport.api.models import FlowExportSpec
from flowexport.errors import FlowExportError, Reason


class SpecError(FlowExportError, ValueError):
    """An invalid spec; `problems` pairs each field path (spec.pce.url) with what is wrong."""

    reason = Reason.INVALID_SPEC

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))

    @property
    def fields(self) -> list[str]:
        """The offending field paths."""
        return [path for path, _ in self.problems]


def describe_errors(exc: ValidationError, root: str = "spec") -> list[tuple[str, str]]:
    """(field path, message) for each pydantic error; input values are never echoed."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        path = ".".join([root, *(str(p) for p in error["loc"])])
        message = error["msg"].removeprefix("Value error, ")
        problems.append((path, message))
    return problems


def parse_spec(raw: Mapping[str, Any]) -> FlowExportSpec:
    """Validate a raw `.spec` mapping; raises SpecError naming every bad field."""
    try:
        return FlowExportSpec.model_validate(dict(raw))
    except ValidationError as exc:
        raise SpecError(describe_errors(exc)) from None
