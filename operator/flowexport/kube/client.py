"""The Kubernetes API calls the operator makes itself (kopf makes the others).

`KubeClient` is the interface the operator's parts use; `KubeApi` implements it with the
official client, and the tests' in-memory fake implements it too.

Every call has a client timeout (`REQUEST_TIMEOUT`: connect, then each read) and runs in a
daemon thread (`off_loop`), so an API server that hangs neither stalls a caller for longer nor
holds up the process's exit after a SIGTERM.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flowexport.api.models import GROUP, PLURAL, VERSION
from flowexport.aws.blocking import off_loop
from flowexport.kube.replicas import GROUP_LABEL, now_micro
from flowexport.kube.secret_watch import SecretWatch

#: Seconds to connect to the API server, and to wait for each read of its answer.
CONNECT_SECONDS = 5.0
READ_SECONDS = 10.0
#: The official client's `_request_timeout` for every call the operator makes itself.
REQUEST_TIMEOUT = (CONNECT_SECONDS, READ_SECONDS)


@dataclass(frozen=True)
class SecretRecord:
    """A Secret as read: its text values, resourceVersion, labels, and the keys whose value
    is not UTF-8 text (kept apart, so they are reported as such, not as missing)."""

    values: dict[str, str] = field(repr=False)
    version: str
    labels: dict[str, str] = field(default_factory=dict)
    not_text: tuple[str, ...] = ()
    finalizers: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """What a change that matters is measured by: the values, the labels and the keys
        that are not text. Not the resourceVersion, which a finalizer or annotation moves.
        (A digest, kept in memory only.)"""
        digest = hashlib.blake2b(digest_size=16)
        for part in (self.values, self.labels, dict.fromkeys(self.not_text, "")):
            for key, value in sorted(part.items()):
                digest.update(f"{key}\0{value}\0".encode())
            digest.update(b"\1")
        return digest.hexdigest()


#: What the operator says, and exits with, when the FlowExport CRD is not served.
CRD_MISSING = (
    f"the FlowExport CRD ({PLURAL}.{GROUP}/{VERSION}) is not installed: apply "
    "crds/flowexport.yaml, then start the operator"
)


class KubeClient(Protocol):
    """Secrets, discovery and the status subresource."""

    async def read_secret(self, namespace: str, name: str) -> SecretRecord | None:
        """The Secret, or None if it does not exist."""
        ...

    async def serves_flowexports(self) -> bool:
        """Whether the API server serves the FlowExport resource (its CRD is installed)."""
        ...

    async def set_secret_finalizer(
        self, namespace: str, name: str, finalizer: str, present: bool
    ) -> None:
        """Add (or remove) a finalizer on a Secret, keeping the others; a missing Secret is
        left alone."""
        ...

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> Any:
        """Merge-patch the FlowExport's status subresource; the object as stored after it
        (None if unknown)."""
        ...

    async def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        """Set (None: remove) annotations of the FlowExport."""
        ...


def finalizers_patch(resource_version: str, finalizers: list[str]) -> list[dict[str, Any]]:
    """A JSON patch setting the finalizers, refused (409/422) if the object changed since it
    was read at `resource_version` (so another writer's finalizer is never dropped)."""
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
    ]


