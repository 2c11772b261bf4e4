"""Tenants of one operator (issue 23, items 6-8 and the errors a user can act on), through the
real operator process against moto, the PCE simulator and the Kubernetes simulator.

Two teams in two namespaces, each with its own PCE: names that flatten alike, one naming the
other's log group and filter, a PCE host or port nobody allowed, and the errors a user must be
able to act on. Each test fails on the code before issue 23 (said in its docstring)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from flowexport.secrets import SECRET_TYPE_LABEL, SecretKind
from flowexport.sim.pce import PCESimulator
from flowexport.sim.serve import ServerThread
from flowexport.urls import endpoint_of, host_port_text
from tests.e2e.conftest import NS, Stack, eventually
from tests.flowlines import connection_address, put_connections
from tests.pcesim import API_KEY, API_SECRET, make_config

ROLE = "arn:aws:iam::123456789012:role/cwl-to-kinesis"
API = "/apis/flowexport.io/v1alpha1/namespaces"
#: Each team's connections get their own client addresses.
SPAN = 1000


@dataclass
class Team:
    """A namespace with its Secrets and its own PCE."""

    stack: Stack
    namespace: str
    pce_url: str
    pce: PCESimulator
    server: ServerThread
    offset: int

    def flowexport(self, name: str, **spec: Any) -> dict[str, Any]:
        body = self.stack.flowexport(name, **spec)
        body["metadata"]["namespace"] = self.namespace
        body["spec"]["pce"]["url"] = self.pce_url
        return body

    def apply(self, body: dict[str, Any]) -> None:
        answer = self.stack.kube.post(f"{API}/{self.namespace}/flowexports", json=body)
        assert answer.status_code == 201, answer.text

    def get(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.stack.kube.get(
            f"{API}/{self.namespace}/flowexports/{name}"
        ).json()
        return found

    def condition(self, name: str, type_: str) -> tuple[str, str, str] | None:
        for c in self.get(name).get("status", {}).get("conditions", []):
            if c["type"] == type_:
                return (c["status"], c["reason"], c.get("message", ""))
        return None

    def is_(self, name: str, type_: str, status: str, reason: str) -> bool:
        found = self.condition(name, type_)
        return found is not None and found[:2] == (status, reason)

    def write(self, group: str, count: int) -> None:
        put_connections(self.stack.aws("logs"), group, count, self.offset)

    def expected(self, count: int) -> set[str]:
        return {connection_address(self.offset + i) for i in range(count)}

    def received(self) -> set[str]:
        flows = self.server.call(lambda: list(self.pce.state.flows))
        return {f[0] for f in flows}

    def requests(self) -> int:
        return len(self.server.call(lambda: list(self.pce.state.requests)))


@pytest.fixture
def teams(stack: Stack) -> Iterator[dict[str, Team]]:
    """Namespaces team-a and team (the names that flatten alike) and team-b, each with its
    labelled Secrets and its own PCE (plain http on loopback); the operator restarted to watch
    them and allowed to send each PCE its key."""
    made: dict[str, Team] = {}
    servers = []
    try:
        for index, namespace in enumerate(("team-a", "team", "team-b")):
            pce = PCESimulator(make_config())
            server = ServerThread(pce.app)
            servers.append(server)
            url = server.start()
            stack.loop.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
            for name, kind, data in (
                (
                    "pce-key",
                    SecretKind.PCE_CREDENTIALS,
                    {"username": API_KEY, "password": API_SECRET},
                ),
                ("aws-keys", SecretKind.AWS_CREDENTIALS, stack.loop.aws_credentials()),
            ):
                metadata = {"name": name, "labels": {SECRET_TYPE_LABEL: str(kind)}}
                stack.loop.create(
                    f"/api/v1/namespaces/{namespace}/secrets",
                    {"metadata": metadata, "stringData": data},
                )
            made[namespace] = Team(stack, namespace, url, pce, server, (index + 1) * SPAN)
        watch(stack, [t.pce_url for t in made.values()])
        yield made
    finally:
        for server in servers:
            server.stop()


def watch(stack: Stack, pce_urls: list[str], allow: list[str] | None = None) -> None:
    """Restart the operator watching the teams' namespaces, allowed to send keys to `allow`
    (default: the hosts and ports of `pce_urls`)."""
    operator = stack.operator
    operator.stop()
    operator.namespace = None
    allowed = allow if allow is not None else [host_port_text(endpoint_of(u)) for u in pce_urls]
    operator.args = [
        *(arg for a in allowed for arg in ("--allowed-pce-host", a)),
        *(arg for ns in ("security", "team-a", "team", "team-b") for arg in ("--namespace", ns)),
        "--resync-seconds",
        "3",
        "--verbose",
    ]
    operator.start()


def streaming() -> dict[str, Any]:
    return {"mode": "stream", "stream": {"subscriptionRoleArn": ROLE, "readIntervalMillis": 300}}


def streams(stack: Stack) -> list[str]:
    return sorted(stack.aws("kinesis").list_streams()["StreamNames"])


def filters(stack: Stack, group: str) -> list[str]:
    found = stack.aws("logs").describe_subscription_filters(logGroupName=group)
    return sorted(f["filterName"] for f in found["subscriptionFilters"])


def test_names_that_flatten_alike_never_share_a_stream(
    stack: Stack, teams: dict[str, Team]
) -> None:
    """Item 7. Before: team-a/prod and team/a-prod both got stream and filter
    flowexport-team-a-prod; the second adopted the first's stream and each team's PCE
    received the other's flows."""
    a, b = teams["team-a"], teams["team"]
    a.apply(a.flowexport("prod", source=streaming(), **{"aws.logGroupName": "/flowexport/a"}))
    eventually(lambda: a.is_("prod", "Ready", "True", "Ready"), what="team-a/prod Ready")
    b.apply(b.flowexport("a-prod", source=streaming(), **{"aws.logGroupName": "/flowexport/b"}))
    eventually(lambda: b.is_("a-prod", "Ready", "True", "Ready"), what="team/a-prod Ready")
    a_stream = a.get("prod")["status"]["source"]["streamName"]
    b_stream = b.get("a-prod")["status"]["source"]["streamName"]
    assert a_stream != b_stream
    assert a_stream.startswith("flowexport-team-a-prod-")
    assert b_stream.startswith("flowexport-team-a-prod-")
    assert streams(stack) == sorted([a_stream, b_stream])
    a.write("/flowexport/a", 20)
    b.write("/flowexport/b", 30)
    eventually(lambda: a.received() == a.expected(20), what="team-a's flows at team-a's PCE")
    eventually(lambda: b.received() == b.expected(30), what="team's flows at team's PCE")
    assert not a.received() & b.expected(30) and not b.received() & a.expected(20)
    assert a.get("prod")["status"]["counts"]["recordsRead"] == 20
    eventually(lambda: b.get("a-prod")["status"]["counts"]["recordsRead"] == 30)


