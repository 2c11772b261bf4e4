"""Paging corner cases moto does not produce, with a stub CloudWatch Logs client."""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from flowexport.aws.reader import LogReader, ReaderCursor
from flowexport.aws.session import AwsClients, AwsTarget, RateLimiter


class StubLogs:
    """Answers filter_log_events from a list of pages keyed by the token asked for."""

    def __init__(self, pages: dict[str | None, Any]) -> None:
        self.pages = pages
        self.asked: list[str | None] = []

    def filter_log_events(self, **kwargs: Any) -> dict[str, Any]:
        token = kwargs.get("nextToken")
        self.asked.append(token)
        page = self.pages[token]
        if isinstance(page, Exception):
            raise page
        return dict(page)


def reader(logs: StubLogs) -> LogReader:
    clients = AwsClients(ec2=None, logs=logs, target=AwsTarget("us-east-1"))
    return LogReader(
        clients, "/g", lookback_seconds=60, settle_seconds=0, limiter=RateLimiter(1000)
    )


def event(message: str, ingested: int = 50) -> dict[str, Any]:
    return {"timestamp": 40, "ingestionTime": ingested, "message": message, "eventId": message}


def messages(r: LogReader) -> list[str]:
    return [e.message for c in r.chunks(ReaderCursor(10), 100, 10) for e in c.events]


def test_empty_pages_with_tokens_are_followed() -> None:
    logs = StubLogs(
        {
            None: {"events": [], "nextToken": "t1"},
            "t1": {"events": [], "nextToken": "t2"},
            "t2": {"events": [event("a")]},
        }
    )
    assert messages(reader(logs)) == ["a"]
    assert logs.asked == [None, "t1", "t2"]


def test_the_same_token_twice_ends_the_slice() -> None:
    logs = StubLogs(
        {
            None: {"events": [event("a")], "nextToken": "t1"},
            "t1": {"events": [event("b")], "nextToken": "t1"},
        }
    )
    assert messages(reader(logs)) == ["a", "b"]
    same = {
        "Code": "InvalidParameterException",
        "Message": "The same next token was received twice",
    }
    error = ClientError({"Error": same}, "FilterLogEvents")
    logs = StubLogs({None: {"events": [event("a")], "nextToken": "t1"}, "t1": error})
    assert messages(reader(logs)) == ["a"]


def test_only_events_ingested_in_the_slice_are_taken() -> None:
    logs = StubLogs({None: {"events": [event("before", 10), event("in", 11), event("after", 101)]}})
    assert messages(reader(logs)) == ["in"]


def test_rate_limiter_spaces_calls() -> None:
    limiter = RateLimiter(20)
    started = time.monotonic()
    for _ in range(5):
        limiter.wait()
    assert time.monotonic() - started >= 4 / 20 - 0.01
