"""The FlowExportSet API: what the models accept and refuse, the generated spec of one VPC, and
the example manifest against both the models and the CRD's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from flowexport.api.crd import FLOWEXPORTSET_CRD, build_crd
from flowexport.api.models import FlowExportSpec
from flowexport.api.sets import FlowExportSetSpec, sample_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fleet" / "flowexportset.yaml"
PCE = {"url": "https://pce.example.com", "orgId": 1, "credentialsSecretRef": {"name": "k"}}


def spec(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"accounts": ["111111111111"], "regions": ["us-east-1"]}
    body["template"] = {"pce": PCE}
    body.update(fields)
    return body


def refused(body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        FlowExportSetSpec.model_validate(body)
    return str(caught.value)


def test_defaults_report_into_per_vpc_log_groups_every_five_minutes() -> None:
    parsed = FlowExportSetSpec.model_validate(spec())
    assert parsed.flow_logs == "Report" and parsed.refresh_seconds == 300
    assert parsed.destination.log_groups is not None and parsed.destination.s3 is None
    assert parsed.max_flow_exports == 500 and parsed.deletion_policy == "Delete"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (spec(accounts=[]), "select accounts"),
        (spec(accounts=["1234"]), "accounts.0"),
        (spec(regions=[]), "regions"),
        (spec(destination={}), "exactly one of s3 and logGroups"),
        (
            spec(destination={"s3": {"bucket": "b" * 3}, "logGroups": {}}),
            "exactly one of s3 and logGroups",
        ),
        (
            spec(
                organization={"managementAccountId": "111111111111", "organizationalUnits": ["x"]}
            ),
            "organizationalUnits",
        ),
        (spec(vpcs={"ids": ["vpc-xyz"]}), "vpcs.ids"),
        (spec(template={"pce": PCE, "aws": {"logFormat": "${version}"}}), "lacks field"),
        (spec(template={"pce": PCE, "aws": {"roleArn": "arn:aws:iam::1:role/x"}}), "roleArn"),
        (
            spec(template={"pce": PCE, "source": {"mode": "s3", "s3": {"bucket": "bkt"}}}),
            "template.source.s3",
        ),
        (spec(template={"pce": {**PCE, "url": "http://pce.example.com"}}), "plain http"),
        (spec(refreshSeconds=1), "refreshSeconds"),
    ],
)
def test_what_the_models_refuse(body: dict[str, Any], says: str) -> None:
    assert says in refused(body)


def test_the_generated_spec_of_one_vpc_is_a_valid_flowexport() -> None:
    parsed = FlowExportSetSpec.model_validate(
        spec(
            flowLogs="Ensure",
            destination={"logGroups": {"namePrefix": "/fx/", "deliverLogsRoleName": "d"}},
            template={"pce": PCE, "aws": {"logGroupRetentionDays": 30}},
            deletionPolicy="Retain",
        )
    )
    body = sample_spec(parsed, "222222222222", "eu-west-1", "vpc-0123456789abcdef0")
    made = FlowExportSpec.model_validate(body)
    assert made.aws.region == "eu-west-1" and made.aws.vpc_id == "vpc-0123456789abcdef0"
    assert made.aws.log_group_name == "/fx/vpc-0123456789abcdef0"
    assert made.aws.deliver_logs_role_arn == "arn:aws:iam::222222222222:role/d"
    assert made.aws.log_group_retention_days == 30
    assert made.aws.management_policy == "AdoptOrCreate" and made.deletion_policy == "Retain"
    report = FlowExportSetSpec.model_validate(spec())
    observed = FlowExportSpec.model_validate(
        sample_spec(report, "2" * 12, "us-east-1", "vpc-00000000")
    )
    assert (
        observed.aws.management_policy == "Observe" and observed.aws.deliver_logs_role_arn is None
    )


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d["metadata"]["name"])
def test_the_example_is_valid_for_the_models_and_the_crd_schema(doc: dict[str, Any]) -> None:
    assert doc["kind"] == "FlowExportSet"
    FlowExportSetSpec.model_validate(doc["spec"])
    (version,) = build_crd(FLOWEXPORTSET_CRD)["spec"]["versions"]
    jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])
