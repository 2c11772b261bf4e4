"""Create, adopt, replace, repair and delete the flow-log subscription, against moto server."""

from __future__ import annotations

from typing import Any

import pytest

from flowexport.aws.errors import AwsError
from flowexport.aws.session import AwsTarget, make_session
from flowexport.aws.subscription import OWNER_TAG, find_log_group
from flowexport.core.logformat import DEFAULT_V2_FORMAT, PIPELINE_FORMAT
from flowexport.sources import delete_subscription, ensure_subscription
from tests.cloud import KEYS, REGION, Cloud

OWNER = "security/prod-vpc"


def flow_logs(cloud: Cloud) -> list[dict[str, object]]:
    answer = cloud.clients.ec2.describe_flow_logs(
        Filters=[{"Name": "resource-id", "Values": [cloud.vpc_id]}]
    )
    return list(answer["FlowLogs"])


def test_creates_log_group_and_flow_log(cloud: Cloud) -> None:
    result = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert result.changes == [
        "created log group /flowexport/test",
        f"created flow log {result.flow_log_id}",
    ]
    assert result.log_group_owned and result.flow_log_owned
    assert result.log_group_arn.endswith(":log-group:/flowexport/test")
    group = find_log_group(cloud.clients, "/flowexport/test")
    assert group is not None and group["retentionInDays"] == 7
    (flow_log,) = flow_logs(cloud)
    assert flow_log["LogFormat"] == PIPELINE_FORMAT.render()
    assert flow_log["MaxAggregationInterval"] == 60
    assert flow_log["TrafficType"] == "ALL"
    assert {"Key": OWNER_TAG, "Value": OWNER} in flow_log["Tags"]  # type: ignore[operator]


def test_is_idempotent(cloud: Cloud) -> None:
    first = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    again = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert again.changes == []
    assert again.flow_log_id == first.flow_log_id
    assert len(flow_logs(cloud)) == 1


def test_a_first_reconcile_reads_the_flow_logs_once_and_a_later_one_once(cloud: Cloud) -> None:
    """EC2's read quota is per account (hundreds of VPCs reconciling at once wait for each
    call): one DescribeFlowLogs serves the other-namespace check and this VPC's flow log, and
    the flow log just created is not read back."""
    described: list[dict[str, Any]] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        described.append(params)

    cloud.clients.ec2.meta.events.register("provide-client-params.ec2.DescribeFlowLogs", count)
    first = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert len(described) == 1
    again = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert len(described) == 2 and again.changes == []
    (stored,) = flow_logs(cloud)
    assert stored["FlowLogId"] == first.flow_log_id
    assert first.log_format == PIPELINE_FORMAT and first.delivery_error is None
    assert again.flow_log_id == first.flow_log_id and again.log_format == first.log_format


def lambda_era_flow_log(cloud: Cloud, **overrides: Any) -> str:
    """What the Lambda's users have: AWS's default format and aggregation, ALL traffic."""
    cloud.clients.logs.create_log_group(logGroupName="/flowexport/test")
    arguments: dict[str, Any] = {
        "ResourceIds": [cloud.vpc_id],
        "ResourceType": "VPC",
        "TrafficType": "ALL",
        "LogDestinationType": "cloud-watch-logs",
        "LogGroupName": "/flowexport/test",
        "DeliverLogsPermissionArn": cloud.role_arn,
        **overrides,
    }
    return str(cloud.clients.ec2.create_flow_logs(**arguments)["FlowLogIds"][0])


def test_adopts_a_matching_foreign_flow_log_and_log_group(cloud: Cloud) -> None:
    created = lambda_era_flow_log(
        cloud, LogFormat=PIPELINE_FORMAT.render(), MaxAggregationInterval=60
    )
    result = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert result.changes == []
    assert result.flow_log_id == created
    assert not result.flow_log_owned and not result.log_group_owned
    # Adopted resources are never deleted.
    assert delete_subscription(cloud.clients, cloud.spec(), OWNER, "Delete") == []
    assert len(flow_logs(cloud)) == 1


def test_without_a_format_in_the_spec_the_flow_logs_own_format_is_learned(cloud: Cloud) -> None:
    fmt = "${version} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${tcp-flags}"
    lambda_era_flow_log(cloud, LogFormat=fmt, MaxAggregationInterval=60)
    result = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert result.changes == []
    assert result.log_format.render() == fmt
    with pytest.raises(AwsError, match="logFormat"):
        ensure_subscription(cloud.clients, cloud.spec(logFormat=PIPELINE_FORMAT.render()), OWNER)


def test_replaces_its_own_flow_log_when_an_immutable_field_changes(cloud: Cloud) -> None:
    first = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    fmt = "${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${action} ${start}"
    second = ensure_subscription(
        cloud.clients, cloud.spec(logFormat=fmt, maxAggregationInterval=600), OWNER
    )
    assert second.flow_log_id != first.flow_log_id
    assert second.changes[0] == (
        f"replaced flow log {first.flow_log_id} (logFormat, maxAggregationInterval changed)"
    )
    (only,) = flow_logs(cloud)
    assert only["LogFormat"] == fmt


