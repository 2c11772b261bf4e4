"""The CRD is generated from the models, shipped as generated, and validates like the models."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import pytest
import yaml
from pydantic import ConfigDict, Field, TypeAdapter

from flowexport.api.crd import CRDS, CrdDef, build_crd, crd_named, render_crd_yaml
from flowexport.api.validation import SpecError, parse_spec
from flowexport.sim.kube.schema import prune_and_default
from flowexport.sim.kube.structural import field_errors
from tests.api.test_models import minimal_spec

ROOT = Path(__file__).resolve().parents[2]


def schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("definition", CRDS, ids=lambda d: d.kind)
def test_shipped_crd_is_exactly_the_generated_one(definition: CrdDef) -> None:
    shipped = (ROOT / "crds" / definition.file).read_text()
    assert shipped == render_crd_yaml(definition), f"run `make crd` (crds/{definition.file})"


def test_crd_names_one_definition_each() -> None:
    assert crd_named("FlowExport") is crd_named("flowexports") is crd_named("flowexport")
    with pytest.raises(KeyError):
        crd_named("NoSuchKind")
    assert len({d.name for d in CRDS}) == len({d.file for d in CRDS}) == len(CRDS)


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
    assert columns == ["Ready", "Reason", "VPC", "Uploaded", "Lag", "Age"]
    reason = version["additionalPrinterColumns"][1]
    assert reason["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'


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
    for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "uniqueItems"):
        assert banned not in text
    # nullable only where null is not the default: kmsKeyId null means no encryption (without
    # it the API server would drop the null and apply the default, alias/aws/kinesis)
    nullable = [p for p, n in _walk(schema()["properties"]["spec"], "spec") if n.get("nullable")]
    assert nullable == ["spec.source.stream.kmsKeyId"]
    for path, node in _walk(schema()["properties"]["spec"], "spec"):
        assert "type" in node, path
        if not path.endswith(("[]", "{}")):  # items and map values: described by their parent
            assert node.get("description"), f"{path} has no description"


def test_status_subtree_is_described() -> None:
    for path, node in _walk(schema()["properties"]["status"], "status"):
        if not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


def test_required_fields() -> None:
    spec = schema()["properties"]["spec"]
    assert set(spec["required"]) == {"aws", "pce"}
    # deliverLogsRoleArn is needed only to create a flow log: unset, an existing one is adopted
    # vpcId and logGroupName: required by the model in modes poll and stream (not in mode s3).
    assert set(spec["properties"]["aws"]["required"]) == {"region"}
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
        {"aws.endpointUrl": "http://127.0.0.1:4566", "pce.url": "https://[2001:db8::1]:8443/p"},
        {"pce.orgId": 2**31 - 1},
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
        {"pce.url": "https://127.0.0.1:99999"},
        {"pce.url": "https://pce.example.com/?x=1"},
        {"pce.orgId": 10**20},
        {"aws.endpointUrl": "http://logs.example.com"},
        {"aws.endpointUrl": "https://logs.example.com:0"},
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


def _url_node(field: str) -> dict[str, Any]:
    node = schema()["properties"]["spec"]
    for key in field.split("."):
        node = node["properties"][key]
    return node


def crd_allows(field: str, url: str) -> bool:
    """Whether the CRD admits the URL: its schema and every CEL rule of the object, evaluated
    as the simulator evaluates them (cel-python), which tests/realkube/ holds to a real
    kube-apiserver."""
    obj = resource(minimal_spec(**{field: url}))
    pruned = prune_and_default(obj, schema(), [])
    return schema_accepts(obj) and not field_errors(pruned, schema())


def model_allows(field: str, url: str) -> bool:
    try:
        parse_spec(minimal_spec(**{field: url}))
    except SpecError:
        return False
    return True


URLS = [
    "https://pce.example.com:8443",
    "https://pce.example.com:65535/base/",
    "https://[::1]:8443",
    "http://127.0.0.1:8080",
    "http://localhost",
    "http://[::1]/x",
    "https://h/p@th",
    "https://api/v2",
    "https://pce/api/v2",
    "https://u:p@pce.example.com",
    "u:p@pce.example.com",
    "http://u:p@localhost",
    "https://u:p@pce.example.com:99999?x",
    "http://pce.example.com",
    "http://localhost.example.com",
    "https://127.0.0.1:99999",
    "https://h:0",
    "https://h:08443",
    "https://h:abc",
    "https://h?x=1",
    "https://h#f",
    "HTTPS://h",
    "https://exa mple.com",
    "https://h/caf\u00e9",
    "https://[fe80::1%25eth0]",
    # Metadata, link-local and the API server (issue 23 item 8), and near misses.
    "https://169.254.169.254",
    "https://169.254.169.254:80/latest",
    "https://[fd00:ec2::254]",
    "https://[FE80::1]:8443",
    "https://[::ffff:169.254.169.254]",
    "https://[::ffff:a9fe:a9fe]",
    "https://[::]",
    "https://0.0.0.0:8443",
    "https://kubernetes.default.svc",
    "https://kubernetes.default.svc.cluster.local:443",
    "https://Kubernetes",
    "https://metadata.google.internal",
    "https://instance-data.ec2.internal",
    "https://169.2541.example.com",
    "https://kubernetes-pce.example.com",
    "https://metadata.example.com",
    "https://[fd00:ec3::1]",
    "https://10.169.254.1",
    "https://999.1.1.1",
    "https://10.0.0.1:8443",
    "https://1.2.3",
]
#: Every URL field: the same rules in the CRD and the models.
URL_FIELDS = [
    "pce.url",
    "aws.endpointUrl",
    "aws.endpoints.ec2",
    "aws.endpoints.logs",
    "aws.endpoints.sts",
]
#: What only the operator refuses: an impossible IPv6 address passes the pattern's characters
#: (an impossible IPv4 address is refused by a CEL rule).
MODEL_ONLY = {"https://[1:2:3]"}


@pytest.mark.parametrize("field", URL_FIELDS)
def test_crd_url_rules_agree_with_the_models(field: str) -> None:
    for url in URLS:
        assert crd_allows(field, url) == model_allows(field, url), url
    for url in MODEL_ONLY:
        assert crd_allows(field, url) and not model_allows(field, url)


@pytest.mark.parametrize(
    ("url", "where", "message"),
    [
        ("https://u:p@h:99999/?q", "spec.pce", "Invalid value: url must not contain credentials"),
        ("u:p@h", "spec.pce", "Invalid value: url must not contain credentials"),
        ("http://u:p@pce.example.com", "spec.pce", "Invalid value: url must not contain cred"),
        ("http://pce.example.com", "spec.pce.url", 'Invalid value: "http://pce.example.com"'),
        ("http://127.0.0.1.example.com:80", "spec.pce.url", 'Invalid value: "http://127'),
        ("https://pce.example.com/api/v2", "spec.pce.url", 'Invalid value: "https://pce'),
        ("https://169.254.169.254", "spec.pce.url", 'Invalid value: "https://169.254.169.254"'),
        ("https://[fd00:ec2::254]:443", "spec.pce.url", 'Invalid value: "https://[fd00:ec2::254]'),
        ("https://kubernetes.default.svc", "spec.pce.url", 'Invalid value: "https://kubernetes.'),
    ],
)
def test_cel_rules_say_what_is_wrong(url: str, where: str, message: str) -> None:
    """One rule refuses each; a URL with credentials only by its object's rule, whose answer
    (unlike a string's) does not quote the value."""
    obj = prune_and_default(resource(minimal_spec(**{"pce.url": url})), schema(), [])
    errors = field_errors(obj, schema())
    (refused,) = [e for e in errors if "in body should match" not in e.message]  # CEL's only
    assert refused.field == where
    assert refused.message.startswith(message)
    assert "u:p" not in refused.message


@pytest.mark.parametrize("field", URL_FIELDS)
def test_urls_with_credentials_are_left_to_the_cel_rule(field: str) -> None:
    """A pattern failure quotes the value in the API server's answer; a CEL rule's does not."""
    pattern = _url_node(field)["pattern"]
    for url in ("https://u:p@h:99999/?q", "u:p@h", "http://u:p@pce.example.com", "x@y z"):
        assert re.search(pattern, url), url
        assert not crd_allows(field, url)


def test_every_pattern_and_rule_regex_compiles_as_re2() -> None:
    """The API server is written in Go: no look-around, no back-references."""
    regexes = [node["pattern"] for _, node in _walk(schema()) if "pattern" in node]
    for _, node in _walk(schema()):
        for rule in node.get("x-kubernetes-validations", []):
            regexes += re.findall(r"r'([^']*)'", rule["rule"])
    assert len(regexes) > 10
    for regex in regexes:
        TypeAdapter(
            Annotated[str, Field(pattern=regex)], config=ConfigDict(regex_engine="rust-regex")
        )
