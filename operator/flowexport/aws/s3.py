"""Mode s3's AWS side: flow-log objects in a bucket, announced on an SQS queue.

- `ensure_s3_source`: the bucket is there; with `spec.aws.vpcId`, the VPC's flow log to the
  bucket (created or adopted); without `source.s3.queueUrl`, a queue with a dead-letter queue
  (redrive after `MAX_RECEIVE_COUNT` receives) and the bucket notification into it, both
  tagged or named as this FlowExport's and removed per deletionPolicy (`remove_s3_source`).
- `announced`: the S3 event records of one SQS message (keys URL-decoded; `s3:TestEvent`
  and other bodies skipped); `flow_log_key`: what a key says (account, region, flow-log id)
  in the plain, hive-compatible and hourly layouts.
- `ObjectReader`: one object's records in chunks, in bounded memory: gzip text streamed (its
  header line giving the format), Parquet read a row group at a time through ranged GETs (only
  the columns a flow needs are fetched; nothing goes to disk), through the columnar core; an
  object that cannot be read raises `ObjectUnreadableError`. With `since` (a switch from
  another mode), records that ended before it are dropped (`ObjectChunk.earlier`).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast
from urllib.parse import unquote_plus

from flowexport.api.models import AwsSpec, S3Spec
from flowexport.aws.errors import AwsError, call, classify, error_code
from flowexport.aws.ownership import OWNER_TAG, owner_tags
from flowexport.aws.reader import Chunk, Event
from flowexport.aws.session import AwsClients
from flowexport.core.logformat import LogFormat, LogFormatError
from flowexport.errors import FlowExportError, Reason

#: Receives of a message before the queue moves it to the dead-letter queue (queues the
#: operator creates).
MAX_RECEIVE_COUNT = 5
#: The visibility timeout of a queue the operator creates (seconds).
QUEUE_VISIBILITY_SECONDS = 300
#: How long the dead-letter queue keeps what it is given (14 days, the maximum).
DLQ_RETENTION_SECONDS = 1_209_600
#: A flow log's LogDestinationType when it delivers to S3.
S3_DESTINATION = "s3"
#: Bytes read from S3 at a time (decompressed a piece at a time: memory stays bounded).
READ_BYTES = 1 << 20
#: Bytes a ranged GET of a Parquet object asks for at least (Parquet's footer and pages are
#: read through a buffer this big; a column chunk larger than it is one GET).
RANGE_BYTES = 1 << 20
#: Rows of a Parquet object decoded at a time (with the text columns decoded as plain
#: strings, not dictionaries, pyarrow holds a batch, not a row group: bench/s3.py measures it).
PARQUET_BATCH_ROWS = 64 * 1024
#: How far a record's end may lie from its object's key timestamp (AWS: 1620Z holds records
#: ending 16:20:00-16:24:59; an older revision of the guide says 16:15-16:19:59), with slack.
STAMP_SLACK_MS = 10 * 60_000

_ACCT = r"(?:aws-account-id=)?(?P<account>[0-9]{12})"
_SERVICE = r"(?:aws-service=)?vpcflowlogs"
_REGION = r"(?:aws-region=)?(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+)"
_DATE = r"(?:year=)?[0-9]{4}/(?:month=)?[0-9]{2}/(?:day=)?[0-9]{2}(?:/(?:hour=)?[0-9]{2})?"
_NAME = (
    r"(?P=account)_vpcflowlogs_(?P=region)_(?P<flow_log>fl-[0-9a-z]+)_"
    r"(?P<stamp>[0-9]{8}T[0-9]{4}Z)_[0-9a-z]+\.log\.(?P<ext>gz|parquet)"
)
_KEY = re.compile(rf"AWSLogs/{_ACCT}/{_SERVICE}/{_REGION}/{_DATE}/{_NAME}$")


@dataclass(frozen=True)
class FlowLogKey:
    """What a flow-log object's key says."""

    account: str
    region: str
    flow_log_id: str
    #: yyyymmddTHHMMZ: the end of the 5-minute interval the records belong to.
    stamp: str
    parquet: bool

    @property
    def stamp_ms(self) -> int:
        """The key timestamp in epoch milliseconds."""
        when = datetime.strptime(self.stamp, "%Y%m%dT%H%MZ").replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)


