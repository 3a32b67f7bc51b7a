"""Node routes: list, get (with live usage), update, patch, delete, cordon, uncordon, drain."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from common.models import Node, Status
from common.quantity import format_cpu
from common.selector import SelectorError, parse_selector
from common.selector import matches as selector_matches
from scheduler.api.common import (
    field_selector,
    json_response,
    name_param,
    plane,
    read_documents,
    require_url_name,
)
from scheduler.api.deleting import (
    check_preconditions,
    decoded_unless_unreadable,
    delete_options,
    removed_unread,
)
from scheduler.api.errors import BadRequest, ConflictError, modified
from scheduler.api.generic import Replace, get_kv, guarded_update, validate
from scheduler.api.paging import check_list_options, page
from scheduler.api.patch import patched, read_patch
from scheduler.api.watch import serve_watch, wants_watch, watchable
from scheduler.cluster import NodeState
from scheduler.controlplane import ControlPlane
from scheduler.eviction import evict_node_pods
from scheduler.kinds import NODES as NODE_KIND
from scheduler.objects import NODES, decode, encode, mutable_copy
from scheduler.store import KV, Conflict, NotFound


def _live(cp: ControlPlane, kv: KV) -> dict[str, object]:
    """The stored node with what only the scheduler's memory knows: usage, last heartbeat."""
    node = decode(kv, Node)
    data = node.to_dict()
    data["metadata"]["resourceVersion"] = str(kv.mod_revision)
    state: NodeState | None = cp.cluster.nodes.get(node.metadata.name)
    if state is not None and state.connected:
        import time

        age = time.monotonic() - state.last_heartbeat
        beat = datetime.now(UTC) - timedelta(seconds=age)
        data["status"]["lastHeartbeatTime"] = (
            beat.replace(microsecond=0).isoformat().replace("+00:00", "Z")
        )
        data["status"]["usage"] = {
            "cpu": format_cpu(state.usage_cpu),
            "memory": str(state.usage_mem),
        }
    return data


_FIELDS: dict[str, Callable[[Node], str]] = {
    "metadata.name": lambda n: n.metadata.name,
    "spec.unschedulable": lambda n: "true" if n.spec.unschedulable else "false",
}


@watchable
async def list_nodes(request: web.Request) -> web.StreamResponse:
    cp = plane(request)
    try:
        selector = parse_selector(request.query.get("labelSelector"))
    except SelectorError as exc:
        raise BadRequest(f"labelSelector: {exc}") from None
    fields = [(_FIELDS[f], value, neg) for f, value, neg in field_selector(request, _FIELDS)]

    def keep(kv: KV) -> bool:
        node = decode(kv, Node)
        return selector_matches(selector, node.metadata.labels) and all(
            (get(node) != value) if neg else (get(node) == value) for get, value, neg in fields
        )

    if wants_watch(request):  # the stored nodes, without live usage (scheduler/api/watch.py)
        return await serve_watch(request, NODES, keep)
    kvs, revision = await cp.store.list(NODES)
    check_list_options(request, revision)
    if selector or fields:
        kvs = [kv for kv in kvs if keep(kv)]
    kvs, more = page(request, kvs, NODES)  # ?limit= and ?continue=, as for pods
    metadata = {"resourceVersion": str(revision)} | ({"continue": more} if more else {})
    body = {
        "apiVersion": "v1",
        "kind": "NodeList",
        "metadata": metadata,
        "items": [_live(cp, kv) for kv in kvs],
    }
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


async def get_node(request: web.Request) -> web.Response:
    cp = plane(request)
    kv = await get_kv(cp.store, NODE_KIND, None, name_param(request))
    return json_response(_live(cp, kv))


def _replacer(request: web.Request) -> Replace:
    """A node's replace (for `guarded_update`, by PUT and PATCH): labels, annotations and
    `spec` (`unschedulable`); the status, and the rest of the metadata, are the agent's
    and the server's, and kept whatever the document says, as kube-apiserver keeps a
    node's status on a write to the node itself (its status has a route of its own)."""
    cp = plane(request)
    name = name_param(request)

    async def replace(doc: Any, kv: KV) -> web.Response:
        incoming: Node = validate(doc, NODE_KIND, None)
        require_url_name(incoming.metadata.name, name)
        current = decode(kv, Node)
        updated = mutable_copy(current)
        updated.metadata.labels = incoming.metadata.labels
        updated.metadata.annotations = incoming.metadata.annotations
        updated.spec = incoming.spec
        if updated == current:
            return json_response(_live(cp, kv))
        new = await cp.store.put(kv.key, encode(updated), obj=updated, expect=kv.mod_revision)
        return json_response(_live(cp, new))

    return replace


