"""The CRD is generated from the models, shipped as generated, and validates like the models."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from flowexport.api.crd import build_crd, render_crd_yaml
from flowexport.api.validation import SpecError, parse_spec
from tests.api.test_models import minimal_spec

ROOT = Path(__file__).resolve().parents[2]


def schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_shipped_crd_is_exactly_the_generated_one() -> None:
    shipped = (ROOT / "crds" / "flowexport.yaml").read_text()
    assert shipped == render_crd_yaml(), "run `make crd` (flowexport crd > crds/flowexport.yaml)"


def test_names_and_columns() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "flowexports.flowexport.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "FlowExport",
        "flowexports",
        ["fe"],
    )
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "VPC", "Uploaded", "Lag", "Age"]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, sub in node.get("properties", {}).items():
            found += _walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural_and_described() -> None:
    text = yaml.safe_dump(schema())
    for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "uniqueItems", "nullable"):
        assert banned not in text
    for path, node in _walk(schema()["properties"]["spec"], "spec"):
        assert "type" in node, path
        if not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"


def test_status_subtree_is_described() -> None:
    for path, node in _walk(schema()["properties"]["status"], "status"):
        if not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


def test_required_fields() -> None:
    spec = schema()["properties"]["spec"]
    assert set(spec["required"]) == {"aws", "pce"}
    assert {"region", "vpcId", "logGroupName", "deliverLogsRoleArn"} <= set(
        spec["properties"]["aws"]["required"]
    )
    assert spec["properties"]["ingestion"]["default"] == {}


def resource(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "FlowExport",
        "metadata": {"name": "x"},
        "spec": spec,
    }


def schema_accepts(obj: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(obj, schema())
    except jsonschema.ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"aws.trafficType": "REJECT", "ingestion.actions": ["ACCEPT", "REJECT"]},
        {"ingestion.includeCidrs": ["10.0.0.0/8", "2001:db8::/32"]},
        {"ingestion.startFrom": "2026-11-23T08:00:00Z"},
        {"aws.vpcId": "vpc-12345678", "deletionPolicy": "Retain", "suspend": True},
    ],
)
def test_crd_and_model_agree_on_valid_specs(overrides: dict[str, Any]) -> None:
    spec = minimal_spec(**overrides)
    assert schema_accepts(resource(spec))
    parse_spec(spec)


@pytest.mark.parametrize(
    "overrides",
    [
        {"aws.vpcId": "vpc-XYZ"},
        {"aws.trafficType": "SOME"},
        {"aws.maxAggregationInterval": 30},
        {"aws.logGroupRetentionDays": 8},
        {"pce.orgId": 0},
        {"pce.url": "ftp://pce"},
        {"ingestion.batchSize": 5000},
        {"ingestion.actions": []},
        {"ingestion.includeCidrs": ["not-a-cidr"]},
        {"ingestion.startFrom": "yesterday"},
        {"deletionPolicy": "Orphan"},
    ],
)
def test_crd_and_model_agree_on_invalid_specs(overrides: dict[str, Any]) -> None:
    spec = minimal_spec(**overrides)
    assert not schema_accepts(resource(spec))
    with pytest.raises(SpecError):
        parse_spec(spec)


def test_missing_required_field_is_rejected_by_both() -> None:
    spec = minimal_spec()
    broken = copy.deepcopy(spec)
    del broken["pce"]["credentialsSecretRef"]
    assert not schema_accepts(resource(broken))
    with pytest.raises(SpecError, match=r"spec\.pce\.credentialsSecretRef"):
        parse_spec(broken)
