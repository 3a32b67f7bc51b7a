"""The table of every kind `corral get` shows, and `get -w` (the rest is in get.py).

`-w` prints the table once, then a row for every change, read from the API's
watch stream (`?watch=true`, one JSON event a line), starting at the list's
resourceVersion so that nothing between the two is missed. A stream the server
ends (a restart, a timeout) is picked up again from the last version seen.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler.cli import printers, tables
from scheduler.cli.client import ApiError, Client, ClientError, ConnectionFailed
from scheduler.cli.errors import CommandError
from scheduler.cli.kinds import (
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    NAMESPACES,
    NODES,
    PODS,
    REVISIONS,
    Resource,
)

Object = dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def out(text: str) -> None:
    if text:
        print(text, flush=True)


def err(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def render(
    res: Resource,
    items: Sequence[Object],
    now: datetime,
    *,
    wide: bool = False,
    namespaces: bool = False,
) -> str:
    """The table of `items` as `corral get RES` prints it."""
    if res is PODS:
        return printers.pods_table(items, now, wide=wide, namespaces=namespaces)
    if res is NODES:
        return printers.nodes_table(items, now, wide=wide)
    if res is EVENTS:
        return printers.events_table(items, now, wide=wide, namespaces=namespaces)
    if res is DEPLOYMENTS:
        return tables.deployments_table(items, now, wide=wide, namespaces=namespaces)
    if res is JOBS:
        return tables.jobs_table(items, now, wide=wide, namespaces=namespaces)
    if res is NAMESPACES:
        return tables.namespaces_table(items, now)
    if res is REVISIONS:
        return tables.revisions_table(items, now, namespaces=namespaces)
    raise CommandError(f"cannot print {res.plural}")


def namespace_for(args: argparse.Namespace, res: Resource) -> str | None:
    if not res.namespaced or getattr(args, "all_namespaces", False):
        return None
    return getattr(args, "namespace", None) or "default"


class WatchExpired(CommandError):
    """The server can no longer stream changes from the version asked (410 Expired: the
    watcher fell behind, or the version is older than the store's history): list again
    and watch from the list's version, as client-go's reflectors do."""


# Pauses before listing or watching again after the server expired a watch or was lost,
# and how many expiries in a row with no progress meanwhile it takes before the command
# gives up.
RELIST_PAUSES = (0.1, 0.2, 0.5, 1.0, 2.0)
# How long a command following objects keeps trying a server it lost mid-way (restarted,
# upgraded) before it gives up: long enough for a scheduler to load its state again.
RECONNECT_SECONDS = 60.0


class Retries:
    """When a command that follows objects (a wait) lists and watches again, as
    client-go's reflector does: after the server expired its watch (410), with a pause
    that grows while nothing progresses, the expiry raised once len(RELIST_PAUSES) came
    in a row; or after the server was lost (a restart), with the same growing pauses,
    for up to RECONNECT_SECONDS and not past the deadline. Any other error is raised at
    once."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.expired_in_a_row = 0
        self.lost_since: float | None = None
        self.lost_tries = 0

    def listing(self, client: Client, path: str, query: dict[str, str | None]) -> Object | None:
        """The list of `path`; None, after the pause, if the server was lost (list again)."""
        try:
            listed: Object = client.get(path, **query)
        except ConnectionFailed as exc:
            self.pause_after(exc, progressed=False)
            return None
        self.lost_since, self.lost_tries = None, 0  # found again
        return listed

    def pause_after(self, error: ClientError | CommandError, *, progressed: bool) -> None:
        """Sleep before the next try, or raise `error`."""
        now = time.monotonic()
        if isinstance(error, ConnectionFailed):
            self.lost_since = now if self.lost_since is None else self.lost_since
            late = self.deadline is not None and now >= self.deadline
            if late or now - self.lost_since >= RECONNECT_SECONDS:
                raise error
            pause = RELIST_PAUSES[min(self.lost_tries, len(RELIST_PAUSES) - 1)]
            self.lost_tries += 1
        elif isinstance(error, WatchExpired) or (isinstance(error, ApiError) and error.code == 410):
            self.expired_in_a_row = 0 if progressed else self.expired_in_a_row + 1
            if self.expired_in_a_row >= len(RELIST_PAUSES):
                raise error
            pause = RELIST_PAUSES[self.expired_in_a_row]
        else:
            raise error
        if self.deadline is not None:
            pause = min(pause, max(0.0, self.deadline - now))
        time.sleep(pause)


def follow(
    client: Client,
    path: str,
    query: dict[str, str | None],
    *,
    timeout: float | None,
    known: dict[str, Object] | None = None,
    progress: Callable[[], object] | None = None,
) -> Iterator[Object]:
    """The objects of `path` that `query` selects, then each change of them, until
    `timeout`, as client-go's UntilWithSync sees them: listed (each listed object an
    ADDED, or a MODIFIED once seen), then watched from the list's version. A watch the
    server expires, or a server lost, is followed by a list again (`Retries`: any event,
    or a list that differs from the one before, is progress), where one seen before and
    missing now is a DELETED, so no outcome is missed while the watch was down.

    `known`: the objects as the caller saw them (by name), taken as seen before the
    first list, which then tells of each as MODIFIED or DELETED. `progress`: what the
    caller counts as progress, a measure of it that changes when it progresses (how many
    objects it still waits for), instead of any change of the objects followed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    retries = Retries(deadline)
    known = dict(known or {})  # name -> the object as last seen
    listed_before = False
    while True:
        measure = progress() if progress is not None else None
        listed = retries.listing(client, path, query)
        if listed is None:
            continue
        changed = False
        present = set()
        for item in listed.get("items") or []:
            name = (item.get("metadata") or {}).get("name", "")
            present.add(name)
            before = known.get(name)
            if before is not None and _version(before) == _version(item):
                continue
            changed = True
            known[name] = item
            yield {"type": "ADDED" if before is None else "MODIFIED", "object": item}
        for name in [n for n in known if n not in present]:
            changed = True
            yield {"type": "DELETED", "object": known.pop(name)}
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        version = (listed.get("metadata") or {}).get("resourceVersion")
        seen = 0
        try:
            for event in watch_events(client, path, query, version, timeout=left):
                seen += 1
                obj = event.get("object") or {}
                name = (obj.get("metadata") or {}).get("name", "")
                if event.get("type") == "DELETED":
                    known.pop(name, None)
                else:
                    known[name] = obj
                yield event
            return
        except (WatchExpired, ApiError, ConnectionFailed) as exc:
            if progress is not None:
                progressed = progress() != measure
            else:
                progressed = (changed and listed_before) or seen > 0
            retries.pause_after(exc, progressed=progressed)
        listed_before = True


def _version(obj: Object) -> object:
    return (obj.get("metadata") or {}).get("resourceVersion")


def watch_events(
    client: Client,
    path: str,
    query: dict[str, str | None],
    resource_version: str | None = None,
    *,
    timeout: float | None = None,
) -> Iterator[Object]:
    """Each event of a watch of `path`, reconnecting from the last version until `timeout`.

    Raises `WatchExpired` when the server ends the watch with 410 Expired, `ApiError`
    (410 among others) when it refuses it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    version = resource_version
    while True:
        params = dict(query, watch="true", resourceVersion=version)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            params["timeoutSeconds"] = str(max(int(left), 1))
        buffer = b""
        for chunk in client.stream(path, **params):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    message = f"watch ended: {obj.get('message', 'expired')}"
                    raise WatchExpired(message) if obj.get("code") == 410 else CommandError(message)
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                yield event
        if deadline is not None and time.monotonic() >= deadline:
            return


def watch(
    client: Client, args: argparse.Namespace, res: Resource, items: list[Object], document: Object
) -> int:
    """Print the table, then one row (or object) per change until interrupted."""
    ns = namespace_for(args, res)
    fmt = args.output
    wide, namespaces = fmt == "wide", res.namespaced and ns is None
    dumped = 0

    def dump(obj: Object) -> None:
        nonlocal dumped
        if fmt == "yaml" and dumped:
            out("---")  # a stream of YAML documents, as kubectl prints it
        out(printers.dump(obj, str(fmt)))
        dumped += 1

    if fmt in ("json", "yaml"):
        for item in items:
            dump(item)
    elif fmt == "name":
        for item in items:
            out(res.ref(item["metadata"].get("name", "")))
    elif items:
        out(render(res, items, _now(), wide=wide, namespaces=namespaces))
    header_shown = bool(items)  # else the table's header comes with the first change
    version = (document.get("metadata") or {}).get("resourceVersion")
    query: dict[str, str | None] = {
        "labelSelector": args.selector,
        "fieldSelector": f"metadata.name={args.name}" if args.name else args.field_selector,
    }
    if res is NODES:
        query["fieldSelector"] = None  # nodes are filtered by name here, below
    for event in watch_events(client, res.path(ns), query, version):
        obj = event["object"]
        if args.name and (obj.get("metadata") or {}).get("name") != args.name:
            continue
        if fmt in ("json", "yaml"):
            dump(obj)
        elif fmt == "name":
            out(res.ref(obj["metadata"].get("name", "")))
        else:
            lines = render(res, [obj], _now(), wide=wide, namespaces=namespaces).splitlines()
            if not header_shown:
                out(lines[0])
                header_shown = True
            out(lines[-1])
    return 0
