"""The simulator's errors, answered as Kubernetes `Status` objects."""

from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """An error answered as a Kubernetes Status object."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def response(self) -> web.Response:
        """The Status object as an HTTP response with the error's code."""
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }
        return web.json_response(body, status=self.code)


@dataclass(frozen=True)
class Cause:
    """One field error of an `Invalid` Status."""

    field: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """As in the Status object's `details.causes`."""
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def show(value: Any) -> str:
    """A value as the API server quotes it (Go's %#v of JSON values, near enough)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


#: The warnings of the request being answered (each becomes a `Warning: 299 - "..."` header).
WARNINGS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "warnings", default=None
)


def warn(*texts: str) -> None:
    """Add warnings to the answer of the request being handled (as the API server's
    `Warning` headers); nothing outside a request."""
    found = WARNINGS.get()
    if found is not None:
        found.extend(texts)


def warning_headers(texts: list[str]) -> list[str]:
    """`Warning` header values, as the API server writes them."""
    return ["299 - " + json.dumps(text) for text in texts]
