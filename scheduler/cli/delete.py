"""`corral delete`: by name, by selector, every object of a kind, or by manifest; then
wait until the objects are gone, as kubectl does.

What is deleted is read by `selection` (`pods web api`, `pods,jobs -l app=web`,
`deploy/web`, `pods --all -A`); each object gets one line (`pod "web" deleted`)
and a failure is reported without stopping the others. A selector that matches
nothing prints `No resources found` and succeeds; with a selector or --all, an
object that went away meanwhile is no error (kubectl's --ignore-not-found default).

Grace periods follow kubectl 1.2x: --now is 1 second; --force deletes at once
(grace period 0, with kubectl's warning); --grace-period=0 without --force is
taken as 1, so a pod is still seen to stop by its node before it is gone.

Waiting is the default, as in kubectl: a pod's delete only marks it Terminating
until its node has stopped it, and `corral delete pod web && corral apply -f
web.yaml` would otherwise race the old pod. Each object is looked up by name and,
if still there, followed through the watch stream until it is deleted (or its
name belongs to a new object, with another uid), all within --wait-timeout.
--wait=false returns as soon as the deletes are accepted.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from scheduler.cli import rollout, selection
from scheduler.cli.client import ApiError, Client
from scheduler.cli.commands import api_error_text
from scheduler.cli.errors import CommandError
from scheduler.cli.getting import err, follow, namespace_for, out
from scheduler.cli.kinds import NAMESPACES, Resource

Object = dict[str, Any]

CASCADE = {
    "background": "Background",
    "foreground": "Foreground",
    "orphan": "Orphan",
    "true": "Background",
    "false": "Orphan",
}
FORCE_WARNING = (
    "warning: Immediate deletion does not wait for confirmation that the running resource "
    "has been terminated. The resource may continue to run on the cluster indefinitely."
)


@dataclass(frozen=True)
class Deleted:
    """An object whose delete was accepted; `uid` tells it from a later one of its name."""

    res: Resource
    namespace: str | None
    name: str
    uid: str | None = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags only `delete` has."""
    p.add_argument(
        "--all", action="store_true", help="every object of the kinds (in the namespace, or -A)"
    )
    p.add_argument(
        "--grace-period",
        metavar="SECONDS",
        type=int,
        help="seconds a pod gets to stop (default: the pod's own; 0 is 1 unless --force)",
    )
    p.add_argument("--now", action="store_true", help="stop at once: --grace-period=1")
    p.add_argument(
        "--force",
        action="store_true",
        help="delete at once (grace period 0), without the node confirming the pod stopped",
    )
    p.add_argument(
        "--cascade",
        default="background",
        metavar="background|foreground|orphan",
        help="what happens to the pods of a deployment or job: deleted after it (background, "
        "the default), deleted before it (foreground: it goes once they have) or kept "
        "without an owner (orphan)",
    )
    p.add_argument(
        "--ignore-not-found", action="store_true", help="do not fail on what does not exist"
    )
    p.add_argument(
        "--wait",
        nargs="?",
        const=True,
        default=True,
        type=_boolean,
        metavar="true|false",
        help="wait until the objects are gone (default: true; --wait=false returns at once)",
    )
    p.add_argument(
        "--wait-timeout",
        metavar="SECONDS",
        type=rollout.wait_seconds,
        default=None,
        help="give up waiting after this long (default: no limit; kubectl's delete --timeout)",
    )


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: must be true or false")


def grace_period(given: int | None, *, now: bool, force: bool) -> int | None:
    """The gracePeriodSeconds to send (None: each object's own), by kubectl's rules."""
    if now:
        if given is not None:
            raise CommandError("--now and --grace-period cannot be specified together")
        given = 1
    if given is not None and given < 0:
        given = None  # kubectl's -1: the object's own
    if force:
        if given is not None and given > 0:
            raise CommandError(
                "--force and --grace-period greater than 0 cannot be specified together"
            )
        return 0
    # kubectl: 0 without --force is 1, so that a pod is still seen to stop by its node.
    return 1 if given == 0 else given


def propagation(cascade: str) -> str:
    try:
        return CASCADE[cascade.lower()]
    except KeyError:
        raise CommandError(
            f"--cascade={cascade}: must be background, foreground or orphan (or true/false)"
        ) from None


