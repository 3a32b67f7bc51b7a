"""The OpenAPI 3 document, generated from the routes actually registered and the pydantic models.

It is also what kubectl validates with: the operations of each resource route carry
kube-apiserver's `x-kubernetes-group-version-kind` and `x-kubernetes-action`, the writes
the `fieldValidation` parameter (scheduler/api/options.py), the schemas of the kinds
their `x-kubernetes-group-version-kind`; scheduler/api/openapi_v3.py serves it cut by
group-version at `/openapi/v3`. The schemas are in OpenAPI 3.0's dialect
(scheduler/api/schema30.py), as the document says it is.
"""

from __future__ import annotations

import re
import weakref
from collections import Counter
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from common.models import (
    _DNS_LABEL,
    _DNS_SUBDOMAIN,
    ControllerRevision,
    Deployment,
    Event,
    Eviction,
    Job,
    Namespace,
    Node,
    Pod,
    Scale,
    Status,
)
from scheduler.api import discovery, options, schema30, tokens
from scheduler.api.common import json_response
from scheduler.api.deleting import IGNORE_READ_ERROR
from scheduler.api.patch import JSON_PATCH, MERGE, STRATEGIC
from scheduler.api.tables import serves_tables
from scheduler.api.workloads import OPENAPI_SHAPES
from scheduler.kinds import DEPLOYMENTS, JOBS, NAMESPACES, REVISIONS
from scheduler.mergepatch import MERGE_KEYS, MERGED_VALUES

# What each route takes and returns: (request body schema, success code, response schema).
_SHAPES: dict[tuple[str, str], tuple[str | None, int, str | None]] = {
    ("GET", "/api/v1/pods"): (None, 200, "PodList"),
    ("GET", "/api/v1/namespaces/{namespace}/pods"): (None, 200, "PodList"),
    ("POST", "/api/v1/namespaces/{namespace}/pods"): ("Pod", 201, "Pod"),
    ("GET", "/api/v1/namespaces/{namespace}/pods/{name}"): (None, 200, "Pod"),
    ("PUT", "/api/v1/namespaces/{namespace}/pods/{name}"): ("Pod", 200, "Pod"),
    ("PATCH", "/api/v1/namespaces/{namespace}/pods/{name}"): ("Patch", 200, "Pod"),
    ("DELETE", "/api/v1/namespaces/{namespace}/pods/{name}"): (None, 200, "Pod"),
    ("GET", "/api/v1/namespaces/{namespace}/pods/{name}/status"): (None, 200, "Pod"),
    ("PUT", "/api/v1/namespaces/{namespace}/pods/{name}/status"): ("Pod", 200, "Pod"),
    ("PATCH", "/api/v1/namespaces/{namespace}/pods/{name}/status"): ("Patch", 200, "Pod"),
    ("POST", "/api/v1/namespaces/{namespace}/pods/{name}/eviction"): ("Eviction", 201, "Status"),
    ("GET", "/api/v1/nodes"): (None, 200, "NodeList"),
    ("GET", "/api/v1/nodes/{name}"): (None, 200, "Node"),
    ("PUT", "/api/v1/nodes/{name}"): ("Node", 200, "Node"),
    ("PATCH", "/api/v1/nodes/{name}"): ("Patch", 200, "Node"),
    ("DELETE", "/api/v1/nodes/{name}"): (None, 200, "Node"),
    ("POST", "/api/v1/nodes/{name}/cordon"): (None, 200, "Node"),
    ("POST", "/api/v1/nodes/{name}/uncordon"): (None, 200, "Node"),
    ("POST", "/api/v1/nodes/{name}/drain"): (None, 200, "Status"),
    ("GET", "/api/v1/events"): (None, 200, "EventList"),
    ("GET", "/api/v1/namespaces/{namespace}/events"): (None, 200, "EventList"),
    ("GET", "/api/v1/namespaces/{namespace}/events/{name}"): (None, 200, "Event"),
}
_SHAPES |= {
    ("GET", "/api/v1/namespaces"): (None, 200, "NamespaceList"),
    ("POST", "/api/v1/namespaces"): ("Namespace", 201, "Namespace"),
    ("GET", "/api/v1/namespaces/{name}"): (None, 200, "Namespace"),
    ("PUT", "/api/v1/namespaces/{name}"): ("Namespace", 200, "Namespace"),
    ("PATCH", "/api/v1/namespaces/{name}"): ("Patch", 200, "Namespace"),
    ("DELETE", "/api/v1/namespaces/{name}"): (None, 200, "Namespace"),
    **OPENAPI_SHAPES,
    **tokens.OPENAPI_SHAPES,
}
_MODELS = (
    *(Pod, Node, Status, Event, Namespace, Deployment, Job, ControllerRevision, Scale),
    Eviction,
    *tokens.OPENAPI_MODELS,
)
# Every list also takes these (scheduler/api/watch.py, scheduler/api/paging.py).
_WATCH_QUERY = [
    "labelSelector",
    "watch",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
]
_QUERY = {
    "/api/v1/pods": ["labelSelector", "fieldSelector", "limit", "continue"],
    "/api/v1/namespaces/{namespace}/pods": ["labelSelector", "fieldSelector", "limit", "continue"],
    "/api/v1/nodes": ["labelSelector", "fieldSelector", "limit", "continue"],
    "/api/v1/events": ["fieldSelector", "limit", "continue"],
    "/api/v1/namespaces/{namespace}/events": ["fieldSelector", "limit", "continue"],
    "/api/v1/namespaces/{namespace}/pods/{name}/log": [
        "container",
        "follow",
        "tailLines",
        "timestamps",
        "previous",
    ],
    # The eviction's own dry run (scheduler/api/evictions.py): every other write refuses it.
    "/api/v1/namespaces/{namespace}/pods/{name}/eviction": ["dryRun"],
}