def test_reports_a_conflicting_flow_log_it_does_not_own(cloud: Cloud) -> None:
    lambda_era_flow_log(cloud, TrafficType="REJECT")
    spec = cloud.spec(logFormat=PIPELINE_FORMAT.render(), trafficType="ALL")
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, spec, OWNER)
    assert not caught.value.retryable
    assert caught.value.reason == "FlowLogConflict"
    assert "logFormat" in str(caught.value) and "trafficType" in str(caught.value)
    assert len(flow_logs(cloud)) == 1, "someone else's flow log is left alone"


def test_repairs_drift(cloud: Cloud) -> None:
    first = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    cloud.clients.ec2.delete_flow_logs(FlowLogIds=[first.flow_log_id])
    cloud.clients.logs.put_retention_policy(logGroupName="/flowexport/test", retentionInDays=30)
    repaired = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert repaired.changes == [
        "set retention of /flowexport/test to 7 days",
        f"created flow log {repaired.flow_log_id}",
    ]


def test_unmanaged_log_group_must_exist(cloud: Cloud) -> None:
    with pytest.raises(
        AwsError, match=r"does not exist and spec\.aws\.manageLogGroup is false"
    ) as caught:
        ensure_subscription(cloud.clients, cloud.spec(manageLogGroup=False), OWNER)
    assert not caught.value.retryable and caught.value.reason == "LogGroupNotFound"


def test_missing_vpc_is_terminal(cloud: Cloud) -> None:
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(vpcId="vpc-0123456789abcdef0"), OWNER)
    assert not caught.value.retryable and caught.value.reason == "VPCNotFound"


def test_delete_policy(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert delete_subscription(cloud.clients, cloud.spec(), OWNER, "Retain") == []
    assert len(flow_logs(cloud)) == 1
    assert find_log_group(cloud.clients, "/flowexport/test") is not None
    removed = delete_subscription(cloud.clients, cloud.spec(), OWNER, "Delete")
    assert len(removed) == 2
    assert flow_logs(cloud) == []
    assert find_log_group(cloud.clients, "/flowexport/test") is None
    assert delete_subscription(cloud.clients, cloud.spec(), OWNER, "Delete") == []


def test_another_owner_never_deletes(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert delete_subscription(cloud.clients, cloud.spec(), "other/export", "Delete") == []
    assert len(flow_logs(cloud)) == 1


def test_assumed_role_credentials(cloud: Cloud) -> None:
    iam = cloud.raw("iam")
    role = iam.create_role(RoleName="flowexport-operator", AssumeRolePolicyDocument="{}")
    target = AwsTarget(REGION, cloud.url, role_arn=role["Role"]["Arn"], keys=KEYS)
    sts = make_session(target).client("sts", endpoint_url=cloud.url)
    identity = sts.get_caller_identity()["Arn"]
    assert ":assumed-role/flowexport-operator/flowexport-operator" in identity


def test_a_minimal_spec_adopts_the_lambda_era_flow_log_as_it_is(cloud: Cloud) -> None:
    existing = lambda_era_flow_log(cloud)
    spec = cloud.spec(deliverLogsRoleArn=None)
    adopted = ensure_subscription(cloud.clients, spec, OWNER)
    assert adopted.flow_log_id == existing and not adopted.flow_log_owned
    assert adopted.log_format == DEFAULT_V2_FORMAT
    assert adopted.changes == []
    assert len(flow_logs(cloud)) == 1


def test_a_conflict_names_both_values_and_the_least_risky_fix(cloud: Cloud) -> None:
    lambda_era_flow_log(cloud)
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(maxAggregationInterval=60), OWNER)
    message = str(caught.value)
    assert caught.value.reason == "FlowLogConflict"
    assert "maxAggregationInterval 600 (spec.aws asks 60)" in message
    assert "remove spec.aws.maxAggregationInterval from the spec" in message
    assert "delete it" not in message


@pytest.mark.parametrize("policy", ["Adopt", "Observe"])
def test_adopt_and_observe_never_create(cloud: Cloud, policy: str) -> None:
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(managementPolicy=policy), OWNER)
    assert caught.value.reason == "LogGroupNotFound" and f"managementPolicy {policy}" in str(
        caught.value
    )
    cloud.clients.logs.create_log_group(logGroupName="/flowexport/test")
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(managementPolicy=policy), OWNER)
    assert caught.value.reason == "FlowLogNotFound"
    assert flow_logs(cloud) == []