def test_another_namespaces_log_group_and_filter_are_never_touched(
    stack: Stack, teams: dict[str, Team]
) -> None:
    """Item 6. Before: a FlowExport in namespace A named B's log group with Adopt and B's
    filter in removeSubscriptionFilters: the operator deleted B's filter on every reconcile
    (B lost records while Ready) and A's PCE received B's flows."""
    a, b = teams["team-a"], teams["team-b"]
    b.apply(b.flowexport("prod", source=streaming(), **{"aws.logGroupName": "/flowexport/b"}))
    eventually(lambda: b.is_("prod", "Ready", "True", "Ready"), what="team-b/prod Ready")
    b_filter = b.get("prod")["status"]["source"]["subscriptionFilter"]
    attack = a.flowexport(
        "thief",
        **{
            "aws.logGroupName": "/flowexport/b",
            "aws.managementPolicy": "Adopt",
            "aws.removeSubscriptionFilters": [b_filter],
        },
    )
    a.apply(attack)
    refused = eventually(
        lambda: a.is_("thief", "SubscriptionReady", "False", "OwnedByAnotherFlowExport"),
        what="OwnedByAnotherFlowExport",
    )
    assert refused
    condition = a.condition("thief", "SubscriptionReady")
    assert condition is not None
    message = condition[2]
    assert "belongs to a FlowExport in another namespace" in message
    assert "team-b" not in message  # the other tenant is not named to this one
    assert a.is_("thief", "Stalled", "True", "OwnedByAnotherFlowExport")
    b.write("/flowexport/b", 40)
    eventually(lambda: b.received() == b.expected(40), what="all of team-b's flows at its PCE")
    assert filters(stack, "/flowexport/b") == [b_filter]  # never removed
    assert a.received() == set() and a.requests() == 0  # A's PCE got nothing of B's
    assert b.is_("prod", "Ready", "True", "Ready")


