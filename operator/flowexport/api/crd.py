"""Generate the FlowExport CustomResourceDefinition from the pydantic models."""

from __future__ import annotations

from typing import Any

import yaml

from flowexport.api.models import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    FlowExportSpec,
    FlowExportStatus,
)

# JSON-schema keywords a Kubernetes structural schema does not take (or that mean nothing to it).
_DROPPED = {"title", "$defs"}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the export is subscribed, reaching the PCE and ingesting.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Why Ready is what it is (the first stage that is not True).",
    },
    {"name": "VPC", "type": "string", "jsonPath": ".spec.aws.vpcId", "description": "VPC id."},
    {
        "name": "Uploaded",
        "type": "integer",
        "jsonPath": ".status.counts.flowsUploaded",
        "description": "Flows the PCE accepted.",
    },
    {
        "name": "Lag",
        "type": "integer",
        "jsonPath": ".status.lagSeconds",
        "description": "Seconds between the newest uploaded record and its upload.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a pydantic JSON schema node into a Kubernetes structural schema node.

    `$ref`s are inlined (a CRD has no `$defs`), `anyOf [X, null]` optionals become X
    (`nullable` X when they have a default other than null), `default: null` and titles go,
    and closed objects drop `additionalProperties: false` (the API server prunes unknown
    fields of a structural schema anyway).
    """
    node = dict(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        union = node.pop("anyOf")
        branches = [b for b in union if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {len(branches)} types in a CRD")
        node = {**structural(branches[0], defs), **node}
        if len(union) > 1 and node.get("default") is not None:
            # null means something other than the default (kmsKeyId: null, no encryption):
            # without `nullable` the API server drops the null and applies the default
            node["nullable"] = True
    if node.get("default", ...) is None:
        del node["default"]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" in out:
        del out["additionalProperties"]
    return out


def _model_schema(model: type[FlowExportSpec] | type[FlowExportStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def build_crd() -> dict[str, Any]:
    """The CRD as a dict, ready to dump as YAML or send to an API server."""
    spec = _model_schema(FlowExportSpec)
    status = _model_schema(FlowExportStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["illumio"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "FlowExport exports one VPC's flow logs from CloudWatch Logs "
                                "to an Illumio PCE as traffic flows."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "APIVersion of this object.",
                                },
                                "kind": {"type": "string", "description": "Kind of this object."},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    """The CRD as the YAML document shipped in `crds/flowexport.yaml`."""
    header = "# Generated by `flowexport crd` from the pydantic models. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