def delete(client: Client, args: argparse.Namespace) -> int:
    """`corral delete`: delete what the command line names, then (by default) wait."""
    grace = grace_period(args.grace_period, now=args.now, force=args.force)
    policy = propagation(args.cascade)
    objects, selecting = _objects(client, args)
    if args.force:
        err(FORCE_WARNING)
    if selecting and not objects:
        out("No resources found")
        return 0
    ignore_missing = args.ignore_not_found or selecting
    deleted: list[Deleted] = []
    failed = False
    for res, ns, name in objects:
        try:
            answer = client.delete(
                res.path(ns, name),
                gracePeriodSeconds=None if grace is None else str(grace),
                propagationPolicy=policy,
            )
        except ApiError as error:
            if error.code == 404 and ignore_missing:
                continue
            err(api_error_text(error))
            failed = True
            continue
        out(f'{res.display} "{name}" {"force deleted" if grace == 0 else "deleted"}')
        deleted.append(Deleted(res, ns, name, _uid(answer)))
    if args.wait and deleted:
        for late in wait_gone(client, deleted, args.wait_timeout):
            err(
                f"error: timed out after {args.wait_timeout:g}s waiting for "
                f'{late.res.display} "{late.name}" to be deleted'
            )
            failed = True
    return 1 if failed else 0


def _objects(
    client: Client, args: argparse.Namespace
) -> tuple[list[tuple[Resource, str | None, str]], bool]:
    """(kind, namespace, name) of each object to delete, and whether a selector chose them."""
    selecting = bool(args.selector or args.field_selector or args.all)
    if args.filename:
        if args.resource or args.names or selecting:
            raise CommandError("give either -f FILE or a resource with names or a selector")
        from scheduler.cli.apply import read_objects

        manifests = read_objects(args.filename, args.namespace)
        # Namespaces last: deleting one first would delete the rest of the file under us.
        manifests.sort(key=lambda m: m.res is NAMESPACES)
        return [(m.res, m.namespace, m.name) for m in manifests], False
    if not args.resource:
        raise CommandError(
            "say what to delete: `delete pod NAME`, `delete pods -l app=web`, "
            "`delete pods --all` or `delete -f FILE`"
        )
    if args.all and args.selector:
        raise CommandError("cannot set --all and --selector at the same time")
    if args.all and args.field_selector:
        raise CommandError("cannot set --all and --field-selector at the same time")
    targets = selection.parse([args.resource, *args.names])
    selection.check_names(targets, args)
    objects: list[tuple[Resource, str | None, str]] = []
    for target in targets:
        res = target.res
        if target.names:
            ns = namespace_for(args, res)
            objects.extend((res, ns, name) for name in target.names)
        elif selecting:
            for item in selection.fetch(client, target, args).items:
                meta = item.get("metadata") or {}
                ns = meta.get("namespace") if res.namespaced else None
                objects.append((res, ns, meta.get("name", "")))
        else:
            raise CommandError(
                "resource(s) were provided, but no name, label selector, or --all flag "
                f"specified (`delete {res.singular} NAME`, `-l SELECTOR` or `--all`)"
            )
    return objects, selecting


def _uid(answer: object) -> str | None:
    """The deleted object's uid: from the object sent back, or from a `Status`'s details."""
    if not isinstance(answer, dict):
        return None
    if answer.get("kind") == "Status":
        return (answer.get("details") or {}).get("uid")
    return (answer.get("metadata") or {}).get("uid")


def wait_gone(client: Client, deleted: list[Deleted], timeout: float | None) -> list[Deleted]:
    """Wait until every object is gone; those still there when `timeout` ran out. One
    list and one watch per collection, however many of its objects were deleted."""
    deadline = None if timeout is None else time.monotonic() + timeout
    collections: dict[str, list[Deleted]] = {}
    for obj in deleted:
        collections.setdefault(obj.res.path(obj.namespace), []).append(obj)
    late = []
    for path, objs in collections.items():
        left = None if deadline is None else deadline - time.monotonic()
        late += _still_there(client, path, objs, left)
    return late


def _still_there(
    client: Client, path: str, objs: list[Deleted], timeout: float | None
) -> list[Deleted]:
    """Those of `objs` (of the collection at `path`) not gone within `timeout`: followed
    (one list, then one watch, listed again past an expired watch or a lost server)
    until each is deleted or its name belongs to a new object."""
    waiting = {o.name: o for o in objs}
    # One object: by name, so that deleting one pod of thousands lists one.
    query: dict[str, str | None] = (
        {"fieldSelector": f"metadata.name={next(iter(waiting))}"} if len(waiting) == 1 else {}
    )
    known: dict[str, Object] = {o.name: {"metadata": {"name": o.name}} for o in objs}
    # Progress is an object gone, not any change in the collection (which may be busy).
    events = follow(
        client, path, query, timeout=timeout, known=known, progress=lambda: len(waiting)
    )
    for event in events:
        seen = event.get("object") or {}
        name = (seen.get("metadata") or {}).get("name")
        obj = waiting.get(name) if isinstance(name, str) else None
        if obj is not None and (event.get("type") == "DELETED" or not _is(seen, obj)):
            del waiting[obj.name]  # deleted, or its name already belongs to a new object
            if not waiting:
                break
    return list(waiting.values())


def _is(item: Object, obj: Deleted) -> bool:
    meta = item.get("metadata") or {}
    return bool(meta.get("name") == obj.name and (obj.uid is None or meta.get("uid") == obj.uid))
