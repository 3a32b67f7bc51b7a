"""List pages: `?limit=N` (1..MAX_LIST_LIMIT) and `?continue=TOKEN`, as in Kubernetes;
and which revision a list may be read at (`?resourceVersion=` and `resourceVersionMatch`).

A list is in the order of its items' positions (`Position`): most by key, as
kube-apiserver lists, events by time. A page ends after `limit` items and its
`metadata.continue` names where the next one starts (the last item's position,
opaque to clients). Unlike Kubernetes, a later page is read from the store as it is
then, not from the first page's snapshot: an object created, deleted or (where the
order is not by key) moved between pages may be seen or missed once, and
`metadata.resourceVersion` is the page's own.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable

from aiohttp import web

from common.limits import MAX_LIST_LIMIT
from scheduler.api.common import int_param, parse_revision
from scheduler.api.errors import BadRequest, Gone
from scheduler.store import KV

# Where an item stands in its list: a string that sorts as the list is ordered and ends
# with the item's key after POSITION_SEP (or is the key): keys are unique, so no two items
# stand at one place, and a token names the list its key is under.
Position = Callable[[KV], str]
POSITION_SEP = "\x00"  # in no key, and before every character that is


def by_key(kv: KV) -> str:
    """The position of an item in a list in key order."""
    return kv.key


def _token(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def _start(request: web.Request, prefix: str) -> str | None:
    """The position the page starts after, from `?continue=`; 400 if it is not ours."""
    token = request.query.get("continue")
    if not token:
        return None
    try:
        position = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = ""
    if not position.rpartition(POSITION_SEP)[2].startswith(prefix):
        raise BadRequest("query parameter continue: not a continue token of this list")
    return position


def page(
    request: web.Request, kvs: list[KV], prefix: str, position: Position = by_key
) -> tuple[list[KV], str | None]:
    """The items of this page (`kvs`, in the order of their `position`) and the next
    page's token, if any."""
    limit = int_param(request, "limit", minimum=1)
    if limit is not None and limit > MAX_LIST_LIMIT:
        raise BadRequest(f"query parameter limit: at most {MAX_LIST_LIMIT}")
    start = _start(request, prefix)
    if start is not None:
        kvs = [kv for kv in kvs if position(kv) > start]
    if limit is None or len(kvs) <= limit:
        return kvs, None
    kvs = kvs[:limit]
    return kvs, _token(position(kvs[-1]))


def with_continue(body: bytes, token: str | None) -> bytes:
    """A list's JSON (from `list_json`) with `metadata.continue` set, when there is more."""
    if token is None:
        return body
    field = b'"metadata":{"continue":%s,' % json.dumps(token).encode()
    return body.replace(b'"metadata":{', field, 1)


def check_list_options(request: web.Request, revision: int) -> None:
    """Refuse a list (not a watch) whose query kube-apiserver's ListOptions would not
    take: a `timeoutSeconds` that is not an integer (400; it only bounds a watch, but
    kube-apiserver parses it for every list), or a read at `revision` (the store's
    latest) that the request's `resourceVersion` and `resourceVersionMatch` do not allow.

    Unset or `0`: any revision; `N` (or `NotOlderThan`): at least N; `Exact`: N itself.
    The store keeps no snapshots of older revisions, so an `Exact` read of one is 410
    Expired, as Kubernetes answers for a compacted one: list again without it. A revision
    past the latest (from another store) is 410 too, as for a watch (api/watch.py), where
    Kubernetes answers 504 ResourceVersionTooLarge: client-go lists anew on either."""
    int_param(request, "timeoutSeconds")  # as a watch reads it (scheduler/api/watch.py)
    raw, match = (
        request.query.get("resourceVersion", ""),
        request.query.get("resourceVersionMatch", ""),
    )
    if match and match not in ("Exact", "NotOlderThan"):
        raise BadRequest(
            f"query parameter resourceVersionMatch: {match!r} is not Exact or NotOlderThan"
        )
    if not raw:
        if match:
            raise BadRequest("resourceVersionMatch is forbidden unless resourceVersion is given")
        return
    if request.query.get("continue") and raw != "0":  # the token says where, as in Kubernetes
        raise BadRequest("specifying resourceVersion is not allowed when using continue")
    wanted = parse_revision(raw)
    if wanted is None:
        raise BadRequest(f"query parameter resourceVersion: {raw!r} is not a revision")
    if match == "Exact" and wanted == 0:
        raise BadRequest('resourceVersionMatch "Exact" is forbidden for resourceVersion "0"')
    if wanted > revision:
        raise Gone(f"too large resource version: {wanted}, current: {revision}")
    if match == "Exact" and wanted != revision:
        raise Gone(
            f"resource version {wanted} is not kept (current: {revision}): "
            "list again without resourceVersion"
        )
