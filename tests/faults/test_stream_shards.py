"""Mode stream shared by two real operator processes (Leases in the Kubernetes simulator, a
Kinesis stream in moto server): the stream's shards are spread over both replicas, each
writing only its own status.shards entries, never one shard read by two at once; one replica
SIGKILLed mid-shard, its shards move to the other within the bound, and every record reaches
the PCE with at most the batches in flight repeated."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from flowexport.kube.replicas import owner_of, timing
from tests.e2e.conftest import Stack, eventually
from tests.faults.test_shards import LEASE, assert_one_at_a_time, replicas
from tests.flowlines import connection_address, put_connections

NAME = "streamed"
GROUP = f"/flowexport/{NAME}"
SHARDS = 6
BATCH = 10
ROLE = "arn:aws:iam::123456789012:role/cwl-to-kinesis"
LINE = re.compile(
    r"^\[(?P<at>[\d-]+ [\d:,]+)\].*? (?P<what>reading|stopped reading) shard (?P<shard>\S+) of"
)


def flowexport(stack: Stack) -> dict[str, Any]:
    return stack.flowexport(
        NAME,
        source={
            "mode": "stream",
            "stream": {
                "subscriptionRoleArn": ROLE,
                "shardCount": SHARDS,
                "readIntervalMillis": 300,
            },
        },
        **{"ingestion.batchSize": BATCH},
    )


def write(stack: Stack, puts: int, done: list[int]) -> None:
    """`puts` PutLogEvents of 3 connections each (moto puts each in a random shard)."""
    logs = stack.aws("logs")
    for _ in range(puts):
        put_connections(logs, GROUP, 3, done[0])
        done[0] += 3


def delivered(stack: Stack) -> set[str]:
    return {f[0] for f in stack.received()}


def shard_entries(stack: Stack) -> dict[str, Any]:
    entries: dict[str, Any] = stack.get(NAME).get("status", {}).get("shards") or {}
    return entries


def spans(path: Path, until: float) -> list[tuple[str, float, float]]:
    """(shard, from, to) for each stretch the replica logging to `path` read a shard."""
    reading: dict[str, float] = {}
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if not (m := LINE.match(line)):
            continue
        at = datetime.strptime(m["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m["what"] == "reading":
            reading[m["shard"]] = at
        elif m["shard"] in reading:
            found.append((m["shard"], reading.pop(m["shard"]), at))
    found += [(shard, since, until) for shard, since in reading.items()]
    return found


def test_two_replicas_share_the_shards_and_take_over_a_killed_ones(
    stack: Stack, tmp_path: Path
) -> None:
    stack.apply(flowexport(stack))
    processes = replicas(stack, tmp_path, 2)
    eventually(lambda: stack.condition(NAME, "Ready") == ("True", "Ready"), 120, "Ready")
    status = stack.get(NAME)["status"]
    assert status["source"]["mode"] == "stream" and status["source"]["logFormat"]
    uid = stack.get(NAME)["metadata"]["uid"]
    done = [0]
    write(stack, 30, done)
    expected = lambda: {connection_address(i) for i in range(done[0])}  # noqa: E731
    eventually(lambda: delivered(stack) >= expected(), 120, "the first records")

    # Each shard's entry is written by the replica the Leases give it, and both read some.
    def assigned() -> dict[str, str]:
        return {s: e.get("replica") for s, e in shard_entries(stack).items()}

    eventually(lambda: len(assigned()) == SHARDS, 60, "an entry per shard")
    wanted = {s: owner_of(f"{uid}/{s}", ("r0", "r1")) for s in assigned()}
    eventually(lambda: assigned() == wanted, 60, f"shards on {wanted}")
    if len(set(wanted.values())) == 1:  # 1 in 32 uids puts all six shards on one replica
        print("every shard hashes to one replica for this uid")
    # The holder counts the other replica's shards into status.counts.
    uploaded = lambda: stack.get(NAME)["status"]["counts"].get("flowsUploaded", 0)  # noqa: E731
    eventually(lambda: uploaded() >= done[0], 30, "every shard's flows in status.counts")

    # SIGKILL the replica reading most shards while records keep coming.
    victim = max(set(wanted.values()), key=list(wanted.values()).count)
    survivor = "r1" if victim == "r0" else "r0"
    killed_at = time.time()
    dead = processes[int(victim[1:])]
    assert dead.pid is not None
    os.kill(dead.pid, signal.SIGKILL)
    dead.stop()
    for _ in range(8):
        write(stack, 3, done)
        time.sleep(1)
    t = timing(LEASE)
    bound = t.lease + t.handover + 2 * t.renew + 60  # + reading the backlog
    eventually(lambda: delivered(stack) >= expected(), bound + 60, "every record")
    assert delivered(stack) == expected(), "a record was lost"
    eventually(lambda: set(assigned().values()) == {survivor}, 60, "every shard on the survivor")

    # Never one shard read by two replicas at once (from the replicas' own logs).
    now = time.time()
    by_shard: dict[str, list[tuple[str, float, float]]] = {}
    for process, replica in zip(processes, ("r0", "r1"), strict=True):
        until = killed_at if replica == victim else now
        for shard, start, end in spans(process.log, until):
            by_shard.setdefault(shard, []).append((replica, start, end))
    assert_one_at_a_time(by_shard, "read")
    moved = [s for s, r in wanted.items() if r == victim]
    for shard in moved:
        after = [s for s in by_shard[shard] if s[0] == survivor and s[1] >= killed_at]
        assert after, f"{shard} was not taken over"
        took = after[0][1] - killed_at
        print(f"{shard} taken over {took:.1f} s after the kill")  # -s shows it
        assert took <= t.lease + t.handover + 2 * t.renew + 5, f"{shard}: {took:.1f}s"
    flows = stack.received()
    repeats = len(flows) - len(set(flows))
    assert repeats <= BATCH * len(moved), f"{repeats} flows repeated"
    eventually(lambda: uploaded() >= done[0], 30, "status.counts after the take-over")
