"""boto3 sessions and clients for one FlowExport: region, endpoint, keys or assumed role."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.client
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.credentials import RefreshableCredentials

from flowexport import __version__
from flowexport.aws.errors import classify


@dataclass(frozen=True)
class AwsKeys:
    """Static credentials read from a Secret."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


#: The session name when none names a FlowExport (2-64 characters of [\w+=,.@-]).
DEFAULT_SESSION_NAME = "flowexport-operator"


@dataclass(frozen=True)
class AwsTarget:
    """Where and as whom to call AWS."""

    region: str
    endpoint_url: str | None = None
    role_arn: str | None = None
    keys: AwsKeys | None = None
    requests_per_second: float = 5.0
    #: Per-service endpoints ((service, url), ...) overriding `endpoint_url`.
    service_endpoints: tuple[tuple[str, str], ...] = ()
    #: ExternalId sent with AssumeRole of `role_arn` (the AccountGrant's; not a secret).
    external_id: str | None = None
    #: RoleSessionName of AssumeRole: names the FlowExport (`api.grants.session_name`).
    session_name: str = DEFAULT_SESSION_NAME

    def endpoint(self, service: str) -> str | None:
        """The endpoint URL for `service` (ec2, logs, sts)."""
        return dict(self.service_endpoints).get(service, self.endpoint_url)


CLIENT_CONFIG = Config(
    # A few quick retries (throttling, 5xx); past them the pipeline backs off and says so in a
    # condition, rather than botocore hiding a minute of retries inside one call.
    retries={"mode": "standard", "total_max_attempts": 4},
    connect_timeout=10,
    read_timeout=60,
    user_agent_extra=f"flowexport/{__version__}",
)


#: One loader for every session: botocore then reads and decodes each service model (EC2's
#: is megabytes of JSON) once per process, not once per session.
_LOADER = botocore.loaders.create_loader()


def _botocore_session() -> botocore.session.Session:
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    return core


def make_session(target: AwsTarget) -> boto3.Session:
    """A session from static keys or the default chain (IRSA), optionally assuming a role:
    AssumeRole carries the target's session name and, when set, its ExternalId."""
    keys = target.keys
    base = boto3.Session(
        botocore_session=_botocore_session(),
        region_name=target.region,
        aws_access_key_id=keys.access_key_id if keys else None,
        aws_secret_access_key=keys.secret_access_key if keys else None,
        aws_session_token=keys.session_token if keys else None,
    )
    if not target.role_arn:
        return base
    sts = base.client("sts", endpoint_url=target.endpoint("sts"), config=CLIENT_CONFIG)
    request = {"RoleArn": target.role_arn, "RoleSessionName": target.session_name}
    if target.external_id:
        request["ExternalId"] = target.external_id

    def assume() -> dict[str, Any]:
        creds = sts.assume_role(**request)["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    credentials = RefreshableCredentials.create_from_metadata(
        metadata=assume(), refresh_using=assume, method="sts-assume-role"
    )
    core = _botocore_session()
    core._credentials = credentials  # botocore's documented way to inject refreshable creds
    core.set_config_variable("region", target.region)
    return boto3.Session(botocore_session=core)


@dataclass
class AwsClients:
    """The clients one FlowExport needs (Kinesis made on first use: most never need it)."""

    ec2: Any
    logs: Any
    target: AwsTarget
    session: Any = None
    _kinesis: Any = None
    _s3: Any = None
    _sqs: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def kinesis(self) -> Any:
        """The Kinesis Data Streams client (mode stream)."""
        with self._lock:
            if self._kinesis is None:
                self._kinesis = self.session.client(
                    "kinesis", endpoint_url=self.target.endpoint("kinesis"), config=CLIENT_CONFIG
                )
            return self._kinesis

    @property
    def s3(self) -> Any:
        """The S3 client (mode s3)."""
        with self._lock:
            if self._s3 is None:
                self._s3 = self.session.client(
                    "s3", endpoint_url=self.target.endpoint("s3"), config=CLIENT_CONFIG
                )
            return self._s3

    @property
    def sqs(self) -> Any:
        """The SQS client (mode s3)."""
        with self._lock:
            if self._sqs is None:
                self._sqs = self.session.client(
                    "sqs", endpoint_url=self.target.endpoint("sqs"), config=CLIENT_CONFIG
                )
            return self._sqs


