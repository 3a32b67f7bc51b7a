"""What the handlers of every stored kind share: validation, selectors, lists, guarded writes.

Namespaces, Deployments, Jobs and ControllerRevisions are served by small
handler modules built on these: a body becomes a typed object through the same
manifest validation as `corral apply` (422 naming the field), a list takes
`labelSelector`, `fieldSelector` (`metadata.name`, `metadata.namespace`) and
`watch`, and a replace is guarded by `metadata.resourceVersion` when one is given.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from common.manifest import ManifestError, load_object
from common.models import Model, Namespace, StatusCause, now
from common.selector import SelectorError, parse_selector
from common.selector import matches as selector_matches
from scheduler.api.common import (
    body_name,
    field_selector,
    json_response,
    parse_revision,
    plane,
)
from scheduler.api.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Forbidden,
    Invalid,
    NotFoundError,
)
from scheduler.api.paging import check_list_options, page, with_continue
from scheduler.api.watch import serve_watch, wants_watch
from scheduler.kinds import NAMESPACES, Kind
from scheduler.names import from_generate_name
from scheduler.objects import decode, encode, list_json
from scheduler.store import KV, Conflict, NotFound, Store

Keep = Callable[[KV], bool]
M = TypeVar("M", bound=Model)
# One replace of an object: (the new document, the current KV) -> the answer; its write is
# guarded by the KV's revision and raises the store's Conflict (or NotFound) if it lost.
Replace = Callable[[Any, KV], Awaitable[web.Response]]


_META_FIELDS = ("metadata.name", "metadata.namespace")


def _meta_fields(obj: Any) -> dict[str, str]:
    meta = obj.metadata
    return {"metadata.name": meta.name, "metadata.namespace": meta.namespace or ""}


def list_filter(request: web.Request, kind: Kind) -> Keep | None:
    """labelSelector and fieldSelector (`metadata.name`, `metadata.namespace`) as a KV test."""
    try:
        labels = parse_selector(request.query.get("labelSelector"))
    except SelectorError as exc:
        raise BadRequest(f"labelSelector: {exc}") from None
    fields = field_selector(request, _META_FIELDS, f" for {kind.plural}")
    if not labels and not fields:
        return None

    def keep(kv: KV) -> bool:
        obj: Any = decode(kv, kind.model)
        if labels and not selector_matches(labels, obj.metadata.labels):
            return False
        have = _meta_fields(obj)
        return all((have[f] != v) if neg else (have[f] == v) for f, v, neg in fields)

    return keep


async def list_objects(
    request: web.Request, kind: Kind, namespace: str | None
) -> web.StreamResponse:
    """A `<Kind>List` of what is under the namespace (all with None), or a watch of it."""
    keep = list_filter(request, kind)
    prefix = kind.namespace_prefix(namespace)
    if wants_watch(request):
        return await serve_watch(request, prefix, keep)
    kvs, revision = await plane(request).store.list(prefix)
    check_list_options(request, revision)
    if keep is not None:
        kvs = [kv for kv in kvs if keep(kv)]
    kvs, more = page(request, kvs, prefix)  # ?limit= and ?continue=, as for pods
    body = list_json(kind.list_kind, kvs, revision, kind.api_version)
    return json_response(with_continue(body, more))


def validate(doc: Any, kind: Kind, namespace: str | None) -> Any:
    """The body as a `kind` object, checked, or 422 naming each bad field."""
    if not isinstance(doc, dict):
        raise BadRequest(f"expected a {kind.kind} object, got {type(doc).__name__}")
    doc.setdefault("apiVersion", kind.api_version)
    doc.setdefault("kind", kind.kind)
    if doc.get("kind") != kind.kind or doc.get("apiVersion") != kind.api_version:
        raise Invalid(
            f"expected {kind.api_version}/{kind.kind}, got "
            f"{doc.get('apiVersion')}/{doc.get('kind')}",
            causes=[StatusCause(reason="FieldValueInvalid", message="wrong kind", field="kind")],
        )
    try:
        obj: Any = load_object(doc)
    except ManifestError as exc:
        name = body_name(doc)
        raise Invalid(exc.message, causes=exc.causes, name=name, kind=kind.kind) from None
    if namespace is not None:
        if obj.metadata.namespace not in (None, namespace):
            raise Invalid(
                f"the namespace of the object ({obj.metadata.namespace}) does not match the "
                f"namespace of the request ({namespace})",
                causes=[
                    StatusCause(
                        reason="FieldValueInvalid",
                        message="does not match the request",
                        field="metadata.namespace",
                    )
                ],
                name=obj.metadata.name,
                kind=kind.kind,
            )
        obj.metadata.namespace = namespace
    return obj


# How many names a create with `metadata.generateName` tries, each new, before a 409:
# kube-apiserver's maxNameGenerationCreateAttempts (enough for a million names of one
# prefix with a 0.1% chance of a conflict, it says).
GENERATE_NAME_ATTEMPTS = 8


def name_to_generate(doc: Any) -> str | None:
    """The body's `metadata.generateName` if the server is to name the object (it has no
    `metadata.name`): the body is given a name made from it now, before it is validated,
    as kube-apiserver names it (the name is then checked as a given one is). None if the
    body names itself (or has no usable generateName: validation says what is wrong)."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("name") not in (None, ""):
        return None
    base = meta.get("generateName")
    if not isinstance(base, str) or not base:
        return None
    meta["name"] = from_generate_name(base)
    return base


