"""Tenants in one AWS account: what a FlowExport may read and change of another's resources
(issue 23, items 6 and 7), against moto. The whole operator is tested the same way in
tests/e2e/test_tenancy.py."""

from __future__ import annotations

from typing import Any

import pytest

from flowexport.api.models import SourceSpec
from flowexport.aws.errors import AwsError
from flowexport.aws.ownership import OWNER_TAG, Owner, owner_tags
from flowexport.aws.stream import default_name, legacy_name
from flowexport.errors import Reason
from flowexport.sources import delete_subscription, ensure_subscription
from tests.cloud import Cloud

ROLE = "arn:aws:iam::123456789012:role/cwl-to-kinesis"
A = Owner("team-a", "prod", "11111111-aaaa")
B = Owner("team", "a-prod", "22222222-bbbb")
A_SIBLING = Owner("team-a", "lab", "33333333-cccc")


def streaming(**stream: Any) -> SourceSpec:
    return SourceSpec.model_validate(
        {"mode": "stream", "stream": {"subscriptionRoleArn": ROLE, **stream}}
    )


def streams(cloud: Cloud) -> list[str]:
    return sorted(cloud.raw("kinesis").list_streams()["StreamNames"])


def filters(cloud: Cloud, group: str) -> dict[str, str]:
    found = cloud.raw("logs").describe_subscription_filters(logGroupName=group)
    return {f["filterName"]: f["destinationArn"] for f in found["subscriptionFilters"]}


def refused(caught: pytest.ExceptionInfo[AwsError]) -> str:
    assert caught.value.reason is Reason.OWNED_BY_ANOTHER and not caught.value.retryable
    return str(caught.value)


def test_names_that_flatten_alike_make_two_streams_and_two_filters(cloud: Cloud) -> None:
    """team-a/prod and team/a-prod both got flowexport-team-a-prod and read each other's."""
    assert legacy_name(A) == legacy_name(B)
    assert default_name(A) != default_name(B)
    assert all(len(default_name(Owner("n" * 63, "x" * 253, "u"))) <= 128 for _ in (0,))
    a = ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A, streaming())
    b = ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/b"), B, streaming())
    assert a.stream is not None and b.stream is not None
    assert a.stream.stream_name != b.stream.stream_name
    assert a.stream.stream_owned and b.stream.stream_owned
    assert streams(cloud) == sorted([default_name(A), default_name(B)])
    assert list(filters(cloud, "/flowexport/a").values()) == [a.stream.stream_arn]
    assert list(filters(cloud, "/flowexport/b").values()) == [b.stream.stream_arn]


def test_another_namespaces_stream_is_refused_by_name(cloud: Cloud) -> None:
    a = ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A, streaming())
    assert a.stream is not None
    spec = cloud.spec(logGroupName="/flowexport/b")
    for named in (
        streaming(streamName=a.stream.stream_name),
        streaming(streamArn=a.stream.stream_arn),
    ):
        with pytest.raises(AwsError) as caught:
            ensure_subscription(cloud.clients, spec, B, named)
        message = refused(caught)
        assert f"Kinesis stream {a.stream.stream_name}" in message
        assert "team-a" not in message.replace(a.stream.stream_name, "")  # names no tenant
    assert set(filters(cloud, "/flowexport/b")) == set()  # nothing was put


def test_the_same_namespace_may_read_a_siblings_stream_but_not_own_it(cloud: Cloud) -> None:
    a = ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A, streaming())
    assert a.stream is not None
    lab = ensure_subscription(
        cloud.clients,
        cloud.spec(logGroupName="/flowexport/a"),
        A_SIBLING,
        SourceSpec(),
    )
    assert not lab.log_group_owned  # read as it is
    named = streaming(streamName=a.stream.stream_name)
    # On A's log group, A's filter into A's stream is read as it is (nothing put).
    shared = ensure_subscription(
        cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A_SIBLING, named
    )
    assert shared.stream is not None
    assert not shared.stream.stream_owned and not shared.stream.filter_owned
    assert not shared.changes
    # A stream of its own would need a filter on A's log group, a change: refused first.
    with pytest.raises(AwsError) as caught:
        ensure_subscription(
            cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A_SIBLING, streaming()
        )
    assert "FlowExport team-a/prod" in refused(caught)
    assert default_name(A_SIBLING) not in streams(cloud)
    sibling = ensure_subscription(
        cloud.clients, cloud.spec(logGroupName="/flowexport/lab"), A_SIBLING, named
    )
    assert sibling.stream is not None and not sibling.stream.stream_owned
    removed = delete_subscription(
        cloud.clients, cloud.spec(logGroupName="/flowexport/lab"), A_SIBLING, "Delete", named
    )
    assert not any("Kinesis stream" in r for r in removed)
    assert a.stream.stream_name in streams(cloud)


def test_an_upgraded_flowexport_keeps_its_stream_of_the_old_default_name(cloud: Cloud) -> None:
    """Before names carried the uid: stream and filter named flowexport-<ns>-<name>, tagged."""
    group = "/flowexport/a"
    ensure_subscription(cloud.clients, cloud.spec(logGroupName=group), A)  # the log group
    kinesis = cloud.raw("kinesis")
    old = legacy_name(A)
    kinesis.create_stream(StreamName=old, ShardCount=1)
    kinesis.add_tags_to_stream(StreamName=old, Tags=owner_tags(A))
    arn = kinesis.describe_stream_summary(StreamName=old)["StreamDescriptionSummary"]["StreamARN"]
    cloud.raw("logs").put_subscription_filter(
        logGroupName=group,
        filterName=old,
        filterPattern="",
        destinationArn=arn,
        roleArn=ROLE,
        distribution="ByLogStream",
    )
    sub = ensure_subscription(cloud.clients, cloud.spec(logGroupName=group), A, streaming())
    assert sub.stream is not None
    assert (sub.stream.stream_name, sub.stream.filter_name) == (old, old)
    assert sub.stream.stream_owned and sub.stream.filter_owned
    assert not any("created" in c for c in sub.changes)
    assert streams(cloud) == [old]  # no second stream
    removed = delete_subscription(
        cloud.clients, cloud.spec(logGroupName=group), A, "Delete", streaming()
    )
    assert f"deleted Kinesis stream {old}" in removed
    assert f"deleted subscription filter {old}" in removed
    assert streams(cloud) == []


