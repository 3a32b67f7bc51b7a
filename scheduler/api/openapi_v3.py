"""OpenAPI v3 as kube-apiserver serves it: what kubectl (1.29 and later) reads before it
sends an object it was given to create or apply (1.27 and 1.28 fetch OpenAPI v2 first,
and fail without it: they need `--validate=false`).

    GET /openapi/v3                         {"paths": {"api/v1": {"serverRelativeURL":
                                             "/openapi/v3/api/v1?hash=HASH"}, ...}}
    GET /openapi/v3/api/v1                  the core group-version's document
    GET /openapi/v3/apis/{group}/{version}  a named group-version's

kubectl's default `--validate=strict` looks, in the document of the object's
group-version, for a PATCH operation whose `x-kubernetes-group-version-kind` is the
object's and that takes the `fieldValidation` parameter (k8s.io/cli-runtime
query_param_verifier_v3.go); found, it leaves validation to the server and sends
`?fieldValidation=Strict` (scheduler/api/options.py). Without `/openapi/v3` it falls
back to `/openapi/v2` in protobuf, which corral does not serve.

One document per group-version that discovery lists (scheduler/api/discovery.py), cut
from the one `/openapi.json` serves (scheduler/api/openapi.py): that group-version's
resource routes, and the schemas they refer to. HASH is the SHA-512 of a document's
bytes, as kube-apiserver's (k8s.io/kube-openapi handler3); so are the answers: an ETag
(and 304 to a matching If-None-Match), and with the current `?hash=` a response to keep
for good (`Cache-Control: public, immutable`), with another one a 301 to the current.
Documents are JSON only: a client that accepts nothing else (kube-openapi's protobuf)
gets 406; client-go asks for JSON.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import time
import weakref
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from scheduler.api import discovery, openapi
from scheduler.api.errors import NotAcceptable, NotFoundError

PREFIX = "/openapi/v3"
_SCHEMA_REF = "#/components/schemas/"
_JSON_RANGES = frozenset({"application/json", "application/*", "*/*"})
_YEAR = 365 * 24 * 3600


def api_path(group_version: str) -> str:
    """kube-apiserver's name of a group-version here: `api/v1`, `apis/apps/v1`."""
    return "api/v1" if group_version == "v1" else f"apis/{group_version}"


def _refs(value: Any) -> set[str]:
    """The names of the component schemas that `value` refers to, itself only."""
    if isinstance(value, dict):
        found = {value["$ref"].removeprefix(_SCHEMA_REF)} if "$ref" in value else set()
        return found.union(*(_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value))
    return set()


def group_version_document(document: dict[str, Any], group_version: str) -> dict[str, Any]:
    """The part of `document` that is `group_version`'s: the routes of its resources (as
    discovery reads them: not `/api/v1/status`), and every schema they refer to."""
    paths = {}
    for path, item in document["paths"].items():
        located = discovery.route_kind(path)
        if located is not None and located.group_version == group_version:
            paths[path] = item
    schemas = document["components"]["schemas"]
    wanted: set[str] = set()
    todo = _refs(paths)
    while todo:  # and the schemas those refer to
        name = todo.pop()
        wanted.add(name)
        todo |= _refs(schemas[name]) - wanted
    return {
        "openapi": document["openapi"],
        "info": {"title": document["info"]["title"], "version": group_version},
        "paths": paths,
        "components": {"schemas": {name: schemas[name] for name in sorted(wanted)}},
    }


def _digest(body: bytes) -> str:
    return hashlib.sha512(body).hexdigest().upper()  # kube-apiserver's: hex, upper case


@dataclass(frozen=True)
class _Served:
    listing: bytes  # /openapi/v3's
    listing_hash: str
    documents: dict[str, tuple[bytes, str]]  # "apis/apps/v1" -> (JSON, its hash)


_SERVED: weakref.WeakKeyDictionary[web.Application, _Served] = weakref.WeakKeyDictionary()


def _served(app: web.Application) -> _Served:
    """Every document's bytes and hash, made once the application serves (as
    `openapi.document`): kubectl asks for them on every `apply`."""
    found = _SERVED.get(app)
    if found is not None:
        return found
    document = openapi.document(app)
    documents = {}
    for group_version in discovery.resources(app):
        body = json.dumps(group_version_document(document, group_version)).encode()
        documents[api_path(group_version)] = (body, _digest(body))
    listing = {
        path: {"serverRelativeURL": f"{PREFIX}/{path}?hash={digest}"}
        for path, (_, digest) in sorted(documents.items())
    }
    body = json.dumps({"paths": listing}).encode()
    found = _Served(body, _digest(body), documents)
    if app.frozen:
        _SERVED[app] = found
    return found


def _not_modified(request: web.Request, digest: str) -> bool:
    """The client's If-None-Match names this version (or any)."""
    return any(tag.value in (digest, "*") for tag in request.if_none_match or ())


def _accepts_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return True
    ranges = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(ranges & _JSON_RANGES)


def _answer(request: web.Request, body: bytes, digest: str, **headers: str) -> web.Response:
    headers["ETag"] = f'"{digest}"'
    if _not_modified(request, digest):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def paths(request: web.Request) -> web.Response:
    """The OpenAPI v3 documents served, one per group-version, with their hashes."""
    served = _served(request.app)
    return _answer(request, served.listing, served.listing_hash)


async def group_version(request: web.Request) -> web.Response:
    """One group-version's OpenAPI v3 document (JSON)."""
    info = request.match_info
    path = f"apis/{info['group']}" if "group" in info else "api"
    path += f"/{info['version']}"
    found = _served(request.app).documents.get(path)
    if found is None:
        raise NotFoundError(f"no OpenAPI v3 document for {path!r}: see {PREFIX}")
    if not _accepts_json(request):
        raise NotAcceptable("OpenAPI v3 documents are served as application/json only")
    body, digest = found
    asked = request.query.get("hash")
    if asked and asked != digest:  # an older document's: where the current one is
        return web.Response(status=301, headers={"Location": f"{PREFIX}/{path}?hash={digest}"})
    headers = {"Vary": "Accept"}
    if asked:  # this URL's content never changes: a new document has a new hash
        headers["Cache-Control"] = "public, immutable"
        headers["Expires"] = email.utils.formatdate(time.time() + _YEAR, usegmt=True)
    return _answer(request, body, digest, **headers)


ROUTES = [
    web.get(PREFIX, paths),
    web.get(PREFIX + "/api/{version}", group_version),
    web.get(PREFIX + "/apis/{group}/{version}", group_version),
]
