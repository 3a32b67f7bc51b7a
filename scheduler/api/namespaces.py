"""Namespace routes: list (and watch), create, get, relabel (PUT, PATCH), delete (emptying it).

`default` always exists and cannot be deleted. Creating an object in a
namespace that does not exist is refused with 404, as in Kubernetes; creating
one in a namespace being deleted, with 403.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common.models import Namespace, NamespaceStatus, now
from scheduler.api.common import json_response, name_param, plane, read_documents, require_url_name
from scheduler.api.deleting import (
    check_preconditions,
    delete_options,
    readable_or_removed,
    removed_unread,
)
from scheduler.api.errors import BadRequest, ConflictError, Forbidden, modified
from scheduler.api.generic import (
    Replace,
    create_object,
    get_kv,
    guarded_update,
    list_objects,
    named,
    stamp_new,
    validate,
)
from scheduler.api.patch import patched, read_patch
from scheduler.api.watch import watchable
from scheduler.kinds import DEFAULT_NAMESPACE, NAMESPACES
from scheduler.objects import decode, encode, mutable_copy, with_resource_version
from scheduler.store import KV, Conflict, NotFound


async def _one_document(request: web.Request) -> Any:
    docs = await read_documents(request)
    if len(docs) != 1:
        raise BadRequest(f"expected one Namespace, got {len(docs)} documents")
    return docs[0]


@watchable
async def list_namespaces(request: web.Request) -> web.StreamResponse:
    """`NamespaceList` (labelSelector, fieldSelector=metadata.name=..., watch)."""
    return await list_objects(request, NAMESPACES, None)


async def create_namespace(request: web.Request) -> web.Response:
    """Create a Namespace (201)."""
    doc = await _one_document(request)

    def build() -> Namespace:
        ns: Namespace = validate(doc, NAMESPACES, None)
        stamp_new(ns)
        ns.metadata.labels.setdefault("kubernetes.io/metadata.name", ns.metadata.name)
        ns.spec.with_namespace_finalizer()
        return ns

    kv = await create_object(plane(request).store, NAMESPACES, None, *named(doc, build))
    return json_response(with_resource_version(kv), status=201)


async def get_namespace(request: web.Request) -> web.Response:
    """One Namespace."""
    kv = await get_kv(plane(request).store, NAMESPACES, None, name_param(request))
    return json_response(with_resource_version(kv))


def _replacer(request: web.Request) -> Replace:
    """A namespace's replace (for `guarded_update`): labels and annotations. Its
    `spec.finalizers` is kept, as kube-apiserver keeps it on an update (it changes only
    through the `finalize` subresource, which corral does not serve)."""
    name = name_param(request)
    store = plane(request).store

    async def replace(doc: Any, kv: KV) -> web.Response:
        incoming: Namespace = validate(doc, NAMESPACES, None)
        require_url_name(incoming.metadata.name, name)
        current = decode(kv, Namespace)
        updated = mutable_copy(current)
        updated.metadata.labels = dict(incoming.metadata.labels)
        updated.metadata.labels.setdefault("kubernetes.io/metadata.name", name)
        updated.metadata.annotations = incoming.metadata.annotations
        if updated == current:
            return json_response(with_resource_version(kv))  # no change, no new version
        new = await store.put(kv.key, encode(updated), obj=updated, expect=kv.mod_revision)
        return json_response(with_resource_version(new))

    return replace


async def update_namespace(request: web.Request) -> web.Response:
    """Replace labels and annotations (guarded by resourceVersion when given; without,
    tried again on a conflict)."""
    name = name_param(request)
    store = plane(request).store
    await get_kv(store, NAMESPACES, None, name)
    doc = await _one_document(request)
    return await guarded_update(
        store,
        lambda: get_kv(store, NAMESPACES, None, name),
        lambda kv: doc,
        _replacer(request),
        lambda: modified("namespaces", name),
    )


async def patch_namespace(request: web.Request) -> web.Response:
    """Patch labels and annotations; the patched namespace is replaced as PUT does."""
    patch = await read_patch(request)
    name = name_param(request)
    store = plane(request).store
    return await guarded_update(
        store,
        lambda: get_kv(store, NAMESPACES, None, name),
        patched(patch),
        _replacer(request),
        lambda: modified("namespaces", name),
    )


async def delete_namespace(request: web.Request) -> web.Response:
    """Mark the namespace Terminating; everything in it is deleted, then the namespace."""
    name = name_param(request)
    if name == DEFAULT_NAMESPACE:
        raise Forbidden(
            f'namespaces "{name}" is forbidden: this namespace may not be deleted',
            name=name,
            kind="namespaces",
        )
    options = await delete_options(request)
    store = plane(request).store
    for _attempt in range(5):
        kv = await get_kv(store, NAMESPACES, None, name)
        ns = await readable_or_removed(store, kv, Namespace, options)
        if ns is None:
            return removed_unread("namespaces", name)
        check_preconditions(options, "namespaces", name, ns.metadata.uid, kv.mod_revision)
        if ns.status.phase == "Terminating":
            return json_response(with_resource_version(kv))
        marked = mutable_copy(ns)
        marked.metadata.deletion_timestamp = now()
        marked.status = NamespaceStatus(phase="Terminating")
        try:
            new = await store.put(kv.key, encode(marked), obj=marked, expect=kv.mod_revision)
        except (Conflict, NotFound):
            await store.settled(kv.key)  # a write of it was queued: read it once durable
            continue
        return json_response(with_resource_version(new))
    raise ConflictError(f'namespaces "{name}" kept changing; try again', name=name)


ROUTES = [
    web.get("/api/v1/namespaces", list_namespaces),
    web.post("/api/v1/namespaces", create_namespace),
    web.get("/api/v1/namespaces/{name}", get_namespace),
    web.put("/api/v1/namespaces/{name}", update_namespace),
    web.patch("/api/v1/namespaces/{name}", patch_namespace),
    web.delete("/api/v1/namespaces/{name}", delete_namespace),
]
