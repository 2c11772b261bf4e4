from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest

from flowexport import lifecycle
from flowexport.api.conditions import set_condition
from flowexport.api.models import MAX_ORG_ID, FlowExport, FlowExportSpec, FlowExportStatus
from flowexport.api.validation import SpecError, parse_spec
from flowexport.errors import ConfigError
from flowexport.urls import check_pce_url


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
    # unset flow-log fields adopt what exists; a new flow log gets ALL and 60 s
    assert spec.aws.traffic_type is None
    assert spec.aws.max_aggregation_interval is None
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
        ({"ingestion.lookbackSeconds": 899}, "spec.ingestion.lookbackSeconds", "900"),
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


URL_FIELDS = (
    "pce.url",
    "aws.endpointUrl",
    "aws.endpoints.ec2",
    "aws.endpoints.logs",
    "aws.endpoints.sts",
)


@pytest.mark.parametrize("field", URL_FIELDS)
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://admin:pw@pce.example.com", "must not contain credentials"),
        ("https://token@pce.example.com/x", "must not contain credentials"),
        ("admin:pw@pce.example.com:8443", "must not contain credentials"),
        ("https://127.0.0.1:99999", "invalid port"),
        ("https://pce.example.com:0", "invalid port"),
        ("https://pce.example.com:08443", "invalid port"),
        ("https://pce.example.com:https", "invalid port"),
        ("https://pce.example.com:", "invalid port"),
        ("https://pce.example.com/?debug=1", "query"),
        ("https://pce.example.com#top", "fragment"),
        ("http://pce.example.com:8080", "loopback"),
        ("http://localhost.example.com", "loopback"),
        ("http://127.0.0.1.example.com", "loopback"),
        ("ftp://pce.example.com", "must look like https://"),
        ("HTTPS://pce.example.com", "must look like https://"),
        ("https://pce.example.com\n", "control characters"),
        ("https://pce example.com", "spaces"),
        ("https://999.1.1.1", "invalid host"),
        ("https://[fe80::1%25eth0]", "invalid host"),
        ("https://:8443", "invalid host"),
        ("https://pce.example.com/caf\u00e9", "ASCII"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(field: str, url: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(minimal_spec(**{field: url}))
    assert caught.value.fields == [f"spec.{field}"]
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://pce.example.com:8443",
        "https://pce-1.internal_zone.example:65535/",
        "https://10.0.0.5:1",
        "https://[2001:db8::1]:8443/pce/",
        "https://pce/v2-proxy/path@with-at",
        "http://localhost.localdomain:8080",
        "http://127.255.0.1",
        "http://ip6-localhost/x",
    ],
)
def test_good_urls_are_kept_without_a_trailing_slash(url: str) -> None:
    spec = parse_spec(minimal_spec(**{"pce.url": url, "aws.endpointUrl": url}))
    assert spec.pce.url == spec.aws.endpoint_url == url.rstrip("/")


def test_an_api_path_is_refused_only_in_the_pce_url() -> None:
    assert parse_spec(minimal_spec(**{"aws.endpointUrl": "https://h/api/v2"})).aws.endpoint_url
    assert parse_spec(minimal_spec(**{"pce.url": "https://api/v2"})).pce.url == "https://api/v2"
    with pytest.raises(SpecError, match=r"spec\.pce\.url: give the PCE base URL without"):
        parse_spec(minimal_spec(**{"pce.url": "https://pce.example.com/x/api/v2"}))


SECRET = "hunter2-Zq9"


@pytest.mark.parametrize(
    "url",
    [
        f"https://admin:{SECRET}@pce.example.com:8443",
        f"https://admin:{SECRET}@pce.example.com:99999/?q#f",
        f"http://admin:{SECRET}@pce.example.com",
        f"admin:{SECRET}@pce.example.com",
        f"https://admin:{SECRET} x@pce.example.com",
    ],
)
@pytest.mark.parametrize("field", URL_FIELDS)
def test_credentials_in_a_url_are_never_echoed(field: str, url: str) -> None:
    raw = minimal_spec(**{field: url})
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    update = lifecycle.invalid_spec(caught.value)
    [condition] = set_condition([], update, 1, datetime.now(UTC))
    with pytest.raises(pydantic.ValidationError) as raw_error:
        FlowExport.model_validate({"spec": raw})
    with pytest.raises(ValueError, match="credentials") as cli_error:
        check_pce_url(url)
    texts = [
        str(caught.value),
        condition.message,
        str(raw_error.value),
        repr(raw_error.value),
        str(cli_error.value),
    ]
    assert all(f"spec.{field}" in text for text in texts[:2])
    assert all("credentials" in text for text in texts)
    assert not [text for text in texts if SECRET in text]


