"""PATCH, as kube-apiserver does it: the current object's JSON, the patch applied to it,
then what PUT does with the result (`generic.guarded_update`).

The `Content-Type` names the patch type: `application/merge-patch+json` (RFC 7386),
`application/strategic-merge-patch+json` (scheduler/mergepatch.py says which part of
it) or `application/json-patch+json` (RFC 6902, by the `jsonpatch` library); any other
is 415. A malformed patch is 400; one that cannot be applied to the object (a failed
`test`, a path that is not there) is 422, as in Kubernetes.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer
from aiohttp import web

from common.manifest import ManifestError, parse_documents
from scheduler.api.common import INLINE_JSON_BYTES
from scheduler.api.errors import BadRequest, Invalid, TooLarge, UnsupportedMediaType
from scheduler.mergepatch import PatchError, json_type, merge_patch, strategic_merge_patch
from scheduler.objects import with_resource_version
from scheduler.store import KV

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE, STRATEGIC)
MAX_OPERATIONS = 10_000  # kube-apiserver's limit on a JSON patch (413 beyond)
MAX_COPIED_BYTES = 8 * 1024 * 1024  # what a JSON patch's `copy` operations may copy in all

_OPS = {
    "add": ("path", "value"),
    "remove": ("path",),
    "replace": ("path", "value"),
    "move": ("from", "path"),
    "copy": ("from", "path"),
    "test": ("path", "value"),
}


@dataclass(frozen=True)
class Patch:
    """A parsed patch body and its type; `apply` it to an object's JSON."""

    media: str
    body: Any

    def apply(self, doc: Any) -> Any:
        """The patched document (`doc` is not changed); 400 or 422 as Kubernetes answers."""
        try:
            if self.media == MERGE:
                return merge_patch(doc, self.body)
            if self.media == STRATEGIC:
                return strategic_merge_patch(doc, self.body)
            return _apply_json_patch(self.body, doc)
        except PatchError as exc:
            raise BadRequest(f"the strategic merge patch cannot be applied: {exc}") from None
        except jsonpatch.InvalidJsonPatch as exc:
            raise BadRequest(f"the JSON patch is malformed: {exc}") from None
        except (
            jsonpatch.JsonPatchException,
            jsonpointer.JsonPointerException,
            # What jsonpatch lets through from a path into a string or a number
            # (`remove /metadata/name/0`): the patch does not fit the object.
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
        ) as exc:
            # A failed `test`, a path that is not in the object: kube-apiserver's 422.
            raise Invalid(f"the JSON patch cannot be applied: {exc}") from None
        except RecursionError:
            raise BadRequest("the patch is nested too deeply") from None


def _apply_json_patch(ops: list[Any], doc: Any) -> Any:
    """The operations applied one by one to a copy of `doc`, with what `copy` operations
    copy counted: past MAX_COPIED_BYTES in all, 413. Each copy duplicates its source, so
    a few dozen operations copying a field into itself would grow the object past any
    memory, on the event loop (Kubernetes' CVE-2019-1002100; its limit is the same)."""
    doc = copy.deepcopy(doc)
    copied = 0
    for op in ops:
        if op["op"] == "copy":
            source = jsonpointer.resolve_pointer(doc, op["from"])
            copied += len(json.dumps(source))
            if copied > MAX_COPIED_BYTES:
                raise TooLarge(f"the JSON patch copies more than {MAX_COPIED_BYTES} bytes in all")
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            # Said in JSON, not in jsonpatch's Python (`2 (<class 'str'>) is not equal...`).
            missing = object()
            found = jsonpointer.resolve_pointer(doc, op["path"], missing)
            what = "it is not there" if found is missing else f"it is {json.dumps(found)}"
            raise Invalid(
                f"the JSON patch cannot be applied: test of {op['path']} failed: {what}, "
                f"not {json.dumps(op.get('value'))}"
            ) from None
    return doc


def patch_media(request: web.Request, *, plain_json: str | None = None) -> str:
    """The patch type the Content-Type names (parameters such as charset dropped), or 415;
    `plain_json`: the type `application/json` stands for, where an older client sends it."""
    media = request.content_type  # aiohttp's: lower case, without parameters
    if media == "application/json" and plain_json is not None:
        return plain_json
    if media not in PATCH_TYPES:
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format ({media}) - accepted media "
            f"types include: {', '.join(PATCH_TYPES)}"
        )
    return media


async def read_patch(request: web.Request, *, plain_json: str | None = None) -> Patch:
    """The request's patch, checked for shape (400 naming what is wrong), or 415."""
    media = patch_media(request, plain_json=plain_json)
    body = await request.read()  # 413 past the app's client_max_size, as every body
    if not body.strip():
        raise BadRequest("the patch is empty")
    try:
        if len(body) <= INLINE_JSON_BYTES:
            (doc,) = parse_documents(body, "application/json", flatten=False)
        else:  # up to the 8 MiB body limit: 0.15 s of parsing, in a thread (read_documents)
            (doc,) = await asyncio.to_thread(
                parse_documents, body, "application/json", flatten=False
            )
    except ManifestError as exc:
        raise BadRequest(f"the patch is not valid JSON: {exc.message}") from None
    if media == JSON_PATCH:
        _check_operations(doc)
    elif not isinstance(doc, dict):
        kind = "strategic merge" if media == STRATEGIC else "merge"
        raise BadRequest(f"a {kind} patch must be a JSON object, got {json_type(doc)}")
    return Patch(media, doc)


def _check_operations(ops: Any) -> None:
    """RFC 6902's shape: a list of operations, each with the members its `op` needs."""
    if not isinstance(ops, list):
        raise BadRequest("a JSON patch must be a JSON array of operations")
    if len(ops) > MAX_OPERATIONS:
        raise TooLarge(
            f"the allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {len(ops)}"
        )
    for i, op in enumerate(ops):
        if not isinstance(op, dict):
            raise BadRequest(f"JSON patch operation {i}: expected an object")
        name = op.get("op")
        if name not in _OPS:
            raise BadRequest(
                f"JSON patch operation {i}: op {name!r} is not one of {', '.join(_OPS)}"
            )
        for member in _OPS[name]:
            if member not in op:
                raise BadRequest(f"JSON patch operation {i} ({name}): missing {member!r}")
            if member in ("path", "from") and not (
                isinstance(op[member], str) and (op[member] == "" or op[member].startswith("/"))
            ):
                raise BadRequest(
                    f"JSON patch operation {i} ({name}): {member} must be a JSON pointer "
                    "(empty or starting with /)"
                )
    try:
        jsonpatch.JsonPatch(ops)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise BadRequest(f"the JSON patch is malformed: {exc}") from None


def stored_json(kv: KV) -> Any:
    """An object's JSON as a GET answers it (with its resourceVersion): what is patched."""
    return json.loads(with_resource_version(kv))


def patched(patch: Patch, view: Callable[[KV], Any] = stored_json) -> Callable[[KV], Any]:
    """For `guarded_update`: the document PUT would have received, from the current object."""
    return lambda kv: patch.apply(view(kv))