_PAGED = ["labelSelector", "fieldSelector", "limit", "continue"]
for _kind in (NAMESPACES, DEPLOYMENTS, JOBS, REVISIONS):  # generic.list_objects
    _QUERY[f"{_kind.api_root}/{_kind.plural}"] = _PAGED
    if _kind.namespaced:
        _QUERY[f"{_kind.api_root}/namespaces/{{namespace}}/{_kind.plural}"] = _PAGED
_PROPAGATED = {
    f"{k.api_root}/namespaces/{{namespace}}/{k.plural}/{{name}}" for k in (DEPLOYMENTS, JOBS)
}

_STRING = {"type": "string"}
# What the routes accept in the path (scheduler/api/common.py): names are checked before
# anything is looked up, so the document says so (and a fuzzer knows valid from invalid).
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "namespace": {"type": "string", "pattern": _DNS_LABEL.pattern},
    "name": {"type": "string", "pattern": _DNS_SUBDOMAIN.pattern},
}


# A PATCH takes one of the patch types (scheduler/api/patch.py): the patch itself, whatever
# the object's schema.
_PATCH_BODIES = {
    MERGE: {"schema": {"type": "object"}},
    STRATEGIC: {"schema": {"type": "object"}},
    JSON_PATCH: {
        "schema": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["op", "path"],
                "properties": {
                    "op": {
                        "type": "string",
                        "enum": ["add", "remove", "replace", "move", "copy", "test"],
                    },
                    "path": {"type": "string"},
                    "from": {"type": "string"},
                    "value": {},
                },
            },
        }
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _gvk(schema: dict[str, Any]) -> dict[str, str] | None:
    """The group, version and kind a model's schema fixes (its `apiVersion` and `kind`
    are constants: common/models.py), or None."""
    props = schema.get("properties", {})
    api_version, kind = (props.get(k, {}).get("const") for k in ("apiVersion", "kind"))
    if not (isinstance(api_version, str) and isinstance(kind, str)):
        return None
    group, _, version = api_version.rpartition("/")
    return {"group": group, "version": version, "kind": kind}


def _schemas() -> dict[str, dict[str, Any]]:
    """The components' schemas: the models', with the lists of those that have one; each
    kind's with its `x-kubernetes-group-version-kind` (a list, as kube-apiserver's), which
    `kubectl explain` looks a kind's schema up by."""
    _, defs = models_json_schema(
        [(m, "validation") for m in _MODELS],
        by_alias=True,
        ref_template="#/components/schemas/{model}",
    )
    schemas = dict(defs.get("$defs", {}))
    kinds = {name: gvk for name, schema in schemas.items() if (gvk := _gvk(schema))}
    lists = ("Pod", "Node", "Event", "Namespace", "Deployment", "Job", "ControllerRevision")
    for kind, item in ((f"{name}List", name) for name in lists):
        schemas[kind] = {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string", "enum": [kind]},
                "metadata": {
                    "type": "object",
                    "properties": {"resourceVersion": {"type": "string"}},
                },
                "items": {"type": "array", "items": _ref(item)},
            },
        }
        kinds[kind] = {**kinds[item], "kind": kind}
    schemas = {name: schema30.convert(schema) for name, schema in schemas.items()}
    for name, gvk in kinds.items():
        schemas[name]["x-kubernetes-group-version-kind"] = [gvk]
    for name, schema in schemas.items():
        _mark_merge_keys(name, schema)
    return schemas


def _mark_merge_keys(schema_name: str, schema: dict[str, Any]) -> None:
    """Each list that strategic merge patches by a key or by value (scheduler/mergepatch.py), marked
    as kube-apiserver's OpenAPI marks it. kubectl computes `apply`'s patch from these:
    without them it took `containers` for an atomic list, sent the whole list again, and
    said `configured` for an unchanged pod."""
    for name, prop in (schema.get("properties") or {}).items():
        key = MERGE_KEYS.get(name)
        if key is not None and prop.get("type") == "array":
            prop["x-kubernetes-patch-merge-key"] = key
            prop["x-kubernetes-patch-strategy"] = "merge"
        elif schema_name == "ObjectMeta" and f"metadata.{name}" in MERGED_VALUES:  # by value
            prop["x-kubernetes-patch-strategy"] = "merge"


