"""Label selectors as the API server reads them (`labelSelector=`), and what a change is to a
watch that selects by them.

Requirements are comma-separated, each one of: `key` (exists), `!key` (does not exist),
`key=value` / `key==value`, `key!=value` (differs or absent), `key in (a,b)`,
`key notin (a,b)` (absent counts as not in). All must hold. Anything else is a 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flowexport.sim.kube.errors import ApiError

_SET = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)\s*$")
_EQUALITY = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One requirement: `key`, an operator (exists, !exists, in, notin) and its values."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether labels satisfy it."""
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "in":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # notin


Selector = tuple[Requirement, ...]


def parse_label_selector(text: str) -> Selector:
    """The requirements of a `labelSelector`; ApiError 400 if it is not one."""
    requirements = []
    for term in _terms(text):
        if found := _SET.match(term):
            values = frozenset(v.strip() for v in found["values"].split(",") if v.strip())
            requirements.append(Requirement(found["key"], found["op"], values))
        elif found := _EQUALITY.match(term):
            op = "notin" if found["op"] == "!=" else "in"
            requirements.append(Requirement(found["key"], op, frozenset({found["value"]})))
        elif found := _EXISTS.match(term):
            requirements.append(Requirement(found["key"], "!exists" if found["neg"] else "exists"))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return tuple(requirements)


def _terms(text: str) -> list[str]:
    """Split on the commas that are not inside a value set's parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    terms.append(current)
    return [t for t in terms if t.strip()]


def selects(selector: Selector, obj: dict[str, Any] | None) -> bool:
    """Whether `obj` (None: no object) has labels the selector selects."""
    if obj is None:
        return False
    labels = obj["metadata"].get("labels") or {}
    return all(r.matches(labels) for r in selector)


def as_seen_by(
    selector: Selector, event: str, before: dict[str, Any] | None, after: dict[str, Any]
) -> str | None:
    """The event a watch with `selector` gets for a change from `before` to `after`: an object
    that starts to match is ADDED, one that stops matching is DELETED (as the API server's
    watch cache sends them), None if it sees nothing."""
    if event == "DELETED":
        return event if selects(selector, after) else None
    was, now = selects(selector, before), selects(selector, after)
    if was and now:
        return event
    if now:
        return "ADDED"
    if was:
        return "DELETED"
    return None