def test_org_id_is_a_positive_32_bit_integer() -> None:
    assert parse_spec(minimal_spec(**{"pce.orgId": MAX_ORG_ID})).pce.org_id == 2**31 - 1
    for bad in (MAX_ORG_ID + 1, 10**20):
        with pytest.raises(SpecError, match=r"spec\.pce\.orgId: .*less than or equal"):
            parse_spec(minimal_spec(**{"pce.orgId": bad}))


def test_duplicate_actions_are_refused() -> None:
    both = parse_spec(minimal_spec(**{"ingestion.actions": ["REJECT", "ACCEPT"]}))
    assert both.ingestion.actions == ["REJECT", "ACCEPT"]
    with pytest.raises(SpecError, match="list each action once") as caught:
        parse_spec(minimal_spec(**{"ingestion.actions": ["ACCEPT", "ACCEPT"]}))
    assert caught.value.fields == ["spec.ingestion.actions"]


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


def test_unset_flow_log_fields_stay_unset_to_adopt_what_exists() -> None:
    aws = FlowExportSpec.model_validate(minimal_spec()).aws
    assert aws.max_aggregation_interval is None and aws.traffic_type is None
    assert aws.log_format is None and aws.management_policy == "AdoptOrCreate"


def test_observe_may_not_remove_subscription_filters() -> None:
    spec = minimal_spec()
    spec["aws"].update(managementPolicy="Observe", removeSubscriptionFilters=["lambda"])
    with pytest.raises(SpecError, match="Observe never does"):
        parse_spec(spec)


def test_per_service_endpoints_follow_the_url_rules() -> None:
    spec = minimal_spec()
    spec["aws"]["endpoints"] = {"sts": "http://sts.example.com"}
    with pytest.raises(SpecError, match=r"spec\.aws\.endpoints\.sts"):
        parse_spec(spec)
    spec["aws"]["endpoints"] = {"sts": "https://sts.eu-west-1.amazonaws.com"}
    endpoints = parse_spec(spec).aws.endpoints
    assert endpoints is not None and endpoints.sts == "https://sts.eu-west-1.amazonaws.com"


ROLE = "arn:aws:iam::123456789012:role/flowexport-cwl-to-kinesis"
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/lambda-era"


def test_mode_stream_needs_its_stream_settings() -> None:
    spec = minimal_spec()
    spec["source"] = {"mode": "stream"}
    with pytest.raises(SpecError, match="source"):
        parse_spec(spec)
    spec["source"]["stream"] = {"subscriptionRoleArn": ROLE}
    assert parse_spec(spec).source.mode == "stream"
    assert parse_spec(minimal_spec()).source.mode == "poll"


@pytest.mark.parametrize(
    ("name", "ok"), [(None, True), ("lambda-era", True), ("something-else", False)]
)
def test_a_stream_name_beside_a_stream_arn_must_name_the_same_stream(
    name: str | None, ok: bool
) -> None:
    spec = minimal_spec()
    stream: dict[str, Any] = {"subscriptionRoleArn": ROLE, "streamArn": ARN}
    if name is not None:
        stream["streamName"] = name
    spec["source"] = {"mode": "stream", "stream": stream}
    if ok:
        assert parse_spec(spec).source.stream is not None
    else:
        with pytest.raises(SpecError, match="streamName must be the name"):
            parse_spec(spec)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"])
def test_regions_botocore_knows_are_taken(region: str) -> None:
    assert parse_spec(minimal_spec(**{"aws.region": region})).aws.region == region


def test_an_unknown_region_is_an_invalid_spec_not_a_retry() -> None:
    """Issue 23: xx-nowhere-9 was retried for ever (its endpoint never answers)."""
    with pytest.raises(SpecError) as refused:
        parse_spec(minimal_spec(**{"aws.region": "xx-nowhere-9"}))
    assert "region xx-nowhere-9 is not an AWS region" in str(refused.value)
    assert not refused.value.retryable
    # With an endpoint given, the endpoint says where (an emulator, a region newer than
    # this release's botocore).
    given = minimal_spec(
        **{"aws.region": "xx-nowhere-9", "aws.endpointUrl": "http://127.0.0.1:5000"}
    )
    assert parse_spec(given).aws.region == "xx-nowhere-9"


async def test_a_colon_in_the_pce_username_says_why() -> None:
    """HTTP Basic cannot carry it: the PCE would take the rest for the password (a 401)."""

    class Secrets:
        async def read(self, name: str, kind: Any) -> dict[str, str]:
            return {"username": "api_1234:the-secret", "password": "the-secret"}

        def missing(self, name: str, kind: Any) -> None:
            return None

    spec = parse_spec(minimal_spec())
    with pytest.raises(ConfigError) as refused:
        await lifecycle.pce_client(spec, Secrets())
    assert refused.value.reason == "SecretInvalid"
    assert "HTTP Basic authentication cannot carry" in str(refused.value)
    assert "the-secret" not in str(refused.value) and "api_1234" not in str(refused.value)
