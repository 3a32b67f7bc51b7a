"""Event routes: list events, everywhere or per namespace, filtered by the object concerned;
get one by name."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from common.models import Event
from common.selector import SelectorError, parse_selector
from common.selector import matches as selector_matches
from scheduler.api.common import field_selector, json_response, name_param, namespace_param, plane
from scheduler.api.errors import BadRequest
from scheduler.api.generic import get_kv
from scheduler.api.paging import POSITION_SEP, check_list_options, page, with_continue
from scheduler.api.watch import serve_watch, wants_watch, watchable
from scheduler.events import EVENTS, event_key
from scheduler.kinds import EVENTS as EVENTS_KIND
from scheduler.objects import decode, list_json, with_resource_version
from scheduler.store import KV

_FIELDS: dict[str, Callable[[Event], str]] = {
    "involvedObject.kind": lambda e: e.involved_object.kind,
    "involvedObject.name": lambda e: e.involved_object.name,
    "involvedObject.namespace": lambda e: e.involved_object.namespace or "",
    "involvedObject.uid": lambda e: e.involved_object.uid or "",
    "reason": lambda e: e.reason,
    "type": lambda e: e.type,
}


@watchable
async def list_events(request: web.Request) -> web.StreamResponse:
    """Events, oldest first (`fieldSelector=involvedObject.name=web,type!=Normal`), in
    pages with `?limit=` and `?continue=`."""
    namespace = namespace_param(request) if "namespace" in request.match_info else None
    wanted = [(_FIELDS[f], value, neg) for f, value, neg in field_selector(request, _FIELDS)]
    try:
        labels = parse_selector(request.query.get("labelSelector"))
    except SelectorError as exc:
        raise BadRequest(f"labelSelector: {exc}") from None

    def keep(kv: KV) -> bool:
        event = decode(kv, Event)
        return all((get(event) != v) if neg else (get(event) == v) for get, v, neg in wanted) and (
            not labels or selector_matches(labels, event.metadata.labels)
        )

    store = plane(request).store
    prefix = event_key(namespace, "") if namespace else EVENTS
    if wants_watch(request):
        return await serve_watch(request, prefix, keep if wanted or labels else None)
    kvs, revision = await store.list(prefix)
    check_list_options(request, revision)
    if wanted or labels:
        kvs = [kv for kv in kvs if keep(kv)]
    position = _position(plane(request).events.recorded_order)
    kvs.sort(key=position)
    kvs, more = page(request, kvs, prefix, position)  # ?limit= and ?continue=, as for pods
    return json_response(with_continue(list_json("EventList", kvs, revision), more))


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _position(recorded_order: Callable[[str], int]) -> Callable[[KV], str]:
    """Where an event stands in a list (api/paging.py): oldest first, by its last time
    (an event without one first), then by the revision it was last written at, then in
    the order it was recorded (events are stamped to the second, and one flush writes
    many in one revision: their keys are digests, in no order of time). Each part is
    of one width, so that the string sorts as the times and numbers do."""

    def position(kv: KV) -> str:
        when = (decode(kv, Event).last_timestamp or _EPOCH).isoformat(timespec="microseconds")
        order = f"{kv.mod_revision:020d}{POSITION_SEP}{recorded_order(kv.key):020d}"
        return f"{when}{POSITION_SEP}{order}{POSITION_SEP}{kv.key}"

    return position


async def get_event(request: web.Request) -> web.Response:
    store, namespace, name = plane(request).store, namespace_param(request), name_param(request)
    return json_response(with_resource_version(await get_kv(store, EVENTS_KIND, namespace, name)))


ROUTES = [
    web.get("/api/v1/events", list_events),
    web.get("/api/v1/namespaces/{namespace}/events", list_events),
    web.get("/api/v1/namespaces/{namespace}/events/{name}", get_event),
]
