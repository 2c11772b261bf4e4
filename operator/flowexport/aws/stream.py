"""Ensure a subscription filter delivers a log group to a Kinesis data stream (mode stream).

The same ownership rules as the flow log's: a stream carrying `flowexport.io/owner:
<namespace>/<name>` was created by that FlowExport and is repaired (retention, encryption,
capacity) and deleted by it; an untagged stream is used as it is; another FlowExport's is used
as it is only from its own namespace, and never from another (`ownership.check_foreign`).
Filters carry no tags: a filter is a FlowExport's when it delivers to a stream tagged as that
FlowExport's, or bears its name (default `default_name`, which carries a hash of the uid, so
two FlowExports never pick the same one).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from flowexport.api.models import AwsSpec, StreamSpec
from flowexport.aws.errors import AwsError, call, classify, error_code
from flowexport.aws.ownership import (
    OWNER_TAG,
    check_foreign,
    owner_tags,
    tagged_owner,
    unique_suffix,
)
from flowexport.aws.session import AwsClients
from flowexport.errors import Reason

#: The log group's limit (AWS): a third PutSubscriptionFilter fails.
MAX_FILTERS = 2
_USABLE = {"ACTIVE", "UPDATING"}
#: How the names the operator makes begin (the IAM policy's streams are `stream/flowexport-*`).
NAME_PREFIX = "flowexport-"


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
    """`flowexport-<namespace>-<name>-<hash>`: the hash (`unique_suffix`, of the uid) keeps two
    FlowExports apart whose names flatten alike (`team-a/prod`, `team/a-prod`); the middle is
    cut so the whole fits Kinesis's 128 characters."""
    flat = str(owner).replace("/", "-")
    return f"{NAME_PREFIX}{flat[:106]}-{unique_suffix(owner)}"


def legacy_name(owner: str) -> str:
    """The default name of releases before it carried the uid's hash: a stream of this name
    tagged as this FlowExport's is still its own (found through its filter, or by name)."""
    name = NAME_PREFIX + str(owner).replace("/", "-")
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


def _names_stream(spec: StreamSpec | None) -> bool:
    return spec is not None and (spec.stream_arn is not None or spec.stream_name is not None)


@dataclass(frozen=True)
class FilterMaker:
    """Why a subscription filter is taken for a FlowExport's: `owner` when the stream it
    delivers to is tagged with one (None when only its name, or unreadable tags, say so)."""

    owner: str | None
    why: str


def filter_owner(clients: AwsClients, found: dict[str, Any]) -> FilterMaker | None:
    """Whether a described filter is some FlowExport's (fails closed: a filter into a stream
    whose tags cannot be read counts as one), or None for one no FlowExport made."""
    destination = str(found.get("destinationArn", ""))
    if ":kinesis:" in destination:
        try:
            made_by = tagged_owner(_stream_tags_by_arn(clients, destination))
        except AwsError as exc:
            if exc.reason is Reason.AWS_ACCESS_DENIED:
                return FilterMaker(
                    None,
                    "the tags of the Kinesis stream it delivers to cannot be read "
                    "(AWSAccessDenied), so it may be a FlowExport's",
                )
            if exc.reason is not Reason.AWS_INVALID_REQUEST:  # not found: judge by its name
                raise
        else:
            if made_by is not None:
                return FilterMaker(made_by, f"it delivers to a Kinesis stream tagged {OWNER_TAG}")
    if str(found.get("filterName", "")).startswith(NAME_PREFIX):
        return FilterMaker(None, f"its name begins with {NAME_PREFIX}, as the operator's do")
    return None


def _stream_tags_by_arn(clients: AwsClients, arn: str) -> dict[str, str]:
    answer = call(
        "kinesis", "ListTagsForStream", clients.kinesis.list_tags_for_stream, StreamARN=arn
    )
    return {t["Key"]: t.get("Value", "") for t in answer.get("Tags", [])}


