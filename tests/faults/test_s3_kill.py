"""Mode s3 under SIGKILL: the operator killed in the middle of an object loses nothing, and
what repeats is bounded (the object's message comes back after its visibility timeout).

The operator runs with a 6 s visibility timeout ($FLOWEXPORT_S3_VISIBILITY_SECONDS, as
`--s3-visibility-seconds` sets it) instead of the default 120 s: the message is extended every
2 s while the object (~10 s) is read before the kill, and comes back within 6 s after it."""

from __future__ import annotations

import pytest

from flowexport.sources.s3 import ENV_VISIBILITY
from tests.e2e.conftest import Stack, eventually
from tests.e2e.test_mode_s3 import BUCKET, put_object
from tests.faults.conftest import sigkill
from tests.faults.test_faults import BATCH, delivered, ready

#: The operator's visibility timeout here (seconds).
VISIBILITY = 6


@pytest.fixture(autouse=True)
def short_visibility(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set before `stack` starts the operator (autouse fixtures come first)."""
    monkeypatch.setenv(ENV_VISIBILITY, str(VISIBILITY))


def test_sigkill_in_the_middle_of_an_object_loses_nothing(stack: Stack) -> None:
    stack.aws("s3").create_bucket(Bucket=BUCKET)
    stack.apply(stack.flowexport(source={"mode": "s3", "s3": {"bucket": BUCKET}}))
    ready(stack)
    flow_log = stack.get()["status"]["flowLogId"]
    pce = stack.loop.pce.sim
    pce.set_faults(delay_seconds=0.3, path_contains="bulk_traffic_flows")  # ~10 s an object
    put_object(stack, flow_log, 1, count=200)  # 10.0.1.1 .. 10.0.1.200: 20 batches
    eventually(lambda: len(delivered(stack)[0]) >= 60, what="part of the object uploaded")
    sigkill(stack)
    at_kill = len(delivered(stack)[0])
    assert at_kill < 200, "the object was done before the kill"
    pce.set_faults()
    stack.operator.start()
    # The message is hidden until its visibility timeout ends, then read again from the start.
    eventually(
        lambda: len(delivered(stack)[0]) == 200,
        timeout=VISIBILITY + 60,
        what="all 200 flows after the message came back",
    )
    repeats = delivered(stack)[1]
    print(f"uploaded before the kill {at_kill}, repeated {repeats}")
    assert repeats <= BATCH, "more than the batch in flight repeated"
    eventually(lambda: (stack.get()["status"].get("source") or {}).get("objectsDone") == 1)
