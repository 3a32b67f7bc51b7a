"""Helpers shared by the API handlers: typed app keys, body parsing, JSON responses."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from aiohttp import web

from common.limits import INT64_MAX
from common.manifest import ManifestError, parse_documents
from common.models import StatusCause, check_dns_label, check_dns_subdomain
from scheduler.api.errors import BadRequest, Invalid, NotFoundError, UnsupportedMediaType

if TYPE_CHECKING:
    from scheduler.controlplane import ControlPlane

CONTROL_PLANE: web.AppKey[ControlPlane] = web.AppKey("control_plane")

# A JSON body up to this size is parsed on the event loop (about 1 ms); bigger ones, and
# every YAML body, in a thread (read_documents).
INLINE_JSON_BYTES = 64 * 1024


def plane(request: web.Request) -> ControlPlane:
    return request.app[CONTROL_PLANE]


def json_response(body: bytes | dict[str, Any], status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    return web.Response(body=data, status=status, content_type="application/json")


async def read_documents(request: web.Request) -> list[Any]:
    """The body as JSON or YAML documents (List wrappers kept); 400 if malformed, 415 in
    Kubernetes' binary encodings (a client that sent one falls back to JSON on a 415)."""
    media = request.content_type
    if "protobuf" in media or "cbor" in media:
        raise UnsupportedMediaType(
            f"the media type {media} is not supported; send application/json or application/yaml"
        )
    body = await request.read()  # raises 413 past the app's client_max_size
    if not body.strip():
        raise BadRequest("request body is empty")
    try:
        if "json" in media and len(body) <= INLINE_JSON_BYTES:
            return parse_documents(body, media, flatten=False)
        # PyYAML's SafeLoader is pure Python, about 2 ms a KiB: a 1.3 MiB body held the
        # event loop (every request, every agent link) for 2.7 s, and the body limit is
        # 8 MiB. So YAML, and JSON past INLINE_JSON_BYTES, is parsed in a thread.
        return await asyncio.to_thread(parse_documents, body, media, flatten=False)
    except ManifestError as exc:
        raise BadRequest(exc.message) from None


def body_name(doc: Any) -> str | None:
    """A body's `metadata.name` for an error's details, if it is a string (the body is
    not checked yet: a name `false` is the 422's cause, not a 500 in making it)."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def namespace_param(request: web.Request) -> str:
    namespace = request.match_info["namespace"]
    try:
        return check_dns_label(namespace)
    except ValueError as exc:
        raise Invalid(f"namespace: {exc}") from None


def name_param(request: web.Request) -> str:
    """The object name in the URL. One no object can have is not found, as kube-apiserver
    answers (it finds nothing by that name), not a 422: `kubectl apply` reads before it
    creates, and only a 404 leads it on to the create, which names the bad field."""
    name = request.match_info["name"]
    try:
        return check_dns_subdomain(name)
    except ValueError:
        route = request.match_info.route.resource
        parts = route.canonical.split("/") if route is not None else []
        kind = parts[parts.index("{name}") - 1] if "{name}" in parts[1:] else "object"
        raise NotFoundError(f'{kind} "{name}" not found', name=name, kind=kind) from None


def require_url_name(body_name: str, url_name: str) -> None:
    """A replaced object must name itself as its URL does (422, as Kubernetes says it)."""
    if body_name != url_name:
        raise Invalid(
            "metadata.name does not match the URL",
            causes=[
                StatusCause(
                    reason="FieldValueInvalid",
                    message="does not match the URL",
                    field="metadata.name",
                )
            ],
        )


# Integers as Go's strconv reads them: ASCII digits, at most as many as a 64-bit number
# has. Neither `str.isdigit()` nor int() is the test: they take "²" (which int() then
# refuses), "٣" (read as 3), and int() also " 5", "+1" and "1_0", and raises on more
# than 4300 digits. A resourceVersion is a store revision (etcd's int64 in Kubernetes).
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_REVISION = re.compile(r"[0-9]{1,20}")


def parse_revision(raw: str) -> int | None:
    """`raw` as a revision, or None if it is not one."""
    return int(raw) if _REVISION.fullmatch(raw) else None


def int_param(
    request: web.Request, name: str, *, minimum: int = 0, maximum: int = INT64_MAX
) -> int | None:
    """An integer query parameter from `minimum` to `maximum` (Kubernetes' are int64),
    None if unset; 400 otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not _INTEGER.fullmatch(raw):
        raise BadRequest(f"query parameter {name}: {raw!r} is not an integer")
    value = int(raw)
    if value < minimum:
        raise BadRequest(f"query parameter {name}: must be >= {minimum}")
    if value > maximum:
        raise BadRequest(f"query parameter {name}: must be <= {maximum}")
    return value


def field_selector(
    request: web.Request, supported: Collection[str], of: str = ""
) -> list[tuple[str, str, bool]]:
    """`?fieldSelector=a=x,b==y,c!=z` as (field, value, negated) terms; 400 for a term
    without an operator or a field not `supported` (`of`: what is listed, for the message)."""
    terms = []
    for expr in filter(None, (request.query.get("fieldSelector") or "").split(",")):
        negate = "!=" in expr
        field, sep, value = expr.partition("!=" if negate else "=")
        if not sep:
            raise BadRequest(
                f"fieldSelector: {expr!r} is not a term (field=value, field==value or field!=value)"
            )
        field = field.strip()
        if field not in supported:
            raise BadRequest(
                f"fieldSelector: {field!r} is not supported{of} (supported: {', '.join(supported)})"
            )
        value = value.strip() if negate else value.removeprefix("=").strip()
        terms.append((field, value, negate))
    return terms
