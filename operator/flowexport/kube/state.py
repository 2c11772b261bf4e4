"""What the operator holds in memory: one `Export` per FlowExport, one `Operator` per process.

The `Operator` lives in kopf's memo (see `runner.run`); handlers reach it as `memo.operator`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from flowexport.api.models import FlowExportSpec
from flowexport.api.validation import SpecError, parse_spec
from flowexport.aws.subscription import Subscription
from flowexport.kube import metrics
from flowexport.kube.client import KubeClient
from flowexport.kube.events import EventSink
from flowexport.kube.grants import GrantBook
from flowexport.kube.replicas import SOLO, Replicas
from flowexport.kube.secrets import Endpoint, KubeSecrets, Versions
from flowexport.kube.status_writer import StatusWriter
from flowexport.urls import endpoint_of

#: Default seconds between reconciles of a healthy FlowExport: how soon drift is repaired.
RESYNC_SECONDS = 300.0
#: Seconds before retrying what only a spec, Secret or IAM change can fix (a Secret change
#: is noticed sooner: see `Export.secret_versions`).
TERMINAL_RETRY_SECONDS = 600.0
#: First and longest wait before retrying a transient failure (doubling in between).
TRANSIENT_RETRY_SECONDS = (15.0, 300.0)
#: Reconciles whose AWS and PCE calls run at once; the others wait their turn. Each runs its
#: boto3 calls in threads: hundreds applied at once (a FlowExportSet's first refresh, a
#: GitOps sync) would otherwise be hundreds of threads contending with the event loop, whose
#: kopf patches, status writes and liveness answers then wait on them.
RECONCILES_IN_FLIGHT = 16


@dataclass
class Export:
    """One FlowExport: its status writer, its subscription and when to reconcile it next."""

    board: StatusWriter
    resync_seconds: float = RESYNC_SECONDS
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscription: Subscription | None = None
    #: The generation `subscription` was ensured for; the worker waits until it is current.
    subscribed_generation: int | None = None
    #: The generation the last reconcile saw (whatever came of it).
    reconciled_generation: int | None = None
    #: resourceVersion of every Secret the last reconcile read; a change triggers a reconcile.
    secret_versions: Versions = field(default_factory=dict)
    #: Set by a reconcile that changed what the worker uses (subscription, Secrets).
    restart: asyncio.Event = field(default_factory=asyncio.Event)
    next_reconcile: float = 0.0
    transient_failures: int = 0
    #: The AWS keys Secret this FlowExport holds with the in-use finalizer (for its clean-up).
    held_secret: str | None = None
    #: The `flowexport.io/resume-from` value dealt with (applied, or ignored and said), until
    #: the annotation is gone.
    consumed: str | None = None
    #: The last `flowexport.io/resume-from` value refused (said once).
    refused: str | None = None

    def schedule_resync(self) -> None:
        """Healthy: reconcile again after the resync period."""
        self.transient_failures = 0
        self.next_reconcile = time.monotonic() + self.resync_seconds

    def schedule_retry(self, terminal: bool) -> float:
        """Failed: retry after a long delay (terminal) or a growing backoff; returns the delay."""
        if terminal:
            delay = TERMINAL_RETRY_SECONDS
        else:
            first, longest = TRANSIENT_RETRY_SECONDS
            delay = min(longest, first * 2**self.transient_failures)
            self.transient_failures += 1
        self.next_reconcile = time.monotonic() + delay
        return delay

    def schedule_never(self) -> None:
        """Invalid spec: nothing to retry until the spec changes (the update handler runs)."""
        self.next_reconcile = float("inf")

    def request_reconcile(self) -> None:
        """Reconcile at the next timer tick (e.g. the worker found the log group gone)."""
        self.next_reconcile = 0.0

    @property
    def due(self) -> bool:
        """Whether the resync timer should reconcile now."""
        return time.monotonic() >= self.next_reconcile


class BoundedSet:
    """A set that forgets its oldest members past `limit` (uids of deleted objects)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._items: dict[str, None] = {}

    def add(self, item: str) -> None:
        """Remember `item` (the oldest is forgotten past the limit)."""
        self._items[item] = None
        if len(self._items) > self.limit:
            del self._items[next(iter(self._items))]

    def __contains__(self, item: object) -> bool:
        return item in self._items


