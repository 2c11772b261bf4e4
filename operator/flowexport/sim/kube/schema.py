"""Structural-schema behaviour of a Kubernetes API server for custom resources (pure).

Pruning of unknown fields, defaulting, and the JSONPath subset that printer columns use
(validation is `structural.py`, its CEL rules `cel.py`).
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

_PRESERVE = "x-kubernetes-preserve-unknown-fields"


def prune_and_default(
    value: Any, schema: dict[str, Any], unknown: list[str], path: str = "", defaults: bool = True
) -> Any:
    """A copy of `value` with unknown fields dropped (their paths added to `unknown`) and,
    unless told not to, schema defaults applied, as the API server does before validation."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [
                prune_and_default(v, schema["items"], unknown, f"{path}[{i}]", defaults)
                for i, v in enumerate(value)
            ]
        return value
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    out: dict[str, Any] = {}
    for key, item in value.items():
        child = f"{path}.{key}" if path else key
        if properties is not None and key in properties:
            out[key] = prune_and_default(item, properties[key], unknown, child, defaults)
        elif isinstance(extra, dict):
            out[key] = prune_and_default(item, extra, unknown, child, defaults)
        elif schema.get(_PRESERVE) or properties is None:
            out[key] = item
        else:
            unknown.append(child)
    for key, sub in (properties or {}).items() if defaults else ():
        if key not in out and "default" in sub:
            out[key] = prune_and_default(copy.deepcopy(sub["default"]), sub, [], f"{path}.{key}")
    return out


_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.]+)==\"([^\"]*)\"\)\]")


def json_path(obj: Any, expression: str) -> list[Any]:
    """Evaluate the JSONPath subset printer columns use: `.a.b`, `[0]`, `[?(@.k=="v")]`."""
    current = [obj]
    text = expression.strip().removeprefix("{").removesuffix("}").removeprefix("$")
    position = 0
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            return []
        position = match.end()
        key, index, filter_key, filter_value = match.groups()
        following: list[Any] = []
        for item in current:
            if key is not None and isinstance(item, dict) and key in item:
                value = item[key]
                following.append(value)
            elif index is not None and isinstance(item, list) and int(index) < len(item):
                following.append(item[int(index)])
            elif filter_key is not None and isinstance(item, list):
                for element in item:
                    if str(_dig(element, filter_key.split("."))) == filter_value:
                        following.append(element)
        current = following
    return current


def _dig(value: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def human_age(timestamp: str, now: datetime | None = None) -> str:
    """Kubernetes' short duration format (`5s`, `3m`, `2h`, `4d`)."""
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2 or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
