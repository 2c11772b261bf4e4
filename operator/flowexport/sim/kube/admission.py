"""Admission of a write: what the API server does to an object before it stores it."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from flowexport.sim.kube.cel import MISSING
from flowexport.sim.kube.errors import ApiError, warn
from flowexport.sim.kube.resources import ResourceType
from flowexport.sim.kube.schema import prune_and_default
from flowexport.sim.kube.structural import field_errors


def admit(
    kind: ResourceType,
    obj: dict[str, Any],
    query: Iterable[tuple[str, str]],
    stored: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Prune, default and validate a custom resource against its schema; fold a Secret's
    `stringData` into base64 `data`, as the API server does on every write. On an update
    (`stored`: the object before it) the CEL rules are ratcheted (see `cel.py`)."""
    if kind.key == ("", "secrets") and obj.get("stringData"):
        data = obj.setdefault("data", {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    if kind.schema is None:
        return obj
    admitted = pruned(kind, obj, query)
    causes = field_errors(admitted, kind.schema, MISSING if stored is None else stored)
    if causes:
        name = obj.get("metadata", {}).get("name", "")
        listed = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(map(str, causes)) + "]"
        raise ApiError(
            422,
            "Invalid",
            f'{kind.kind}.{kind.group} "{name}" is invalid: {listed}',
            {
                "name": name,
                "group": kind.group,
                "kind": kind.kind,
                "causes": [c.as_dict() for c in causes],
            },
        )
    return admitted


def pruned(
    kind: ResourceType,
    obj: dict[str, Any],
    query: Iterable[tuple[str, str]],
    defaults: bool = True,
) -> dict[str, Any]:
    """`obj` without the fields its schema does not know (400 for them under
    `fieldValidation=Strict`), defaulted unless told not to (an apply configuration is not)."""
    if kind.schema is None:
        return obj
    unknown: list[str] = []
    out: dict[str, Any] = prune_and_default(obj, kind.schema, unknown, defaults=defaults)
    validation = dict(query).get("fieldValidation") or "Warn"
    if unknown and validation == "Strict":
        raise ApiError(
            400,
            "BadRequest",
            f'{kind.kind} in version "{kind.version}" cannot be handled '
            f"as a {kind.kind}: strict decoding error: "
            + ", ".join(f'unknown field "{u}"' for u in sorted(unknown)),
        )
    if validation == "Warn":
        # the API's default: the fields are dropped and each named in a Warning header
        warn(*(f'unknown field "{u}"' for u in sorted(unknown)))
    return out
