"""FlowExports spread over several operator replicas, each handled by exactly one.

Replicas find each other through Leases: each holds `flowexport-shard-<replica id>` in the
Lease namespace (`--shard-namespace`), labelled `flowexport.io/shard-group` (names kept from the
release that introduced them, so an upgrade finds its replicas), renews it every `renew`
seconds and lists the group's Leases as it does. A member is live while its Lease keeps
changing: one not renewed for `lease` seconds (measured on this replica's clock from when it
saw the Lease change, so the replicas' clocks need not agree) is gone. A FlowExport belongs to
the live member with the highest hash of (its uid, the member) (rendezvous hashing: a member
joining or leaving moves only its own share).

Never two at once: a replica takes a FlowExport up only `handover` seconds after it first saw
it as its own (time for a former owner, alive, to see the new member and stop its pipeline,
or, dead or cut off, for its Lease to lapse), and a replica that could not renew its own
Lease for `fence` seconds (< `lease`) gives every FlowExport up until it can again. A dead
replica's FlowExports are taken over within `lease + handover` seconds (+ one `renew`).

Without a Lease namespace (one replica) every FlowExport is this replica's: `SOLO`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from flowexport.aws.blocking import off_loop

log = logging.getLogger("flowexport.operator")

GROUP_LABEL = "flowexport.io/shard-group"
LEASE_PREFIX = "flowexport-shard-"
#: Seconds a clean stop waits for its Lease's deletion (else the Lease lapses).
LEAVE_SECONDS = 2.0


class LeaseApi(Protocol):
    """The Lease calls the replicas make (blocking, each with a client timeout; run in
    daemon threads)."""

    def list_leases(self, namespace: str, group: str) -> list[dict[str, Any]]:
        """The group's Leases: each {"name", "holder", "renewTime", "resourceVersion"}."""
        ...

    def renew_lease(self, namespace: str, name: str, group: str, holder: str, seconds: int) -> None:
        """Create the Lease, or set its renewTime to now."""
        ...

    def delete_lease(self, namespace: str, name: str) -> None:
        """Delete the Lease (a missing one is fine)."""
        ...


@dataclass(frozen=True)
class Timing:
    """Seconds: renew period, Lease validity, self-fencing, hand-over delay."""

    renew: float = 5.0
    lease: float = 15.0
    fence: float = 10.0
    handover: float = 20.0


#: Seconds a worker may take to stop (the pipeline's upload grace, the cursor's last write).
STOP_SECONDS = 8.0


def timing(lease: float) -> Timing:
    """The timing for a Lease of `lease` seconds: renewed three times per Lease, fenced at two
    thirds of it, handed over after a Lease and no sooner than a renewal plus a stop."""
    renew = lease / 3
    return Timing(renew, lease, 2 * lease / 3, max(lease, renew + STOP_SECONDS))


def uid_of(metadata: Any) -> str:
    """What ownership is decided by: the object's uid (namespace/name if it has none)."""
    return str(metadata.get("uid") or f"{metadata.get('namespace') or ''}/{metadata.get('name')}")


def work_key(uid: str, part: str) -> str:
    """What decides the replica reading one part of a FlowExport's source (a Kinesis
    shard): parts of one FlowExport spread over the replicas like FlowExports do."""
    return f"{uid}/{part}"


def owner_of(uid: str, members: tuple[str, ...]) -> str | None:
    """The member a FlowExport (by uid) belongs to: highest rendezvous hash; None if none."""
    if not members:
        return None
    return max(members, key=lambda m: hashlib.blake2b(f"{uid}\0{m}".encode()).digest())


