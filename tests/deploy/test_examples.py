"""The examples are valid: built-in objects against the Kubernetes schemas, FlowExports against
the CRD's own schema and the operator's validation, and the full example sets every field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from flowexport.api.validation import parse_spec
from flowexport.commands.manifest import load_manifest
from tests.chart import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("flowexport-*.yaml"))
CRD = yaml.safe_load((ROOT / "crds" / "flowexport.yaml").read_text())


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crd_schema() -> dict[str, Any]:
    (version,) = CRD["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def leaf_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Every field path the schema defines (objects with properties are walked into)."""
    paths = set()
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        paths |= leaf_paths(sub, path) if sub.get("properties") else {path}
    return paths


def set_paths(value: Any, prefix: str = "") -> set[str]:
    """Every field path set, objects included (a map such as labels is a leaf of the schema)."""
    if not isinstance(value, dict):
        return {prefix}
    paths = {prefix} if prefix else set()
    for name, sub in value.items():
        paths |= set_paths(sub, f"{prefix}.{name}" if prefix else name)
    return paths


def test_there_is_a_minimal_and_a_full_example() -> None:
    assert [p.name for p in EXAMPLES] == ["flowexport-full.yaml", "flowexport-minimal.yaml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_object_is_valid(path: Path) -> None:
    kinds = []
    for doc in documents(path):
        kinds.append(doc["kind"])
        if doc["kind"] == "FlowExport":
            assert doc["apiVersion"] == f"{CRD['spec']['group']}/v1alpha1"
            jsonschema.Draft7Validator(crd_schema()).validate(doc)
            parse_spec(doc["spec"])  # the operator's own checks (log format fields, CIDRs...)
        else:
            kubernetes_validate.validate(doc, "1.29.0", strict=True)
    assert kinds.count("FlowExport") == 1


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_secret_an_example_names_is_in_it(path: Path) -> None:
    docs = documents(path)
    (flowexport,) = [d for d in docs if d["kind"] == "FlowExport"]
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    named = {v["name"] for k, v in _refs(flowexport["spec"])}
    assert named == secrets
    load_manifest(path)  # what `flowexport sync -f` reads


def _refs(value: Any) -> list[tuple[str, Any]]:
    if not isinstance(value, dict):
        return []
    found = [(k, v) for k, v in value.items() if k.endswith("SecretRef")]
    return found + [r for v in value.values() for r in _refs(v)]


def test_the_full_example_sets_every_spec_field() -> None:
    (flowexport,) = [
        d
        for d in documents(ROOT / "examples" / "flowexport-full.yaml")
        if d["kind"] == "FlowExport"
    ]
    defined = leaf_paths(crd_schema()["properties"]["spec"])
    assert defined - set_paths(flowexport["spec"]) == set()


def test_the_schema_check_catches_a_broken_example() -> None:
    (flowexport, _) = documents(ROOT / "examples" / "flowexport-minimal.yaml")
    flowexport["spec"]["aws"]["trafficType"] = "SOME"
    with pytest.raises(jsonschema.ValidationError, match="SOME"):
        jsonschema.Draft7Validator(crd_schema()).validate(flowexport)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_flowexport_assuming_a_role_names_resources_of_that_account(path: Path) -> None:
    """With `roleArn` the operator works in that role's account: the delivery role, the
    subscription role and the stream are that account's (a subscription filter cannot deliver
    straight to another account's stream, nor pass another account's role)."""
    (flowexport,) = [d for d in documents(path) if d["kind"] == "FlowExport"]
    aws, stream = flowexport["spec"]["aws"], flowexport["spec"].get("source", {}).get("stream", {})
    if "roleArn" not in aws:
        return
    account = aws["roleArn"].split(":")[4]
    for arn in (
        aws.get("deliverLogsRoleArn"),
        stream.get("subscriptionRoleArn"),
        stream.get("streamArn"),
    ):
        if arn:
            assert arn.split(":")[4] == account, f"{arn} is not in {account}, roleArn's account"
