"""Server-side Tables (`Accept: ...;as=Table`), which `kubectl get` prints: a Name column,
the resource's printer columns of priority 0, and Age unless a printer column is called so."""

from __future__ import annotations

from typing import Any

from flowexport.sim.kube.resources import ResourceType
from flowexport.sim.kube.schema import human_age, json_path


def wants_table(accept: str) -> bool:
    """Whether a request's Accept header asks for a Table."""
    return "as=Table" in accept


def table(kind: ResourceType, items: list[dict[str, Any]], revision: int) -> dict[str, Any]:
    """The `meta.k8s.io/v1` Table of `items`, at resourceVersion `revision`."""
    columns = [c for c in kind.columns if c.get("priority", 0) == 0]
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": (
                "Name must be unique within a namespace. Is required when creating resources, "
                "although some resources may allow a client to request the generation of an "
                "appropriate name automatically. Name is primarily intended for creation "
                "idempotence and configuration definition. Cannot be updated. More info: "
                "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
            ),
            "priority": 0,
        }
    ]
    definitions += [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description")
            or f"Custom resource definition column (in JSONPath format): {c['jsonPath']}",
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    if not any(c["name"] == "Age" for c in columns):
        definitions.append(
            {"name": "Age", "type": "string", "format": "", "description": "", "priority": 0}
        )
    rows = []
    for obj in items:
        cells: list[Any] = [obj["metadata"]["name"]]
        for column in columns:
            found = json_path(obj, column["jsonPath"])
            value = found[0] if found else None
            if value is not None and column.get("type") == "date":
                value = human_age(str(value))
            cells.append(value)
        if not any(c["name"] == "Age" for c in columns):
            cells.append(human_age(obj["metadata"]["creationTimestamp"]))
        rows.append(
            {
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(revision)},
        "columnDefinitions": definitions,
        "rows": rows,
    }