def test_a_stream_of_the_old_default_name_tagged_for_another_is_not_adopted(cloud: Cloud) -> None:
    """The collision of the old names: B finds A's stream under the name it would have made."""
    kinesis = cloud.raw("kinesis")
    kinesis.create_stream(StreamName=legacy_name(A), ShardCount=1)
    kinesis.add_tags_to_stream(StreamName=legacy_name(A), Tags=owner_tags(A))
    b = ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/b"), B, streaming())
    assert b.stream is not None and b.stream.stream_name == default_name(B)
    removed = delete_subscription(
        cloud.clients, cloud.spec(logGroupName="/flowexport/b"), B, "Delete", streaming()
    )
    assert f"deleted Kinesis stream {default_name(B)}" in removed
    assert streams(cloud) == [legacy_name(A)]  # A's untouched


def test_another_namespaces_log_group_is_never_read(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A)
    for policy in ("Adopt", "Observe", "AdoptOrCreate"):
        spec = cloud.spec(logGroupName="/flowexport/a", managementPolicy=policy)
        with pytest.raises(AwsError) as caught:
            ensure_subscription(cloud.clients, spec, B)
        assert "log group /flowexport/a belongs to a FlowExport in another namespace" in refused(
            caught
        )


def test_a_log_group_another_namespaces_flow_log_delivers_into_is_not_read(cloud: Cloud) -> None:
    """Untagged (adopted by A), but A's flow log delivers into it: A's records are there."""
    cloud.raw("logs").create_log_group(logGroupName="/lambda-era")
    ensure_subscription(cloud.clients, cloud.spec(logGroupName="/lambda-era"), A)
    other_vpc = cloud.raw("ec2").create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    spec = cloud.spec(logGroupName="/lambda-era", vpcId=other_vpc)
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, spec, B)
    assert "flow log" in refused(caught)


def test_an_untagged_lambda_era_log_group_is_adoptable_as_before(cloud: Cloud) -> None:
    cloud.raw("logs").create_log_group(logGroupName="/lambda-era")
    sub = ensure_subscription(
        cloud.clients, cloud.spec(logGroupName="/lambda-era", managementPolicy="AdoptOrCreate"), A
    )
    assert not sub.log_group_owned and sub.flow_log_owned


def test_remove_subscription_filters_never_removes_a_flowexports_filter(cloud: Cloud) -> None:
    """Issue 23 item 6: A named B's filter in removeSubscriptionFilters on B's log group."""
    b = ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/b"), B, streaming())
    assert b.stream is not None
    attack = cloud.spec(
        logGroupName="/flowexport/b",
        managementPolicy="Adopt",
        removeSubscriptionFilters=[b.stream.filter_name],
    )
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, attack, A)
    refused(caught)
    # On a log group of A's own, B's filter (put there by hand) stays too.
    ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A)
    cloud.raw("logs").put_subscription_filter(
        logGroupName="/flowexport/a",
        filterName="copied",
        filterPattern="",
        destinationArn=b.stream.stream_arn,
        roleArn=ROLE,
    )
    own_group = cloud.spec(logGroupName="/flowexport/a", removeSubscriptionFilters=["copied"])
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, own_group, A)
    assert "another FlowExport's subscription filter" in refused(caught)
    assert "copied" in filters(cloud, "/flowexport/a")
    assert b.stream.filter_name in filters(cloud, "/flowexport/b")


def test_a_siblings_log_group_keeps_its_filters(cloud: Cloud) -> None:
    """Same namespace: read as it is, but removing the Lambda's filter there is its owner's."""
    ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A)
    cloud.lambda_subscription("/flowexport/a", "lambda-export")
    spec = cloud.spec(logGroupName="/flowexport/a", removeSubscriptionFilters=["lambda-export"])
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, spec, A_SIBLING)
    assert "FlowExport team-a/prod" in refused(caught)
    assert "lambda-export" in filters(cloud, "/flowexport/a")
    removed = ensure_subscription(cloud.clients, spec, A)  # its owner may
    assert any("removed subscription filter lambda-export" in c for c in removed.changes)


def test_a_sibling_does_not_add_a_flow_log_to_a_log_group_it_does_not_own(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A)
    other_vpc = cloud.raw("ec2").create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    spec = cloud.spec(logGroupName="/flowexport/a", vpcId=other_vpc)
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, spec, A_SIBLING)
    assert "a new flow log would deliver into it" in refused(caught)


def test_the_owner_tag_is_namespace_slash_name(cloud: Cloud) -> None:
    sub = ensure_subscription(cloud.clients, cloud.spec(logGroupName="/flowexport/a"), A)
    tags = cloud.raw("logs").list_tags_for_resource(resourceArn=sub.log_group_arn)["tags"]
    assert tags[OWNER_TAG] == "team-a/prod"


def test_a_vpc_of_another_region_says_which_region_was_asked(cloud: Cloud) -> None:
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(vpcId="vpc-0123456789abcdef0"), A)
    assert caught.value.reason is Reason.VPC_NOT_FOUND and not caught.value.retryable
    assert "does not exist in region us-east-1" in str(caught.value)
