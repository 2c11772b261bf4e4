"""Enough of IAM's policy evaluation to check the repository's policies: Allow statements,
Action and Resource wildcards, and the condition operators those policies use."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

IAM = Path(__file__).resolve().parents[2] / "iam"


@dataclass(frozen=True)
class Request:
    """One authorization question: may the caller do `action` on `resource`?"""

    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)


def load(name: str) -> dict[str, Any]:
    """A policy document from iam/."""
    document: dict[str, Any] = json.loads((IAM / name).read_text())
    return document


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@cache
def _pattern(glob: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(f"^{body}$", re.IGNORECASE if ignore_case else 0)


def _like(glob: str, value: str, ignore_case: bool = False) -> bool:
    return bool(_pattern(glob, ignore_case).match(value))


def _condition_holds(operator: str, key: str, wanted: str | list[str], ctx: dict[str, str]) -> bool:
    if key not in ctx:
        return False  # IAM: a missing key fails every operator without IfExists
    value = ctx[key]
    if operator in ("StringEquals", "ArnEquals"):
        return value in _listed(wanted)
    if operator in ("StringLike", "ArnLike"):
        return any(_like(w, value) for w in _listed(wanted))
    raise ValueError(
        f"condition operator {operator} is not modelled: extend tests/aws/iampolicy.py"
    )


def statement_allows(statement: dict[str, Any], request: Request) -> bool:
    """Whether one Allow statement grants the request."""
    if statement.get("Effect") != "Allow":
        return False
    if not any(_like(a, request.action, True) for a in _listed(statement["Action"])):
        return False
    if not any(_like(r, request.resource) for r in _listed(statement["Resource"])):
        return False
    conditions = statement.get("Condition", {})
    return all(
        _condition_holds(op, key, wanted, request.context)
        for op, pairs in conditions.items()
        for key, wanted in pairs.items()
    )


def allows(policy: dict[str, Any], request: Request) -> bool:
    """Whether the policy grants the request (these policies have no Deny statements)."""
    statements = policy["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    return any(statement_allows(s, request) for s in statements)


def actions(policy: dict[str, Any]) -> set[str]:
    """Every action the policy names."""
    return {a for s in policy["Statement"] for a in _listed(s["Action"])}
