"""Namespaces: `default` always exists; deleting one deletes everything in it, then it.

`DELETE /api/v1/namespaces/NAME` marks the namespace Terminating (the API then
refuses new objects in it). This controller deletes what it holds, owners
first (Deployments, Jobs, then ControllerRevisions and pods, pods gracefully
through their agents) and removes the Namespace once no pod is left. Events
in it are left to expire with the others (the event recorder owns their keys).

`ensure_namespaces` runs at start: it creates `default`, and a Namespace for
any namespace that holds objects but has none (a store from before namespaces
were objects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from common.models import NAMESPACE_FINALIZER, Namespace, NamespaceSpec, ObjectMeta, now
from scheduler.context import Context
from scheduler.controllers.base import Controller
from scheduler.controllers.cache import ObjectCache
from scheduler.controllers.podcontrol import delete_pod
from scheduler.kinds import DEFAULT_NAMESPACE, DEPLOYMENTS, JOBS, NAMESPACES, PODS, REVISIONS
from scheduler.objects import encode
from scheduler.store import Conflict, NotFound, Store

_LOGGER = logging.getLogger(__name__)

POLL_SECONDS = 0.5


def new_namespace(name: str) -> Namespace:
    return Namespace(
        metadata=ObjectMeta(
            name=name,
            uid=str(uuid.uuid4()),
            labels={"kubernetes.io/metadata.name": name},
            creation_timestamp=now(),
        ),
        spec=NamespaceSpec(finalizers=[NAMESPACE_FINALIZER]),
    )


async def ensure_namespaces(store: Store) -> list[str]:
    """Create `default` and the namespaces objects already live in; the names created."""
    names = {DEFAULT_NAMESPACE}
    for kind in (PODS, DEPLOYMENTS, JOBS):
        kvs, _ = await store.list(kind.prefix)
        names.update(kv.key[len(kind.prefix) :].split("/", 1)[0] for kv in kvs)
    created = []
    for name in sorted(names):
        key = NAMESPACES.key(None, name)
        if await store.get(key) is not None:
            continue
        ns = new_namespace(name)
        with contextlib.suppress(Conflict):
            await store.put(key, encode(ns), obj=ns, expect=0)
            created.append(name)
    if created:
        _LOGGER.info("created namespaces %s", ", ".join(created))
    return created


class NamespaceController(Controller):
    name = "namespace"
    workers = 1

    def __init__(self, ctx: Context, namespaces: ObjectCache[Namespace]) -> None:
        super().__init__(ctx)
        self.namespaces = namespaces

    def keys(self) -> list[str]:
        return [k for k, ns in self.namespaces.objects.items() if ns.status.phase == "Terminating"]

    async def reconcile(self, key: str) -> float | None:
        ns = self.namespaces.get(key)
        if ns is None or ns.status.phase != "Terminating":
            return None
        name = ns.metadata.name
        remaining = 0
        for kind in (DEPLOYMENTS, JOBS, REVISIONS):
            kvs, _ = await self.store.list(kind.namespace_prefix(name))
            for kv in kvs:
                # Unguarded, as the API deletes an owner: an edit or a status written since
                # the list changes nothing about its going, and a guard that failed here
                # left it behind in a namespace that no longer exists.
                with contextlib.suppress(NotFound):
                    await self.store.delete(kv.key)
        pods, _ = await self.store.list(PODS.namespace_prefix(name))
        remaining += len(pods)
        await asyncio.gather(*(delete_pod(self.store, self.cluster, kv.key) for kv in pods))
        if remaining:
            return POLL_SECONDS
        ns_kv = self.namespaces.kvs.get(key)
        if ns_kv is not None:
            with contextlib.suppress(Conflict, NotFound):
                await self.store.delete(key, expect=ns_kv.mod_revision)
                _LOGGER.info("namespace %s deleted", name)
        return None