class KubeApi:
    """`KubeClient` through the official client (its blocking calls run in threads)."""

    def __init__(self) -> None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            # The client reads KUBECONFIG once at import; honour the value of now.
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG")
            )
        self.core = client.CoreV1Api()
        self.custom = client.CustomObjectsApi()
        self.secret_watch: SecretWatch | None = None

    def watch_secrets(self, scopes: Sequence[str | None]) -> None:
        """Keep the labelled Secrets of `scopes` (namespaces; None: all) from a watch, so
        `read_secret` reads each once per change (see `secret_watch`)."""
        self.secret_watch = SecretWatch(self.core, scopes, secret_record)
        self.secret_watch.start()

    async def read_secret(self, namespace: str, name: str) -> SecretRecord | None:
        """The Secret, or None if it does not exist."""
        watched = self.secret_watch
        if watched is not None and watched.synced(namespace):
            found: SecretRecord | None = watched.get(namespace, name)
            if found is not None:
                return found
            # Not labelled for the operator, or absent: which of them is read below.
        secret = await _unless_missing(self.core.read_namespaced_secret, name, namespace)
        return None if secret is None else secret_record(secret)

    async def set_secret_finalizer(
        self, namespace: str, name: str, finalizer: str, present: bool
    ) -> None:
        """Add (or remove) a finalizer on a Secret, keeping the others; a missing Secret is
        left alone. A JSON patch guarded by the resourceVersion, retried on a race."""
        watched = self.secret_watch.get(namespace, name) if self.secret_watch else None
        if watched is not None and (finalizer in watched.finalizers) == present:
            return  # as wanted already: no request
        for _ in range(5):
            secret = await _unless_missing(self.core.read_namespaced_secret, name, namespace)
            if secret is None:
                return
            metadata = secret.metadata
            current = list(metadata.finalizers or [])
            wanted = [f for f in current if f != finalizer] + ([finalizer] if present else [])
            if sorted(wanted) == sorted(current):
                return
            try:
                await off_loop(
                    self.core.patch_namespaced_secret,
                    name,
                    namespace,
                    finalizers_patch(metadata.resource_version, wanted),
                    _request_timeout=REQUEST_TIMEOUT,
                )
                return
            except ApiException as exc:
                if exc.status not in (409, 422):
                    raise

    # -- Leases (sharding over replicas; blocking, called in threads) ------------------------

    def list_leases(self, namespace: str, group: str) -> list[dict[str, Any]]:
        """The shard group's Leases: name, holder, renewTime."""
        found = client.CoordinationV1Api().list_namespaced_lease(
            namespace, label_selector=f"{GROUP_LABEL}={group}", _request_timeout=REQUEST_TIMEOUT
        )
        return [
            {
                "name": lease.metadata.name if lease.metadata else "",
                "holder": lease.spec.holder_identity if lease.spec else None,
                "renewTime": str(lease.spec.renew_time) if lease.spec else "",
            }
            for lease in found.items or []
        ]

    def renew_lease(self, namespace: str, name: str, group: str, holder: str, seconds: int) -> None:
        """Create the Lease, or set its renewTime to now."""
        coordination = client.CoordinationV1Api()
        body: Any = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, "labels": {GROUP_LABEL: group}},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": seconds,
                "renewTime": now_micro(),
            },
        }
        try:
            coordination.patch_namespaced_lease(
                name, namespace, body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            coordination.create_namespaced_lease(namespace, body, _request_timeout=REQUEST_TIMEOUT)

    def delete_lease(self, namespace: str, name: str) -> None:
        """Delete the Lease (a missing one is fine)."""
        try:
            client.CoordinationV1Api().delete_namespaced_lease(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def serves_flowexports(self) -> bool:
        """Whether the API server serves the FlowExport resource (its CRD is installed)."""
        found = await _unless_missing(self.custom.get_api_resources, GROUP, VERSION)
        resources = (found.resources if found else None) or []
        return any(r.name == PLURAL for r in resources)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> Any:
        """Merge-patch the FlowExport's status subresource; the object as stored after it."""
        return await off_loop(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )

    async def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        """Set (None: remove) annotations of the FlowExport (a merge patch)."""
        await off_loop(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"annotations": annotations}},
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )


async def _unless_missing(call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)` off the loop, with the client timeout; None when the API server answers
    404."""
    try:
        return await off_loop(call, *args, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def secret_record(secret: Any) -> SecretRecord:
    """A Secret as the official client returns it, as a `SecretRecord`."""
    values: dict[str, str] = {}
    not_text: list[str] = []
    for key, encoded in (secret.data or {}).items():
        try:
            values[key] = base64.b64decode(encoded).decode()
        except (binascii.Error, UnicodeDecodeError):
            not_text.append(key)
    metadata = secret.metadata
    version = metadata.resource_version if metadata else None
    labels = dict((metadata.labels if metadata else None) or {})
    finalizers = tuple((metadata.finalizers if metadata else None) or ())
    return SecretRecord(values, str(version or ""), labels, tuple(not_text), finalizers)
