"""AssumeRole as the operator makes it (aws/session.py make_session): the request on the wire
carries the ExternalId and the session name naming the FlowExport, and STS (moto) answers an
assumed-role ARN ending in that session name; without an ExternalId none is sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import boto3
import boto3.session
import httpx
import pytest

from flowexport.api.grants import session_name
from flowexport.aws.session import DEFAULT_SESSION_NAME, AwsTarget, make_session
from tests.cloud import KEYS, REGION, Cloud

X = "210987654321"
ROLE = f"arn:aws:iam::{X}:role/flowexport-member"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, list[str]]]]:
    """The form body of every STS request sent through boto3 while the test runs."""
    bodies: list[dict[str, list[str]]] = []
    original = boto3.session.Session.client

    def client(self: boto3.session.Session, *args: Any, **kwargs: Any) -> Any:
        made = original(self, *args, **kwargs)

        def record(request: Any, **_: Any) -> None:
            body = request.body.decode() if isinstance(request.body, bytes) else request.body
            bodies.append(parse_qs(body or ""))

        if made.meta.service_model.service_name == "sts":
            made.meta.events.register("before-send", record)
        return made

    monkeypatch.setattr(boto3.session.Session, "client", client)
    yield bodies


def test_assume_role_sends_the_external_id_and_the_session_name(
    cloud: Cloud, sent: list[dict[str, list[str]]]
) -> None:
    name = session_name("payments", "prod-eu")
    target = AwsTarget(
        REGION, cloud.url, ROLE, KEYS, external_id="6f1c2a7e-cluster", session_name=name
    )
    session = make_session(target)
    (assume,) = [b for b in sent if b.get("Action") == ["AssumeRole"]]
    assert assume["RoleArn"] == [ROLE]
    assert assume["ExternalId"] == ["6f1c2a7e-cluster"]
    assert assume["RoleSessionName"] == ["fx-payments-prod-eu"]
    arn = session.client("sts", endpoint_url=cloud.url).get_caller_identity()["Arn"]
    assert arn == f"arn:aws:sts::{X}:assumed-role/flowexport-member/fx-payments-prod-eu"
    # and moto's STS recorded the ExternalId it was given
    data = httpx.get(f"{cloud.url}/moto-api/data.json", timeout=10).json()
    recorded = {(r["session_name"], r["external_id"]) for r in data["sts"]["AssumedRole"]}
    assert ("fx-payments-prod-eu", "6f1c2a7e-cluster") in recorded


def test_without_an_external_id_none_is_sent(
    cloud: Cloud, sent: list[dict[str, list[str]]]
) -> None:
    make_session(AwsTarget(REGION, cloud.url, ROLE, KEYS))
    (assume,) = [b for b in sent if b.get("Action") == ["AssumeRole"]]
    assert "ExternalId" not in assume
    assert assume["RoleSessionName"] == [DEFAULT_SESSION_NAME]


def test_a_long_flowexport_name_makes_a_session_sts_takes(cloud: Cloud) -> None:
    name = session_name("a-rather-long-namespace-name", "an-even-longer-flowexport-name-" * 4)
    assert len(name) == 64
    session = make_session(AwsTarget(REGION, cloud.url, ROLE, KEYS, session_name=name))
    arn = session.client("sts", endpoint_url=cloud.url).get_caller_identity()["Arn"]
    assert arn.endswith(f"/{name}")
