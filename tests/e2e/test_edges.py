"""Edges where data could be lost silently (issue 23), through the real operator process:
a start in the future, a look-back too short for AWS's delivery delay, a log group renamed,
a subscription filter deleted out of band."""

from __future__ import annotations

from tests.e2e.conftest import FE, Stack, eventually


def test_a_start_in_the_future_says_what_it_waits_for(stack: Stack) -> None:
    stack.apply(stack.flowexport(**{"ingestion.startFrom": "2999-01-01T00:00:00Z"}))
    eventually(
        lambda: stack.condition("prod", "Ingesting") == ("False", "WaitingForStart"),
        what="Ingesting waiting for the start",
    )
    assert stack.condition("prod", "Ready") == ("False", "WaitingForStart")
    assert stack.condition("prod", "Reconciling") == ("True", "WaitingForStart")
    ingesting = next(c for c in stack.get()["status"]["conditions"] if c["type"] == "Ingesting")
    assert "2999-01-01T00:00:00Z" in ingesting["message"]


def test_a_look_back_shorter_than_aws_delivery_is_refused_at_admission(stack: Stack) -> None:
    short = stack.flowexport("short", **{"ingestion.lookbackSeconds": 0})
    answer = stack.kube.post(FE, json=short)
    assert answer.status_code == 422, answer.text
    assert "lookbackSeconds" in answer.text
