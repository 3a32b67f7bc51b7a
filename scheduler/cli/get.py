"""`corral get`: one or several kinds, one or several names, in kubectl's output shapes.

What to show is read by `selection` (`pods web api`, `pods,deployments`,
`deploy/web pod/api`, `all`). Tables come one per kind, a blank line between;
when several kinds are asked for, names are shown as TYPE/NAME
(`deployment.apps/web`), as kubectl shows them. `-o json|yaml` prints one named
object as itself, one kind's list as the server's list object (`PodList`...),
and anything more as a `List`; `-o name` prints TYPE/NAME lines. Lists are in
namespace and name order (events oldest first), named objects in the order asked
for; `--sort-by` reorders each kind's objects (tables, names and lists alike). A
name that is not found is reported after the output and makes the exit code 1,
as in kubectl.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from scheduler.cli import getting, jsonpath, printers, selection
from scheduler.cli.client import Client
from scheduler.cli.commands import api_error_text
from scheduler.cli.errors import CommandError
from scheduler.cli.kinds import EVENTS
from scheduler.cli.selection import Found, Target

Object = dict[str, Any]


def get(client: Client, args: argparse.Namespace) -> int:
    """`corral get RESOURCE[,RESOURCE...] [NAME...]` or `corral get TYPE/NAME...`."""
    if args.sort_by:
        jsonpath.parse(args.sort_by)  # a malformed path is refused before any request
    targets = selection.parse([args.resource, *args.names])
    selection.check_names(targets, args)
    if getattr(args, "watch", False):
        return _watch(client, args, targets)
    found = [selection.fetch(client, target, args) for target in targets]
    for each in found:
        each.items = ordered(each, args.sort_by)
    show(args, found)
    errors = [error for each in found for error in each.errors]
    for error in errors:
        getting.err(api_error_text(error))
    return 1 if errors else 0


def ordered(found: Found, sort_by: str | None) -> list[Object]:
    """A list in (namespace, name) order (events oldest first, as the server sends them),
    named objects as asked; then by `sort_by`."""
    items = found.items
    if found.document is not None and found.target.res is not EVENTS:
        items = sorted(
            items, key=lambda o: (_meta(o).get("namespace") or "", _meta(o).get("name") or "")
        )
    return jsonpath.sort_objects(items, sort_by) if sort_by else items


def show(args: argparse.Namespace, found: list[Found]) -> None:
    """Print what was found in the format of `-o`."""
    fmt = args.output
    if fmt in ("json", "yaml"):
        document = _document(found)
        if document is not None:
            getting.out(printers.dump(document, fmt))
        return
    if fmt == "name":
        refs = [f.target.res.ref(_meta(o).get("name", "")) for f in found for o in f.items]
        getting.out("\n".join(refs))
        return
    several = len(found) > 1
    now = datetime.now(UTC)
    sections = []
    for each in found:
        res, items = each.target.res, each.items
        if not items:
            continue
        if several:  # as kubectl: `pod/web`, `deployment.apps/web`
            items = [_named(o, res.ref(_meta(o).get("name", ""))) for o in items]
        namespaces = res.namespaced and each.namespace is None
        sections.append(getting.render(res, items, now, wide=fmt == "wide", namespaces=namespaces))
    if sections:
        getting.out("\n\n".join(sections))
    elif not any(each.errors for each in found):
        where = next((f.namespace for f in found if f.namespace), None)
        getting.err(f"No resources found{f' in {where} namespace' if where else ''}.")


def _document(found: list[Found]) -> Object | None:
    """The object, the server's list, or a `List` of everything (None: nothing to print)."""
    if len(found) == 1:
        only = found[0]
        if only.document is not None:
            return dict(only.document, items=only.items)
        if len(only.target.names) == 1:
            return only.items[0] if only.items else None
    items = [_typed(o, f.target) for f in found for o in f.items]
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def _watch(client: Client, args: argparse.Namespace, targets: list[Target]) -> int:
    """`get -w`: one kind, or one object of it; the list (or object), then every change."""
    if len(targets) != 1 or len(targets[0].names) > 1:
        raise CommandError("watch is only supported on one kind of object, or on one object")
    if args.sort_by:
        raise CommandError("--sort-by cannot be combined with --watch")
    target = targets[0]
    found = selection.fetch(client, target, args)
    if found.errors:
        raise found.errors[0]
    name = target.names[0] if target.names else None
    document = found.document if found.document is not None else found.items[0]
    watching = argparse.Namespace(**vars(args), name=name)
    return getting.watch(client, watching, target.res, found.items, document)


def _meta(obj: Object) -> Object:
    meta: Object = obj.get("metadata") or {}
    return meta


def _named(obj: Object, name: str) -> Object:
    """A shallow copy of `obj` shown under another name; the object itself is left as is."""
    return dict(obj, metadata=dict(_meta(obj), name=name))


def _typed(obj: Object, target: Target) -> Object:
    """Items of a `List` of several kinds say what they are, as kubectl's do."""
    return {"apiVersion": target.res.api_version, "kind": target.res.kind, **obj}
