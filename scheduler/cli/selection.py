"""What `corral get` and `corral delete` are pointed at, read as kubectl reads it.

    pods                   every pod (of the namespace, or of all with -A)
    pods web api           these pods
    pods,deployments       every object of both kinds
    pod/web deploy/api     these objects (every word TYPE/NAME)
    all                    pods, deployments and jobs

Without names, objects are listed (with --selector and --field-selector); with
names, each is fetched by its name and a missing one is an error of its own that
does not stop the others.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler.cli.client import ApiError, Client
from scheduler.cli.errors import CommandError
from scheduler.cli.getting import namespace_for
from scheduler.cli.kinds import GET_ALL, Resource, lookup, split_ref

Object = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One kind, and the names asked for (none: every object the selectors match)."""

    res: Resource
    names: tuple[str, ...] = ()


@dataclass
class Found:
    """What one target fetched: a list as the server sent it, or the named objects."""

    target: Target
    namespace: str | None  # None: every namespace, or a cluster-scoped kind
    document: Object | None  # the server's list; None when fetched by name
    items: list[Object] = field(default_factory=list)
    errors: list[ApiError] = field(default_factory=list)


def parse(words: Sequence[str]) -> list[Target]:
    """The targets of `RESOURCE [NAME...]` or `TYPE/NAME...`, kinds in the order given."""
    if any("/" in word for word in words):
        grouped: dict[Resource, list[str]] = {}
        for word in words:
            res, name = split_ref(word)
            if res is None:
                raise CommandError(
                    "there is no need to specify a resource type as a separate argument when "
                    "passing arguments in resource/name form (e.g. `corral get pod/web` "
                    "instead of `corral get pod pod/web`)"
                )
            grouped.setdefault(res, []).append(name)
        return [Target(res, tuple(names)) for res, names in grouped.items()]
    kinds, *names = words
    resources: list[Resource] = []
    for word in kinds.split(","):
        for res in GET_ALL if word.lower() == "all" else (lookup(word),):
            if res not in resources:
                resources.append(res)
    return [Target(res, tuple(names)) for res in resources]


def check_names(targets: Sequence[Target], args: argparse.Namespace) -> None:
    """kubectl's refusals for names: not with a selector, not across all namespaces."""
    named = [t for t in targets if t.names]
    if not named:
        return
    if args.selector or args.field_selector or getattr(args, "all", False):
        raise CommandError("name cannot be provided when a selector is specified")
    for target in named:
        if target.res.namespaced and namespace_for(args, target.res) is None:
            raise CommandError("a resource cannot be retrieved by name across all namespaces")


def fetch(client: Client, target: Target, args: argparse.Namespace) -> Found:
    """The target's objects: listed by the selectors, or fetched one name at a time."""
    res = target.res
    ns = namespace_for(args, res)
    if not target.names:
        document: Object = client.get(
            res.path(ns), labelSelector=args.selector, fieldSelector=args.field_selector
        )
        return Found(target, ns, document, list(document.get("items") or []))
    found = Found(target, ns, None)
    for name in target.names:
        try:
            found.items.append(_get_one(client, res, ns, name))
        except ApiError as error:
            found.errors.append(error)
    return found


def _get_one(client: Client, res: Resource, ns: str | None, name: str) -> Object:
    obj: Object = client.get(res.path(ns, name))
    return obj