def rename(doc: Any, base: str) -> None:
    """Give a body named by `name_to_generate` another name, for a new try."""
    doc["metadata"]["name"] = from_generate_name(base)


@dataclass(frozen=True, slots=True)
class Generated:
    """A create whose body `name_to_generate` named from `base`, its generateName; `build`
    makes the object of the body (validated, the server's fields set) for another try."""

    doc: Any
    base: str
    build: Callable[[], Model]


def named(doc: Any, build: Callable[[], M]) -> tuple[M, Generated | None]:
    """The object a create's body makes (`build`), named first from its generateName if it
    has no name (`name_to_generate`), with what `create_object` needs to name it anew."""
    base = name_to_generate(doc)
    return build(), (Generated(doc, base, build) if base is not None else None)


def already_exists(kind: Kind, name: str, generated: bool, more: str = "") -> AlreadyExists:
    """Kubernetes' 409 for a create whose name is taken; for a name the server
    `generated`, its own message and `retryAfterSeconds` (`more` ends the message)."""
    taken = f'{kind.group_resource} "{name}" already exists'
    if generated:
        message = f"{taken}, the server was not able to generate a unique name for the object"
        return AlreadyExists(message + more, name=name, kind=kind.plural, retry_after=1)
    return AlreadyExists(taken + more, name=name, kind=kind.plural)


async def create_object(
    store: Store,
    kind: Kind,
    namespace: str | None,
    obj: Model,
    generated: Generated | None = None,
) -> KV:
    """Write `obj`, a new object; 409 if its name is taken. One `generated` from its
    generateName is then named anew and made again, as kube-apiserver does, up to
    GENERATE_NAME_ATTEMPTS names in all, then 409."""
    attempt = 1
    while True:
        name = obj.metadata.name  # type: ignore[attr-defined]
        try:
            return await store.put(kind.key(namespace, name), encode(obj), obj=obj, expect=0)
        except Conflict:
            if generated is None or attempt == GENERATE_NAME_ATTEMPTS:
                raise already_exists(kind, name, generated is not None) from None
        rename(generated.doc, generated.base)
        obj = generated.build()
        attempt += 1


def stamp_new(obj: Any) -> None:
    """The metadata the server owns, for an object being created."""
    meta = obj.metadata
    meta.uid = str(uuid.uuid4())
    meta.creation_timestamp = now()
    meta.resource_version = None
    meta.deletion_timestamp = None
    meta.generation = 1
    obj.status = type(obj.status)()


