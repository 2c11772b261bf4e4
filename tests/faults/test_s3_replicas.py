"""Mode s3 read by two real operator processes on one queue (Leases in the Kubernetes
simulator, moto server's S3 -> SQS notifications): both read objects, each object once, and
status.counts counts what both uploaded (the replica not holding the FlowExport keeps its
counts in a status.shards entry of its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import Stack, eventually
from tests.e2e.test_mode_s3 import BUCKET, put_object
from tests.faults.test_shards import replicas

OBJECTS = 16


def test_two_replicas_share_the_queue_and_status_counts_both(stack: Stack, tmp_path: Path) -> None:
    stack.aws("s3").create_bucket(Bucket=BUCKET)
    stack.apply(stack.flowexport(source={"mode": "s3", "s3": {"bucket": BUCKET}}))
    replicas(stack, tmp_path, 2)
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), 120, "Ready")
    eventually(lambda: stack.get()["status"]["source"].get("shared") is True, 60, "shared")
    flow_log = stack.get()["status"]["flowLogId"]
    for n in range(OBJECTS):
        put_object(stack, flow_log, n)
    total = OBJECTS * 10
    eventually(lambda: len(stack.received()) == total, 120, "every object's flows")
    flows = stack.received()
    assert len(set(flows)) == total  # each object read once

    def counts() -> dict[str, Any]:
        found: dict[str, Any] = stack.get()["status"]["counts"]
        return found

    try:
        eventually(lambda: counts().get("flowsUploaded") == total, 60, "status.counts of both")
    except AssertionError:
        print(
            "DEBUG", counts(), stack.get()["status"].get("shards"), stack.get()["status"]["source"]
        )
        raise
    assert counts()["recordsRead"] == total
    entries = stack.get()["status"].get("shards") or {}
    other = {k: e["counts"]["flowsUploaded"] for k, e in entries.items() if k.startswith("s3-")}
    # The replica not holding it read some objects (one message a receive, both polling).
    assert other and 0 < sum(other.values()) < total, entries
