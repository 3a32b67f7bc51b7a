"""Watch: a list endpoint with `?watch=true` streams changes instead of answering once.

The stream is Kubernetes' watch shape, one JSON object a line:
`{"type": "ADDED" | "MODIFIED" | "DELETED", "object": {...}}`, each object with
its `metadata.resourceVersion` (for DELETED, the revision of the delete). It is
backed by the store's own watch, so nothing is polled and nothing is missed:

- without `resourceVersion` (or with `0`) the stream starts with an ADDED event
  for every object that matches, then follows changes from that listing;
- with `resourceVersion=N` it sends every change after revision N. A revision
  the store no longer keeps history for, or one past the store's latest (from
  another store), is answered 410 Gone (reason Expired); list again and watch
  from the list's resourceVersion;
- with a label or field selector, an object that stops matching is sent as
  DELETED and one that starts matching as ADDED, as Kubernetes does;
- `timeoutSeconds` ends the stream after that long (0, as unset: never); a consumer that falls too
  far behind gets an ERROR event (a Status, 410 Expired) and the end;
- asked for Tables (`kubectl get -w`), each event's object is a Table of one row
  (scheduler/api/tables.py); an ERROR's Status stays as it is;
- `sendInitialEvents` (a watch-list, client-go's WatchListClient; it takes
  `resourceVersionMatch=NotOlderThan` and `allowWatchBookmarks`, else a 422, as
  kube-apiserver): `true` sends the ADDED events
  of the listing whatever `resourceVersion` says (one not newer than the store's), then,
  with `allowWatchBookmarks`, a BOOKMARK annotated `k8s.io/initial-events-end` at the
  listing's revision, which is what the client waits for before it takes the list as
  whole; `false` sends no listing, only the changes (after `resourceVersion`, or from now).

Streams end when the scheduler shuts down (`setup` registers that).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from common.models import Status
from scheduler.api.common import int_param, parse_revision, plane
from scheduler.api.errors import BadRequest, Gone, Invalid
from scheduler.api.tables import TABLE, watch_objects
from scheduler.kinds import ALL
from scheduler.objects import with_resource_version
from scheduler.store import KV, Compacted, Store

_LOGGER = logging.getLogger(__name__)

Keep = Callable[[KV], bool]
Closer = Callable[[], None]
ListHandler = TypeVar("ListHandler", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])
_WATCHABLE = "__corral_watchable__"


def watchable(handler: ListHandler) -> ListHandler:
    """Marks a list handler that answers `?watch=true` with a stream, so that discovery
    (scheduler/api/discovery.py) gives its resource the `watch` verb."""
    setattr(handler, _WATCHABLE, True)
    return handler


def is_watchable(handler: object) -> bool:
    return getattr(handler, _WATCHABLE, False) is True


class OpenStreams:
    """The close functions of the watches being streamed."""

    def __init__(self) -> None:
        self.closers: set[Closer] = set()


WATCHES: web.AppKey[OpenStreams] = web.AppKey("watches", OpenStreams)
_BATCH_BYTES = 64 * 1024


def setup(app: web.Application) -> None:
    """Keep track of open streams, and end them when the application shuts down."""
    app[WATCHES] = OpenStreams()

    async def close_all(app: web.Application) -> None:
        for close in list(app[WATCHES].closers):
            close()

    app.on_shutdown.append(close_all)


def wants_watch(request: web.Request) -> bool:
    raw = request.query.get("watch", "").lower()
    if raw not in ("", "true", "false", "1", "0"):
        raise BadRequest(f"query parameter watch: {raw!r} is not true or false")
    return raw in ("true", "1")


def _line(kind: str, obj: bytes) -> bytes:
    return b'{"type":"%s","object":%s}\n' % (kind.encode(), obj)


def _bookmark_line(prefix: str, revision: int) -> bytes:
    """The BOOKMARK that ends a watch-list's initial events: an object of the watched kind
    with only its resourceVersion and kube-apiserver's annotation."""
    kind = next(k for k in ALL if prefix.startswith(k.prefix))
    meta = {
        "resourceVersion": str(revision),
        "annotations": {"k8s.io/initial-events-end": "true"},
    }
    obj = {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}
    return _line("BOOKMARK", json.dumps(obj, separators=(",", ":")).encode())