def flow_log_key(key: str, prefix: str = "") -> FlowLogKey | None:
    """The flow-log file `key` names (under `prefix`, then `AWSLogs/...`), None if it is not
    one: the plain, hive-compatible (`aws-account-id=`, `year=`, ...) and hourly layouts."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :].lstrip("/")
    match = _KEY.fullmatch(rest)
    if match is None:
        return None
    return FlowLogKey(
        match["account"],
        match["region"],
        match["flow_log"],
        match["stamp"],
        match["ext"] == "parquet",
    )


_KEY_ANYWHERE = re.compile(rf"(?:^|/){_KEY.pattern}")


def find_flow_log_key(key: str) -> FlowLogKey | None:
    """The flow-log file `key` names under any prefix (`AWSLogs/` at a segment's start)."""
    match = _KEY_ANYWHERE.search(key)
    if match is None:
        return None
    return flow_log_key(key, key[: match.start()])


@dataclass(frozen=True)
class ObjectRef:
    """One object an S3 event announced."""

    bucket: str
    key: str
    etag: str
    size: int = 0

    @property
    def name(self) -> str:
        """s3://bucket/key."""
        return f"s3://{self.bucket}/{self.key}"

    @property
    def done_id(self) -> str:
        """How a done object is recorded: '<ETag> <key>'."""
        return f"{self.etag} {self.key}"


@dataclass
class Announced:
    """The objects one SQS message announces, and what it held that is not one."""

    objects: list[ObjectRef] = field(default_factory=list)
    #: Test events (s3:TestEvent, sent when a notification is set up).
    test_events: int = 0
    #: Records that are not an ObjectCreated of an S3 object, or a body that is not an event.
    not_events: int = 0


def announced(body: str) -> Announced:
    """The objects an SQS message body from an S3 event notification announces (keys
    URL-decoded: '+' is a space, then %XX)."""
    found = Announced()
    try:
        event = json.loads(body)
    except ValueError:
        found.not_events += 1
        return found
    if not isinstance(event, dict):
        found.not_events += 1
        return found
    if event.get("Event") == "s3:TestEvent":
        found.test_events += 1
        return found
    records = event.get("Records")
    if not isinstance(records, list):
        found.not_events += 1
        return found
    for record in records:
        try:
            major = str(record["eventVersion"]).split(".", 1)[0]
            created = str(record["eventName"]).startswith("ObjectCreated:")
            if record.get("eventSource") != "aws:s3" or major != "2" or not created:
                found.not_events += 1
                continue
            s3 = record["s3"]
            obj = s3["object"]
            found.objects.append(
                ObjectRef(
                    bucket=str(s3["bucket"]["name"]),
                    key=unquote_plus(str(obj["key"])),
                    etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
                    size=int(obj.get("size") or 0),
                )
            )
        except (KeyError, TypeError, ValueError):
            found.not_events += 1
    return found


# -- the AWS resources ---------------------------------------------------------------------


@dataclass
class S3Subscription:
    """The bucket, the queue and the flow log of mode s3, and whether this FlowExport made
    them."""

    bucket: str
    queue_url: str
    queue_arn: str
    queue_owned: bool
    notification_owned: bool
    flow_log_id: str | None = None
    flow_log_owned: bool = False
    changes: list[str] = field(default_factory=list)


def queue_name_of(owner: str) -> str:
    """The queue a FlowExport creates: flowexport-<namespace>-<name> (SQS: 80 characters of
    letters, digits, - and _; the dead-letter queue adds -dlq)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", f"flowexport-{owner.replace('/', '-')}")
    return name[:76]


def notification_id_of(owner: str) -> str:
    """The Id of the bucket notification a FlowExport puts."""
    return f"flowexport-{owner.replace('/', '-')}"


def _bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def _destination(spec: S3Spec) -> str:
    prefix = spec.prefix.strip("/")
    return _bucket_arn(spec.bucket) + (f"/{prefix}/" if prefix else "")


def ensure_s3_source(clients: AwsClients, aws: AwsSpec, spec: S3Spec, owner: str) -> S3Subscription:
    """The bucket, the flow log (with `aws.vpcId`), the queue and its notification; idempotent.
    Raises AwsError (BucketNotFound, QueueNotFound terminal; throttling, outages retryable)."""
    changes: list[str] = []
    try:
        clients.s3.head_bucket(Bucket=spec.bucket)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            raise AwsError(
                f"bucket {spec.bucket} does not exist", Reason.BUCKET_NOT_FOUND
            ) from None
        raise classify(exc, "s3", "HeadBucket") from None
    flow_log_id, flow_log_owned = None, False
    if aws.vpc_id is not None:
        flow_log_id, flow_log_owned = _ensure_s3_flow_log(clients, aws, spec, owner, changes)
    if spec.queue_url is not None:
        arn = _queue_arn(clients, spec.queue_url)
        return S3Subscription(
            spec.bucket, spec.queue_url, arn, False, False, flow_log_id, flow_log_owned, changes
        )
    url, arn, owned = _ensure_queue(clients, aws, spec, owner, changes)
    notified = _ensure_notification(clients, aws, spec, owner, arn, changes)
    return S3Subscription(
        spec.bucket, url, arn, owned, notified, flow_log_id, flow_log_owned, changes
    )


def _queue_arn(clients: AwsClients, url: str) -> str:
    try:
        answer = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    except Exception as exc:
        if "NonExistentQueue" in error_code(exc) or "QueueDoesNotExist" in error_code(exc):
            raise AwsError(f"queue {url} does not exist", Reason.QUEUE_NOT_FOUND) from None
        raise classify(exc, "sqs", "GetQueueAttributes") from None
    return str(answer["Attributes"]["QueueArn"])


def _find_queue(clients: AwsClients, name: str) -> str | None:
    try:
        return str(clients.sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except Exception as exc:
        if "NonExistentQueue" in error_code(exc) or "QueueDoesNotExist" in error_code(exc):
            return None
        raise classify(exc, "sqs", "GetQueueUrl") from None


def _queue_policy(queue_arn: str, bucket: str) -> str:
    """S3 may send the bucket's notifications to the queue, nothing else may."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "BucketNotifications",
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "SQS:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": _bucket_arn(bucket)}},
                }
            ],
        }
    )