def _own_streams_behind(
    clients: AwsClients, filters: list[dict[str, Any]], owner: str
) -> dict[str, str]:
    """{destination ARN: stream name} of the log group's filters that deliver to a stream
    tagged as `owner`'s (e.g. named by an earlier release's default)."""
    own = {}
    for found in filters:
        destination = str(found.get("destinationArn", ""))
        if ":kinesis:" not in destination or destination in own:
            continue
        try:
            tags = _stream_tags_by_arn(clients, destination)
        except AwsError as exc:
            if exc.reason in (Reason.AWS_ACCESS_DENIED, Reason.AWS_INVALID_REQUEST):
                continue  # not provably this FlowExport's
            raise
        if tagged_owner(tags) == str(owner):
            own[destination] = destination.rsplit("/", 1)[1]
    return own


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
    clients: AwsClients,
    aws: AwsSpec,
    spec: StreamSpec,
    owner: str,
    filters: list[dict[str, Any]],
    changes: list[str],
) -> tuple[dict[str, Any], bool]:
    if _names_stream(spec):
        name = stream_name_of(spec, owner)
    else:
        # This FlowExport's stream, found by its tag behind a filter on the log group (named
        # by an earlier release's default, or made by `flowexport sync`), else the default.
        own = _own_streams_behind(clients, filters, owner)
        name = next(iter(own.values()), None) or default_name(owner)
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
        # Owned from the create call on (AWS takes the tags there; emulators may drop them,
        # so all are added again, the operator's own first).
        call(
            "kinesis", "CreateStream", clients.kinesis.create_stream, Tags=owner_tags(owner), **mode
        )
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
        found = tagged_owner(_stream_tags(clients, name))
        check_foreign(f"Kinesis stream {name}", found, owner, changes=False)
        owned = spec.stream_arn is None and found == owner
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
    group_owner: str | None = None,
) -> StreamSubscription:
    """Make a subscription filter deliver the log group to the stream; idempotent.

    Raises AwsError: terminal for a missing stream the operator may not create, the log
    group's two-filter limit, a filter it may not create, or a stream or log group of another
    FlowExport (`group_owner`: the FlowExport the log group's tag names); retryable while the
    stream is being created or updated, and for throttling and outages. `filters`: the log
    group's filters when the caller already described them.
    """
    changes: list[str] = []
    group = aws.log_group
    put_on = f"log group {group} (a subscription filter would be put on it)"
    if not _names_stream(spec):  # a stream of its own: its filter is always to be put
        check_foreign(put_on, group_owner, owner, changes=True)
    if filters is None:
        filters = describe_filters(clients, group)
    summary, stream_owned = _ensure_stream(clients, aws, spec, owner, filters, changes)
    arn, name = str(summary["StreamARN"]), str(summary["StreamName"])
    wanted = filter_name_of(spec, owner)
    to_stream = [f for f in filters if f.get("destinationArn") == arn]
    ours = next((f for f in to_stream if f["filterName"] == wanted), None)
    if ours is None and stream_owned and spec.filter_name is None and to_stream:
        # A filter into this FlowExport's own stream is its own, whatever its name (the
        # default of an earlier release): kept, and repaired under that name.
        ours = to_stream[0]
        wanted = str(ours["filterName"])
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
    check_foreign(put_on, group_owner, owner, changes=True)
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
    """Delete this FlowExport's subscription filters into Kinesis (the one of its name, and
    any into a stream tagged as its own) and the streams it owns: on deletion with policy
    Delete, and when the mode goes back to poll. Never under managementPolicy Observe, never
    a stream named by streamArn, never another FlowExport's."""
    if aws.management_policy == "Observe":
        return []
    group = aws.log_group
    try:
        filters = describe_filters(clients, group)
    except AwsError as exc:
        if exc.reason is not Reason.AWS_INVALID_REQUEST:
            raise
        filters = []  # the log group is gone, and its filters with it
    wanted = filter_name_of(spec, owner)
    adopted = spec is not None and spec.stream_arn is not None
    named = spec is not None and spec.filter_name is not None
    own_streams = {} if adopted else _own_streams_behind(clients, filters, owner)
    removed: list[str] = []
    # Filters first, then streams: a stream left by a stop in between is still found by its
    # name (the spec's, the default or an earlier release's default) and its tag.
    for found in filters:
        into = str(found.get("destinationArn", ""))
        if is_own_filter(found, wanted) or (not named and into in own_streams):
            delete_filter(clients, group, str(found["filterName"]))
            removed.append(deleted_filter(str(found["filterName"])))
    if not adopted:
        names = [stream_name_of(spec or StreamSpec(), owner)]
        if not _names_stream(spec):
            names.append(legacy_name(owner))
        for name in dict.fromkeys([*names, *own_streams.values()]):
            summary = _describe(clients, name)
            if summary is not None and tagged_owner(_stream_tags(clients, name)) == str(owner):
                call(
                    "kinesis",
                    "DeleteStream",
                    clients.kinesis.delete_stream,
                    StreamName=name,
                    EnforceConsumerDeletion=True,
                )
                removed.append(f"deleted Kinesis stream {name}")
    return removed


def deleted_filter(name: str) -> str:
    """What `remove_stream_subscription` says when it deleted filter `name`."""
    return f"deleted subscription filter {name}"


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