def test_the_key_goes_only_to_an_allowed_host_and_port(
    stack: Stack, teams: dict[str, Team]
) -> None:
    """Item 8. Before: with --allowed-pce-host 127.0.0.1 another port of that host still got
    the key, and without the flag (the chart's default) any host did."""
    a = teams["team-a"]
    host, port = endpoint_of(a.pce_url)
    for name, allowed in (("host", [host]), ("none", []), ("port", [f"{host}:{port + 1}"])):
        watch(stack, [], allow=allowed)
        a.apply(a.flowexport(name, **{"aws.logGroupName": f"/flowexport/{name}"}))
        eventually(
            lambda name=name: a.is_(name, "PCEReachable", "False", "PCEHostNotAllowed"),
            what=f"PCEHostNotAllowed with {allowed}",
        )
        condition = a.condition(name, "PCEReachable")
        assert condition is not None and f"--allowed-pce-host {host}:{port}" in condition[2]
        assert a.requests() == 0, f"the PCE was called with {allowed} allowed"
    watch(stack, [a.pce_url])
    eventually(lambda: a.is_("host", "Ready", "True", "Ready"), what="Ready once allowed")
    assert API_SECRET not in stack.operator.tail(5000)


def test_metadata_and_api_server_urls_are_refused(stack: Stack, teams: dict[str, Team]) -> None:
    """Item 8: pce.url may not name the cloud's metadata service or the Kubernetes API: the
    API server's admission refuses it (the CRD's CEL rule, which the simulator evaluates as the
    real server does: tests/realkube); the models refuse the same for `flowexport sync`
    (tests/api)."""
    a = teams["team-a"]
    for name, url in (
        ("imds", "https://169.254.169.254"),
        ("imds6", "https://[fd00:ec2::254]"),
        ("apiserver", "https://kubernetes.default.svc"),
    ):
        body = a.flowexport(name, **{"aws.logGroupName": f"/flowexport/{name}"})
        body["spec"]["pce"]["url"] = url
        path = f"/apis/flowexport.io/v1alpha1/namespaces/{a.namespace}/flowexports"
        answer = stack.kube.post(path, json=body)
        assert answer.status_code == 422, answer.text
        assert "link-local or cloud metadata" in answer.text, answer.text


def condition(stack: Stack, name: str, type_: str) -> tuple[str, str, str]:
    found = next(c for c in stack.get(name)["status"]["conditions"] if c["type"] == type_)
    return (found["status"], found["reason"], found.get("message", ""))


def test_a_vpc_of_another_region_says_which_region_was_asked(stack: Stack) -> None:
    """Errors a user can act on. Before: "the VPC does not exist" only."""
    stack.apply(stack.flowexport("elsewhere", **{"aws.region": "eu-west-1"}))
    eventually(lambda: stack.condition("elsewhere", "SubscriptionReady") is not None)
    status, reason, message = condition(stack, "elsewhere", "SubscriptionReady")
    assert (status, reason) == ("False", "VPCNotFound")
    assert "does not exist in region eu-west-1" in message


def test_an_unknown_region_is_refused_not_retried(stack: Stack) -> None:
    """Errors a user can act on. Before: region xx-nowhere-9 was retried for ever (its
    endpoint never answers: AWSUnreachable/AWSUnavailable, Reconciling)."""
    nowhere = stack.flowexport("nowhere", **{"aws.region": "xx-nowhere-9"})
    del nowhere["spec"]["aws"]["endpointUrl"]
    stack.apply(nowhere)
    eventually(lambda: stack.condition("nowhere", "Ready") is not None, what="a condition")
    eventually(lambda: stack.condition("nowhere", "Ready") == ("False", "InvalidSpec"))
    assert stack.condition("nowhere", "Stalled") == ("True", "InvalidSpec")
    _, _, message = condition(stack, "nowhere", "SubscriptionReady")
    assert "region xx-nowhere-9 is not an AWS region" in message


def test_a_colon_in_the_pce_username_says_why(stack: Stack) -> None:
    """Errors a user can act on. Before: a plain 401 (PCEUnauthorized): HTTP Basic cannot
    carry a ':' in the user name, the PCE took the rest for the password."""
    stack.kube.post(
        f"/api/v1/namespaces/{NS}/secrets",
        json={
            "metadata": {"name": "pasted", "labels": {SECRET_TYPE_LABEL: "pce-credentials"}},
            "stringData": {"username": f"{API_KEY}:{API_SECRET}", "password": API_SECRET},
        },
    )
    stack.apply(stack.flowexport("colon", **{"pce.credentialsSecretRef": {"name": "pasted"}}))
    eventually(lambda: stack.condition("colon", "PCEReachable") is not None)
    status, reason, message = condition(stack, "colon", "PCEReachable")
    assert (status, reason) == ("False", "SecretInvalid")
    assert "HTTP Basic authentication cannot carry" in message
    assert API_SECRET not in message and API_KEY not in message
    assert stack.loop.pce.server.call(lambda: list(stack.loop.pce.sim.state.requests)) == []
