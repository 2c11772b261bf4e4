"""The throttling proxy, in front of a real moto server, driven by real boto3 clients: AWS's
quotas per account and region, answered as AWS answers them. The proxy's clock is a fake
one that stands still, so what is throttled does not depend on how fast the machine is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from flowexport.sim.awsthrottle import AWSThrottleProxy
from flowexport.sim.serve import ServerThread
from tests.moto_server import reset

GROUP = "/flowexport/throttle"
OTHER_ACCOUNT = "111111111111"


class StillClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Throttled:
    proxy: AWSThrottleProxy
    url: str
    clock: StillClock

    def client(self, service: str, region: str = "us-east-1", **keys: str) -> Any:
        """A client through the proxy that never retries (every attempt is one request)."""
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=keys.get("key", "AKIATHROTTLE"),
            aws_secret_access_key=keys.get("secret", "not-a-secret"),
            aws_session_token=keys.get("token"),
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )


@pytest.fixture
def throttled(moto_url: str) -> Iterator[Throttled]:
    reset(moto_url)
    clock = StillClock()
    proxy = AWSThrottleProxy(moto_url, {"FilterLogEvents": (5.0, 2.0)}, clock=clock)
    with ServerThread(proxy.app) as url:
        yield Throttled(proxy, url, clock)


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        call()
    return dict(caught.value.response["Error"]) | {
        "status": caught.value.response["ResponseMetadata"]["HTTPStatusCode"]
    }


def filter_calls(logs: Any, count: int) -> int:
    """Make `count` FilterLogEvents calls; how many were throttled."""
    throttled = 0
    for _ in range(count):
        try:
            logs.filter_log_events(logGroupName=GROUP)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ThrottlingException"
            throttled += 1
    return throttled


def test_filter_log_events_over_the_quota_is_throttled_as_cloudwatch_logs_does(
    throttled: Throttled,
) -> None:
    logs = throttled.client("logs")
    logs.create_log_group(logGroupName=GROUP)
    assert filter_calls(logs, 2) == 0  # the burst
    error = error_of(lambda: logs.filter_log_events(logGroupName=GROUP))
    assert error["Code"] == "ThrottlingException"
    assert error["Message"] == "Rate exceeded"
    assert error["status"] == 400
    throttled.clock.now += 0.2  # one token at 5/s
    logs.filter_log_events(logGroupName=GROUP)
    assert filter_calls(logs, 1) == 1
    stats = throttled.proxy.stats()
    assert (stats["FilterLogEvents"].calls, stats["FilterLogEvents"].throttled) == (5, 2)
    # Actions without a quota are counted, never throttled.
    assert (stats["CreateLogGroup"].calls, stats["CreateLogGroup"].throttled) == (1, 0)


def test_the_quota_is_per_region_and_per_account(throttled: Throttled) -> None:
    east, west = throttled.client("logs"), throttled.client("logs", "us-west-2")
    east.create_log_group(logGroupName=GROUP)
    west.create_log_group(logGroupName=GROUP)
    assert filter_calls(east, 3) == 1
    assert filter_calls(west, 3) == 1  # another region: its own bucket
    sts = throttled.client("sts")
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/reader", RoleSessionName="throttle-test"
    )["Credentials"]
    other = throttled.client(
        "logs",
        key=creds["AccessKeyId"],
        secret=creds["SecretAccessKey"],
        token=creds["SessionToken"],
    )
    assert (
        throttled.client("sts", key=creds["AccessKeyId"]).get_caller_identity()["Account"]
        == OTHER_ACCOUNT
    )
    other.create_log_group(logGroupName=GROUP)
    assert filter_calls(other, 3) == 1  # another account: its own bucket
    # The same account through another key of it shares the bucket.
    assert filter_calls(throttled.client("logs", key="AKIASAMEACCOUNT"), 1) == 1


def test_ec2_over_its_quota_answers_request_limit_exceeded(throttled: Throttled) -> None:
    throttled.proxy.set_quota("DescribeVpcs", 1.0, 1.0)
    ec2 = throttled.client("ec2")
    ec2.describe_vpcs()
    error = error_of(ec2.describe_vpcs)
    assert error["Code"] == "RequestLimitExceeded"
    assert error["status"] == 503
    throttled.proxy.set_quota("DescribeVpcs", 0)  # lifted
    ec2.describe_vpcs()
    assert throttled.proxy.stats()["DescribeVpcs"].throttled == 1


def test_quotas_and_stats_over_http(throttled: Throttled) -> None:
    with httpx.Client(base_url=throttled.url, timeout=10) as control:
        answer = control.post("/_quotas", json={"DescribeLogGroups": {"rate": 1, "burst": 1}})
        assert answer.status_code == 200
        assert control.post("/_quotas", json=["not", "a", "map"]).status_code == 400
        logs = throttled.client("logs")
        logs.describe_log_groups()
        assert error_of(logs.describe_log_groups)["Code"] == "ThrottlingException"
        stats = control.get("/_stats").json()
        assert stats["actions"]["DescribeLogGroups"] == {"calls": 2, "throttled": 1}
        assert stats["quotas"]["DescribeLogGroups"] == {"rate": 1.0, "burst": 1.0}
        assert control.delete("/_stats").status_code == 204
        logs.describe_log_groups()  # the bucket is full again
        assert control.get("/_stats").json()["actions"]["DescribeLogGroups"] == {
            "calls": 1,
            "throttled": 0,
        }
