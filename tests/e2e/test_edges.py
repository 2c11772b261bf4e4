"""Edges where data could be lost silently (issue 23), through the real operator process:
a start in the future, a look-back too short for AWS's delivery delay, a log group renamed,
a subscription filter deleted out of band."""

from __future__ import annotations

from tests.e2e.conftest import FE, Stack, eventually
from tests.flowlines import put_connections


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


def test_a_renamed_log_group_is_read_from_start_from_not_from_the_old_cursor(
    stack: Stack,
) -> None:
    """The old group's cursor (its time, its page token) means nothing in the new group: the
    new one is read from startFrom (earliest here), and an Event says so."""
    stack.apply(stack.flowexport())
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    put_connections(stack.aws("logs"), "/flowexport/prod", 20)
    eventually(lambda: len(stack.received()) == 20, what="the old group's flows")
    # The new group already holds records written before the rename (and after the cursor's
    # time in the old group they are not: the old cursor would skip them all).
    stack.aws("logs").create_log_group(logGroupName="/flowexport/renamed")
    put_connections(stack.aws("logs"), "/flowexport/renamed", 300, start=1_000)
    # The old group's cursor moves past their arrival (polled every second, no settle delay).
    put_connections(stack.aws("logs"), "/flowexport/prod", 5, start=20)
    eventually(lambda: len(stack.received()) == 25, what="the old group read after them")
    answer = stack.kube.patch(
        f"{FE}/prod",
        json={"spec": {"aws": {"logGroupName": "/flowexport/renamed"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    eventually(lambda: len(stack.received()) == 325, what="the new group's 300 flows")
    reset = [e for e in stack.events() if e["reason"] == "CursorReset"]
    assert reset and reset[0]["type"] == "Warning" and "startFrom earliest" in reset[0]["message"]
    assert "/flowexport/renamed" in stack.get()["status"]["cursor"]["logGroup"]


STREAM_ROLE = "arn:aws:iam::123456789012:role/cwl-to-kinesis"


def test_a_subscription_filter_deleted_out_of_band_loses_nothing(stack: Stack) -> None:
    """Mode stream: a person or a script deletes the filter; records written meanwhile are
    only in the log group. The filter is re-created (here by the 3 s resync; at the default
    300 s, the worker notices within FILTER_CHECK_SECONDS) and the gap read from the log
    group, without a repeat."""
    group = "/flowexport/prod"
    source = {"mode": "stream", "stream": {"subscriptionRoleArn": STREAM_ROLE}}
    stack.apply(stack.flowexport(source=source))
    eventually(
        lambda: stack.get().get("status", {}).get("source", {}).get("mode") == "stream",
        what="reading the stream",
    )
    logs = stack.aws("logs")
    put_connections(logs, group, 20)
    eventually(lambda: len(stack.received()) == 20, what="the streamed flows")
    first = stack.get()["status"]["source"]["subscriptionFilterCreated"]
    (found,) = logs.describe_subscription_filters(logGroupName=group)["subscriptionFilters"]
    logs.delete_subscription_filter(logGroupName=group, filterName=found["filterName"])
    put_connections(logs, group, 30, start=20, stream="eni-b-all")  # only in the log group
    eventually(lambda: len(stack.received()) == 50, timeout=90, what="the gap's 30 flows")
    # The gap was read from the log group; the stream starts anew from the new filter.
    eventually(
        lambda: (
            stack.get()["status"]["source"].get("mode") == "stream"
            and stack.get()["status"]["source"].get("subscriptionFilterCreated", 0) > first
        ),
        what="the stream started anew from the new filter",
    )
    put_connections(logs, group, 10, start=50, stream="eni-c-all")
    eventually(lambda: len(stack.received()) == 60, what="flows through the new filter")
    assert len(set(stack.received())) == 60  # nothing twice