class Operator:
    """Process-wide state: the API client, the event sink and the FlowExports being handled."""

    def __init__(
        self,
        api: KubeClient,
        events: EventSink,
        settle_seconds: float = 15.0,
        resync_seconds: float = RESYNC_SECONDS,
        scan_cluster: bool = False,
        allowed_pce_hosts: frozenset[Endpoint] = frozenset(),
        replicas: Replicas = SOLO,
        grants: GrantBook | None = None,
        reconciles_in_flight: int = RECONCILES_IN_FLIGHT,
    ) -> None:
        self.api = api
        #: Bounds the reconciles calling AWS and the PCE at once (see `RECONCILES_IN_FLIGHT`).
        self.reconciling = asyncio.Semaphore(reconciles_in_flight)
        #: The AccountGrants enforced (None: `--account-grants Off`).
        self.grants = grants
        #: uids of FlowExports whose clean-up is done (a repeated deletion cycle skips it).
        self.cleaned_up: BoundedSet = BoundedSet()
        #: Which FlowExports this replica handles (all of them when it is the only one).
        self.replicas = replicas
        self.events = events
        self.exports: dict[tuple[str, str], Export] = {}
        #: Each FlowExport's spec as parsed for a generation (see `spec_of`).
        self._specs: dict[tuple[str, str], tuple[Any, FlowExportSpec | SpecError]] = {}
        #: FlowExports whose ingestion worker is running here (the clean-up waits for it).
        self.working: set[tuple[str, str]] = set()
        self.settle_seconds = settle_seconds
        self.resync_seconds = resync_seconds
        #: Let kopf watch namespaces and CRDs, which it needs to resolve namespace patterns.
        self.scan_cluster = scan_cluster
        #: PCE (host, port)s the operator may send credentials to (`urls.parse_host_port`);
        #: empty: none.
        self.allowed_pce_hosts = allowed_pce_hosts

    def spec_of(self, body: Any) -> FlowExportSpec:
        """The FlowExport's spec, parsed once per generation (raises SpecError, also once per
        generation, for an invalid one)."""
        metadata = body["metadata"]
        key = (metadata.get("namespace") or "", metadata.get("name") or "")
        generation = metadata.get("generation")
        cached = self._specs.get(key)
        if cached is None or generation is None or cached[0] != generation:
            try:
                parsed: FlowExportSpec | SpecError = parse_spec(dict(body["spec"]))
            except SpecError as exc:
                parsed = exc
            cached = (generation, parsed)
            self._specs[key] = cached
        if isinstance(cached[1], SpecError):
            raise cached[1]
        return cached[1]

    def export(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Export:
        """The FlowExport's state, created (from its stored status) on first use; its status
        writer follows `body`, the object as the watch delivers it."""
        key = (namespace, name)
        if key not in self.exports:
            board = StatusWriter(namespace, name, self.api.patch_status)
            board.load(status)
            self.exports[key] = Export(board, self.resync_seconds)
        export = self.exports[key]
        if body is not None:
            export.board.track(body)
        return export

    def secrets(
        self,
        namespace: str,
        spec: FlowExportSpec,
        versions: Versions | None = None,
        name: str = "",
    ) -> KubeSecrets:
        """The Secrets of `namespace` for FlowExport `name`'s `spec` (and its AWS account, as
        the AccountGrants allow), noting the versions read in `versions`."""
        pce = endpoint_of(spec.pce.url)
        return KubeSecrets(
            self.api, namespace, versions, pce, self.allowed_pce_hosts, name, self.grants
        )

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted FlowExport's state and metrics."""
        self.exports.pop((namespace, name), None)
        self._specs.pop((namespace, name), None)
        metrics.forget(namespace, name)
        if self.grants is not None:
            self.grants.use(namespace, name, None)

    def let_go(self, namespace: str, name: str) -> None:
        """A FlowExport now handled by another replica: drop what this one held of it (it is
        read back from the stored status if it comes back)."""
        if (namespace, name) in self.exports:
            self.forget(namespace, name)
