"""Mode stream's subscription against moto: the Kinesis stream and the subscription filter
are created, adopted, repaired, conflicts reported and, when owned, deleted."""

from __future__ import annotations

from typing import Any

import pytest

from flowexport.api.models import SourceSpec
from flowexport.aws.errors import AwsError
from flowexport.aws.ownership import Owner
from flowexport.aws.stream import default_name
from flowexport.errors import Reason
from flowexport.sources import delete_subscription, ensure_subscription
from tests.cloud import Cloud

OWNER = Owner("flows", "prod", "0b6f4c1e-uid-of-flows-prod")
NAME = default_name(OWNER)
ROLE = "arn:aws:iam::123456789012:role/cwl-to-kinesis"


def source(**stream: Any) -> SourceSpec:
    return SourceSpec.model_validate(
        {"mode": "stream", "stream": {"subscriptionRoleArn": ROLE, **stream}}
    )


def filters(cloud: Cloud, group: str = "/flowexport/test") -> dict[str, dict[str, Any]]:
    found = cloud.clients.logs.describe_subscription_filters(logGroupName=group)
    return {f["filterName"]: f for f in found["subscriptionFilters"]}


def streams(cloud: Cloud) -> list[str]:
    return list(cloud.clients.kinesis.list_streams()["StreamNames"])


def test_creates_a_tagged_encrypted_stream_and_a_filter_to_it(cloud: Cloud) -> None:
    sub = ensure_subscription(
        cloud.clients, cloud.spec(), OWNER, source(shardCount=2, retentionHours=48)
    )
    stream = sub.stream
    assert stream is not None and stream.stream_owned and stream.filter_owned
    assert stream.stream_name == NAME
    assert (
        NAME.startswith("flowexport-flows-prod-")
        and len(NAME) == len("flowexport-flows-prod-") + 10
    )
    summary = cloud.clients.kinesis.describe_stream_summary(StreamName=stream.stream_name)[
        "StreamDescriptionSummary"
    ]
    assert summary["OpenShardCount"] == 2
    assert summary["RetentionPeriodHours"] == 48
    assert summary["EncryptionType"] == "KMS" and summary["KeyId"] == "alias/aws/kinesis"
    tags = cloud.clients.kinesis.list_tags_for_stream(StreamName=stream.stream_name)["Tags"]
    assert {"Key": "flowexport.io/owner", "Value": OWNER} in tags
    found = filters(cloud)[stream.filter_name]
    assert found["destinationArn"] == stream.stream_arn
    assert found["roleArn"] == ROLE and found["filterPattern"] == ""
    assert stream.filter_since_ms > 0
    assert any("created Kinesis stream" in c for c in sub.changes)
    # Idempotent: nothing changes the second time, and the filter is not an "other" one.
    again = ensure_subscription(
        cloud.clients, cloud.spec(), OWNER, source(shardCount=2, retentionHours=48)
    )
    assert again.changes == [] and again.other_filters == {}


def test_on_demand_capacity(cloud: Cloud) -> None:
    sub = ensure_subscription(cloud.clients, cloud.spec(), OWNER, source(capacityMode="OnDemand"))
    assert sub.stream is not None
    summary = cloud.clients.kinesis.describe_stream_summary(StreamName=sub.stream.stream_name)
    assert summary["StreamDescriptionSummary"]["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"


def test_repairs_drift_of_its_own_stream_and_filter(cloud: Cloud) -> None:
    sub = ensure_subscription(cloud.clients, cloud.spec(), OWNER, source())
    assert sub.stream is not None
    name = sub.stream.stream_name
    cloud.clients.kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=72)
    cloud.clients.logs.put_subscription_filter(
        logGroupName="/flowexport/test",
        filterName=sub.stream.filter_name,
        filterPattern="REJECT",
        destinationArn=sub.stream.stream_arn,
        roleArn=ROLE,
    )
    repaired = ensure_subscription(cloud.clients, cloud.spec(), OWNER, source())
    assert any("retention" in c for c in repaired.changes)
    assert any("repaired" in c and "filterPattern" in c for c in repaired.changes)
    assert filters(cloud)[sub.stream.filter_name]["filterPattern"] == ""
    summary = cloud.clients.kinesis.describe_stream_summary(StreamName=name)
    assert summary["StreamDescriptionSummary"]["RetentionPeriodHours"] == 24
    # A shard count change reshards a stream the operator owns.
    resharded = ensure_subscription(cloud.clients, cloud.spec(), OWNER, source(shardCount=2))
    assert any("resharded" in c for c in resharded.changes)


