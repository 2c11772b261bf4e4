"""Watches: a stream of JSON change events, one a line, over a held-open response.

A watch without a resourceVersion (or with `sendInitialEvents`) starts with the selected
objects as ADDED events; one with a resourceVersion replays the retained changes since then,
or answers a version older than that history with a 410 `Expired` event. It sends bookmarks
when asked and ends after `timeoutSeconds`.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from aiohttp import web

from flowexport.sim.kube.resources import ResourceType, with_type
from flowexport.sim.kube.selectors import as_seen_by
from flowexport.sim.kube.store import Store, Subscription, matches, selectors

#: Most events sent in one write (those queued when the watch gets its turn).
BATCH = 256


async def watch(
    request: web.Request, store: Store, kind: ResourceType, namespace: str | None
) -> web.StreamResponse:
    """Serve a `?watch=true` request for `kind` until its timeout or the client leaves."""
    name, labels, field_namespace = selectors(request.query)
    namespace = namespace or field_namespace
    since = request.query.get("resourceVersion", "")
    timeout = float(request.query.get("timeoutSeconds", "1800"))
    bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    subscription = Subscription(kind, namespace, name, labels, asyncio.Queue())
    initial = request.query.get("sendInitialEvents") in ("1", "true")
    if since in ("", "0") or initial:
        for obj in store.select(kind, namespace, request.query):
            subscription.queue.put_nowait({"type": "ADDED", "object": copy.deepcopy(obj)})
        if initial:
            # WatchList (kubectl >= 1.32): a bookmark marks the end of the initial state.
            subscription.queue.put_nowait(
                {
                    "type": "BOOKMARK",
                    "object": {
                        "metadata": {
                            "resourceVersion": str(store.revision),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        }
                    },
                }
            )
    else:
        oldest = store.history[0][0] if store.history else store.revision + 1
        if not since.isdigit() or (int(since) < oldest - 1 and int(since) < store.revision):
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": f"too old resource version: {since}",
            }
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return response
        for revision, key, change, obj, before in store.history:
            if revision > int(since) and key == kind.key and matches(obj, namespace, name, ()):
                seen = as_seen_by(labels, change, before, obj)
                if seen is not None:
                    subscription.queue.put_nowait({"type": seen, "object": obj})
    store.subscriptions.append(subscription)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                queued = await asyncio.wait_for(subscription.queue.get(), timeout=min(left, 5.0))
            except TimeoutError:
                if not bookmarks:
                    continue
                queued = {
                    "type": "BOOKMARK",
                    "object": {"metadata": {"resourceVersion": str(store.revision)}},
                }
            # Everything queued goes out in one write: one event per turn of the loop fell
            # seconds behind the writes under hundreds of objects (kopf, waiting for the
            # event of its own patch, then handles a stale one).
            lines = [_line(kind, queued)]
            while len(lines) < BATCH and not subscription.queue.empty():
                lines.append(_line(kind, subscription.queue.get_nowait()))
            await response.write(b"".join(lines))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        store.subscriptions.remove(subscription)
    return response


def _line(kind: ResourceType, queued: dict[str, Any]) -> bytes:
    event = {"type": queued["type"], "object": with_type(kind, queued["object"])}
    return json.dumps(event).encode() + b"\n"
