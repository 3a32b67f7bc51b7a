"""Server-side printing: a GET of a resource answers a `meta.k8s.io` Table when asked.

`kubectl get` (every version since 1.11) sends

    Accept: application/json;as=Table;v=v1;g=meta.k8s.io,
            application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json

and prints the columns the server sends, as kube-apiserver answers:

    {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": ...},
     "columnDefinitions": [{"name": "Name", "type": "string", "format": "name", ...}, ...],
     "rows": [{"cells": ["web-1", "1/1", "Running", "0", "5m", ...], "object": {...}}]}

Every column is sent, the wide ones too (priority 1); kubectl drops those itself
unless `-o wide`. The columns are scheduler/printing/columns.py's, the CLI's own.

- The Accept header is read clause by clause, by `q` then in its order: the first
  clause corral can answer wins. `as=Table;g=meta.k8s.io` with `v=v1` or `v=v1beta1`
  (answered in that apiVersion) for JSON is a Table; a clause without `as=` is the
  plain JSON (whatever its type, as corral has always answered); anything else
  (another `as=`, a Table of another group) is skipped. If no clause is left:
  406 NotAcceptable, as a request for a Table of a subresource (`pods/log`) gets.
- `?includeObject=` says what each row carries as its `object`: `Metadata` (the
  default) a `PartialObjectMetadata` with the object's metadata (kubectl reads the
  namespace for `-A` from it), `Object` the object, `None` nothing.
- A list is a Table of every item, with the list's `resourceVersion` and `continue`;
  a GET of one object a Table of one row; a watch (`get -w`) streams events whose
  object is a Table of one row, the column definitions in the first event only,
  as kube-apiserver sends them (kubectl keeps the last ones it saw).

`serving` wraps the GET routes of resources once, when the application is made:
the JSON answer of the handler is turned into a Table there, and a watch reads
the request's `TABLE` (scheduler/api/watch.py). Nothing else pays for it, and a
request without `as=Table` in its Accept header pays one substring test.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from scheduler.api import paths
from scheduler.api.common import INLINE_JSON_BYTES, json_response
from scheduler.api.errors import BadRequest, NotAcceptable
from scheduler.objects import with_resource_version
from scheduler.printing.columns import Column, Printer, printer_for
from scheduler.store import KV

Object = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

GROUP = "meta.k8s.io"
VERSIONS = ("v1", "v1beta1")
INCLUDE_OBJECT = ("None", "Metadata", "Object")
_JSON_TYPES = ("application/json", "application/*", "*/*")
_LIST_META = ("resourceVersion", "continue", "remainingItemCount")
_SERVES_TABLES = "__corral_serves_tables__"


@dataclass(frozen=True, slots=True)
class Target:
    """The Table a request asked for: whose columns, in which apiVersion, and what each
    row carries as its object (`includeObject`)."""

    printer: Printer
    api_version: str  # "meta.k8s.io/v1" or "meta.k8s.io/v1beta1"
    include: str = "Metadata"

    def table(
        self, objects: Iterable[Object], metadata: Object, now: datetime, *, headers: bool = True
    ) -> Object:
        """A Table of `objects` (`metadata`: its ListMeta); without column definitions
        unless `headers` (kube-apiserver's `null` then)."""
        return {
            "kind": "Table",
            "apiVersion": self.api_version,
            "metadata": metadata,
            "columnDefinitions": [_definition(c) for c in self.printer.columns]
            if headers
            else None,
            "rows": [self._row(obj, now) for obj in objects],
        }

    def _row(self, obj: Object, now: datetime) -> Object:
        row: Object = {"cells": self.printer.row(obj, now)}
        if self.include == "Object":
            row["object"] = obj
        elif self.include == "Metadata":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": self.api_version,
                "metadata": self.printer.metadata(obj),
            }
        return row

    def of_list(self, doc: Object) -> Object:
        """A `<Kind>List`'s Table."""
        meta = doc.get("metadata") or {}
        kept = {k: meta[k] for k in _LIST_META if k in meta}
        return self.table(doc.get("items") or [], kept, datetime.now(UTC))

    def of_object(self, obj: Object, *, headers: bool = True) -> Object:
        """One object's Table: one row, the object's resourceVersion."""
        version = self.printer.metadata(obj).get("resourceVersion")
        meta = {"resourceVersion": version} if version else {}
        return self.table([obj], meta, datetime.now(UTC), headers=headers)


TABLE: web.RequestKey[Target] = web.RequestKey("corral_table", Target)


def _definition(column: Column) -> Object:
    """A `TableColumnDefinition`."""
    return {
        "name": column.name,
        "type": column.type,
        "format": column.format,
        "description": column.description,
        "priority": column.priority,
    }


# --- negotiation ---------------------------------------------------------------------------


