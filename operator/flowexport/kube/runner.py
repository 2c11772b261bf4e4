"""Run the operator: the kopf event loop with this package's handlers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import kopf
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flowexport.kube import handlers  # registers the handlers with kopf (and its finalizer)
from flowexport.kube.access import NamespaceAccess
from flowexport.kube.client import CRD_MISSING, KubeApi
from flowexport.kube.events import KopfEvents
from flowexport.kube.grants import GrantBook
from flowexport.kube.replicas import SOLO, Replicas
from flowexport.kube.state import RESYNC_SECONDS, Operator

#: Characters that make a kopf namespace argument a pattern rather than a name.
PATTERN_CHARACTERS = frozenset("!*?,")


def has_patterns(namespaces: Sequence[str]) -> bool:
    """Whether any namespace argument is a pattern (kopf must then watch namespaces)."""
    return any(PATTERN_CHARACTERS & set(ns) for ns in namespaces)


class StartupError(Exception):
    """The operator cannot start; the message says why, in one line."""


def preflight(check_crd: bool) -> KubeApi:
    """Credentials for the API server, and (unless kopf must resolve namespace patterns and
    so waits for it) the FlowExport CRD: a failure is one line, not a retry loop."""
    try:
        api = KubeApi()
    except (config.ConfigException, OSError) as exc:
        raise StartupError(
            "no Kubernetes credentials: not running in a pod, and no usable kubeconfig "
            f"(set KUBECONFIG) ({type(exc).__name__})"
        ) from None
    if not check_crd:
        return api
    try:
        served = asyncio.run(api.serves_flowexports())
    except ApiException as exc:
        raise StartupError(
            f"the Kubernetes API refused the operator ({exc.status} {exc.reason}): check its "
            "credentials and RBAC"
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        host = api.custom.api_client.configuration.host
        raise StartupError(
            f"cannot reach the Kubernetes API at {host} ({type(exc).__name__})"
        ) from None
    if not served:
        raise StartupError(CRD_MISSING)
    return api


def run(
    namespaces: Sequence[str] = (),
    clusterwide: bool = False,
    liveness: str | None = None,
    settle_seconds: float = 15.0,
    resync_seconds: float = RESYNC_SECONDS,
    stop_flag: threading.Event | asyncio.Event | None = None,
    ready_flag: threading.Event | asyncio.Event | None = None,
    allowed_pce_hosts: frozenset[tuple[str, int]] = frozenset(),
    api: KubeApi | None = None,
    replicas: Replicas = SOLO,
    watch_secrets: bool = True,
    account_grants: str = "Enforce",
    hold_namespace_access: str | None = None,
) -> None:
    """Run until signalled (or `stop_flag` is set). kopf runs standalone (no kopf peering):
    replicas share FlowExports through `replicas` (by default this one handles all). Without
    `watch_secrets` each Secret is read by name (RBAC granting get on named Secrets only).
    With `account_grants` Enforce, the AccountGrants and Namespaces are watched and decide
    which AWS accounts each namespace may reach through the operator's identity. With
    `hold_namespace_access` (the name of the RoleBinding that gives it each of
    `namespaces`) it keeps them while it has clean-ups to do there (`kube/access.py`)."""
    api = api or KubeApi()
    if watch_secrets:
        # Secrets come from one watch per namespace (or one for all): read once per change.
        api.watch_secrets(
            [None] if clusterwide or has_patterns(namespaces) else list(dict.fromkeys(namespaces))
        )
    grants = None
    if account_grants == "Enforce":
        grants = GrantBook(api.custom, api.core, count_users=not replicas.enabled)
        grants.start()
    operator = Operator(
        api,
        KopfEvents(),
        settle_seconds,
        resync_seconds,
        scan_cluster=has_patterns(namespaces),
        allowed_pce_hosts=allowed_pce_hosts,
        replicas=replicas,
        grants=grants,
    )
    access = None
    if hold_namespace_access:  # namespaces by name (`flowexport run` refuses it otherwise)
        access = NamespaceAccess(
            api.custom,
            client.RbacAuthorizationV1Api(),
            namespaces,
            hold_namespace_access,
            handlers.FINALIZER,
        )
        access.start()
    try:
        kopf.run(
            standalone=True,
            namespaces=list(namespaces),
            clusterwide=clusterwide,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            memo=kopf.Memo(operator=operator, access=access),
        )
    finally:
        if access is not None:
            access.stop()
