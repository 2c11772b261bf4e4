"""Ensure a subscription filter delivers a log group to a Kinesis data stream (mode stream).

The same ownership rules as the flow log's: a stream carrying `flowexport.io/owner:
<namespace>/<name>` was created by that FlowExport and is repaired (retention, encryption,
capacity) and deleted by it; any other stream is used as it is. The filter has no tags: the
one named as the spec says (default `flowexport-<namespace>-<name>`) is this FlowExport's; a
filter of another name that already delivers to the stream (an earlier setup) is adopted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from flowexport.api.models import AwsSpec, StreamSpec
from flowexport.aws.errors import AwsError, call, classify, error_code
from flowexport.aws.ownership import OWNER_TAG, owner_tags
from flowexport.aws.session import AwsClients
from flowexport.errors import Reason

#: The log group's limit (AWS): a third PutSubscriptionFilter fails.
MAX_FILTERS = 2
_USABLE = {"ACTIVE", "UPDATING"}


@dataclass
class StreamSubscription:
    """The stream and the filter delivering to it, and what this reconcile changed."""

    stream_arn: str
    stream_name: str
    filter_name: str
    #: When the filter was created (epoch ms): records ingested since then are in the stream.
    filter_since_ms: int
    retention_hours: int
    stream_owned: bool
    filter_owned: bool
    changes: list[str] = field(default_factory=list)


def default_name(owner: str) -> str:
    """`flowexport-<namespace>-<name>`, hashed down to Kinesis's 128 characters if longer."""
    name = "flowexport-" + owner.replace("/", "-")
    if len(name) <= 128:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    return f"{name[:111]}-{digest}"


def stream_name_of(spec: StreamSpec, owner: str) -> str:
    """The stream's name: from its ARN, the spec's name, or the default."""
    if spec.stream_arn is not None:
        return spec.stream_arn.rsplit("/", 1)[1]
    return spec.stream_name or default_name(owner)


def filter_name_of(spec: StreamSpec | None, owner: str) -> str:
    """The subscription filter's name: the spec's, or the default."""
    return (spec.filter_name if spec is not None else None) or default_name(owner)


def _describe(clients: AwsClients, name: str) -> dict[str, Any] | None:
    try:
        answer = clients.kinesis.describe_stream_summary(StreamName=name)
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise classify(exc, "kinesis", "DescribeStreamSummary") from None
    summary: dict[str, Any] = answer["StreamDescriptionSummary"]
    return summary


def _stream_tags(clients: AwsClients, name: str) -> dict[str, str]:
    answer = call(
        "kinesis", "ListTagsForStream", clients.kinesis.list_tags_for_stream, StreamName=name
    )
    return {t["Key"]: t.get("Value", "") for t in answer.get("Tags", [])}


#: AddTagsToStream takes at most 10 tags per call.
_TAGS_PER_CALL = 10


def _not_active(name: str, status: str) -> AwsError:
    return AwsError(f"stream {name} is {status}; retrying", Reason.STREAM_NOT_ACTIVE)