async def update_node(request: web.Request) -> web.Response:
    """Replace labels, annotations and `spec.unschedulable` (`kubectl replace`): the
    status in the body is ignored. Guarded by the body's `metadata.resourceVersion` (409
    if the node is at another); without one the update is made on the latest version."""
    cp = plane(request)
    docs = await read_documents(request)
    if len(docs) != 1:
        raise BadRequest(f"expected one Node, got {len(docs)} documents")
    name = name_param(request)
    return await guarded_update(
        cp.store,
        lambda: get_kv(cp.store, NODE_KIND, None, name),
        lambda kv: docs[0],
        _replacer(request),
        lambda: modified("nodes", name),
    )


async def patch_node(request: web.Request) -> web.Response:
    """Patch labels, annotations and `spec.unschedulable` (what `kubectl label`, `annotate`
    and `cordon` send)."""
    cp = plane(request)
    patch = await read_patch(request)
    name = name_param(request)
    return await guarded_update(
        cp.store,
        lambda: get_kv(cp.store, NODE_KIND, None, name),
        patched(patch),
        _replacer(request),
        lambda: modified("nodes", name),
    )


async def _set_unschedulable(cp: ControlPlane, name: str, value: bool) -> KV:
    for _attempt in range(5):
        kv = await get_kv(cp.store, NODE_KIND, None, name)
        node = decode(kv, Node)
        if node.spec.unschedulable == value:
            return kv
        updated = mutable_copy(node)
        updated.spec.unschedulable = value
        try:
            return await cp.store.put(kv.key, encode(updated), obj=updated, expect=kv.mod_revision)
        except (Conflict, NotFound):
            await cp.store.settled(kv.key)  # a write of it was queued: read it once durable
    raise ConflictError(f'nodes "{name}" kept changing; try again', name=name, kind="nodes")


async def cordon(request: web.Request) -> web.Response:
    cp = plane(request)
    return json_response(_live(cp, await _set_unschedulable(cp, name_param(request), True)))


async def uncordon(request: web.Request) -> web.Response:
    cp = plane(request)
    return json_response(_live(cp, await _set_unschedulable(cp, name_param(request), False)))


async def _move_pods(cp: ControlPlane, name: str, reason: str, message: str) -> tuple[int, int]:
    """Evict every unfinished pod bound to the node; (moved, failed for good)."""
    evicted = await evict_node_pods(cp.store, cp.cluster, cp.events, name, reason, message)
    cp.metrics.evictions.labels(reason=reason).inc(len(evicted))
    failed = sum(1 for pod in evicted if pod.spec.restart_policy == "Never")
    return len(evicted) - failed, failed


async def drain(request: web.Request) -> web.Response:
    """Cordon, then move every pod that is not finished (new incarnations elsewhere)."""
    cp = plane(request)
    name = name_param(request)
    await _set_unschedulable(cp, name, True)
    moved, failed = await _move_pods(cp, name, "Evicted", f"node {name} was drained")
    status = Status(
        status="Success",
        code=200,
        reason="Drained",
        message=f"node/{name} drained: {moved} pods rescheduled, {failed} pods with "
        "restartPolicy Never marked Failed",
    )
    return json_response(status.to_dict())


async def delete_node(request: web.Request) -> web.Response:
    """Forget a node: revoke its credential, drop its link, move its pods elsewhere."""
    cp = plane(request)
    name = name_param(request)
    options = await delete_options(request)
    kv = await get_kv(cp.store, NODE_KIND, None, name)
    # Its pods and link are found by name: one this corral cannot read goes the same way,
    # if the client said so (`readable_or_removed`'s option), answered without the object.
    node = decoded_unless_unreadable(kv, Node, options)
    if node is not None:
        check_preconditions(options, "nodes", name, node.metadata.uid, kv.mod_revision)
    # The credential goes first: if we stop half-way, the node can only join again
    # with the join token, never keep acting with the old credential.
    await cp.hub.credentials.revoke(name)
    try:
        await cp.store.delete(kv.key, expect=kv.mod_revision)
    except (Conflict, NotFound):
        raise ConflictError(
            f'nodes "{name}" changed meanwhile; try again', name=name, kind="nodes"
        ) from None
    try:
        await _move_pods(cp, name, "NodeLost", f"node {name} was deleted")
    finally:  # its link goes even if a move failed (the store failing: a 503)
        await cp.hub.forget_node(name)
    return json_response(_live(cp, kv)) if node is not None else removed_unread("nodes", name)


ROUTES = [
    web.get("/api/v1/nodes", list_nodes),
    web.get("/api/v1/nodes/{name}", get_node),
    web.put("/api/v1/nodes/{name}", update_node),
    web.patch("/api/v1/nodes/{name}", patch_node),
    web.delete("/api/v1/nodes/{name}", delete_node),
    web.post("/api/v1/nodes/{name}/cordon", cordon),
    web.post("/api/v1/nodes/{name}/uncordon", uncordon),
    web.post("/api/v1/nodes/{name}/drain", drain),
]