def _ensure_queue(
    clients: AwsClients, aws: AwsSpec, spec: S3Spec, owner: str, changes: list[str]
) -> tuple[str, str, bool]:
    """The queue (and its dead-letter queue) this FlowExport uses: (url, arn, owned)."""
    name = queue_name_of(owner)
    url = _find_queue(clients, name)
    if url is not None:
        tags = call("sqs", "ListQueueTags", clients.sqs.list_queue_tags, QueueUrl=url)
        return url, _queue_arn(clients, url), (tags.get("Tags") or {}).get(OWNER_TAG) == owner
    if aws.management_policy != "AdoptOrCreate":
        raise AwsError(
            f"no queue {name} and managementPolicy {aws.management_policy} never creates one: "
            "set source.s3.queueUrl",
            Reason.QUEUE_NOT_FOUND,
        )
    tags = owner_tags(owner, aws.tags)
    dlq = call(
        "sqs",
        "CreateQueue",
        clients.sqs.create_queue,
        QueueName=f"{name}-dlq",
        Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)},
        tags=tags,
    )["QueueUrl"]
    dlq_arn = _queue_arn(clients, dlq)
    url = call(
        "sqs",
        "CreateQueue",
        clients.sqs.create_queue,
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(QUEUE_VISIBILITY_SECONDS),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
        },
        tags=tags,
    )["QueueUrl"]
    arn = _queue_arn(clients, url)
    call(
        "sqs",
        "SetQueueAttributes",
        clients.sqs.set_queue_attributes,
        QueueUrl=url,
        Attributes={"Policy": _queue_policy(arn, spec.bucket)},
    )
    changes.append(f"created queue {name} (dead-letter queue {name}-dlq)")
    return str(url), arn, True


def _notifications(clients: AwsClients, bucket: str) -> dict[str, Any]:
    answer = call(
        "s3",
        "GetBucketNotificationConfiguration",
        clients.s3.get_bucket_notification_configuration,
        Bucket=bucket,
    )
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