def requested_revision(doc: Any) -> int | None:
    """The body's metadata.resourceVersion (None if it has none: an unconditional update,
    which is tried again on a conflict, as Kubernetes does; 422 if not a revision)."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    want = meta.get("resourceVersion") if isinstance(meta, dict) else None
    if want is None or want == "":
        return None
    if isinstance(want, str):
        revision = parse_revision(want)
    elif isinstance(want, int) and not isinstance(want, bool):
        # A number is taken as its digits are; str() of one past 4300 digits would raise.
        revision = want if 0 <= want < 10**20 else None
    else:
        revision = None
    if revision is None:
        raise Invalid(
            "metadata.resourceVersion must be a number",
            causes=[
                StatusCause(
                    reason="FieldValueInvalid",
                    message="not a number",
                    field="metadata.resourceVersion",
                )
            ],
        )
    return revision


async def guarded_update(
    store: Store,
    load: Callable[[], Awaitable[KV]],
    make_doc: Callable[[KV], Any],
    replace: Replace,
    conflict: Callable[[], ApiError],
) -> web.Response:
    """What PUT and PATCH share: read the object (`load`, 404 if gone), make the document
    to replace it with (`make_doc`: PUT's body, or the patch applied to the current one),
    and `replace` it, guarded by the document's `metadata.resourceVersion`.

    A resourceVersion the document names is a precondition: 409 (`conflict`) if the
    object is at another one, even where the replace would change nothing, as in
    Kubernetes. Without one (or with the current one, as a patched object has unless the
    patch set it), a write that lost to another is made again on top of that one once it
    is durable; a patch is then applied to the new version.
    """
    for _attempt in range(5):
        kv = await load()
        doc = make_doc(kv)
        want = requested_revision(doc)
        if want is not None and want != kv.mod_revision:
            break
        try:
            return await replace(doc, kv)
        except (Conflict, NotFound):
            await store.settled(kv.key)  # a write of it was queued: read it once durable
    raise conflict()


async def get_kv(store: Store, kind: Kind, namespace: str | None, name: str) -> KV:
    kv = await store.get(kind.key(namespace, name))
    if kv is None:
        raise NotFoundError(f'{kind.plural} "{name}" not found', name=name, kind=kind.plural)
    return kv


async def require_namespace(store: Store, namespace: str) -> None:
    """404 for a namespace that does not exist, 403 for one being deleted (as Kubernetes)."""
    kv = await store.get(NAMESPACES.key(None, namespace))
    if kv is None:
        raise NotFoundError(
            f'namespaces "{namespace}" not found', name=namespace, kind="namespaces"
        )
    if decode(kv, Namespace).status.phase == "Terminating":
        raise Forbidden(
            f"unable to create new content in namespace {namespace} because it is being terminated",
            name=namespace,
            kind="namespaces",
        )


def check_new_finalizers(
    kind: str, name: str, deleting: bool, before: list[str] | None, after: list[str] | None
) -> None:
    """422 if an update adds a finalizer to an object being deleted, which Kubernetes
    forbids: a finalizer added then could hold the object for good."""
    if deleting and set(after or ()) - set(before or ()):
        message = "no new finalizers can be added if the object is being deleted"
        raise Invalid(
            f'{kind} "{name}" is invalid: metadata.finalizers: Forbidden: {message}',
            causes=[
                StatusCause(
                    reason="FieldValueForbidden", message=message, field="metadata.finalizers"
                )
            ],
            name=name,
            kind=kind,
        )


def success(kind: Kind, obj: Model) -> web.Response:
    """The `Status` Kubernetes answers a delete with."""
    meta: Any = obj.metadata  # type: ignore[attr-defined]
    return json_response(
        {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Success",
            "details": {"name": meta.name, "kind": kind.plural, "uid": meta.uid},
        }
    )
