"""The AccountGrants and the Namespaces' labels, kept current by a list+watch of each.

`GrantBook.resolve(namespace, account_id, region)` says through which role (and ExternalId)
a FlowExport of `namespace` may reach `account_id`, or raises `AccountNotGrantedError`: the
decision itself is `flowexport.api.grants.resolve`, pure; this module keeps its inputs.

Each kind is watched by a daemon thread with the official client (as `secret_watch` does):
list, then watch from the list's resourceVersion, list again when the version is gone (410)
or the stream breaks. Until both lists have come back the book is not `synced`: a FlowExport
asking then waits a little, then reports AccountGrantsUnavailable (retryable) rather than a
refusal that would flip every FlowExport to AccountNotGranted for a moment at each start.
(kopf's event handlers would keep the same copy, but give no signal that the first list is
complete.) A change is noticed by the resync timer through `fingerprint`, which the reconcile
notes beside the Secrets' versions (`kube/secrets.py`): a grant created, changed or deleted,
or a Namespace relabelled, reconciles the FlowExports it affects within a tick (10 s), without
a restart.

Each grant's status is written by the operator: observedGeneration, a Ready condition (False
with InvalidSpec when the models refuse what the CRD let through), and the number of
FlowExports this replica runs through it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from flowexport.api.conditions import ConditionType
from flowexport.api.grants import (
    KIND,
    PLURAL,
    AccountAccess,
    AccountNotGrantedError,
    Grant,
    parse_grant,
    resolve,
)
from flowexport.api.models import GROUP, VERSION
from flowexport.errors import FlowExportError, Reason
from flowexport.kube.secret_watch import watch_events

__all__ = [
    "AccountAccess",
    "AccountGrantsUnavailableError",
    "AccountNotGrantedError",
    "GrantBook",
]

log = logging.getLogger("flowexport.operator")

#: Seconds between attempts after a failed list or watch (doubling up to the second value).
RETRY_SECONDS = (1.0, 60.0)
LIST_TIMEOUT = (5.0, 30.0)
#: Seconds a FlowExport waits for the first lists before reporting AccountGrantsUnavailable.
SYNC_WAIT_SECONDS = 10.0
#: Seconds between the status writer's looks at what changed.
STATUS_SECONDS = 1.0


class AccountGrantsUnavailableError(FlowExportError):
    """The AccountGrants (or the Namespaces) cannot be read yet: nothing is decided, no AWS
    call is made, and the FlowExport retries."""

    reason = Reason.ACCOUNT_GRANTS_UNAVAILABLE


class GrantBook:
    """The AccountGrants and every Namespace's labels, as the watches last saw them.

    `custom` and `core` are the official client's APIs; None (tests, `put`/`label`) watches
    nothing and counts as synced once `mark_synced` is called.
    """

    def __init__(
        self,
        custom: client.CustomObjectsApi | None = None,
        core: client.CoreV1Api | None = None,
        count_users: bool = True,
    ) -> None:
        self.custom = custom
        self.core = core
        self.count_users = count_users
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}
        #: Grants the models refused: name -> (generation, why).
        self._invalid: dict[str, tuple[int | None, str]] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._synced: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: FlowExport (namespace, name) -> the grant it runs through.
        self._users: dict[tuple[str, str], str] = {}
        #: What each grant's status was last written as.
        self._written: dict[str, tuple[Any, ...]] = {}
        #: When each grant's Ready condition last changed status (kept across writes).
        self._transitions: dict[str, tuple[str, str]] = {}
        self._dirty = threading.Event()

    # -- what the operator asks ------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Whether both the grants and the namespaces have been listed."""
        with self._lock:
            return {"grants", "namespaces"} <= self._synced

    async def wait_synced(self, seconds: float = SYNC_WAIT_SECONDS) -> bool:
        """Wait (without blocking the loop) up to `seconds` for the first lists."""
        deadline = time.monotonic() + seconds
        while not self.synced and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.synced

    def resolve(
        self,
        namespace: str,
        account_id: str | None,
        region: str | None = None,
        *,
        role_arn: str | None = None,
    ) -> AccountAccess:
        """The access `namespace` has to `account_id` (None: the operator's own identity) in
        `region`, through `role_arn` if given. Raises AccountNotGrantedError (no grant allows
        it) or AccountGrantsUnavailableError (not listed yet); never calls AWS."""
        with self._lock:
            synced = {"grants", "namespaces"} <= self._synced
            grants = list(self._grants.values())
            labels = self._labels.get(namespace)
        if not synced:
            raise AccountGrantsUnavailableError(
                "the operator cannot read the AccountGrants (and Namespaces) yet: the CRD "
                "accountgrants.flowexport.io must be installed and the operator may need "
                "list/watch on accountgrants and namespaces; no AWS call was made"
            )
        return resolve(grants, namespace, labels, account_id, region, role_arn)

    def fingerprint(
        self, namespace: str, account_id: str | None, region: str | None, role_arn: str | None
    ) -> str:
        """What `resolve` answers now, as text: a change means the FlowExport must be
        reconciled (a grant came, went or changed, or the namespace's labels did)."""
        try:
            access = self.resolve(namespace, account_id, region, role_arn=role_arn)
        except FlowExportError as exc:
            return f"{exc.reason}: {exc}"
        with self._lock:
            found = self._grants.get(access.grant_name or "")
        return f"{access!r} {found.generation if found else None}"

    def use(self, namespace: str, name: str, grant: str | None) -> None:
        """Note which grant FlowExport namespace/name runs through (None: none)."""
        with self._lock:
            key = (namespace, name)
            before = self._users.get(key)
            if grant is None:
                self._users.pop(key, None)
            else:
                self._users[key] = grant
        if before != grant:
            self._dirty.set()

    def users(self, grant: str) -> int:
        """How many FlowExports run through `grant` here."""
        with self._lock:
            return sum(1 for g in self._users.values() if g == grant)

    # -- what the watches (or the tests) tell it -------------------------------------------

    def put(self, body: dict[str, Any]) -> None:
        """An AccountGrant created or changed."""
        name = str((body.get("metadata") or {}).get("name") or "")
        generation = (body.get("metadata") or {}).get("generation")
        try:
            grant: Grant | None = parse_grant(body)
            why = ""
        except ValidationError as exc:
            grant = None
            why = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
            )
        with self._lock:
            if grant is None:
                self._grants.pop(name, None)
                self._invalid[name] = (generation, why)
            else:
                self._grants[name] = grant
                self._invalid.pop(name, None)
        if grant is None:
            log.warning("AccountGrant %s is not used: %s", name, why)
        self._dirty.set()

    def remove(self, name: str) -> None:
        """An AccountGrant deleted."""
        with self._lock:
            self._grants.pop(name, None)
            self._invalid.pop(name, None)
            self._written.pop(name, None)
            self._transitions.pop(name, None)

    def label(self, namespace: str, labels: dict[str, str] | None) -> None:
        """A Namespace's labels (None: the namespace is gone)."""
        with self._lock:
            if labels is None:
                self._labels.pop(namespace, None)
            else:
                self._labels[namespace] = dict(labels)

    def mark_synced(self, what: str = "all") -> None:
        """Say the grants (`grants`), the namespaces (`namespaces`) or both are listed."""
        with self._lock:
            self._synced |= {"grants", "namespaces"} if what == "all" else {what}

    # -- the watching threads --------------------------------------------------------------

    def start(self) -> None:
        """Start the two watches and the status writer."""
        assert self.custom is not None and self.core is not None
        for name, target in (
            ("grants", self._run_grants),
            ("namespaces", self._run_namespaces),
            ("grant status", self._run_status),
        ):
            thread = threading.Thread(target=target, name=f"account {name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop watching (the threads end with their current request)."""
        self._stop.set()
        self._dirty.set()

    def _loop(self, what: str, once: Callable[[], None]) -> None:
        delay = RETRY_SECONDS[0]
        while not self._stop.is_set():
            try:
                once()
                delay = RETRY_SECONDS[0]
                continue  # the watch ended (timeout): list again
            except ApiException as exc:
                if exc.status == 410:
                    continue
                with self._lock:
                    self._synced.discard(what)
                log.warning(
                    "cannot list/watch %s (HTTP %s): FlowExports needing an AccountGrant wait "
                    "(AccountGrantsUnavailable)",
                    what,
                    exc.status,
                )
            except Exception as exc:  # a broken stream or an unreachable API: list again
                log.debug("%s watch: %s", what, type(exc).__name__)
            self._stop.wait(delay)
            delay = min(RETRY_SECONDS[1], delay * 2)

    def _run_grants(self) -> None:
        self._loop("grants", self._grants_once)

    def _run_namespaces(self) -> None:
        self._loop("namespaces", self._namespaces_once)

    def _grants_once(self) -> None:
        assert self.custom is not None
        found: Any = self.custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _request_timeout=LIST_TIMEOUT
        )
        listed: dict[str, Any] = found
        items = listed.get("items") or []
        names = {str(i["metadata"]["name"]) for i in items}
        with self._lock:
            gone = (set(self._grants) | set(self._invalid)) - names
        for name in gone:
            self.remove(name)
        for item in items:
            self.put(item)
        self.mark_synced("grants")
        version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        for kind, obj in watch_events(
            self.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            version=version,
            stop=self._stop,
        ):
            if kind == "DELETED":
                self.remove(str(obj["metadata"]["name"]))
            else:
                self.put(obj)

    def _namespaces_once(self) -> None:
        assert self.core is not None
        found: Any = self.core.list_namespace(_request_timeout=LIST_TIMEOUT)
        labels: dict[str, dict[str, str]] = {
            str(ns.metadata.name): dict(ns.metadata.labels or {}) for ns in found.items or []
        }
        with self._lock:
            self._labels = labels
        self.mark_synced("namespaces")
        for kind, obj in watch_events(
            self.core.list_namespace,
            version=found.metadata.resource_version,
            stop=self._stop,
        ):
            meta: Any = obj.metadata
            self.label(str(meta.name), None if kind == "DELETED" else dict(meta.labels or {}))

    # -- the grants' status ----------------------------------------------------------------

    def statuses(self) -> dict[str, dict[str, Any]]:
        """The status each grant should have now (what `_run_status` writes)."""
        with self._lock:
            valid = {n: g.generation for n, g in self._grants.items()}
            invalid = dict(self._invalid)
            users: dict[str, int] = {}
            for grant in self._users.values():
                users[grant] = users.get(grant, 0) + 1
        out: dict[str, dict[str, Any]] = {}
        for name, generation in valid.items():
            out[name] = {
                "observedGeneration": generation,
                "ready": ("True", "Accepted", f"{KIND} read; FlowExports of its namespaces use it"),
                "flowExports": users.get(name, 0) if self.count_users else None,
            }
        for name, (generation, why) in invalid.items():
            out[name] = {
                "observedGeneration": generation,
                "ready": ("False", Reason.INVALID_SPEC.value, f"not used: {why}"[:1000]),
                "flowExports": 0 if self.count_users else None,
            }
        return out

    def _run_status(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait(30.0)
            self._dirty.clear()
            if self._stop.is_set():
                return
            for name, status in self.statuses().items():
                key = (status["observedGeneration"], status["ready"], status["flowExports"])
                if self._written.get(name) == key:
                    continue
                try:
                    self._write_status(name, status)
                except Exception as exc:  # RBAC without patch, a grant just deleted: next time
                    log.debug("AccountGrant %s status: %s", name, type(exc).__name__)
                    continue
                self._written[name] = key
            self._stop.wait(STATUS_SECONDS)

    def _write_status(self, name: str, status: dict[str, Any]) -> None:
        assert self.custom is not None
        ready, reason, message = status["ready"]
        since = self._transitions.get(name)
        if since is None or since[0] != ready:
            since = (ready, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self._transitions[name] = since
        body: dict[str, Any] = {
            "observedGeneration": status["observedGeneration"],
            "conditions": [
                {
                    "type": ConditionType.READY.value,
                    "status": ready,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": since[1],
                    "observedGeneration": status["observedGeneration"],
                }
            ],
        }
        if status["flowExports"] is not None:
            body["flowExports"] = status["flowExports"]
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, name, {"status": body}, _request_timeout=LIST_TIMEOUT
        )