def _put_notifications(clients: AwsClients, bucket: str, config: dict[str, Any]) -> None:
    call(
        "s3",
        "PutBucketNotificationConfiguration",
        clients.s3.put_bucket_notification_configuration,
        Bucket=bucket,
        NotificationConfiguration=config,
    )


def _ensure_notification(
    clients: AwsClients, aws: AwsSpec, spec: S3Spec, owner: str, arn: str, changes: list[str]
) -> bool:
    """The bucket's ObjectCreated notification into the queue (Id notification_id_of)."""
    config = _notifications(clients, spec.bucket)
    queues = list(config.get("QueueConfigurations") or [])
    ident = notification_id_of(owner)
    wanted: dict[str, Any] = {
        "Id": ident,
        "QueueArn": arn,
        "Events": ["s3:ObjectCreated:*"],
    }
    if spec.prefix:
        wanted["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": spec.prefix}]}}
    mine = [q for q in queues if q.get("Id") == ident]
    if mine and mine[0].get("QueueArn") == arn:
        return True
    if aws.management_policy == "Observe":
        return False
    config["QueueConfigurations"] = [q for q in queues if q.get("Id") != ident] + [wanted]
    _put_notifications(clients, spec.bucket, config)
    changes.append(f"put notification {ident} on bucket {spec.bucket}")
    return True


def _s3_flow_logs(clients: AwsClients, aws: AwsSpec, spec: S3Spec) -> list[dict[str, Any]]:
    answer = call(
        "ec2",
        "DescribeFlowLogs",
        clients.ec2.describe_flow_logs,
        Filters=[{"Name": "resource-id", "Values": [str(aws.vpc_id)]}],
    )
    bucket_arn = _bucket_arn(spec.bucket)
    return [
        f
        for f in answer.get("FlowLogs", [])
        if f.get("LogDestinationType") == S3_DESTINATION
        and str(f.get("LogDestination", "")).rstrip("/").startswith(bucket_arn)
    ]


def _ensure_s3_flow_log(
    clients: AwsClients, aws: AwsSpec, spec: S3Spec, owner: str, changes: list[str]
) -> tuple[str, bool]:
    """The VPC's flow log into the bucket (adopted whatever its options, or created)."""
    existing = _s3_flow_logs(clients, aws, spec)
    if existing:
        chosen = next((f for f in existing if _owner_of(f) == owner), existing[0])
        return str(chosen["FlowLogId"]), _owner_of(chosen) == owner
    if aws.management_policy != "AdoptOrCreate":
        raise AwsError(
            f"no flow log delivers {aws.vpc_id} to bucket {spec.bucket}, and managementPolicy "
            f"{aws.management_policy} never creates one",
            Reason.FLOW_LOG_NOT_FOUND,
        )
    from flowexport.aws.subscription import (  # noqa: PLC0415 - the same defaults
        NEW_AGGREGATION_INTERVAL,
        NEW_TRAFFIC_TYPE,
        desired_format,
    )

    answer = call(
        "ec2",
        "CreateFlowLogs",
        clients.ec2.create_flow_logs,
        ResourceIds=[str(aws.vpc_id)],
        ResourceType="VPC",
        TrafficType=aws.traffic_type or NEW_TRAFFIC_TYPE,
        LogDestinationType="s3",
        LogDestination=_destination(spec),
        LogFormat=desired_format(aws).render(),
        MaxAggregationInterval=aws.max_aggregation_interval or NEW_AGGREGATION_INTERVAL,
        DestinationOptions={
            "FileFormat": spec.file_format,
            "HiveCompatiblePartitions": spec.hive_compatible_partitions,
            "PerHourPartition": spec.per_hour_partition,
        },
        TagSpecifications=[
            {
                "ResourceType": "vpc-flow-log",
                "Tags": [{"Key": k, "Value": v} for k, v in owner_tags(owner, aws.tags).items()],
            }
        ],
    )
    for failure in answer.get("Unsuccessful") or []:
        error = failure.get("Error", {})
        raise AwsError(
            f"AWS refused to create the flow log ({error.get('Code')}: {error.get('Message')})",
            Reason.FLOW_LOG_CREATE_FAILED,
        )
    flow_log_id = str(answer["FlowLogIds"][0])
    changes.append(f"created flow log {flow_log_id} to bucket {spec.bucket}")
    return flow_log_id, True