def _ensure_stream(
    clients: AwsClients, aws: AwsSpec, spec: StreamSpec, owner: str, changes: list[str]
) -> tuple[dict[str, Any], bool]:
    name = stream_name_of(spec, owner)
    summary = _describe(clients, name)
    if summary is None:
        if spec.stream_arn is not None or aws.management_policy != "AdoptOrCreate":
            why = (
                "it is named by streamArn, which the operator never creates"
                if spec.stream_arn is not None
                else f"managementPolicy {aws.management_policy} never creates one"
            )
            raise AwsError(
                f"Kinesis stream {name} does not exist and {why}", Reason.STREAM_NOT_FOUND
            )
        mode: dict[str, Any] = {"StreamName": name}
        if spec.capacity_mode == "OnDemand":
            mode["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
        else:
            mode["ShardCount"] = spec.shard_count
            mode["StreamModeDetails"] = {"StreamMode": "PROVISIONED"}
        call("kinesis", "CreateStream", clients.kinesis.create_stream, **mode)
        tags = list(owner_tags(owner, aws.tags).items())
        for at in range(0, len(tags), _TAGS_PER_CALL):
            call(
                "kinesis",
                "AddTagsToStream",
                clients.kinesis.add_tags_to_stream,
                StreamName=name,
                Tags=dict(tags[at : at + _TAGS_PER_CALL]),
            )
        changes.append(f"created Kinesis stream {name}")
        summary = _describe(clients, name)
        if summary is None:
            raise _not_active(name, "not visible yet")
        owned = True
    else:
        owned = spec.stream_arn is None and _stream_tags(clients, name).get(OWNER_TAG) == owner
    status = str(summary.get("StreamStatus", ""))
    if status not in _USABLE:
        raise _not_active(name, status or "not ready")
    if owned and status == "ACTIVE" and aws.management_policy == "AdoptOrCreate":
        _repair(clients, spec, name, summary, changes)
    return summary, owned


def _repair(
    clients: AwsClients, spec: StreamSpec, name: str, summary: dict[str, Any], changes: list[str]
) -> None:
    """Bring an owned, ACTIVE stream to the spec. A stream takes one update at a time: once
    AWS says it is busy (ResourceInUse), the rest waits for the next reconcile."""
    for step in (_retention, _encryption, _capacity):
        try:
            step(clients.kinesis, spec, name, summary, changes)
        except AwsError as exc:
            if "ResourceInUse" not in str(exc) and "LimitExceeded" not in str(exc):
                raise
            return


def _retention(
    kinesis: Any, spec: StreamSpec, name: str, summary: dict[str, Any], changes: list[str]
) -> None:
    hours = int(summary.get("RetentionPeriodHours", 24))
    if hours == spec.retention_hours:
        return
    grow = spec.retention_hours > hours
    op = "IncreaseStreamRetentionPeriod" if grow else "DecreaseStreamRetentionPeriod"
    fn = (
        kinesis.increase_stream_retention_period
        if grow
        else kinesis.decrease_stream_retention_period
    )
    call("kinesis", op, fn, StreamName=name, RetentionPeriodHours=spec.retention_hours)
    changes.append(f"set retention of stream {name} to {spec.retention_hours} hours")


def _encryption(
    kinesis: Any, spec: StreamSpec, name: str, summary: dict[str, Any], changes: list[str]
) -> None:
    key = summary.get("KeyId") if summary.get("EncryptionType") == "KMS" else None
    if key == spec.kms_key_id:
        return
    if key is not None:
        call(
            "kinesis",
            "StopStreamEncryption",
            kinesis.stop_stream_encryption,
            StreamName=name,
            EncryptionType="KMS",
            KeyId=key,
        )
        changes.append(f"stopped encryption of stream {name} with {key}")
    if spec.kms_key_id is not None:
        call(
            "kinesis",
            "StartStreamEncryption",
            kinesis.start_stream_encryption,
            StreamName=name,
            EncryptionType="KMS",
            KeyId=spec.kms_key_id,
        )
        changes.append(f"encrypted stream {name} with {spec.kms_key_id}")


def _capacity(
    kinesis: Any, spec: StreamSpec, name: str, summary: dict[str, Any], changes: list[str]
) -> None:
    mode = (summary.get("StreamModeDetails") or {}).get("StreamMode", "PROVISIONED")
    wanted = "ON_DEMAND" if spec.capacity_mode == "OnDemand" else "PROVISIONED"
    if mode != wanted:
        call(
            "kinesis",
            "UpdateStreamMode",
            kinesis.update_stream_mode,
            StreamARN=summary["StreamARN"],
            StreamModeDetails={"StreamMode": wanted},
        )
        changes.append(f"set capacity of stream {name} to {spec.capacity_mode}")
        return
    shards = summary.get("OpenShardCount")
    if wanted == "PROVISIONED" and shards is not None and int(shards) != spec.shard_count:
        call(
            "kinesis",
            "UpdateShardCount",
            kinesis.update_shard_count,
            StreamName=name,
            TargetShardCount=spec.shard_count,
            ScalingType="UNIFORM_SCALING",
        )
        changes.append(f"resharded stream {name} from {shards} to {spec.shard_count} shards")


def describe_filters(clients: AwsClients, group: str) -> list[dict[str, Any]]:
    """The log group's subscription filters, as DescribeSubscriptionFilters lists them."""
    answer = call(
        "logs",
        "DescribeSubscriptionFilters",
        clients.logs.describe_subscription_filters,
        logGroupName=group,
    )
    return list(answer.get("subscriptionFilters", []))


def _filter_drift(found: dict[str, Any], spec: StreamSpec) -> list[str]:
    drift = []
    if found.get("filterPattern", ""):
        drift.append(f"filterPattern {found.get('filterPattern')!r} (every event is needed)")
    if found.get("distribution", "ByLogStream") != spec.distribution:
        drift.append(f"distribution {found.get('distribution')}")
    role = found.get("roleArn")
    if spec.subscription_role_arn is not None and role != spec.subscription_role_arn:
        drift.append(f"roleArn {role}")
    return drift


def ensure_stream_subscription(
    clients: AwsClients,
    aws: AwsSpec,
    spec: StreamSpec,
    owner: str,
    filters: list[dict[str, Any]] | None = None,
) -> StreamSubscription:
    """Make a subscription filter deliver the log group to the stream; idempotent.

    Raises AwsError: terminal for a missing stream the operator may not create, the log
    group's two-filter limit, or a filter it may not create; retryable while the stream is
    being created or updated, and for throttling and outages. `filters`: the log group's
    filters when the caller already described them.
    """
    changes: list[str] = []
    summary, stream_owned = _ensure_stream(clients, aws, spec, owner, changes)
    arn, name = str(summary["StreamARN"]), str(summary["StreamName"])
    group = aws.log_group_name
    wanted = filter_name_of(spec, owner)
    if filters is None:
        filters = describe_filters(clients, group)
    to_stream = [f for f in filters if f.get("destinationArn") == arn]
    ours = next((f for f in to_stream if f["filterName"] == wanted), None)
    chosen = ours or next(iter(to_stream), None)
    may_change = aws.management_policy != "Observe"
    if chosen is not None and (ours is None or not _filter_drift(ours, spec) or not may_change):
        return _result(chosen, summary, name, stream_owned, ours is not None, changes)
    if ours is None:
        if aws.management_policy != "AdoptOrCreate" or spec.subscription_role_arn is None:
            why = (
                f"managementPolicy {aws.management_policy} never creates one"
                if aws.management_policy != "AdoptOrCreate"
                else "creating one needs spec.source.stream.subscriptionRoleArn"
            )
            raise AwsError(
                f"no subscription filter delivers log group {group} to stream {name}, and {why}",
                Reason.SUBSCRIPTION_FILTER_CONFLICT,
            )
        others = [f for f in filters if f["filterName"] != wanted]
        if len(others) >= MAX_FILTERS:
            names = ", ".join(f"{f['filterName']} (to {f.get('destinationArn')})" for f in others)
            raise AwsError(
                f"log group {group} already has {len(others)} subscription filters ({names}) and "
                f"takes at most {MAX_FILTERS}: remove one, or name it in "
                "spec.aws.removeSubscriptionFilters (e.g. the Lambda's once streaming works)",
                Reason.SUBSCRIPTION_FILTER_CONFLICT,
            )
        verb = "replaced" if any(f["filterName"] == wanted for f in filters) else "created"
    else:
        verb = f"repaired ({', '.join(_filter_drift(ours, spec))})"
    role = spec.subscription_role_arn or (ours or {}).get("roleArn")
    try:
        clients.logs.put_subscription_filter(
            logGroupName=group,
            filterName=wanted,
            filterPattern="",
            destinationArn=arn,
            roleArn=role,
            distribution=spec.distribution,
        )
    except Exception as exc:
        if error_code(exc) == "LimitExceededException":
            raise AwsError(
                f"log group {group} takes at most {MAX_FILTERS} subscription filters: remove "
                "one (spec.aws.removeSubscriptionFilters)",
                Reason.SUBSCRIPTION_FILTER_CONFLICT,
            ) from None
        if error_code(exc) == "ResourceNotFoundException":
            raise AwsError(
                f"log group {group} does not exist", Reason.LOG_GROUP_NOT_FOUND
            ) from None
        raise classify(exc, "logs", "PutSubscriptionFilter") from None
    changes.append(f"{verb} subscription filter {wanted} (to stream {name})")
    put = next((f for f in describe_filters(clients, group) if f["filterName"] == wanted), None)
    if put is None:
        raise AwsError("the new subscription filter is not visible yet", Reason.AWS_UNAVAILABLE)
    return _result(put, summary, name, stream_owned, True, changes)


def _result(
    found: dict[str, Any],
    summary: dict[str, Any],
    name: str,
    stream_owned: bool,
    filter_owned: bool,
    changes: list[str],
) -> StreamSubscription:
    return StreamSubscription(
        stream_arn=str(summary["StreamARN"]),
        stream_name=name,
        filter_name=str(found["filterName"]),
        filter_since_ms=int(found.get("creationTime") or 0),
        retention_hours=int(summary.get("RetentionPeriodHours", 24)),
        stream_owned=stream_owned,
        filter_owned=filter_owned,
        changes=changes,
    )


def remove_stream_subscription(
    clients: AwsClients, aws: AwsSpec, spec: StreamSpec | None, owner: str
) -> list[str]:
    """Delete this FlowExport's subscription filter (the one of its name to a Kinesis stream)
    and the stream if it owns it: on deletion with policy Delete, and when the mode goes back
    to poll. Never under managementPolicy Observe."""
    if aws.management_policy == "Observe":
        return []
    removed: list[str] = []
    if spec is None or spec.stream_arn is None:
        # The stream first: a filter left without it (a crash in between) is found and
        # removed next time, a stream left without its filter would be forgotten.
        name = stream_name_of(spec or StreamSpec(), owner)
        summary = _describe(clients, name)
        if summary is not None and _stream_tags(clients, name).get(OWNER_TAG) == owner:
            call(
                "kinesis",
                "DeleteStream",
                clients.kinesis.delete_stream,
                StreamName=name,
                EnforceConsumerDeletion=True,
            )
            removed.append(f"deleted Kinesis stream {name}")
    wanted = filter_name_of(spec, owner)
    try:
        filters = describe_filters(clients, aws.log_group_name)
    except AwsError as exc:
        if exc.reason is not Reason.AWS_INVALID_REQUEST:
            raise
        filters = []  # the log group is gone, and its filters with it
    for found in filters:
        if is_own_filter(found, wanted):
            delete_filter(clients, aws.log_group_name, wanted)
            removed.append(f"deleted subscription filter {wanted}")
    return removed


def delete_filter(clients: AwsClients, group: str, name: str) -> None:
    """Delete the log group's subscription filter `name`."""
    call(
        "logs",
        "DeleteSubscriptionFilter",
        clients.logs.delete_subscription_filter,
        logGroupName=group,
        filterName=name,
    )


def is_own_filter(found: dict[str, Any], wanted: str) -> bool:
    """Whether a described filter is this FlowExport's: its name, to a Kinesis stream."""
    return found.get("filterName") == wanted and ":kinesis:" in str(found.get("destinationArn"))


def filter_in_place(clients: AwsClients, group: str, stream: StreamSubscription) -> bool:
    """Whether the log group still has the subscription filter `stream` was started with: its
    name, to the stream, created when it was (not deleted, nor replaced by another of the same
    name)."""
    for found in describe_filters(clients, group):
        if found.get("filterName") == stream.filter_name:
            return bool(
                found.get("destinationArn") == stream.stream_arn
                and int(found.get("creationTime") or 0) == stream.filter_since_ms
            )
    return False