def _send_initial_events(request: web.Request) -> bool | None:
    """`?sendInitialEvents=` (None: unset); it needs `resourceVersionMatch=NotOlderThan`
    (422 otherwise, kube-apiserver's answer)."""
    raw = request.query.get("sendInitialEvents", "").lower()
    if not raw:
        return None
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest(f"query parameter sendInitialEvents: {raw!r} is not true or false")
    if request.query.get("resourceVersionMatch") != "NotOlderThan":
        raise Invalid(
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
            "resourceVersionMatch to NotOlderThan"
        )
    if request.query.get("allowWatchBookmarks", "").lower() not in ("true", "1"):
        # Without the bookmark a client cannot tell where the listing ends.
        raise Invalid(
            "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting "
            "allowWatchBookmarks to true"
        )
    return raw in ("true", "1")


def _error_line(message: str) -> bytes:
    status = Status(code=410, reason="Expired", message=message)
    return json.dumps({"type": "ERROR", "object": status.to_dict()}).encode() + b"\n"


def event_type(kind: str, kv: KV, prev: KV | None, keep: Keep | None) -> str | None:
    """What a store event is to a watcher with this filter (None: nothing to send)."""
    if kind == "DELETE":
        return "DELETED" if keep is None or keep(kv) else None
    now = keep is None or keep(kv)
    before = prev is not None and (keep is None or keep(prev))
    if now:
        return "MODIFIED" if before else "ADDED"
    return "DELETED" if before else None


def history_filter(keep: Keep, store: Store) -> Keep:
    """`keep` for the versions a watch reads from the store's history, which leaves those
    the store has replaced as undecoded as they were. Filters decode what they test
    (`decode` caches the object on the KV), and the store releases the decoded objects
    of replaced versions (store/sqlite.py, DECODED_COMMITS): cached again, each version
    a watch replayed or lagged behind on would keep its tree until it left the history.
    A current version is cached as for any reader."""

    def kept(kv: KV) -> bool:
        if kv.obj is not None or store.latest(kv.key) is kv:
            return keep(kv)
        try:
            return keep(kv)
        finally:
            kv.obj = None

    return kept


async def serve_watch(request: web.Request, prefix: str, keep: Keep | None) -> web.StreamResponse:
    """Stream the changes under `prefix` that `keep` accepts (None: all of them)."""
    store = plane(request).store
    raw = request.query.get("resourceVersion", "")
    timeout = int_param(request, "timeoutSeconds")
    send_initial = _send_initial_events(request)
    bookmarks = request.query.get("allowWatchBookmarks", "").lower() in ("true", "1")
    initial: list[KV] = []
    wanted = None if raw in ("", "0") else parse_revision(raw)
    if wanted is None and raw not in ("", "0"):
        raise BadRequest(f"query parameter resourceVersion: {raw!r} is not a revision")
    if wanted is not None and wanted > store.revision:
        # No revision past the store's was ever handed out: one from another store (the
        # state directory made anew) would have this watch skip every change up to it.
        raise Gone(
            f"too large resource version: {wanted}, current: {store.revision}; "
            "list again and watch from the list's resourceVersion"
        )
    if send_initial or (wanted is None and send_initial is None):
        # The listing and the watch are taken without yielding to the loop in between,
        # so no change can fall between them.
        kvs, start = await store.list(prefix)
        initial = [kv for kv in kvs if keep is None or keep(kv)]
    else:
        start = store.revision if wanted is None else wanted
    try:
        watch = store.watch(prefix, start)
    except Compacted as exc:
        raise Gone(f"too old resource version: {start} ({exc})") from None
    table = request.get(TABLE)  # `kubectl get -w`: each object as a Table (api/tables.py)
    render = with_resource_version if table is None else watch_objects(table)
    watches = request.app[WATCHES].closers
    watches.add(watch.close)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    try:
        await response.prepare(request)
        buffer = bytearray()
        for kv in initial:
            buffer += _line("ADDED", render(kv))
            if len(buffer) >= _BATCH_BYTES:
                await response.write(bytes(buffer))
                buffer.clear()
        if send_initial and bookmarks:
            buffer += _bookmark_line(prefix, start)
        if buffer:
            await response.write(bytes(buffer))
        async with asyncio.timeout(timeout or None):  # 0: none, as Kubernetes' default
            replayed = None if keep is None else history_filter(keep, store)
            async for event in watch:
                kind = event_type(event.type, event.kv, event.prev, replayed)
                if kind is not None:
                    await response.write(_line(kind, render(event.kv)))
    except TimeoutError:
        pass  # timeoutSeconds: a clean end of the stream
    except Compacted as exc:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(_error_line(f"the watch fell behind: {exc}"))
    except (ConnectionError, RuntimeError):
        return response  # the client went away
    finally:
        watch.close()
        watches.discard(watch.close)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response