def _unique_operation_ids(paths: dict[str, dict[str, Any]]) -> None:
    """A handler that serves several routes (every namespace's and one namespace's pods,
    Deployments' and Jobs') names each of its operations after its path too: OpenAPI
    wants operationIds unique."""
    ops = [op for item in paths.values() for op in item.values()]
    seen = Counter(op["operationId"] for op in ops)
    for path, item in paths.items():
        for op in item.values():
            if seen[op["operationId"]] > 1:  # `/api/` and `/api` apart by the last "_"
                op["operationId"] += "".join(f"_{w}" for w in re.findall(r"\w+", path))
                op["operationId"] += "_" if path.endswith("/") else ""


def build(app: web.Application) -> dict[str, Any]:
    schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or route.method == "HEAD":
            continue
        handler = route.handler
        doc = (getattr(handler, "__doc__", None) or "").strip().split("\n")[0]
        op: dict[str, Any] = {
            "operationId": getattr(handler, "__name__", "op"),
            "summary": doc or getattr(handler, "__name__", ""),
            "responses": {
                "default": {
                    "description": "error",
                    "content": {"application/json": {"schema": _ref("Status")}},
                }
            },
        }
        params = [
            {"name": p, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(p, _STRING)}
            for p in re.findall(r"{(\w+)}", path)
        ]
        params += [
            {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
            for q in _QUERY.get(path, [])
        ]
        if path.endswith("/pods/{name}") and route.method == "DELETE":
            params.append(
                {
                    "name": "gracePeriodSeconds",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                }
            )
        if route.method == "DELETE" and path.endswith("/{name}"):
            params.append(
                {
                    "name": IGNORE_READ_ERROR,
                    "in": "query",
                    "required": False,
                    "description": "An object that cannot be read is removed as it is",
                    "schema": {"type": "boolean"},
                }
            )
        if path in _PROPAGATED and route.method == "DELETE":
            params.append(
                {
                    "name": "propagationPolicy",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["Background", "Foreground", "Orphan"]},
                }
            )
        if route.method == "GET" and serves_tables(handler):  # api/tables.py
            params.append(
                {
                    "name": "includeObject",
                    "in": "query",
                    "required": False,
                    "description": "With a Table asked for (Accept: application/json;as=Table;"
                    "g=meta.k8s.io;v=v1): None, Metadata (the default) or Object",
                    "schema": {"type": "string"},
                }
            )
        listing = _SHAPES.get((route.method, path), (None, 0, None))[2] or ""
        if listing.endswith("List"):
            known = {p["name"] for p in params}
            params += [
                {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                for q in _WATCH_QUERY
                if q not in known
            ]
        if route.method in options.WRITES:
            params.append(dict(options.FIELD_VALIDATION_PARAMETER))
        if params:
            op["parameters"] = params
        # A resource's: its kind and kube-apiserver's verb, which kubectl looks for.
        located = discovery.route_kind(path)
        if located is not None:
            op["x-kubernetes-action"] = _action(route.method, located.collection)
            op["x-kubernetes-group-version-kind"] = located.gvk
        shape = _SHAPES.get((route.method, path))
        if shape is not None:
            body, code, response = shape
            if body == "Patch":
                op["requestBody"] = {"required": True, "content": _PATCH_BODIES}
            elif body:
                op["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref(body)},
                        "application/yaml": {"schema": _ref(body)},
                    },
                }
            op["responses"][str(code)] = {
                "description": "success",
                "content": {"application/json": {"schema": _ref(response or "Status")}},
            }
        else:
            op["responses"]["200"] = {"description": "success"}
        paths.setdefault(path, {})[route.method.lower()] = op
    _unique_operation_ids(paths)
    return {
        "openapi": "3.0.3",
        "info": {"title": "corral API", "version": "v1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _action(method: str, collection: bool) -> str:
    """kube-apiserver's `x-kubernetes-action` of an operation."""
    if collection and method in ("GET", "DELETE"):
        return "list" if method == "GET" else "deletecollection"
    return method.lower()  # get, post, put, patch, delete


_DOCUMENTS: weakref.WeakKeyDictionary[web.Application, dict[str, Any]] = weakref.WeakKeyDictionary()


def document(app: web.Application) -> dict[str, Any]:
    """`build(app)`, made once the application serves (its routes are final then): it
    takes some 20 ms of the event loop, and anyone may ask for it. Read only."""
    found = _DOCUMENTS.get(app)
    if found is None:
        found = build(app)
        if app.frozen:
            _DOCUMENTS[app] = found
    return found


async def openapi(request: web.Request) -> web.Response:
    """This document."""
    return json_response(document(request.app))


ROUTES = [web.get("/openapi.json", openapi)]
