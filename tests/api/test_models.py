from typing import Any

import pytest

from flowexport.api.models import FlowExport, FlowExportSpec, FlowExportStatus
from flowexport.api.validation import SpecError, parse_spec


def minimal_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "aws": {
            "region": "us-east-1",
            "vpcId": "vpc-0123456789abcdef0",
            "logGroupName": "/flowexport/prod",
            "deliverLogsRoleArn": "arn:aws:iam::123456789012:role/flow-logs-delivery",
        },
        "pce": {
            "url": "https://pce.example.com:8443",
            "orgId": 1,
            "credentialsSecretRef": {"name": "pce-api-key"},
        },
    }
    for path, value in overrides.items():
        node = spec
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return spec


def test_defaults() -> None:
    spec = parse_spec(minimal_spec())
    assert spec.aws.manage_log_group is True
    assert spec.aws.traffic_type == "ALL"
    assert spec.aws.max_aggregation_interval == 60
    assert spec.aws.log_format is None
    assert spec.pce.insecure_skip_tls_verify is False
    assert spec.ingestion.actions == ["ACCEPT"]
    assert spec.ingestion.batch_size == 1000
    assert spec.ingestion.start_from == "now"
    assert spec.deletion_policy == "Delete"
    assert spec.suspend is False


def test_round_trip_uses_camel_case() -> None:
    spec = parse_spec(minimal_spec(**{"pce.insecureSkipTLSVerify": True}))
    dumped = spec.model_dump(by_alias=True, exclude_defaults=True)
    assert dumped["pce"]["insecureSkipTLSVerify"] is True
    assert dumped["aws"]["vpcId"] == "vpc-0123456789abcdef0"
    assert FlowExportSpec.model_validate(spec.model_dump(by_alias=True)) == spec


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"pce.url": "http://pce.example.com"}, "spec.pce.url", "loopback"),
        ({"pce.url": "https://pce.example.com/api/v2"}, "spec.pce.url", "without"),
        ({"pce.orgId": 0}, "spec.pce.orgId", "greater than or equal"),
        ({"aws.vpcId": "vpc-xyz"}, "spec.aws.vpcId", "pattern"),
        ({"aws.maxAggregationInterval": 120}, "spec.aws.maxAggregationInterval", "60"),
        ({"aws.logFormat": "${srcaddr} ${dstaddr}"}, "spec.aws.logFormat", "srcport"),
        (
            {"aws.logFormat": "${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${bogus}"},
            "spec.aws.logFormat",
            "bogus",
        ),
        ({"ingestion.batchSize": 1001}, "spec.ingestion.batchSize", "less than or equal"),
        ({"ingestion.includeCidrs": ["10.0.0.0/33"]}, "spec.ingestion.includeCidrs.0", "CIDR"),
        ({"ingestion.startFrom": "2026-01-01T00:00:00"}, "spec.ingestion.startFrom", "pattern"),
        ({"ingestion.startFrom": "2026-13-01T00:00:00Z"}, "spec.ingestion.startFrom", "RFC 3339"),
        ({"ingestion.actions": ["ALLOW"]}, "spec.ingestion.actions.0", "ACCEPT"),
        ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy", "Delete"),
        ({"aws.unknownField": 1}, "spec.aws.unknownField", "not permitted"),
        (
            {"pce.insecureSkipTLSVerify": True, "pce.caBundleSecretRef": {"name": "ca"}},
            "spec.pce",
            "exclude each other",
        ),
    ],
)
def test_invalid_specs_name_the_field(overrides: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(minimal_spec(**overrides))
    assert field in caught.value.fields
    assert message in str(caught.value)


def test_loopback_http_is_allowed_for_simulators() -> None:
    for url in ("http://127.0.0.1:8443", "http://localhost:9999/", "http://[::1]:80"):
        assert parse_spec(minimal_spec(**{"pce.url": url})).pce.url == url.rstrip("/")


def test_valid_start_times_and_formats() -> None:
    spec = parse_spec(
        minimal_spec(
            **{
                "ingestion.startFrom": "2026-11-23T08:00:00+01:00",
                "aws.logFormat": "${version} ${srcaddr} ${dstaddr} ${srcport} ${dstport} "
                "${protocol} ${tcp-flags}",
            }
        )
    )
    assert spec.ingestion.start_from.startswith("2026")


def test_error_messages_never_echo_values() -> None:
    secretish = "AKIAIOSFODNN7EXAMPLE-wJalrXUtnFEMI"
    with pytest.raises(SpecError) as caught:
        parse_spec(minimal_spec(**{"aws.logGroupName": f"bad name {secretish}"}))
    assert secretish not in str(caught.value)


def test_resource_with_status_parses() -> None:
    resource = FlowExport.model_validate(
        {
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "FlowExport",
            "metadata": {"name": "prod", "namespace": "security", "generation": 3},
            "spec": minimal_spec(),
            "status": {
                "observedGeneration": 3,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Ingesting",
                        "lastTransitionTime": "2026-11-23T08:00:00Z",
                    }
                ],
                "counts": {"recordsRead": 10, "recordsSkipped": {"nodata": 2}},
                "cursor": {"anything": ["the", "reader", "needs"]},
            },
        }
    )
    assert isinstance(resource.status, FlowExportStatus)
    assert resource.status.counts.records_skipped == {"nodata": 2}
    assert resource.status.conditions[0].reason == "Ingesting"
