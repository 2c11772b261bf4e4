"""The Secrets labelled for the operator, kept current by one list+watch per watched scope.

Without it every FlowExport read its Secrets from the API on every resync tick (90% of an idle
operator's API traffic at 100 FlowExports). With it a Secret is read once per change: the
watch (label selector `flowexport.io/secret-type`, so only Secrets their owners marked for the
operator are ever sent) keeps a copy, and a change is seen at once by the resync timer.

Each scope (a namespace, or None for all) is watched by a daemon thread with the official
client: list, then watch from the list's resourceVersion, list again when the server says the
version is gone (410) or the stream breaks. While a scope is not in sync (starting, or the
watch is refused, e.g. RBAC without list/watch on Secrets) its Secrets are read directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from flowexport.secrets import SECRET_TYPE_LABEL

log = logging.getLogger("flowexport.operator")

#: Seconds a watch request stays open before it is renewed (the server may end it sooner).
WATCH_SECONDS = 300
#: Seconds between attempts after a failed list or watch (doubling up to the second value).
RETRY_SECONDS = (1.0, 60.0)
#: Client timeouts (connect, each read) of a list, and of a watch (which may be quiet for as
#: long as it is open).
LIST_TIMEOUT = (5.0, 30.0)
WATCH_TIMEOUT = (5.0, WATCH_SECONDS + 30.0)

Convert = Callable[[Any], Any]


def watch_events(
    call: Callable[..., Any], *args: Any, version: str | None, stop: threading.Event, **params: Any
) -> Iterator[tuple[str, Any]]:
    """(type, object) of each ADDED/MODIFIED/DELETED event of one watch of `call` from
    `version`, until the server ends it or `stop` is set; bookmarks skipped. An ERROR event
    (410 Gone: the version expired) raises ApiException, for the caller to list again."""
    stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
        call,
        *args,
        resource_version=version,
        timeout_seconds=WATCH_SECONDS,
        allow_watch_bookmarks=True,
        _request_timeout=WATCH_TIMEOUT,
        **params,
    )
    for event in stream:
        if stop.is_set():
            return
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else getattr(obj, "code", None)
            raise ApiException(status=code or 410)
        if kind != "BOOKMARK":
            yield kind, obj


class SecretWatch:
    """Copies of the labelled Secrets in `scopes` (namespaces; None: every namespace).

    `convert` turns an API object into what `get` returns (the API wrapper's record).
    """

    def __init__(
        self, core: client.CoreV1Api, scopes: Sequence[str | None], convert: Convert
    ) -> None:
        self.core = core
        self.scopes = list(scopes)
        self.convert = convert
        self._lock = threading.Lock()
        self._secrets: dict[tuple[str, str], Any] = {}
        self._synced: set[str | None] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start one watching thread per scope."""
        for scope in self.scopes:
            thread = threading.Thread(
                target=self._run, args=(scope,), name=f"secret watch {scope or '*'}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop watching (the threads end with their current request)."""
        self._stop.set()

    def synced(self, namespace: str) -> bool:
        """Whether the labelled Secrets of `namespace` are all known (a miss is then no
        labelled Secret of that name)."""
        with self._lock:
            return None in self._synced or namespace in self._synced

    def get(self, namespace: str, name: str) -> Any:
        """The labelled Secret as converted, or None."""
        with self._lock:
            return self._secrets.get((namespace, name))

    # -- the watching thread ---------------------------------------------------------------

    def _run(self, scope: str | None) -> None:
        delay = RETRY_SECONDS[0]
        while not self._stop.is_set():
            try:
                version = self._list(scope)
                delay = RETRY_SECONDS[0]
                self._watch(scope, version)
            except ApiException as exc:
                self._unsync(scope)
                if exc.status == 410:
                    continue  # the version is too old: list again at once
                log.warning(
                    "cannot watch Secrets labelled %s in %s (HTTP %s); reading them directly",
                    SECRET_TYPE_LABEL,
                    scope or "any namespace",
                    exc.status,
                )
            except Exception as exc:  # a broken stream or an unreachable API: list again
                self._unsync(scope)
                log.debug("secret watch %s: %s", scope or "*", type(exc).__name__)
            self._stop.wait(delay)
            delay = min(RETRY_SECONDS[1], delay * 2)

    def _list(self, scope: str | None) -> str:
        if scope is None:
            found = self.core.list_secret_for_all_namespaces(
                label_selector=SECRET_TYPE_LABEL, _request_timeout=LIST_TIMEOUT
            )
        else:
            found = self.core.list_namespaced_secret(
                scope, label_selector=SECRET_TYPE_LABEL, _request_timeout=LIST_TIMEOUT
            )
        secrets = {_key(item): self.convert(item) for item in found.items or []}
        with self._lock:
            for key in [k for k in self._secrets if scope is None or k[0] == scope]:
                del self._secrets[key]
            self._secrets.update(secrets)
            self._synced.add(scope)
        return str((found.metadata.resource_version if found.metadata else None) or "")

    def _watch(self, scope: str | None, version: str) -> None:
        call: Callable[..., Any]
        args: tuple[str, ...] = ()
        if scope is None:
            call = self.core.list_secret_for_all_namespaces
        else:
            call, args = self.core.list_namespaced_secret, (scope,)
        for kind, obj in watch_events(
            call, *args, version=version, stop=self._stop, label_selector=SECRET_TYPE_LABEL
        ):
            key = _key(obj)
            with self._lock:
                if kind == "DELETED":  # deleted, or its label removed
                    self._secrets.pop(key, None)
                else:
                    self._secrets[key] = self.convert(obj)

    def _unsync(self, scope: str | None) -> None:
        with self._lock:
            self._synced.discard(scope)


def _key(secret: Any) -> tuple[str, str]:
    return secret.metadata.namespace or "", secret.metadata.name or ""