def test_observe_changes_repairs_and_deletes_nothing(cloud: Cloud) -> None:
    ensure_subscription(cloud.clients, cloud.spec(), OWNER)  # created while managed
    cloud.clients.logs.put_retention_policy(logGroupName="/flowexport/test", retentionInDays=30)
    observing = cloud.spec(managementPolicy="Observe", logFormat=DEFAULT_V2_FORMAT.render())
    with pytest.raises(AwsError) as caught:  # differs, owned: not replaced under Observe
        ensure_subscription(cloud.clients, observing, OWNER)
    assert caught.value.reason == "FlowLogConflict"
    message = str(caught.value)
    assert "this FlowExport created it, and managementPolicy Observe does not replace it" in message
    assert "set managementPolicy AdoptOrCreate" in message and "did not create" not in message
    watched = ensure_subscription(cloud.clients, cloud.spec(managementPolicy="Observe"), OWNER)
    assert watched.changes == []
    group = find_log_group(cloud.clients, "/flowexport/test")
    assert group is not None and group["retentionInDays"] == 30, "retention not repaired"
    observe = cloud.spec(managementPolicy="Observe")
    assert delete_subscription(cloud.clients, observe, OWNER, "Delete") == []
    assert len(flow_logs(cloud)) == 1


def test_without_a_delivery_role_nothing_can_be_created(cloud: Cloud) -> None:
    cloud.clients.logs.create_log_group(logGroupName="/flowexport/test")
    with pytest.raises(AwsError, match=r"needs spec\.aws\.deliverLogsRoleArn") as caught:
        ensure_subscription(cloud.clients, cloud.spec(deliverLogsRoleArn=None), OWNER)
    assert caught.value.reason == "FlowLogNotFound"


def test_another_subscription_filter_is_reported_and_removed_only_when_asked(cloud: Cloud) -> None:
    lambda_era_flow_log(cloud)
    function = cloud.lambda_subscription("/flowexport/test", "vpc-flow-to-pce")
    found = ensure_subscription(cloud.clients, cloud.spec(), OWNER)
    assert found.other_filters == {"vpc-flow-to-pce": function}
    asked = cloud.spec(removeSubscriptionFilters=["vpc-flow-to-pce"])
    removed = ensure_subscription(cloud.clients, asked, OWNER)
    assert removed.other_filters == {}
    assert removed.changes == [f"removed subscription filter vpc-flow-to-pce (to {function})"]
    filters = cloud.clients.logs.describe_subscription_filters(logGroupName="/flowexport/test")
    assert filters["subscriptionFilters"] == []


def test_a_foreign_flow_log_in_an_unusable_format_says_to_replace_it(cloud: Cloud) -> None:
    """No logFormat in the spec: there is nothing to remove, the flow log's format is the
    problem (it lacks fields every flow needs)."""
    lambda_era_flow_log(cloud, LogFormat="${version} ${interface-id} ${start} ${end}")
    with pytest.raises(AwsError) as caught:
        ensure_subscription(cloud.clients, cloud.spec(deliverLogsRoleArn=None), OWNER)
    message = str(caught.value)
    assert caught.value.reason == "FlowLogConflict"
    assert "in a format the pipeline cannot use" in message and "srcaddr" in message
    assert "replace it with one whose format has those fields" in message
    assert "remove spec.aws.logFormat" not in message
    assert len(flow_logs(cloud)) == 1


TAGS = {"CostCenter": "cc-42", "team": "secops", "data class": "internal/flow-logs"}


def test_spec_tags_go_on_the_log_group_and_flow_log_beside_the_ownership_tags(
    cloud: Cloud,
) -> None:
    result = ensure_subscription(cloud.clients, cloud.spec(tags=TAGS), OWNER)
    group_tags = cloud.clients.logs.list_tags_for_resource(
        resourceArn=result.log_group_arn.removesuffix(":*")
    )["tags"]
    (flow_log,) = flow_logs(cloud)
    flow_log_tags = {t["Key"]: t["Value"] for t in flow_log["Tags"]}  # type: ignore[attr-defined]
    for tags in (group_tags, flow_log_tags):
        assert tags == {
            **TAGS,
            OWNER_TAG: OWNER,
            "flowexport.io/managed-by": "flowexport-operator",
        }
    # Adopted resources keep theirs: tags are set when the operator creates something.
    assert ensure_subscription(cloud.clients, cloud.spec(tags={"new": "x"}), OWNER).changes == []


@pytest.mark.parametrize(
    "tags",
    [
        {"aws:cloudformation:stack-name": "x"},
        {"flowexport.io/owner": "x"},
        {"": "x"},
        {"k" * 129: "x"},
        {"k": "v" * 257},
        {"bad<key>": "x"},
    ],
    ids=["aws-prefix", "ours", "empty", "long-key", "long-value", "characters"],
)
def test_tags_aws_would_refuse_or_that_claim_ownership_are_refused_in_the_spec(
    cloud: Cloud, tags: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="tag"):
        cloud.spec(tags=tags)
