"""The AWS fault proxy, in front of a real moto server, driven by real boto3 clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from flowexport.sim.awsfaults import AWSFaultProxy, FaultRule, Hit, identify, rules_json
from flowexport.sim.serve import ServerThread
from tests.moto_server import free_port, reset

REGION = "us-east-1"
GROUP = "/flowexport/proxy"
ROLE = "arn:aws:iam::123456789012:role/flowexport"
SCOPE = "Credential=AKIAFAULTS/20260101/us-east-1/{}/aws4_request, SignedHeaders=host"


@dataclass
class Proxied:
    """A proxy served on loopback in front of a freshly reset moto."""

    proxy: AWSFaultProxy
    url: str
    moto_url: str

    def client(self, service: str, attempts: int = 1, **config: Any) -> Any:
        """A boto3 client through the proxy (no retries unless `attempts` > 1).

        botocore's `max_attempts` counts retries (1 = two attempts); `total_max_attempts`
        counts attempts.
        """
        retries: Any = {"mode": "standard", "total_max_attempts": attempts}
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="AKIAFAULTS",
            aws_secret_access_key="not-a-secret",
            config=Config(retries=retries, **config),
        )


@pytest.fixture
def proxied(moto_url: str) -> Iterator[Proxied]:
    reset(moto_url)
    proxy = AWSFaultProxy(moto_url)
    with ServerThread(proxy.app) as url:
        yield Proxied(proxy, url, moto_url)


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        call()
    return dict(caught.value.response["Error"]) | {
        "status": caught.value.response["ResponseMetadata"]["HTTPStatusCode"]
    }


# -- forwarding ------------------------------------------------------------------------


def test_forwards_logs(proxied: Proxied) -> None:
    logs = proxied.client("logs")
    logs.create_log_group(logGroupName=GROUP)
    logs.create_log_stream(logGroupName=GROUP, logStreamName="eni-1")
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=GROUP,
        logStreamName="eni-1",
        logEvents=[{"timestamp": now, "message": "2 123 eni-1 10.0.0.1 ok"}],
    )
    events = logs.filter_log_events(logGroupName=GROUP)["events"]
    assert [event["message"] for event in events] == ["2 123 eni-1 10.0.0.1 ok"]
    assert proxied.proxy.hits == [
        Hit("logs", "CreateLogGroup", False),
        Hit("logs", "CreateLogStream", False),
        Hit("logs", "PutLogEvents", False),
        Hit("logs", "FilterLogEvents", False),
    ]


def test_forwards_ec2_sts_and_iam(proxied: Proxied) -> None:
    ec2 = proxied.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    assert vpc_id in [vpc["VpcId"] for vpc in ec2.describe_vpcs()["Vpcs"]]
    assert ec2.describe_flow_logs()["FlowLogs"] == []
    assert proxied.client("sts").get_caller_identity()["Account"].isdigit()
    assert proxied.client("iam").list_roles()["Roles"] == []
    assert proxied.proxy.hits == [
        ("ec2", "CreateVpc", False),
        ("ec2", "DescribeVpcs", False),
        ("ec2", "DescribeFlowLogs", False),
        ("sts", "GetCallerIdentity", False),
        ("iam", "ListRoles", False),
    ]


def test_relays_other_requests_unrecorded(proxied: Proxied) -> None:
    direct = httpx.get(f"{proxied.moto_url}/moto-api/data.json", timeout=10)
    relayed = httpx.get(f"{proxied.url}/moto-api/data.json?x=%2F", timeout=10)
    assert relayed.status_code == direct.status_code == 200
    assert relayed.headers["content-type"] == direct.headers["content-type"]
    assert relayed.json() == direct.json()
    proxied.proxy.set_faults([FaultRule()])
    assert httpx.get(f"{proxied.url}/moto-api/", timeout=10).status_code == 200
    assert proxied.proxy.hits == []


def test_an_unreachable_upstream_is_a_502() -> None:
    proxy = AWSFaultProxy(f"http://127.0.0.1:{free_port()}")
    with ServerThread(proxy.app) as url:
        response = httpx.post(url, data={"Action": "GetCallerIdentity"}, timeout=10)
    assert response.status_code == 502
    assert proxy.hits == [("", "GetCallerIdentity", False)]


# -- injected errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "operation", "call"),
    [
        ("logs", "FilterLogEvents", lambda c: c.filter_log_events(logGroupName=GROUP)),
        ("ec2", "DescribeFlowLogs", lambda c: c.describe_flow_logs()),
        ("sts", "AssumeRole", lambda c: c.assume_role(RoleArn=ROLE, RoleSessionName="faults")),
        ("iam", "GetRole", lambda c: c.get_role(RoleName="r")),
    ],
)
def test_injected_error_is_a_client_error_with_that_code(
    proxied: Proxied, service: str, operation: str, call: Callable[[Any], Any]
) -> None:
    rule = FaultRule(operation, service, code="AccessDenied", status=403, message="no <&> way")
    proxied.proxy.set_faults([rule])
    error = error_of(lambda: call(proxied.client(service)))
    assert error["Code"] == "AccessDenied"
    assert error["Message"] == "no <&> way"
    assert error["status"] == 403
    assert proxied.proxy.hits == [(service, operation, True)]


def test_throttling_on_logs_is_retried_by_botocore(proxied: Proxied) -> None:
    proxied.client("logs").create_log_group(logGroupName=GROUP)
    proxied.proxy.clear()
    proxied.proxy.set_faults([FaultRule("FilterLogEvents", remaining=1)])
    logs = proxied.client("logs", attempts=2)
    assert logs.filter_log_events(logGroupName=GROUP)["events"] == []
    assert proxied.proxy.hits == [
        ("logs", "FilterLogEvents", True),
        ("logs", "FilterLogEvents", False),
    ]

    proxied.proxy.clear()
    proxied.proxy.set_faults([FaultRule("FilterLogEvents")])
    assert error_of(lambda: logs.filter_log_events(logGroupName=GROUP))["Code"] == (
        "ThrottlingException"
    )
    assert proxied.proxy.hits == [("logs", "FilterLogEvents", True)] * 2


def test_remaining_counts_down_then_requests_pass(proxied: Proxied) -> None:
    rule = FaultRule("DescribeFlowLogs", "ec2", code="RequestLimitExceeded", remaining=2)
    proxied.proxy.set_faults([rule])
    ec2 = proxied.client("ec2")
    for _ in range(2):
        assert error_of(ec2.describe_flow_logs)["Code"] == "RequestLimitExceeded"
    assert ec2.describe_flow_logs()["FlowLogs"] == []
    assert [hit.injected for hit in proxied.proxy.hits] == [True, True, False]
    assert proxied.proxy.rules[0].remaining == 0
    assert rule.remaining == 2  # the caller's rule is not counted down


def test_rules_match_service_and_operation_in_order(proxied: Proxied) -> None:
    proxied.proxy.set_faults(
        [
            FaultRule("DescribeFlowLogs", "ec2", code="First", remaining=1),
            FaultRule("*", "ec2", code="Second"),
        ]
    )
    ec2 = proxied.client("ec2")
    assert error_of(ec2.describe_flow_logs)["Code"] == "First"
    assert error_of(ec2.describe_flow_logs)["Code"] == "Second"
    assert error_of(ec2.describe_vpcs)["Code"] == "Second"
    assert proxied.client("sts").get_caller_identity()["Account"]
    assert proxied.proxy.hits[-1] == ("sts", "GetCallerIdentity", False)


# -- delays and drops ------------------------------------------------------------------


def test_delay_hangs_before_answering(proxied: Proxied) -> None:
    proxied.proxy.set_faults([FaultRule("DescribeFlowLogs", delay_seconds=60)])
    ec2 = proxied.client("ec2", read_timeout=0.5)
    with pytest.raises(ReadTimeoutError):
        ec2.describe_flow_logs()
    assert proxied.proxy.hits == [("ec2", "DescribeFlowLogs", True)]


def test_delay_without_a_code_forwards(proxied: Proxied) -> None:
    proxied.proxy.set_faults([FaultRule("DescribeFlowLogs", code="", delay_seconds=0.05)])
    assert proxied.client("ec2").describe_flow_logs()["FlowLogs"] == []
    assert proxied.proxy.hits == [("ec2", "DescribeFlowLogs", True)]


def test_drop_closes_the_connection(proxied: Proxied) -> None:
    proxied.proxy.set_faults([FaultRule("GetCallerIdentity", drop=True, remaining=1)])
    with pytest.raises(ConnectionClosedError):
        proxied.client("sts").get_caller_identity()
    assert proxied.client("sts").get_caller_identity()["Account"]
    assert [hit.injected for hit in proxied.proxy.hits] == [True, False]


def test_a_dropped_request_is_retried_by_botocore(proxied: Proxied) -> None:
    proxied.proxy.set_faults([FaultRule("FilterLogEvents", drop=True, remaining=1)])
    logs = proxied.client("logs", attempts=2)
    error = error_of(lambda: logs.filter_log_events(logGroupName=GROUP))
    assert error["Code"] == "ResourceNotFoundException"  # moto's answer to the retry
    assert [hit.injected for hit in proxied.proxy.hits] == [True, False]


# -- control ---------------------------------------------------------------------------


def test_clear_removes_rules_and_hits(proxied: Proxied) -> None:
    proxied.proxy.set_faults([FaultRule()])
    sts = proxied.client("sts")
    assert error_of(sts.get_caller_identity)["Code"] == "ThrottlingException"
    proxied.proxy.clear()
    assert proxied.proxy.rules == []
    assert proxied.proxy.hits == []
    assert sts.get_caller_identity()["Account"]
    assert proxied.proxy.hits == [("sts", "GetCallerIdentity", False)]


def test_http_control_endpoints(proxied: Proxied) -> None:
    rules = [FaultRule("DescribeFlowLogs", "ec2", code="Unavailable", status=503, remaining=1)]
    with httpx.Client(base_url=proxied.url, timeout=10) as http:
        posted = http.post("/_faults", json=rules_json(rules))
        assert posted.status_code == 200
        assert error_of(proxied.client("ec2").describe_flow_logs)["Code"] == "Unavailable"
        state = http.get("/_faults").json()
        assert state["rules"] == [rules_json(rules)[0] | {"remaining": 0}]
        assert state["hits"] == [
            {"service": "ec2", "operation": "DescribeFlowLogs", "injected": True}
        ]
        assert http.delete("/_faults").status_code == 204
        assert http.get("/_faults").json() == {"rules": [], "hits": []}
        assert proxied.proxy.rules == []


@pytest.mark.parametrize(
    "body",
    [
        {"operation": "X"},
        [{"operation": "X", "unknown": 1}],
        [{"remaining": -1}],
        [{"status": 42}],
        [{"delay_seconds": "soon"}],
    ],
)
def test_http_control_refuses_bad_rules(proxied: Proxied, body: Any) -> None:
    proxied.proxy.set_faults([FaultRule(code="Kept")])
    response = httpx.post(f"{proxied.url}/_faults", json=body, timeout=10)
    assert response.status_code == 400
    assert [rule.code for rule in proxied.proxy.rules] == ["Kept"]


# -- naming requests -------------------------------------------------------------------


def test_identify_names_service_and_operation() -> None:
    form = "application/x-www-form-urlencoded; charset=utf-8"
    signed_ec2 = {"Authorization": "AWS4-HMAC-SHA256 " + SCOPE.format("ec2"), "Content-Type": form}
    assert identify(signed_ec2, {}, b"Action=DescribeFlowLogs&Version=2016-11-15") == (
        "ec2",
        "DescribeFlowLogs",
    )
    assert identify({}, {"Action": "GetCallerIdentity"}, b"") == ("", "GetCallerIdentity")
    presigned = {"X-Amz-Credential": "AKID/20260101/us-east-1/sts/aws4_request", "Action": "X"}
    assert identify({}, presigned, b"") == ("sts", "X")
    unsigned_json = {"X-Amz-Target": "Logs_20140328.FilterLogEvents"}
    assert identify(unsigned_json, {}, b"{}") == ("logs", "FilterLogEvents")
    assert identify({"Content-Type": "application/json"}, {}, b"Action=X") == ("", "")