def _clauses(accept: str) -> list[tuple[str, dict[str, str]]]:
    """(media type, parameters) of each clause of an Accept header, by `q` (highest
    first, the header's order among equals); those with `q=0` are left out."""
    clauses = []
    for raw in accept.split(","):
        media, *params = (part.strip() for part in raw.split(";"))
        if not media:
            continue
        values = {}
        for param in params:
            key, _, value = param.partition("=")
            values[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(values.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            clauses.append((q, media.lower(), values))
    clauses.sort(key=lambda clause: -clause[0])  # stable: the header's order among equals
    return [(media, values) for _, media, values in clauses]


def negotiate(accept: str, printer: Printer | None) -> str | None:
    """The Table apiVersion to answer with (`meta.k8s.io/v1`), or None for the plain
    JSON; 406 if the header accepts neither (`printer`: None where there is no Table)."""
    for media, params in _clauses(accept):
        kind = params.get("as")
        if kind is None:
            return None
        if (
            kind == "Table"
            and printer is not None
            and media in _JSON_TYPES
            and params.get("g") == GROUP
            and params.get("v") in VERSIONS
        ):
            return f"{GROUP}/{params['v']}"
    tables = f", application/json;as=Table;g={GROUP};v=v1 (or v1beta1)" if printer else ""
    raise NotAcceptable(f"only the following media types are accepted: application/json{tables}")


def include_object(request: web.Request) -> str:
    """`?includeObject=`: None, Metadata (the default) or Object; 400 for anything else."""
    raw = request.query.get("includeObject") or "Metadata"
    if raw not in INCLUDE_OBJECT:
        raise BadRequest(
            f"query parameter includeObject: {raw!r} is not one of {', '.join(INCLUDE_OBJECT)}"
        )
    return raw


def target(request: web.Request, printer: Printer | None) -> Target | None:
    """The Table `request` asks for, or None for the plain JSON (406, 400 as above)."""
    accept = request.headers.get("Accept", "")
    if "as=Table" not in accept:  # every client but kubectl's get: nothing more to read
        return None
    version = negotiate(accept, printer)
    if version is None or printer is None:
        return None
    return Target(printer, version, include_object(request))


# --- where it is served --------------------------------------------------------------------


def watch_objects(table: Target) -> Callable[[KV], bytes]:
    """What a watch streams as each event's object: a Table of one row, the column
    definitions with the first only (as kube-apiserver; kubectl keeps the last seen)."""
    first = True

    def render(kv: KV) -> bytes:
        nonlocal first
        doc = table.of_object(json.loads(with_resource_version(kv)), headers=first)
        first = False
        return json.dumps(doc, separators=(",", ":")).encode()

    return render


def _negotiated(handler: Handler, printer: Printer | None, listing: bool) -> Handler:
    @functools.wraps(handler)
    async def negotiated(request: web.Request) -> web.StreamResponse:
        table = target(request, printer)
        if table is None:
            return await handler(request)
        request[TABLE] = table  # a watch streams Tables itself (api/watch.py)
        response = await handler(request)
        if type(response) is not web.Response or response.status != 200:
            return response  # a watch's stream, or an answer that is not the object
        body = response.body
        if not isinstance(body, bytes):
            return response
        if len(body) <= INLINE_JSON_BYTES:
            return json_response(_as_table(table, body, listing))
        # A list's Table is read, built and written again whole: 10,000 pods (a `kubectl
        # get pods -A`) held the event loop 0.29 s. Pure work on the body: in a thread.
        return json_response(await asyncio.to_thread(_as_table, table, body, listing))

    setattr(negotiated, _SERVES_TABLES, True)
    return negotiated


def _as_table(table: Target, body: bytes, listing: bool) -> bytes:
    """The Table of a handler's JSON answer (a list's, or one object's), as JSON."""
    doc = json.loads(body)
    doc = table.of_list(doc) if listing else table.of_object(doc)
    return json.dumps(doc, separators=(",", ":")).encode()


def serving(routes: Iterable[web.RouteDef]) -> list[web.RouteDef]:
    """`routes`, each GET of a resource or of one of its objects answering a Table when
    asked (keyed by the resource its path names: scheduler/api/paths.py); the others,
    and the GETs of subresources (406 for a Table), as they are."""
    served = []
    for route in routes:
        where = paths.read(route.path) if route.method == "GET" else None
        if where is not None:
            printer = printer_for(where.group_version, where.resource)
            handler = _negotiated(route.handler, printer, where.scope == "collection")
            route = web.RouteDef(route.method, route.path, handler, route.kwargs)
        served.append(route)
    return served


def serves_tables(handler: object) -> bool:
    """Whether a route's handler is one `serving` wrapped (for the OpenAPI document)."""
    return getattr(handler, _SERVES_TABLES, False) is True
