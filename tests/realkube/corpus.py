"""Valid and invalid FlowExport manifests, each with the verdict the API server gives.

`flowexport sync` must agree with the real API server's admission (a server-side dry run of
`kubectl apply`, strict field validation) on every case: tests/realkube/test_corpus.py checks
`sync` offline against the verdicts here, and both against a real server when one is built.
A case is YAML text; `NAMESPACE` in it is replaced by the namespace the server test uses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

BASE: dict[str, Any] = {
    "apiVersion": "flowexport.io/v1alpha1",
    "kind": "FlowExport",
    "metadata": {"name": "prod-vpc", "namespace": "NAMESPACE"},
    "spec": {
        "aws": {
            "region": "us-east-1",
            "vpcId": "vpc-0123456789abcdef0",
            "logGroupName": "/flowexport/prod-vpc",
            "deliverLogsRoleArn": "arn:aws:iam::123456789012:role/flow-logs-delivery",
        },
        "pce": {
            "url": "https://pce.example.com:8443",
            "orgId": 1,
            "credentialsSecretRef": {"name": "pce-api-key"},
        },
    },
}
ROLE = "arn:aws:iam::123456789012:role/cwl-to-kinesis"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/flows"
FORMAT = "${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol}"

_DELETE = object()


@dataclass(frozen=True)
class Case:
    """A manifest and whether the API server admits it."""

    id: str
    text: str
    valid: bool


def _edit(**changes: Any) -> str:
    """BASE with `path__to__field=value` changes (`_DELETE` removes the field), as YAML."""
    body = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = body
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return yaml.safe_dump(body, sort_keys=False)


def _case(id_: str, valid: bool, **changes: Any) -> Case:
    return Case(id_, _edit(**changes), valid)


_BASE_TEXT = _edit()

CASES: list[Case] = [
    # -- admitted --------------------------------------------------------------------------
    _case("minimal", True),
    _case(
        "every-field",
        True,
        spec__aws__managementPolicy="Adopt",
        spec__aws__manageLogGroup=False,
        spec__aws__logGroupRetentionDays=30,
        spec__aws__trafficType="ALL",
        spec__aws__maxAggregationInterval=600,
        spec__aws__logFormat=FORMAT + " ${action}",
        spec__aws__roleArn="arn:aws:iam::123456789012:role/flowexport",
        spec__aws__credentialsSecretRef={"name": "aws-keys"},
        spec__aws__apiRequestsPerSecond=0.5,
        spec__aws__endpointUrl="https://logs.example.com",
        spec__aws__endpoints={"ec2": "https://ec2.example.com", "kinesis": "http://127.0.0.1:4566"},
        spec__aws__removeSubscriptionFilters=["lambda-to-pce"],
        spec__pce__caBundleSecretRef={"name": "pce-ca"},
        spec__ingestion={
            "actions": ["ACCEPT", "REJECT"],
            "includeCidrs": ["10.0.0.0/8", "fd00::/8"],
            "excludeCidrs": ["10.9.0.0/16"],
            "aggregationWindowSeconds": 60,
            "batchSize": 500,
            "pollIntervalSeconds": 10,
            "lookbackSeconds": 900,
            "startFrom": "earliest",
        },
        spec__workloads={
            "mode": "Sync",
            "labels": {"env": "prod", "loc": "eu-west-1"},
            "labelsFromTags": {"App": "app", "aws:cloudformation:stack-name": "stack"},
            "nameTemplate": "{name}-{id}",
            "onEniGone": "Keep",
            "peerCidrs": ["192.168.0.0/16"],
            "refreshSeconds": 600,
        },
        spec__deletionPolicy="Retain",
        spec__suspend=True,
    ),
    _case(
        "stream",
        True,
        spec__source={
            "mode": "stream",
            "stream": {
                "subscriptionRoleArn": ROLE,
                "streamArn": STREAM_ARN,
                "streamName": "flows",
                "capacityMode": "OnDemand",
                "retentionHours": 48,
                "distribution": "Random",
                "readIntervalMillis": 500,
            },
        },
    ),
    _case(
        "stream-kms-null",
        True,
        spec__source={"mode": "stream", "stream": {"subscriptionRoleArn": ROLE, "kmsKeyId": None}},
    ),
    _case("namespace-omitted", True, metadata={"name": "prod-vpc"}),
    _case(
        "metadata-labels-annotations",
        True,
        metadata={
            "name": "prod-vpc",
            "namespace": "NAMESPACE",
            "labels": {"app.kubernetes.io/name": "flowexport", "team": "sec-ops"},
            "annotations": {"example.com/note": "anything: goes, even {braces}"},
        },
    ),
    _case("status-is-ignored", True, status={"observedGeneration": 3}),
    _case("http-loopback-pce", True, spec__pce__url="http://127.0.0.1:8443"),
    _case("integer-for-number", True, spec__aws__apiRequestsPerSecond=3),
    _case("account-id", True, spec__aws__accountId="210987654321"),
    _case(
        "account-id-and-its-role",
        True,
        spec__aws__accountId="210987654321",
        spec__aws__roleArn="arn:aws:iam::210987654321:role/flowexport-member",
    ),
    _case(
        "account-id-with-own-keys",
        True,
        spec__aws__accountId="210987654321",
        spec__aws__credentialsSecretRef={"name": "aws-keys"},
    ),
    _case("ipv6-pce", True, spec__pce__url="https://[2001:db8::1]:8443/pce"),
    _case("name-template-escaped-braces", True, spec__workloads__nameTemplate="{{aws}}-{ip}"),
    Case(
        "start-from-unquoted-timestamp",
        _BASE_TEXT + "  ingestion:\n    startFrom: 2026-01-01T00:00:00Z\n",
        True,
    ),
    Case("yaml-1.1-boolean", _BASE_TEXT + "  suspend: yes\n", True),
    # kubectl's YAML to JSON keeps a repeated key's last value: the server never sees it
    Case("repeated-key-last-wins", _BASE_TEXT + "  suspend: true\n  suspend: 1\n", False),
    Case("repeated-key-last-valid", _BASE_TEXT + "  suspend: 1\n  suspend: false\n", True),
    # -- refused: the object -----------------------------------------------------------------
    _case("apiversion-v1", False, apiVersion="flowexport.io/v1"),
    _case("apiversion-other-group", False, apiVersion="example.com/v1alpha1"),
    _case("kind-wrong-case", False, kind="Flowexport"),
    _case("unknown-top-level-field", False, extra={"a": 1}),
    _case("unknown-metadata-field", False, metadata__owner="me"),
    _case("name-not-dns", False, metadata__name="Prod_VPC"),
    _case("name-missing", False, metadata={"namespace": "NAMESPACE"}),
    _case("label-value-not-string", False, metadata__labels={"tier": 1}),
    _case("label-value-invalid", False, metadata__labels={"tier": "not valid!"}),
    _case("spec-missing", False, spec=_DELETE),
    # -- refused: types, never coerced -------------------------------------------------------
    _case("org-id-string", False, spec__pce__orgId="1"),
    _case("org-id-fraction", False, spec__pce__orgId=1.5),
    Case("org-id-integral-float", _BASE_TEXT.replace("orgId: 1", "orgId: 1.0"), True),
    _case("suspend-string", False, spec__suspend="true"),
    _case("poll-interval-string", False, spec__ingestion__pollIntervalSeconds="30"),
    _case("region-number", False, spec__aws__region=1),
    _case("actions-not-list", False, spec__ingestion__actions="ACCEPT"),
    # -- refused: the schema -----------------------------------------------------------------
    _case("pce-missing", False, spec__pce=_DELETE),
    _case("org-id-zero", False, spec__pce__orgId=0),
    _case("org-id-too-big", False, spec__pce__orgId=2**31),
    _case("unknown-spec-field", False, spec__aws__vpc="vpc-0123456789abcdef0"),
    _case("region-pattern", False, spec__aws__region="US-EAST-1"),
    _case("vpc-id-pattern", False, spec__aws__vpcId="vpc-123"),
    _case("batch-size-zero", False, spec__ingestion__batchSize=0),
    _case("batch-size-too-big", False, spec__ingestion__batchSize=1001),
    _case("retention-not-cloudwatch", False, spec__aws__logGroupRetentionDays=8),
    _case("aggregation-interval", False, spec__aws__maxAggregationInterval=120),
    _case("actions-empty", False, spec__ingestion__actions=[]),
    _case("actions-repeated", False, spec__ingestion__actions=["ACCEPT", "ACCEPT"]),
    _case("action-unknown", False, spec__ingestion__actions=["DROP"]),
    _case("start-from-word", False, spec__ingestion__startFrom="yesterday"),
    _case("start-from-no-zone", False, spec__ingestion__startFrom="2026-01-01T00:00:00"),
    _case("start-from-month-13", False, spec__ingestion__startFrom="2026-13-01T00:00:00Z"),
    _case("secret-name-pattern", False, spec__pce__credentialsSecretRef={"name": "Bad_Name"}),
    _case("secret-ref-empty", False, spec__pce__credentialsSecretRef={}),
    _case("shard-count-zero", False, spec__source={"mode": "stream", "stream": {"shardCount": 0}}),
    _case("mode-unknown", False, spec__source__mode="push"),
    # -- refused: URLs (pattern and CEL) -----------------------------------------------------
    _case("pce-url-credentials", False, spec__pce__url="https://api_1:secret@pce.example.com"),
    _case("pce-url-http-remote", False, spec__pce__url="http://pce.example.com"),
    _case("pce-url-api-path", False, spec__pce__url="https://pce.example.com/api/v2"),
    _case("pce-url-query", False, spec__pce__url="https://pce.example.com/?org=1"),
    _case("pce-url-port-zero", False, spec__pce__url="https://pce.example.com:0"),
    _case("pce-url-ftp", False, spec__pce__url="ftp://pce.example.com"),
    _case("endpoint-credentials", False, spec__aws__endpointUrl="https://AKIA:x@logs.example"),
    _case("endpoint-http-remote", False, spec__aws__endpoints={"logs": "http://logs.example"}),
    _case("endpoint-bad-ipv4", False, spec__aws__endpointUrl="https://999.1.1.1"),
    _case("account-id-pattern", False, spec__aws__accountId="21098765432"),
    _case("account-id-number", False, spec__aws__accountId=210987654321),
    # -- refused: cross-field rules ----------------------------------------------------------
    _case(
        "account-id-role-of-another-account",
        False,
        spec__aws__accountId="210987654321",
        spec__aws__roleArn="arn:aws:iam::123456789012:role/flowexport-member",
    ),
    _case(
        "ca-bundle-and-insecure",
        False,
        spec__pce__caBundleSecretRef={"name": "pce-ca"},
        spec__pce__insecureSkipTLSVerify=True,
    ),
    _case("stream-mode-without-stream", False, spec__source={"mode": "stream"}),
    _case(
        "observe-removes-filters",
        False,
        spec__aws__managementPolicy="Observe",
        spec__aws__removeSubscriptionFilters=["lambda-to-pce"],
    ),
    _case(
        "stream-arn-and-name-differ",
        False,
        spec__source={
            "mode": "stream",
            "stream": {"subscriptionRoleArn": ROLE, "streamArn": STREAM_ARN, "streamName": "x"},
        },
    ),
    # -- refused: values the models check beyond a pattern -----------------------------------
    _case("log-format-unknown-field", False, spec__aws__logFormat=FORMAT + " ${bogus}"),
    _case("log-format-lacks-ports", False, spec__aws__logFormat="${srcaddr} ${dstaddr}"),
    _case("log-format-repeated", False, spec__aws__logFormat=FORMAT + " ${srcaddr}"),
    _case("cidr-prefix-too-long", False, spec__ingestion__includeCidrs=["10.0.0.0/33"]),
    _case("cidr-octet-too-big", False, spec__ingestion__excludeCidrs=["300.0.0.0/8"]),
    _case("workload-label-key", False, spec__workloads__labels={"Env": "prod"}),
    _case("workload-label-value-empty", False, spec__workloads__labels={"env": ""}),
    _case("tag-label-key", False, spec__workloads__labelsFromTags={"App": "App Name"}),
    _case("name-template-unknown", False, spec__workloads__nameTemplate="{bogus}"),
    _case("name-template-constant", False, spec__workloads__nameTemplate="workload"),
    _case("name-template-format-spec", False, spec__workloads__nameTemplate="{name:>10}"),
]
