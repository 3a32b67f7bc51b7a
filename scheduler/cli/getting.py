"""`corral get` for every kind beyond pods and nodes, `get all`, and `get -w` for all kinds.

`-w` prints the table once, then a row for every change, read from the API's
watch stream (`?watch=true`, one JSON event a line), starting at the list's
resourceVersion so that nothing between the two is missed. A stream the server
ends (a restart, a timeout) is picked up again from the last version seen.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler.cli import printers, tables
from scheduler.cli.client import Client
from scheduler.cli.errors import CommandError
from scheduler.cli.kinds import (
    DEPLOYMENTS,
    EVENTS,
    GET_ALL,
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
        return printers.events_table(items, now, namespaces=namespaces)
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


def watch_events(
    client: Client,
    path: str,
    query: dict[str, str | None],
    resource_version: str | None = None,
    *,
    timeout: float | None = None,
) -> Iterator[Object]:
    """Each event of a watch of `path`, reconnecting from the last version until `timeout`."""
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
                    raise CommandError(f"watch ended: {obj.get('message', 'expired')}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                yield event
        if deadline is not None and time.monotonic() >= deadline:
            return


def get(client: Client, args: argparse.Namespace, res: Resource) -> int:
    """`corral get RES [NAME]` for namespaces, deployments, jobs, controllerrevisions."""
    ns = namespace_for(args, res)
    query = {"labelSelector": args.selector, "fieldSelector": args.field_selector}
    if args.name:
        if args.selector or args.field_selector:
            raise CommandError("a name cannot be combined with --selector or --field-selector")
        if res.namespaced and ns is None:
            raise CommandError(
                f"a {res.singular} cannot be retrieved by name across all namespaces"
            )
        obj: Object = client.get(res.path(ns, args.name))
        document: Object = obj
        items = [obj]
    else:
        document = client.get(res.path(ns), **query)
        items = list(document.get("items") or [])
    if getattr(args, "watch", False):
        return watch(client, args, res, items, document)
    return show(args, res, document, items, ns)


def show(
    args: argparse.Namespace, res: Resource, document: Object, items: list[Object], ns: str | None
) -> int:
    fmt = args.output
    if fmt in ("json", "yaml"):
        out(printers.dump(document, fmt))
        return 0
    if fmt == "name":
        out("\n".join(res.ref((o.get("metadata") or {}).get("name", "")) for o in items))
        return 0
    if not items:
        where = f" in {ns} namespace" if ns else ""
        err(f"No resources found{where}.")
        return 0
    items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"].get("name", "")))
    out(render(res, items, _now(), wide=fmt == "wide", namespaces=res.namespaced and ns is None))
    return 0


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


def get_all(client: Client, args: argparse.Namespace) -> int:
    """`corral get all`: pods, deployments and jobs, each section named kubectl's way."""
    sections = []
    for res in GET_ALL:
        ns = namespace_for(args, res)
        document = client.get(res.path(ns), labelSelector=args.selector)
        items = list(document.get("items") or [])
        if args.output in ("json", "yaml"):
            sections.extend(items)
            continue
        if not items:
            continue
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        if args.output == "name":
            out("\n".join(res.ref(o["metadata"]["name"]) for o in items))
            continue
        for item in items:
            item["metadata"]["name"] = res.ref(item["metadata"]["name"])
        sections.append(
            render(res, items, _now(), wide=args.output == "wide", namespaces=ns is None)
        )
    if args.output in ("json", "yaml"):
        out(printers.dump({"apiVersion": "v1", "kind": "List", "items": sections}, args.output))
        return 0
    if args.output == "name":
        return 0
    if not sections:
        where = namespace_for(args, PODS)
        err(f"No resources found{f' in {where} namespace' if where else ''}.")
        return 0
    out("\n\n".join(s for s in sections if isinstance(s, str)))
    return 0