def _owner_of(resource: dict[str, Any]) -> str | None:
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == OWNER_TAG), None)


def remove_s3_source(clients: AwsClients, aws: AwsSpec, spec: S3Spec, owner: str) -> list[str]:
    """The notification, the queue and its dead-letter queue and the flow log this FlowExport
    created (what carries its tags or its notification Id); what was removed."""
    removed: list[str] = []
    ident = notification_id_of(owner)
    try:
        config = _notifications(clients, spec.bucket)
    except AwsError as exc:
        if exc.reason is not Reason.AWS_INVALID_REQUEST:
            raise
        config = {}
    queues = list(config.get("QueueConfigurations") or [])
    if any(q.get("Id") == ident for q in queues):
        config["QueueConfigurations"] = [q for q in queues if q.get("Id") != ident]
        _put_notifications(clients, spec.bucket, config)
        removed.append(f"removed notification {ident} from bucket {spec.bucket}")
    name = queue_name_of(owner)
    for queue in (name, f"{name}-dlq"):
        url = _find_queue(clients, queue)
        if url is None:
            continue
        tags = call("sqs", "ListQueueTags", clients.sqs.list_queue_tags, QueueUrl=url)
        if (tags.get("Tags") or {}).get(OWNER_TAG) == owner:
            call("sqs", "DeleteQueue", clients.sqs.delete_queue, QueueUrl=url)
            removed.append(f"deleted queue {queue}")
    if aws.vpc_id is not None:
        owned = [f["FlowLogId"] for f in _s3_flow_logs(clients, aws, spec) if _owner_of(f) == owner]
        if owned:
            call("ec2", "DeleteFlowLogs", clients.ec2.delete_flow_logs, FlowLogIds=owned)
            removed += [f"deleted flow log {i}" for i in owned]
    return removed


# -- the queue ---------------------------------------------------------------------------------


def receive(
    clients: AwsClients, queue_url: str, wait_seconds: int, visibility: int, limit: int = 10
) -> list[dict[str, Any]]:
    """Up to `limit` messages (long polling for `wait_seconds`), each hidden for `visibility`
    seconds."""
    answer = call(
        "sqs",
        "ReceiveMessage",
        clients.sqs.receive_message,
        QueueUrl=queue_url,
        MaxNumberOfMessages=limit,
        WaitTimeSeconds=wait_seconds,
        VisibilityTimeout=visibility,
        MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
    )
    return list(answer.get("Messages") or [])


def delete_message(clients: AwsClients, queue_url: str, receipt: str) -> None:
    """The message is done."""
    call(
        "sqs",
        "DeleteMessage",
        clients.sqs.delete_message,
        QueueUrl=queue_url,
        ReceiptHandle=receipt,
    )


def hide_message(clients: AwsClients, queue_url: str, receipt: str, seconds: int) -> None:
    """The message stays hidden `seconds` from now (0: visible again at once)."""
    call(
        "sqs",
        "ChangeMessageVisibility",
        clients.sqs.change_message_visibility,
        QueueUrl=queue_url,
        ReceiptHandle=receipt,
        VisibilityTimeout=seconds,
    )


