"""Generate the project's CustomResourceDefinitions from the pydantic models.

Each CRD is a `CrdDef` in `CRDS` (its names, scope, spec and status models, printer columns);
`build_crd(definition)` makes the CRD, `render_crd_yaml(definition)` the YAML shipped as
`crds/<file>` and copied into the chart's `files/<chart_file>` (`make crd`). A new kind is one
more `CrdDef` in `CRDS`: the command, the Makefile, the chart and the tests take every entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from flowexport.api import grants, sets
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


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


@dataclass(frozen=True)
class CrdDef:
    """One kind of the API: what its CRD is generated from and where it is shipped."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    spec: type[BaseModel]
    status: type[BaseModel]
    #: The object's description (`kubectl explain <kind>`).
    description: str
    #: The file under `crds/` (the chart's copy is `files/<chart_file>`).
    file: str
    chart_file: str
    printer_columns: tuple[dict[str, Any], ...] = ()
    group: str = GROUP
    version: str = VERSION
    categories: tuple[str, ...] = field(default=("illumio",))

    @property
    def name(self) -> str:
        """The CRD's metadata.name: `<plural>.<group>`."""
        return f"{self.plural}.{self.group}"


FLOWEXPORT_CRD = CrdDef(
    kind=KIND,
    plural=PLURAL,
    singular=SINGULAR,
    short_names=tuple(SHORT_NAMES),
    scope="Namespaced",
    spec=FlowExportSpec,
    status=FlowExportStatus,
    description=(
        "FlowExport exports one VPC's flow logs from CloudWatch Logs to an Illumio PCE as "
        "traffic flows."
    ),
    file="flowexport.yaml",
    chart_file="flowexport-crd.yaml",
    printer_columns=tuple(PRINTER_COLUMNS),
)

ACCOUNTGRANT_CRD = CrdDef(
    kind=grants.KIND,
    plural=grants.PLURAL,
    singular=grants.SINGULAR,
    short_names=tuple(grants.SHORT_NAMES),
    scope="Cluster",
    spec=grants.AccountGrantSpec,
    status=grants.AccountGrantStatus,
    description=(
        "AccountGrant lets the FlowExports of some namespaces use one AWS account, through the "
        "role it names and with its ExternalId (cluster-scoped: the cluster admin's)."
    ),
    file="accountgrant.yaml",
    chart_file="accountgrant-crd.yaml",
    printer_columns=tuple(grants.PRINTER_COLUMNS),
)

#: Every CRD of the project, in the order `make crd` writes them.
CRDS: list[CrdDef] = [FLOWEXPORT_CRD, ACCOUNTGRANT_CRD]


def crd_named(kind: str) -> CrdDef:
    """The definition of `kind` (its Kind, plural or singular, any case)."""
    wanted = kind.lower()
    for definition in CRDS:
        if wanted in (definition.kind.lower(), definition.plural, definition.singular):
            return definition
    raise KeyError(f"no CRD for {kind!r}: one of {', '.join(d.kind for d in CRDS)}")


def build_crd(definition: CrdDef = FLOWEXPORT_CRD) -> dict[str, Any]:
    """The CRD as a dict, ready to dump as YAML or send to an API server."""
    version: dict[str, Any] = {
        "name": definition.version,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
    }
    if definition.printer_columns:
        version["additionalPrinterColumns"] = [dict(c) for c in definition.printer_columns]
    version["schema"] = {
        "openAPIV3Schema": {
            "type": "object",
            "description": definition.description,
            "required": ["spec"],
            "properties": {
                "apiVersion": {
                    "type": "string",
                    "description": "APIVersion of this object.",
                },
                "kind": {"type": "string", "description": "Kind of this object."},
                "metadata": {"type": "object"},
                "spec": _model_schema(definition.spec),
                "status": _model_schema(definition.status),
            },
        }
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": definition.name},
        "spec": {
            "group": definition.group,
            "names": {
                "kind": definition.kind,
                "listKind": f"{definition.kind}List",
                "plural": definition.plural,
                "singular": definition.singular,
                "shortNames": list(definition.short_names),
                "categories": list(definition.categories),
            },
            "scope": definition.scope,
            "versions": [version],
        },
    }


def build_crds() -> list[dict[str, Any]]:
    """Every CRD of `CRDS`, as dicts."""
    return [build_crd(definition) for definition in CRDS]


def render_crd_yaml(definition: CrdDef = FLOWEXPORT_CRD) -> str:
    """The CRD as the YAML document shipped in `crds/<definition.file>`."""
    header = "# Generated by `flowexport crd` from the pydantic models. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(definition), sort_keys=False, width=100)


SET_PRINTER_COLUMNS: tuple[dict[str, Any], ...] = (
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Every account discovered and every FlowExport generated.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Why Ready is what it is.",
    },
    {
        "name": "Accounts",
        "type": "integer",
        "jsonPath": ".status.accounts.total",
        "description": "Accounts in scope.",
    },
    {
        "name": "VPCs",
        "type": "integer",
        "jsonPath": ".status.vpcs.total",
        "description": "Selected VPCs.",
    },
    {
        "name": "Without",
        "type": "integer",
        "jsonPath": ".status.vpcs.withoutFlowLog",
        "description": "Selected VPCs without a flow log to the destination.",
    },
    {
        "name": "FlowExports",
        "type": "integer",
        "jsonPath": ".status.flowExports",
        "description": "FlowExports generated.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)

FLOWEXPORTSET_CRD = CrdDef(
    kind=sets.KIND,
    plural=sets.PLURAL,
    singular=sets.SINGULAR,
    short_names=tuple(sets.SHORT_NAMES),
    scope="Namespaced",
    spec=sets.FlowExportSetSpec,
    status=sets.FlowExportSetStatus,
    description=(
        "FlowExportSet generates a FlowExport for every selected VPC of chosen AWS accounts "
        "(or Organizations OUs) and regions, keeps their flow logs (Ensure or Report) and "
        "reports coverage."
    ),
    file="flowexportset.yaml",
    chart_file="flowexportset-crd.yaml",
    printer_columns=SET_PRINTER_COLUMNS,
)
CRDS.append(FLOWEXPORTSET_CRD)
