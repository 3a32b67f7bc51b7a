"""List pages: `?limit=N` (1..MAX_LIST_LIMIT) and `?continue=TOKEN`, as in Kubernetes;
and which revision a list may be read at (`?resourceVersion=` and `resourceVersionMatch`).

A list is sorted by key; a page ends after `limit` items and its
`metadata.continue` names where the next one starts (the last key, opaque to
clients). Unlike Kubernetes, a later page is read from the store as it is then,
not from the first page's snapshot: an object created or deleted between pages
may be seen or missed once, and `metadata.resourceVersion` is the page's own.
"""

from __future__ import annotations

import base64
import binascii
import json

from aiohttp import web

from common.limits import MAX_LIST_LIMIT
from scheduler.api.common import int_param, parse_revision
from scheduler.api.errors import BadRequest, Gone
from scheduler.store import KV


def _token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _start(request: web.Request, prefix: str) -> str | None:
    """The key the page starts after, from `?continue=`; 400 if it is not ours."""
    token = request.query.get("continue")
    if not token:
        return None
    try:
        key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key = ""
    if not key.startswith(prefix):
        raise BadRequest("query parameter continue: not a continue token of this list")
    return key


def page(request: web.Request, kvs: list[KV], prefix: str) -> tuple[list[KV], str | None]:
    """The items of this page (`kvs` sorted by key) and the next page's token, if any."""
    limit = int_param(request, "limit", minimum=1)
    if limit is not None and limit > MAX_LIST_LIMIT:
        raise BadRequest(f"query parameter limit: at most {MAX_LIST_LIMIT}")
    start = _start(request, prefix)
    if start is not None:
        kvs = [kv for kv in kvs if kv.key > start]
    if limit is None or len(kvs) <= limit:
        return kvs, None
    kvs = kvs[:limit]
    return kvs, _token(kvs[-1].key)


def with_continue(body: bytes, token: str | None) -> bytes:
    """A list's JSON (from `list_json`) with `metadata.continue` set, when there is more."""
    if token is None:
        return body
    field = b'"metadata":{"continue":%s,' % json.dumps(token).encode()
    return body.replace(b'"metadata":{', field, 1)


def check_list_revision(request: web.Request, revision: int) -> None:
    """Refuse a list read at `revision` (the store's latest) that the request's
    `resourceVersion` and `resourceVersionMatch` do not allow, as kube-apiserver does.

    Unset or `0`: any revision; `N` (or `NotOlderThan`): at least N; `Exact`: N itself.
    The store keeps no snapshots of older revisions, so an `Exact` read of one is 410
    Expired, as Kubernetes answers for a compacted one: list again without it. A revision
    past the latest (from another store) is 410 too, as for a watch (api/watch.py), where
    Kubernetes answers 504 ResourceVersionTooLarge: client-go lists anew on either."""
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
