"""Sharding FlowExports over replicas: who owns what, hand-over delays, fencing, Lease
timing (pure: a fake clock and Lease listings)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from flowexport.kube.replicas import LEASE_PREFIX, STOP_SECONDS, Replicas, Timing, owner_of, timing

TIMING = Timing(renew=5, lease=15, fence=10, handover=20)
UIDS = [f"uid-{i}" for i in range(300)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def leases(*members: str, renewed: str = "t0") -> list[dict[str, str]]:
    return [{"name": LEASE_PREFIX + m, "renewTime": renewed} for m in members]


def advance(clock: Clock, seconds: float, *renewing: Replicas) -> None:
    """Time passes; the replicas given renewed their Leases meanwhile."""
    clock.now += seconds
    for shards in renewing:
        shards._renewed = clock.now


def replica(identity: str, clock: Clock) -> Replicas:
    shards = Replicas(identity, "ops", timing=TIMING, clock=clock)
    shards._renewed = clock.now
    return shards


def test_every_flowexport_has_one_owner_and_the_shares_are_even() -> None:
    members = ("a", "b", "c")
    counts = Counter(owner_of(uid, members) for uid in UIDS)
    assert set(counts) == set(members)
    assert min(counts.values()) > len(UIDS) / 3 * 0.7


@given(st.lists(st.sampled_from("abcdef"), min_size=1, unique=True), st.sampled_from("abcdef"))
def test_a_member_leaving_moves_only_its_own_share(members: list[str], leaving: str) -> None:
    before = tuple(members)
    after = tuple(m for m in members if m != leaving)
    for uid in UIDS[:50]:
        owner = owner_of(uid, before)
        if owner != leaving and after:
            assert owner_of(uid, after) == owner


def test_without_a_shard_namespace_every_flowexport_is_this_replicas() -> None:
    solo = Replicas("x")
    assert not solo.enabled and all(solo.owns(uid) for uid in UIDS)


def test_a_replica_takes_its_share_up_only_after_the_handover() -> None:
    clock = Clock()
    a = replica("a", clock)
    a.observe(leases("a"))
    assert not any(a.owns(uid) for uid in UIDS), "taken up at once"
    advance(clock, TIMING.handover, a)
    assert all(a.owns(uid) for uid in UIDS)


def test_a_joining_replica_and_the_former_owner_never_both_own() -> None:
    clock = Clock()
    a, b = replica("a", clock), replica("b", clock)
    a.observe(leases("a"))
    advance(clock, TIMING.handover, a)
    assert all(a.owns(uid) for uid in UIDS)
    # b starts: it sees both at once; a sees b at its next renewal.
    b.observe(leases("a", "b"))
    moving = [uid for uid in UIDS if owner_of(uid, ("a", "b")) == "b"]
    assert moving
    for step in range(int(TIMING.handover) + 5):
        clock.now += 1
        if step == TIMING.renew:
            a.observe(leases("a", "b"))
        a._renewed = b._renewed = clock.now
        for uid in moving:
            assert not (a.owns(uid) and b.owns(uid)), f"both own {uid} at +{step}s"
    assert all(b.owns(uid) for uid in moving)
    assert not any(a.owns(uid) for uid in moving)


def test_a_dead_replicas_share_moves_after_its_lease_and_the_handover() -> None:
    clock = Clock()
    a = replica("a", clock)
    theirs = [uid for uid in UIDS if owner_of(uid, ("a", "b")) == "b"]
    for second in range(1, 31):  # both alive: a renews, and sees b renew, every 5 s
        advance(clock, 1, a)
        if second % TIMING.renew == 0:
            a.observe(leases("a") + leases("b", renewed=f"t{second}"))
        assert not any(a.owns(uid) for uid in theirs)
    # b dies: its Lease stays as it was last renewed.
    taken = None
    for second in range(1, 80):
        advance(clock, 1, a)
        if second % TIMING.renew == 0:
            a.observe(leases("a") + leases("b", renewed="t30"))
        if all(a.owns(uid) for uid in theirs):
            taken = second
            break
    assert taken is not None
    low = TIMING.lease - TIMING.renew + TIMING.handover
    assert low <= taken <= TIMING.lease + TIMING.handover + TIMING.renew


def test_a_replica_that_cannot_renew_gives_everything_up() -> None:
    clock = Clock()
    a = replica("a", clock)
    a.observe(leases("a"))
    advance(clock, TIMING.handover, a)
    assert all(a.owns(uid) for uid in UIDS)
    advance(clock, TIMING.fence + 0.1)  # no renewal meanwhile
    assert not any(a.owns(uid) for uid in UIDS)
    a._renewed = clock.now
    assert not any(a.owns(uid) for uid in UIDS), "taken back without a new hand-over"
    advance(clock, TIMING.handover, a)
    assert all(a.owns(uid) for uid in UIDS)


def test_the_timing_leaves_a_former_owner_time_to_stop() -> None:
    for lease in (3, 6, 15, 60):
        t = timing(lease)
        assert t.renew < t.fence < t.lease
        assert t.handover >= t.renew + STOP_SECONDS  # a live former owner has stopped
        assert t.handover >= t.lease


def test_leases_unchanged_for_four_periods_are_stale() -> None:
    clock = Clock()
    a = replica("a", clock)
    a.observe(leases("a", "gone"))
    clock.now += 4 * TIMING.lease + 1
    a.observe(leases("a", renewed="t1") + leases("gone"))
    assert a.stale() == ["gone"]


def test_the_aws_budgets_are_told_each_change_in_the_members() -> None:
    clock = Clock()
    told: list[int] = []
    a = Replicas("a", "ops", timing=TIMING, clock=clock, on_members=told.append)
    a._renewed = clock.now
    a.observe(leases("a"))
    a.observe(leases("a"))  # unchanged: not told again
    advance(clock, 1, a)
    a.observe(leases("a", "b", renewed="t1"))
    advance(clock, TIMING.lease + 1, a)
    a.observe(leases("a", "b", renewed="t1"))  # b stopped renewing: gone
    assert told == [1, 2, 1]
