"""The operator's access to a watched namespace, held while it has clean-ups to do there.

In a namespaced install (the chart's `watch.scope: namespaces`) the operator reaches each
watched namespace through a RoleBinding in it (of a ClusterRole: cluster-scoped, it outlives
the namespace). Deleting the namespace deletes the RoleBinding together with everything else,
so the FlowExports' clean-up, and the removal of their finalizer, would be refused (403) and
the namespace would stay Terminating (found on the real server: a Role in the namespace would
go the same way, which is why the chart binds a ClusterRole).

So, with `flowexport run --hold-namespace-access NAME` (the chart passes its RoleBinding's
name), the operator keeps its own finalizer `flowexport.io/operator-access` on that
RoleBinding while any FlowExport or FlowExportSet of the namespace holds its clean-up
finalizer, and removes it once none does: deleting the namespace then leaves the access in
place (an object being deleted still grants while a finalizer keeps it) until the last
clean-up is done, the operator's last write there removes the finalizer, and the namespace
goes. With no FlowExport left the finalizer is gone too, so `helm uninstall` leaves nothing
behind.

One daemon thread: every `CHECK_SECONDS` (every `DELETING_CHECK_SECONDS` while a holder is
being deleted, and at once when poked after a create or a clean-up) it lists each namespace's
FlowExports and FlowExportSets and adds or removes the finalizer as `wanted` says. Removing
and adding race only with another replica doing the same from the same listing: a JSON patch
guarded by the resourceVersion, retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from flowexport.api.models import GROUP, VERSION
from flowexport.kube.client import finalizers_patch

log = logging.getLogger("flowexport.operator")

#: The operator's finalizer on the RoleBinding that gives it a namespace.
ACCESS_FINALIZER = "flowexport.io/operator-access"
#: Seconds between looks at a namespace, and while a holder there is being deleted.
CHECK_SECONDS = 30.0
DELETING_CHECK_SECONDS = 2.0
REQUEST_TIMEOUT = (5.0, 30.0)
#: The plural of each kind whose objects hold the operator's clean-up finalizer.
HOLDER_PLURALS = ("flowexports", "flowexportsets")


@dataclass(frozen=True)
class Holders:
    """A namespace's objects holding the clean-up finalizer; `deleting` of them are being
    deleted (their clean-up under way)."""

    count: int
    deleting: int


def holders_of(items: Sequence[dict[str, Any]], finalizer: str) -> Holders:
    """Count the objects that hold `finalizer` (pure)."""
    holding = [i for i in items if finalizer in ((i.get("metadata") or {}).get("finalizers") or [])]
    deleting = [i for i in holding if (i.get("metadata") or {}).get("deletionTimestamp")]
    return Holders(len(holding), len(deleting))


def wanted(holders: Holders) -> bool:
    """Whether the access must be held: while anything there still needs its clean-up."""
    return holders.count > 0


def with_finalizer(current: Sequence[str], finalizer: str, present: bool) -> list[str]:
    """`current` with `finalizer` added or removed, the others kept in order (pure)."""
    kept = [f for f in current if f != finalizer]
    return [*kept, finalizer] if present else kept


class NamespaceAccess:
    """Holds the finalizer on the RoleBinding named `name` in each of `namespaces` while a
    FlowExport or FlowExportSet there holds `cleanup_finalizer` (see the module)."""

    def __init__(
        self,
        custom: Any,
        rbac: Any,
        namespaces: Sequence[str],
        name: str,
        cleanup_finalizer: str,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self._custom, self._rbac = custom, rbac
        self.namespaces = list(dict.fromkeys(namespaces))
        self.name = name
        self.cleanup_finalizer = cleanup_finalizer
        self.check_seconds = check_seconds
        #: Whether the finalizer is on the RoleBinding, per namespace, as last written.
        self.held: dict[str, bool] = {}
        self._poked = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[tuple[str, bool]] = set()

    # -- the Kubernetes side (blocking) -------------------------------------------------------

    def holders(self, namespace: str) -> Holders:
        """The namespace's FlowExports and FlowExportSets holding the clean-up finalizer."""
        items: list[dict[str, Any]] = []
        for plural in HOLDER_PLURALS:
            found = self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, _request_timeout=REQUEST_TIMEOUT
            )
            items.extend(found.get("items") or [])
        return holders_of(items, self.cleanup_finalizer)

    def set_finalizer(self, namespace: str, present: bool) -> bool:
        """Add (or remove) the finalizer on the RoleBinding; False when it is missing (not
        this install's, or already gone) or cannot be patched (RBAC)."""
        rbac = self._rbac
        try:
            return self._set_one(
                rbac.read_namespaced_role_binding,
                rbac.patch_namespaced_role_binding,
                namespace,
                present,
            )
        except ApiException as exc:
            if (namespace, present) not in self._warned:  # once: the install may not allow it
                self._warned.add((namespace, present))
                log.warning(
                    "%s: cannot %s the finalizer %s on the RoleBinding %s (HTTP %s): deleting "
                    "the namespace may then stop the FlowExports' clean-up",
                    namespace,
                    "add" if present else "remove",
                    ACCESS_FINALIZER,
                    self.name,
                    exc.status,
                )
            return False

    def _set_one(
        self, read: Callable[..., Any], patch: Callable[..., Any], namespace: str, present: bool
    ) -> bool:
        for _ in range(5):
            try:
                obj = read(self.name, namespace, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            metadata = obj.metadata
            current = list(metadata.finalizers or [])
            new = with_finalizer(current, ACCESS_FINALIZER, present)
            if new == current:
                return True
            body = finalizers_patch(metadata.resource_version, new)
            try:
                patch(self.name, namespace, body, _request_timeout=REQUEST_TIMEOUT)
                return True
            except ApiException as exc:
                if exc.status not in (409, 422):  # 409/422: changed since read: again
                    raise
        return False

    # -- the loop --------------------------------------------------------------------------

    def check(self, namespace: str) -> Holders | None:
        """Look at one namespace once and hold or let go of its access; the holders (None when
        they cannot be listed, e.g. the access already let go: nothing changed then)."""
        try:
            holders = self.holders(namespace)
        except Exception as exc:  # the API away, or no list: the next look tries again
            log.debug("%s: cannot list the clean-up holders: %s", namespace, exc)
            return None
        want = wanted(holders)
        # Held: re-ensured at every look (cheap: a read each when already there), since
        # another replica letting go a moment before a create may have removed it.
        before = self.held.get(namespace)
        if (before != want or want) and self.set_finalizer(namespace, want):
            if before != want and (want or before is not None):  # a change this process made
                log.info(
                    "%s: %s the RoleBinding %s (%d to clean up there)",
                    namespace,
                    "holding" if want else "letting go of",
                    self.name,
                    holders.count,
                )
            self.held[namespace] = want
        return holders

    def run(self) -> None:
        """Look at every namespace, then wait; until `stop`."""
        while not self._stop.is_set():
            deleting = False
            for namespace in self.namespaces:
                found = self.check(namespace)
                deleting = deleting or bool(found and found.deleting)
            self._poked.wait(DELETING_CHECK_SECONDS if deleting else self.check_seconds)
            self._poked.clear()

    def poke(self) -> None:
        """Look again now (a FlowExport was created, or its clean-up ran)."""
        self._poked.set()

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="namespace access", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop (the finalizers stay as they are: a restart takes over)."""
        self._stop.set()
        self._poked.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
