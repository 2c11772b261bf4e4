"""CEL validation rules of a structural schema (`x-kubernetes-validations`), as the API server
evaluates them: each rule at its node with `self` bound to the node's value, after defaulting,
a rule that is false (or fails to evaluate) being an `Invalid value` of that field.

Evaluated with cel-python (`celpy`, RE2 regular expressions like the API server's), plus the
Kubernetes string functions the CRD uses (`indexOf`, `lastIndexOf`). Without cel-python
installed (it comes with the `demo` and `test` extras) the rules are not checked, and
`available()` says so. Compiled programs are cached by rule text.

On an update the rules are ratcheted, as by kube-apiserver since v1.30 (CRD validation
ratcheting, GA in v1.33): a rule is not enforced on a value the update leaves unchanged
(deep-equal to the stored one at the same field path; items of a list are not correlated,
so a changed list is checked whole). Such a value's rules are not evaluated at all: a status
write then does not re-evaluate every rule of the unchanged spec (cel-python interprets each
rule in Python, some milliseconds a write). No rule of this project's CRDs uses `oldSelf`,
which is not supported here.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from flowexport.sim.kube.errors import Cause, show

try:
    import celpy
    from celpy import celtypes
    from celpy.adapter import json_to_cel
except ImportError:  # pragma: no cover - the demo and test extras install it
    celpy = None  # type: ignore[assignment]

_TYPES = {"string": str, "object": dict, "array": list, "boolean": bool}
#: No stored value to compare with (a create, or a field the update adds).
MISSING: Any = object()


def available() -> bool:
    """Whether CEL rules are checked (cel-python is installed)."""
    return celpy is not None


@functools.cache
def _program(rule: str) -> Any:
    def index_of(text: Any, sub: Any) -> Any:
        return celtypes.IntType(str(text).find(str(sub)))

    def last_index_of(text: Any, sub: Any) -> Any:
        return celtypes.IntType(str(text).rfind(str(sub)))

    env = celpy.Environment()
    return env.program(
        env.compile(rule), functions={"indexOf": index_of, "lastIndexOf": last_index_of}
    )


def _holds(rule: str, value: Any) -> bool:
    # A rule is a function of `self` alone: its answer for a value is remembered (hundreds of
    # objects share a PCE URL, a role, an endpoint; cel-python takes milliseconds a rule).
    return _holds_for(rule, json.dumps(value, sort_keys=True, separators=(",", ":")))


@functools.lru_cache(maxsize=4096)
def _holds_for(rule: str, value_json: str) -> bool:
    try:
        result = _program(rule).evaluate({"self": json_to_cel(json.loads(value_json))})
    except Exception:  # an evaluation error fails the rule, as on the API server
        return False
    return result is True or (not isinstance(result, Exception) and bool(result))


def has_rules(schema: dict[str, Any]) -> bool:
    """Whether the schema has CEL rules anywhere (and they are checked here)."""
    if not available():
        return False
    if schema.get("x-kubernetes-validations"):
        return True
    subs = [*(schema.get("properties") or {}).values()]
    subs += [
        s for s in (schema.get("items"), schema.get("additionalProperties")) if isinstance(s, dict)
    ]
    return any(has_rules(sub) for sub in subs)


def cel_causes(
    value: Any, schema: dict[str, Any], path: str = "", old: Any = MISSING
) -> list[Cause]:
    """A cause for every rule that does not hold, worded as the API server words it; with the
    stored object as `old` (an update), none for a value the update leaves unchanged."""
    if not available():
        return []
    causes: list[Cause] = []
    _walk(value, schema, path, causes, old)
    return causes


def _cause(path: str, rule: dict[str, Any], value: Any) -> Cause:
    message = rule.get("message") or f"failed rule: {rule['rule']}"
    where = path or "<root>"
    if rule.get("reason") == "FieldValueForbidden":
        return Cause(where, "FieldValueForbidden", f"Forbidden: {message}")
    if isinstance(value, (dict, list)):
        return Cause(where, "FieldValueInvalid", f"Invalid value: {message}")
    return Cause(where, "FieldValueInvalid", f"Invalid value: {show(value)}: {message}")


def _walk(
    value: Any, schema: dict[str, Any], path: str, causes: list[Cause], old: Any = MISSING
) -> None:
    expected = _TYPES.get(str(schema.get("type")))
    if value is None or (expected is not None and not isinstance(value, expected)):
        return  # a type error is the schema's to report; rules see only well-typed values
    if old is not MISSING and value == old:
        return  # ratcheted: nothing under an unchanged value is enforced
    for rule in schema.get("x-kubernetes-validations", []):
        if not _holds(rule["rule"], value):
            causes.append(_cause(path, rule, value))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        stored = old if isinstance(old, dict) else {}
        for key, item in value.items():
            before = stored.get(key, MISSING)
            if key in properties:
                _walk(item, properties[key], f"{path}.{key}" if path else key, causes, before)
            elif isinstance(extra, dict):
                _walk(item, extra, f"{path}[{key}]", causes, before)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _walk(item, schema["items"], f"{path}[{index}]", causes)
