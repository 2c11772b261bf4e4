"""The Kubernetes API calls the operator makes itself (kopf makes the others).

`KubeClient` is the interface the operator's parts use; `KubeApi` implements it with the
official client, and the tests' in-memory fake implements it too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flowexport.api.models import GROUP, PLURAL, VERSION


@dataclass(frozen=True)
class SecretRecord:
    """A Secret as read: its text values, resourceVersion, labels, and the keys whose value
    is not UTF-8 text (kept apart, so they are reported as such, not as missing)."""

    values: dict[str, str] = field(repr=False)
    version: str
    labels: dict[str, str] = field(default_factory=dict)
    not_text: tuple[str, ...] = ()
    finalizers: tuple[str, ...] = ()


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

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the FlowExport's status subresource."""
        ...


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

    async def read_secret(self, namespace: str, name: str) -> SecretRecord | None:
        """The Secret, or None if it does not exist."""
        secret = await _unless_missing(self.core.read_namespaced_secret, name, namespace)
        if secret is None:
            return None
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

    async def set_secret_finalizer(
        self, namespace: str, name: str, finalizer: str, present: bool
    ) -> None:
        """Add (or remove) a finalizer on a Secret, keeping the others; a missing Secret is
        left alone. A JSON patch guarded by the resourceVersion, retried on a race."""
        for _ in range(5):
            secret = await _unless_missing(self.core.read_namespaced_secret, name, namespace)
            if secret is None:
                return
            metadata = secret.metadata
            current = list(metadata.finalizers or [])
            wanted = [f for f in current if f != finalizer] + ([finalizer] if present else [])
            if sorted(wanted) == sorted(current):
                return
            patch = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": metadata.resource_version,
                },
                {"op": "add", "path": "/metadata/finalizers", "value": wanted},
            ]
            try:
                await asyncio.to_thread(self.core.patch_namespaced_secret, name, namespace, patch)
                return
            except ApiException as exc:
                if exc.status not in (409, 422):
                    raise

    async def serves_flowexports(self) -> bool:
        """Whether the API server serves the FlowExport resource (its CRD is installed)."""
        found = await _unless_missing(self.custom.get_api_resources, GROUP, VERSION)
        resources = (found.resources if found else None) or []
        return any(r.name == PLURAL for r in resources)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the FlowExport's status subresource."""
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )


async def _unless_missing(call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)` in a thread; None when the API server answers 404."""
    try:
        return await asyncio.to_thread(call, *args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