@dataclass
class Replicas:
    """This replica's view of the members, and which FlowExports it may handle now."""

    identity: str
    namespace: str | None = None
    group: str = "flowexport-operator"
    timing: Timing = field(default_factory=Timing)
    api: LeaseApi | None = None
    clock: Callable[[], float] = time.monotonic
    #: Told the number of live members whenever it changes (the AWS budgets' share).
    on_members: Callable[[int], None] | None = None
    members: tuple[str, ...] = ()
    #: Local time each member's Lease was last seen to change, and what it was then.
    _seen: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: Since when (local time) each FlowExport has been this replica's, without a break.
    _mine_since: dict[str, float] = field(default_factory=dict)
    _renewed: float = float("-inf")
    #: When the current view of the members began (or fencing ended).
    _view_since: float = float("inf")
    _fenced: bool = False

    @property
    def enabled(self) -> bool:
        """Whether FlowExports are spread over replicas (else all are this one's)."""
        return self.namespace is not None

    @property
    def lease_name(self) -> str:
        return f"{LEASE_PREFIX}{self.identity}"

    def owner(self, uid: str) -> str | None:
        """The member the FlowExport belongs to in this replica's current view."""
        return owner_of(uid, self.members) if self.enabled else self.identity

    def owns(self, uid: str) -> bool:
        """Whether this replica may handle the FlowExport now (see the module's rules)."""
        if not self.enabled:
            return True
        now = self.clock()
        if now - self._renewed > self.timing.fence:
            # Cut off: another replica may take over, so everything waits a new hand-over.
            self._mine_since.clear()
            self._fenced = True
            return False
        if self._fenced:
            self._fenced, self._view_since = False, now
        if self.owner(uid) != self.identity:
            self._mine_since.pop(uid, None)
            return False
        since = self._mine_since.setdefault(uid, self._view_since)
        return now - since >= self.timing.handover

    # -- membership ------------------------------------------------------------------------

    def observe(self, leases: list[dict[str, Any]]) -> None:
        """Update the live members from a listing of the group's Leases."""
        now = self.clock()
        current: dict[str, str] = {}
        for lease in leases:
            name = str(lease["name"])
            if name.startswith(LEASE_PREFIX):
                current[name[len(LEASE_PREFIX) :]] = str(lease.get("renewTime") or "")
        for member, renewed in current.items():
            seen = self._seen.get(member)
            if seen is None or seen[1] != renewed:
                self._seen[member] = (now, renewed)
        for member in list(self._seen):
            if member not in current:
                del self._seen[member]
        live = {m for m, (at, _) in self._seen.items() if now - at < self.timing.lease}
        if now - self._renewed <= self.timing.fence:
            live.add(self.identity)
        members = tuple(sorted(live))
        if members != self.members:
            log.info("operator replicas: %s (this one: %s)", ", ".join(members), self.identity)
            # FlowExports moving to this replica wait their hand-over from the change on;
            # those it keeps are not interrupted.
            for uid in list(self._mine_since):
                if owner_of(uid, members) != self.identity:
                    del self._mine_since[uid]
            self.members, self._view_since = members, now
            if self.on_members is not None:
                self.on_members(len(members))

    def stale(self) -> list[str]:
        """Members whose Lease has not changed for four Lease periods (to delete)."""
        now = self.clock()
        return [m for m, (at, _) in self._seen.items() if now - at > 4 * self.timing.lease]

    async def run(self) -> None:
        """Renew this replica's Lease and follow the members, until cancelled."""
        assert self.api is not None and self.namespace is not None
        api, namespace = self.api, self.namespace
        while True:
            try:
                await off_loop(
                    api.renew_lease,
                    namespace,
                    self.lease_name,
                    self.group,
                    self.identity,
                    int(self.timing.lease),
                )
                self._renewed = self.clock()
                leases = await off_loop(api.list_leases, namespace, self.group)
                self.observe(leases)
                for member in self.stale():
                    await off_loop(api.delete_lease, namespace, LEASE_PREFIX + member)
            except Exception as exc:  # the API is away: `owns` fences after `fence` seconds
                log.warning("cannot renew the replica Lease %s: %s", self.lease_name, exc)
            await asyncio.sleep(self.timing.renew)

    async def leave(self) -> None:
        """Give every FlowExport up and delete this replica's Lease (on a clean stop)."""
        self._renewed = float("-inf")
        if self.api is not None and self.namespace is not None:
            try:
                await asyncio.wait_for(
                    off_loop(self.api.delete_lease, self.namespace, self.lease_name),
                    LEAVE_SECONDS,
                )
            except Exception as exc:  # its Lease lapses instead: a slower hand-over
                log.warning("cannot delete the replica Lease %s: %r", self.lease_name, exc)


def now_micro() -> str:
    """A Lease's MicroTime for now."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


SOLO = Replicas(identity="solo")