def make_clients(target: AwsTarget) -> AwsClients:
    """EC2 and CloudWatch Logs clients for the target (blocking: assumes the role if any).

    Raises AwsError, classified (STS unreachable, AssumeRole denied, bad credentials).
    """
    try:
        session = make_session(target)
    except Exception as exc:
        raise classify(exc, "sts", "AssumeRole") from None
    ec2 = session.client("ec2", endpoint_url=target.endpoint("ec2"), config=CLIENT_CONFIG)
    logs = session.client("logs", endpoint_url=target.endpoint("logs"), config=CLIENT_CONFIG)
    return AwsClients(ec2, logs, target, session)


#: How many targets' clients `shared_clients` keeps (least recently used go first).
SHARED_CLIENTS = 256
_shared: OrderedDict[AwsTarget, AwsClients] = OrderedDict()
_shared_lock = threading.Lock()
#: The targets whose clients are being made, set when they are (or the making failed).
_building: dict[AwsTarget, threading.Event] = {}


def shared_clients(target: AwsTarget) -> AwsClients:
    """The clients for `target`, made once and shared by every FlowExport with the same
    region, endpoints and credentials (boto3 clients are thread-safe; a rate is not part of
    what is shared). Blocking on the first call for a target, like `make_clients`."""
    key = dataclasses.replace(target, requests_per_second=1.0)
    while True:
        with _shared_lock:
            found = _shared.get(key)
            if found is not None:
                _shared.move_to_end(key)
                return dataclasses.replace(found, target=target)
            building = _building.get(key)
            if building is None:
                building = _building[key] = threading.Event()
                break
        # Another call is making this target's clients: wait for them rather than make a
        # set of our own (100 FlowExports starting at once made 100 sets).
        building.wait()
    # Made outside the lock: assuming a role may wait on STS, which must not hold up the
    # FlowExports of other targets.
    try:
        made = make_clients(key)
        with _shared_lock:
            _shared[key] = made
            while len(_shared) > SHARED_CLIENTS:
                _shared.popitem(last=False)
    finally:
        with _shared_lock:
            del _building[key]
        building.set()  # a failure lets the next waiter try in its turn
    return dataclasses.replace(made, target=target)


class RateLimiter:
    """Blocking limiter for AWS calls made from worker threads: `rate` calls per second."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._next = 0.0

    def wait(self) -> None:
        """Sleep until the next call may go out."""
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


#: Client classes by service, for the sessions of this module (`_LOADER`). botocore builds a
#: new class for every client (a method, a docstring object and an operation model for each
#: of EC2's ~700 operations: ~1.5 MiB of an EC2 + Logs pair's 1.8), so a process with a
#: client set per account and region held hundreds of identical classes. Our sessions are
#: made alike (`_botocore_session`, the same boto3 handlers), so their classes are too.
_client_classes: dict[tuple[str, str | None], type] = {}
_client_classes_lock = threading.RLock()  # a class-creating hook may make a client
_create_client_class = botocore.client.ClientCreator._create_client_class


def _shared_client_class(creator: Any, service_name: str, service_model: Any) -> type:
    """botocore's `ClientCreator._create_client_class`, made once per service and API version
    for clients of `_LOADER`'s sessions (others' unchanged)."""
    if getattr(creator, "_loader", None) is not _LOADER:
        return _create_client_class(creator, service_name, service_model)  # type: ignore[no-any-return]
    key = (service_name, service_model.api_version)
    with _client_classes_lock:
        found = _client_classes.get(key)
        if found is None:
            found = _client_classes[key] = _create_client_class(
                creator, service_name, service_model
            )
        return found


botocore.client.ClientCreator._create_client_class = _shared_client_class