def test_an_existing_stream_by_arn_is_adopted_and_never_changed_or_deleted(cloud: Cloud) -> None:
    kinesis = cloud.clients.kinesis
    kinesis.create_stream(StreamName="lambda-era", ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName="lambda-era")["StreamDescriptionSummary"][
        "StreamARN"
    ]
    ensure_subscription(cloud.clients, cloud.spec(), OWNER, SourceSpec())  # the log group
    cloud.clients.logs.put_subscription_filter(
        logGroupName="/flowexport/test",
        filterName="lambda-era-filter",
        filterPattern="",
        destinationArn=arn,
        roleArn=ROLE,
    )
    sub = ensure_subscription(
        cloud.clients, cloud.spec(), OWNER, source(streamArn=arn, retentionHours=96)
    )
    assert sub.stream is not None
    assert not sub.stream.stream_owned and not sub.stream.filter_owned
    assert sub.stream.filter_name == "lambda-era-filter"
    assert sub.changes == [] and sub.other_filters == {}
    summary = kinesis.describe_stream_summary(StreamName="lambda-era")["StreamDescriptionSummary"]
    assert summary["RetentionPeriodHours"] == 24  # adopted as it is
    removed = delete_subscription(
        cloud.clients, cloud.spec(), OWNER, "Delete", source(streamArn=arn)
    )
    assert not any("stream" in r.lower() and "lambda-era" in r for r in removed)
    assert "lambda-era" in streams(cloud)  # the filter went with the log group it created


def test_a_missing_stream_by_arn_is_terminal(cloud: Cloud) -> None:
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/nowhere"
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(), OWNER, source(streamArn=arn))
    assert caught.value.reason is Reason.STREAM_NOT_FOUND and not caught.value.retryable


def test_two_foreign_filters_are_a_conflict_naming_them(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(), OWNER, SourceSpec())
    cloud.lambda_subscription("/flowexport/test", "old-lambda")
    cloud.lambda_subscription("/flowexport/test", "audit-lambda")
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(), OWNER, source())
    assert caught.value.reason is Reason.SUBSCRIPTION_FILTER_CONFLICT
    assert "old-lambda" in str(caught.value) and "removeSubscriptionFilters" in str(caught.value)
    # Named for removal, the Lambda's filter makes room.
    spec = cloud.spec(removeSubscriptionFilters=["old-lambda"])
    sub = ensure_subscription(cloud.clients, spec, OWNER, source())
    assert sub.stream is not None and set(filters(cloud)) == {
        "audit-lambda",
        sub.stream.filter_name,
    }
    assert sub.other_filters.keys() == {"audit-lambda"}


def test_adopt_never_creates_a_stream_or_a_filter(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(), OWNER, SourceSpec())
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(managementPolicy="Adopt"), OWNER, source())
    assert caught.value.reason is Reason.STREAM_NOT_FOUND
    assert streams(cloud) == []


def test_no_role_no_filter(cloud: Cloud) -> None:
    spec = SourceSpec.model_validate({"mode": "stream", "stream": {}})
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(), OWNER, spec)
    assert caught.value.reason is Reason.SUBSCRIPTION_FILTER_CONFLICT
    assert "subscriptionRoleArn" in str(caught.value)


def test_back_to_poll_removes_its_filter_and_stream(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(), OWNER, source())
    cloud.lambda_subscription("/flowexport/test", "old-lambda")
    sub = ensure_subscription(cloud.clients, cloud.spec(), OWNER, SourceSpec())
    assert any("deleted Kinesis stream" in c for c in sub.changes)
    assert any("deleted subscription filter" in c for c in sub.changes)
    assert streams(cloud) == [] and set(filters(cloud)) == {"old-lambda"}
    assert sub.stream is None and set(sub.other_filters) == {"old-lambda"}


def test_deletion_removes_what_it_owns_and_retain_keeps_it(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(), OWNER, source())
    assert delete_subscription(cloud.clients, cloud.spec(), OWNER, "Retain", source()) == []
    assert streams(cloud) == [NAME]
    removed = delete_subscription(cloud.clients, cloud.spec(), OWNER, "Delete", source())
    assert f"deleted Kinesis stream {NAME}" in removed
    assert streams(cloud) == []


def test_a_stream_of_another_owner_is_used_but_never_deleted(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(), "flows/other", source(streamName="shared"))
    sub = ensure_subscription(cloud.clients, cloud.spec(), OWNER, source(streamName="shared"))
    assert sub.stream is not None and not sub.stream.stream_owned
    delete_subscription(cloud.clients, cloud.spec(), OWNER, "Delete", source(streamName="shared"))
    assert "shared" in streams(cloud)


def test_spec_tags_go_on_the_stream_it_creates_even_past_ten_per_call(cloud: Cloud) -> None:
    tags = {f"tag-{i:02d}": str(i) for i in range(15)}  # AddTagsToStream takes 10 a call
    sub = ensure_subscription(cloud.clients, cloud.spec(tags=tags), OWNER, source())
    assert sub.stream is not None
    found = cloud.clients.kinesis.list_tags_for_stream(StreamName=sub.stream.stream_name)
    assert {t["Key"]: t["Value"] for t in found["Tags"]} == {
        "flowexport.io/owner": OWNER,
        "flowexport.io/managed-by": "flowexport-operator",
        **tags,
    }
