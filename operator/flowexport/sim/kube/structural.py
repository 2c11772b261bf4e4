"""Validation of a custom resource against its structural schema, as kube-apiserver reports it.

`field_errors` gives one `Cause` per problem, with the API server's field path
(`spec.ingestion.actions[1]`), reason (`FieldValueInvalid`, `FieldValueTypeInvalid`,
`FieldValueNotSupported`, `FieldValueRequired`, `FieldValueTooLong`, `FieldValueTooMany`,
`FieldValueDuplicate`) and message text (`Invalid value: 1001: spec.ingestion.batchSize in
body should be less than or equal to 1000`), as read from kube-apiserver v1.37. Then the CEL
rules (`cel.py`) run, unless an error other than `FieldValueInvalid` was found: the API server
then skips them and says so in one more cause, on field `<nil>`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flowexport.sim.kube.cel import MISSING, cel_causes, has_rules
from flowexport.sim.kube.errors import Cause, show

#: What the API server adds when type, enum, size or required errors kept it from CEL rules.
NOT_CHECKED = (
    "Invalid value: null: some validation rules were not checked because the object was "
    "invalid; correct the existing errors to complete validation"
)
_NON_BLOCKING = {"FieldValueInvalid", "FieldValueDuplicate"}


def json_type(value: Any) -> str:
    """The JSON type name of a value, as the API server's type errors say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _number(bound: Any) -> str:
    return json.dumps(bound)


def field_errors(value: Any, schema: dict[str, Any], old: Any = MISSING) -> list[Cause]:
    """Every problem of `value` (a whole object) against `schema`, then its CEL rules (on an
    update, with the stored object as `old`, not those of values it leaves unchanged)."""
    causes: list[Cause] = []
    _check(value, schema, "", causes)
    if any(c.reason not in _NON_BLOCKING for c in causes):
        if has_rules(schema):
            causes.append(Cause("<nil>", "FieldValueInvalid", NOT_CHECKED))
        return causes
    return causes + cel_causes(value, schema, old=old)


def _type_ok(value: Any, wanted: str) -> bool:
    if wanted == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if wanted == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return json_type(value) == wanted


def _check(value: Any, schema: dict[str, Any], path: str, causes: list[Cause]) -> None:
    where = path or "<root>"
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            given = json_type(value)
            causes.append(
                Cause(
                    where,
                    "FieldValueTypeInvalid",
                    f'Invalid value: "{given}": {where} in body must be of type '
                    f'{schema["type"]}: "{given}"',
                )
            )
        return
    wanted = schema.get("type")
    if wanted and not _type_ok(value, wanted):
        given = json_type(value)
        causes.append(
            Cause(
                where,
                "FieldValueTypeInvalid",
                f'Invalid value: "{given}": {where} in body must be of type {wanted}: "{given}"',
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(f'"{v}"' for v in schema["enum"])
        causes.append(
            Cause(
                where,
                "FieldValueNotSupported",
                f"Unsupported value: {show(value)}: supported values: {supported}",
            )
        )
    if isinstance(value, str):
        _check_string(value, schema, where, causes)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, schema, where, causes)
    elif isinstance(value, list):
        _check_array(value, schema, path, causes)
    elif isinstance(value, dict):
        _check_object(value, schema, path, causes)


def _check_string(value: str, schema: dict[str, Any], where: str, causes: list[Cause]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(
            Cause(
                where,
                "FieldValueTooLong",
                f"Too long: may not be more than {schema['maxLength']} bytes",
            )
        )
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append(
            Cause(
                where,
                "FieldValueInvalid",
                f"Invalid value: {show(value)}: {where} in body should be at least "
                f"{schema['minLength']} chars long",
            )
        )
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        causes.append(
            Cause(
                where,
                "FieldValueInvalid",
                f"Invalid value: {show(value)}: {where} in body should match '{schema['pattern']}'",
            )
        )
    if schema.get("format") == "date-time" and not _date_time(value):
        causes.append(
            Cause(
                where,
                "FieldValueInvalid",
                f"Invalid value: {show(value)}: {where} in body must be of type date-time: "
                f"{show(value)}",
            )
        )


_DATE_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _date_time(value: str) -> bool:
    return _DATE_TIME.match(value) is not None


def _check_number(value: float, schema: dict[str, Any], where: str, causes: list[Cause]) -> None:
    if "maximum" in schema and value > schema["maximum"]:
        causes.append(
            Cause(
                where,
                "FieldValueInvalid",
                f"Invalid value: {show(value)}: {where} in body should be less than or equal to "
                f"{_number(schema['maximum'])}",
            )
        )
    if "minimum" in schema and value < schema["minimum"]:
        causes.append(
            Cause(
                where,
                "FieldValueInvalid",
                f"Invalid value: {show(value)}: {where} in body should be greater than or equal "
                f"to {_number(schema['minimum'])}",
            )
        )


def _check_array(value: list[Any], schema: dict[str, Any], path: str, causes: list[Cause]) -> None:
    where = path or "<root>"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(
            Cause(
                where,
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
            )
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append(
            Cause(
                where,
                "FieldValueInvalid",
                f"Invalid value: {len(value)}: {where} in body should have at least "
                f"{schema['minItems']} items",
            )
        )
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _check(item, items, f"{path}[{index}]", causes)
    if schema.get("x-kubernetes-list-type") == "set":
        seen: list[Any] = []
        for index, item in enumerate(value):
            if item in seen:
                causes.append(
                    Cause(
                        f"{path}[{index}]", "FieldValueDuplicate", f"Duplicate value: {show(item)}"
                    )
                )
            seen.append(item)
    keys = schema.get("x-kubernetes-list-map-keys")
    if schema.get("x-kubernetes-list-type") == "map" and keys:
        seen_keys: list[Any] = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = {k: item.get(k) for k in keys}
            if key in seen_keys:
                causes.append(
                    Cause(
                        f"{path}[{index}]",
                        "FieldValueDuplicate",
                        f"Duplicate value: {show(key)}",
                    )
                )
            seen_keys.append(key)


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], path: str, causes: list[Cause]
) -> None:
    where = path or "<root>"
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        causes.append(
            Cause(
                where,
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
            )
        )
    for name in schema.get("required", []):
        if name not in value:
            causes.append(
                Cause(f"{path}.{name}" if path else name, "FieldValueRequired", "Required value")
            )
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        child = f"{path}.{key}" if path else key
        if key in properties:
            _check(item, properties[key], child, causes)
        elif isinstance(extra, dict):
            _check(item, extra, f"{path}[{key}]", causes)