def message_age(message: dict[str, Any], now_ms: int) -> int | None:
    """Seconds since the message was sent (its SentTimestamp), None without one.

    (ApproximateAgeOfOldestMessage is a CloudWatch metric, not a queue attribute: the lag is
    the age of the oldest message of a receive.)"""
    sent = (message.get("Attributes") or {}).get("SentTimestamp")
    try:
        return max(0, (now_ms - int(sent)) // 1000) if sent is not None else None
    except ValueError:
        return None


# -- listing (backfill, without a queue) --------------------------------------------------


@dataclass
class Listing:
    """The flow-log objects under a prefix in a time range, and what else was there."""

    objects: list[ObjectRef] = field(default_factory=list)
    #: Keys that are not flow-log files (skipped).
    not_flow_logs: int = 0
    #: Flow-log objects whose key timestamp is outside the range (skipped).
    outside: int = 0


def list_flow_log_objects(
    clients: AwsClients,
    bucket: str,
    prefix: str,
    since_ms: int,
    until_ms: int | None = None,
    page_size: int = 1000,
) -> Listing:
    """ListObjectsV2 of `prefix`, every page: the flow-log objects whose key timestamp is at
    or after `since_ms` (and before `until_ms`), oldest key first. Raises AwsError
    (BucketNotFound; denied; throttled)."""
    found = Listing()
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
        if token is not None:
            kwargs["ContinuationToken"] = token
        try:
            page = clients.s3.list_objects_v2(**kwargs)
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchBucket"):
                raise AwsError(f"bucket {bucket} does not exist", Reason.BUCKET_NOT_FOUND) from None
            raise classify(exc, "s3", "ListObjectsV2") from None
        for item in page.get("Contents") or []:
            key = str(item["Key"])
            what = find_flow_log_key(key)
            if what is None:
                found.not_flow_logs += 1
                continue
            stamp = what.stamp_ms
            if stamp < since_ms or (until_ms is not None and stamp >= until_ms):
                found.outside += 1
                continue
            etag = str(item.get("ETag") or "").strip('"')
            found.objects.append(ObjectRef(bucket, key, etag, int(item.get("Size") or 0)))
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            break
    return found


def open_object(clients: AwsClients, ref: ObjectRef) -> IO[bytes]:
    """A buffered binary stream of the object (it can `peek`): a `.parquet` key seekable
    through ranged GETs, any other streamed by one GET. Raises ObjectUnreadableError."""
    if ref.key.endswith(".parquet"):
        size = ref.size
        if size <= 0:
            try:
                size = int(clients.s3.head_object(Bucket=ref.bucket, Key=ref.key)["ContentLength"])
            except Exception as exc:
                raise ObjectUnreadableError(ref, _failed("HeadObject", exc)) from None
        return cast(IO[bytes], io.BufferedReader(_RangedObject(clients, ref, size), RANGE_BYTES))
    try:
        answer = clients.s3.get_object(Bucket=ref.bucket, Key=ref.key)
    except Exception as exc:
        raise ObjectUnreadableError(ref, _failed("GetObject", exc)) from None
    return cast(IO[bytes], io.BufferedReader(_Prepended(b"", answer["Body"]), READ_BYTES))


# -- one object --------------------------------------------------------------------------------


class ObjectUnreadableError(FlowExportError):
    """An object that cannot be read: left to the queue's redrive policy."""

    reason = Reason.OBJECT_UNREADABLE

    def __init__(self, ref: ObjectRef, why: str) -> None:
        super().__init__(f"cannot read {ref.name}: {why}")
        self.ref = ref
        self.why = why


@dataclass(frozen=True)
class ObjectChunk(Chunk):
    """Some records of an object: text lines (`events`) or a Parquet record batch (`rows`,
    its key columns named by field), and how many records before them were dropped as read
    by the mode before a switch (`earlier`)."""

    rows: Any = None
    earlier: int = 0
    timestamp: int = 0


@dataclass
class ObjectCursor:
    """Where an object's reading is: the records handled (with the log group's cursor left as
    it was, which mode s3 moves only between objects)."""

    base: Any
    records: int = 0

    def to_status(self) -> dict[str, Any]:
        """The log group's cursor (an object's progress is not stored)."""
        status: dict[str, Any] = self.base.to_status()
        return status


def _time_field(fields: tuple[str, ...]) -> int | None:
    """Where a record's end (else its start) is in the format, None without either."""
    for name in ("end", "start"):
        if name in fields:
            return fields.index(name)
    return None


class ObjectReader:
    """The records of one object, in chunks (a `pipeline.Reader`): gzip text or Parquet (told
    by the key's `.parquet` or the content's `PAR1`); `format` is known once `open` ran.

    `since` (epoch ms): records whose end (else start) is before it are dropped and counted
    (`ObjectChunk.earlier`); an object whose key timestamp says all its records ended before
    it is not read at all (`before_since`).
    """

    def __init__(
        self, clients: AwsClients, ref: ObjectRef, timestamp_ms: int, since: int | None = None
    ) -> None:
        self.clients = clients
        self.ref = ref
        self.timestamp_ms = timestamp_ms
        self.since = since
        self.format: LogFormat | None = None
        self.parquet = False
        #: The last chunk's cursor, once handed out (the object was read to its end).
        self.final: ObjectCursor | None = None
        self._lines: Iterator[str] | None = None
        self._log: Any = None
        self._filter = False
        key = flow_log_key(ref.key)
        #: The key timestamp (epoch ms), None for a key that is not a flow log's.
        self.stamp_ms = key.stamp_ms if key is not None else None

    @property
    def before_since(self) -> bool:
        """Whether the key timestamp says every record ended before `since`."""
        if self.since is None or self.stamp_ms is None:
            return False
        return self.stamp_ms + STAMP_SLACK_MS <= self.since

    def open(self) -> LogFormat:
        """Start reading: the object's format from its header line or Parquet columns
        (blocking)."""
        ref = self.ref
        self._filter = self.since is not None and (
            self.stamp_ms is None or self.stamp_ms - STAMP_SLACK_MS < self.since
        )
        if ref.key.endswith(".parquet"):
            return self._open_parquet(ref.size)
        try:
            answer = self.clients.s3.get_object(Bucket=ref.bucket, Key=ref.key)
        except Exception as exc:
            raise ObjectUnreadableError(ref, _failed("GetObject", exc)) from None
        body = answer["Body"]
        head = body.read(4)
        if head[:4] == b"PAR1":
            body.close()
            return self._open_parquet(int(answer.get("ContentLength") or ref.size))
        raw = _Prepended(head, body)
        text = io.TextIOWrapper(
            gzip.GzipFile(fileobj=raw, mode="rb"), encoding="utf-8", errors="replace"
        )
        lines = iter(text)
        header = self._next(lines)
        if header is None:
            raise ObjectUnreadableError(ref, "empty object (no header line)")
        try:
            self.format = LogFormat.parse(header)
        except LogFormatError as exc:
            why = f"its header line is not a flow-log format ({exc})"
            raise ObjectUnreadableError(ref, why) from None
        self._lines = lines
        return self.format

    def _open_parquet(self, size: int) -> LogFormat:
        """A Parquet object through ranged GETs: its footer now, its row groups as read."""
        import pyarrow as pa  # noqa: PLC0415 - loaded when a Parquet object is read

        from flowexport.core.parquet import ParquetFlowLog  # noqa: PLC0415

        ref = self.ref
        try:
            if size <= 0:
                head = self.clients.s3.head_object(Bucket=ref.bucket, Key=ref.key)
                size = int(head["ContentLength"])
            ranged = io.BufferedReader(_RangedObject(self.clients, ref, size), RANGE_BYTES)
            self._log = ParquetFlowLog(
                cast(IO[bytes], ranged),
                dictionaries=False,
                batch_rows=PARQUET_BATCH_ROWS,
                buffer_bytes=RANGE_BYTES,
            )
        except ObjectUnreadableError:
            raise
        except LogFormatError as exc:
            why = f"its Parquet columns are not a flow-log format ({exc})"
            raise ObjectUnreadableError(ref, why) from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ObjectUnreadableError(ref, f"not readable Parquet ({exc})") from None
        except Exception as exc:
            raise ObjectUnreadableError(ref, _failed("GetObject", exc)) from None
        self.parquet = True
        self.format = cast(LogFormat, self._log.format)
        return self.format

    def _next(self, lines: Iterator[str]) -> str | None:
        try:
            return next(lines, None)
        except ObjectUnreadableError:
            raise
        except (OSError, EOFError, zlib.error, UnicodeError) as exc:
            raise ObjectUnreadableError(self.ref, f"not readable gzip text ({exc})") from None
        except Exception as exc:
            raise ObjectUnreadableError(self.ref, _failed("reading", exc)) from None

    def chunks(self, cursor: Any, now_ms: int, chunk_size: int) -> Iterator[Chunk]:
        """The object's records from the start, `chunk_size` at a time; the last is final."""
        if self.format is None:
            self.open()
        if self.parquet:
            yield from self._parquet_chunks(cursor, chunk_size)
        else:
            yield from self._text_chunks(cursor, chunk_size)

    def _text_chunks(self, cursor: Any, chunk_size: int) -> Iterator[Chunk]:
        lines = self._lines
        assert lines is not None and self.format is not None
        at = _time_field(self.format.fields)
        width = len(self.format.fields)
        since_s = (self.since or 0) // 1000
        done = 0
        while True:
            events: list[Event] = []
            earlier = 0
            ended = False
            while len(events) < chunk_size:
                line = self._next(lines)
                if line is None:
                    ended = True
                    break
                line = line.rstrip("\r\n")
                if not line:
                    continue
                if self._filter and at is not None:
                    end = _record_time(line, at, width)
                    if end is not None and end < since_s:
                        earlier += 1
                        continue
                events.append(Event(self.timestamp_ms, self.timestamp_ms, line))
            done += len(events) + earlier
            position = ObjectCursor(cursor, done)
            if ended:
                self.final = position
            yield ObjectChunk(
                events, position, final=ended, earlier=earlier, timestamp=self.timestamp_ms
            )
            if ended:
                return

    def _parquet_chunks(self, cursor: Any, chunk_size: int) -> Iterator[Chunk]:
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.compute as pc  # noqa: PLC0415

        assert self.format is not None
        at = _time_field(self.format.fields)
        name = self.format.fields[at] if at is not None else None
        since_s = (self.since or 0) // 1000
        done = 0
        batches = self._log.batches(extra=(name,) if name is not None else ())
        while True:
            try:
                batch = next(batches, None)
            except ObjectUnreadableError:
                raise
            except (pa.ArrowException, OSError, ValueError) as exc:
                why = f"the Parquet data is damaged ({exc})"
                raise ObjectUnreadableError(self.ref, why) from None
            except Exception as exc:
                raise ObjectUnreadableError(self.ref, _failed("reading", exc)) from None
            if batch is None:
                break
            earlier = 0
            if name is not None and self._filter:
                times = pc.cast(batch.column(name), pa.int64(), safe=False)
                kept = batch.filter(pc.fill_null(pc.greater_equal(times, since_s), True))
                earlier = batch.num_rows - kept.num_rows
                batch = kept
            for offset in range(0, max(batch.num_rows, 1), chunk_size):
                rows = batch.slice(offset, chunk_size)
                done += rows.num_rows + earlier
                yield ObjectChunk(
                    [],
                    ObjectCursor(cursor, done),
                    rows=rows,
                    earlier=earlier,
                    timestamp=self.timestamp_ms,
                )
                earlier = 0
        self.final = ObjectCursor(cursor, done)
        yield ObjectChunk([], self.final, final=True, timestamp=self.timestamp_ms)


def _record_time(line: str, at: int, width: int) -> int | None:
    """A text record's time field (seconds), None when it has none (`-`, malformed)."""
    tokens = line.split()
    if len(tokens) != width:
        return None
    try:
        return int(tokens[at])
    except ValueError:
        return None


def _failed(what: str, exc: Exception) -> str:
    code = error_code(exc)
    return f"{what} failed ({code or type(exc).__name__})"


class _RangedObject(io.RawIOBase):
    """An S3 object as a seekable file: each read one ranged GetObject."""

    def __init__(self, clients: AwsClients, ref: ObjectRef, size: int) -> None:
        self._clients = clients
        self._ref = ref
        self._size = size
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._at)
        if want <= 0:
            return 0
        last = self._at + want - 1
        try:
            answer = self._clients.s3.get_object(
                Bucket=self._ref.bucket, Key=self._ref.key, Range=f"bytes={self._at}-{last}"
            )
            data = answer["Body"].read()
        except Exception as exc:
            raise ObjectUnreadableError(self._ref, _failed("GetObject", exc)) from None
        n = min(len(data), want)
        view[:n] = data[:n]
        self._at += n
        return n


class _Prepended(io.RawIOBase):
    """A stream with bytes already read put back in front of it."""

    def __init__(self, head: bytes, body: Any) -> None:
        self._head = head
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._body.read(min(len(view), READ_BYTES))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()
