"""Deployment (apps/v1) and Job (batch/v1) routes, the `/scale` subresource, and the
ControllerRevisions that record a Deployment's rollouts.

    GET    /apis/apps/v1/deployments                               every namespace
    GET    /apis/apps/v1/namespaces/{ns}/deployments               list (selectors, watch)
    POST   /apis/apps/v1/namespaces/{ns}/deployments               create
    GET    /apis/apps/v1/namespaces/{ns}/deployments/{name}        get
    PUT    /apis/apps/v1/namespaces/{ns}/deployments/{name}        replace metadata and spec
    PATCH  /apis/apps/v1/namespaces/{ns}/deployments/{name}        patch them (api/patch.py)
    DELETE /apis/apps/v1/namespaces/{ns}/deployments/{name}        ?propagationPolicy=...
    GET|PUT|PATCH .../deployments/{name}/scale                     replicas
    (the same for /apis/batch/v1/.../jobs, without /scale)
    GET    /apis/apps/v1/[namespaces/{ns}/]controllerrevisions[/{name}]
    DELETE /apis/apps/v1/namespaces/{ns}/controllerrevisions/{name}

A replace follows Kubernetes' rules: `spec.selector` is immutable; a Job's
`template` and `completions` are too. `metadata.generation` counts changes of
the spec; `status` belongs to the controllers and is kept whatever the body says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common.limits import INT32_MAX
from common.models import (
    FOREGROUND_DELETION,
    ORPHAN,
    Deployment,
    Job,
    Scale,
    ScaleSpec,
    ScaleStatus,
    StatusCause,
    now,
)
from scheduler.admission import admit
from scheduler.api.common import (
    json_response,
    name_param,
    namespace_param,
    plane,
    read_documents,
    require_url_name,
)
from scheduler.api.deleting import (
    check_preconditions,
    delete_options,
    readable_or_removed,
    removed_unread,
)
from scheduler.api.errors import (
    BadRequest,
    Invalid,
    NotFoundError,
    modified,
)
from scheduler.api.generic import (
    Replace,
    check_new_finalizers,
    create_object,
    get_kv,
    guarded_update,
    list_objects,
    named,
    require_namespace,
    stamp_new,
    success,
    validate,
)
from scheduler.api.patch import MERGE, patched, read_patch
from scheduler.api.watch import watchable
from scheduler.controllers.gc import finalizer_policy, going
from scheduler.controlplane import ControlPlane
from scheduler.kinds import DEPLOYMENTS, JOBS, REVISIONS, Kind
from scheduler.objects import decode, encode, mutable_copy, with_resource_version
from scheduler.store import KV, Conflict, NotFound

# Annotations the controllers keep on the object; a replace that omits them keeps them.
SYSTEM_ANNOTATIONS = ("deployment.kubernetes.io/revision",)


def _kind_of(request: web.Request) -> Kind:
    return DEPLOYMENTS if "/deployments" in request.path else JOBS


def _namespace(request: web.Request) -> str | None:
    return namespace_param(request) if "namespace" in request.match_info else None


async def _one_document(request: web.Request, kind: Kind) -> Any:
    docs = await read_documents(request)
    if len(docs) != 1:
        raise BadRequest(f"expected one {kind.kind}, got {len(docs)} documents")
    return docs[0]


def _immutable(field: str, name: str, kind: Kind) -> Invalid:
    return Invalid(
        f'{kind.kind} "{name}" is invalid: {field}: field is immutable',
        causes=[StatusCause(reason="FieldValueInvalid", message="field is immutable", field=field)],
        name=name,
        kind=kind.kind,
    )


def check_update(kind: Kind, old: Any, new: Any) -> None:
    """Kubernetes' update rules for the fields that may not change."""
    name = old.metadata.name
    if isinstance(old, Deployment) and old.spec.selector != new.spec.selector:
        raise _immutable("spec.selector", name, kind)
    if isinstance(old, Job):
        for field, a, b in (
            ("spec.template", old.spec.template, new.spec.template),
            ("spec.completions", old.spec.completions, new.spec.completions),
            ("spec.completionMode", old.spec.completion_mode, new.spec.completion_mode),
        ):
            if a != b:
                raise _immutable(field, name, kind)
        if new.spec.selector is not None and old.spec.selector != new.spec.selector:
            raise _immutable("spec.selector", name, kind)


# -- Deployments and Jobs ---------------------------------------------------------------------


@watchable
async def list_workloads(request: web.Request) -> web.StreamResponse:
    """A DeploymentList or JobList (labelSelector, fieldSelector, watch)."""
    return await list_objects(request, _kind_of(request), _namespace(request))


async def create_workload(request: web.Request) -> web.Response:
    """Create a Deployment or Job (201); its controller then creates its pods."""
    kind = _kind_of(request)
    namespace = namespace_param(request)
    doc = await _one_document(request, kind)
    config = plane(request).config

    def build() -> Any:
        obj = validate(doc, kind, namespace)
        admit(config, obj)  # the pod template: hostNetwork, hostPath (admission.py)
        stamp_new(obj)
        return obj

    obj, generated = named(doc, build)
    store = plane(request).store
    await require_namespace(store, namespace)
    kv = await create_object(store, kind, namespace, obj, generated)
    return json_response(with_resource_version(kv), status=201)


async def get_workload(request: web.Request) -> web.Response:
    """One Deployment or Job."""
    kind = _kind_of(request)
    kv = await get_kv(plane(request).store, kind, namespace_param(request), name_param(request))
    return json_response(with_resource_version(kv))


def _replacer(request: web.Request) -> Replace:
    """A Deployment's or Job's replace (for `guarded_update`): metadata (labels,
    annotations, owner references) and spec, by Kubernetes' update rules; status is kept."""
    kind = _kind_of(request)
    namespace, name = namespace_param(request), name_param(request)
    cp = plane(request)

    async def replace(doc: Any, kv: KV) -> web.Response:
        incoming = validate(doc, kind, namespace)
        admit(cp.config, incoming)
        require_url_name(incoming.metadata.name, name)
        current: Any = decode(kv, kind.model)
        check_update(kind, current, incoming)
        updated = mutable_copy(current)
        annotations = dict(incoming.metadata.annotations)
        for key in SYSTEM_ANNOTATIONS:
            if key in current.metadata.annotations:
                annotations.setdefault(key, current.metadata.annotations[key])
        updated.metadata.labels = incoming.metadata.labels
        updated.metadata.annotations = annotations
        finalizers = incoming.metadata.finalizers or None
        deleting = current.metadata.deletion_timestamp is not None
        check_new_finalizers(kind.kind, name, deleting, current.metadata.finalizers, finalizers)
        updated.metadata.finalizers = finalizers
        if incoming.metadata.owner_references is not None:
            updated.metadata.owner_references = incoming.metadata.owner_references
        if incoming.spec != current.spec:
            updated.spec = incoming.spec
            updated.metadata.generation = (current.metadata.generation or 1) + 1
        if updated == current:
            return json_response(with_resource_version(kv))
        if deleting and current.metadata.finalizers and not finalizers:
            # Its last finalizer removed (a stuck Foreground deletion released): it goes
            # now, as in Kubernetes, and its dependents after it.
            await cp.store.delete(kv.key, expect=kv.mod_revision)
            return json_response(with_resource_version(kv))
        new = await cp.store.put(kv.key, encode(updated), obj=updated, expect=kv.mod_revision)
        return json_response(with_resource_version(new))

    return replace


def _loader(request: web.Request, kind: Kind) -> Callable[[], Awaitable[KV]]:
    namespace, name = namespace_param(request), name_param(request)
    return lambda: get_kv(plane(request).store, kind, namespace, name)


async def update_workload(request: web.Request) -> web.Response:
    """Replace metadata (labels, annotations) and spec; status is kept."""
    kind = _kind_of(request)
    load = _loader(request, kind)
    await load()  # 404 before the body is read
    doc = await _one_document(request, kind)
    name = name_param(request)
    return await guarded_update(
        plane(request).store,
        load,
        lambda kv: doc,
        _replacer(request),
        lambda: modified(kind.plural, name),
    )


async def patch_workload(request: web.Request) -> web.Response:
    """Patch metadata and spec (merge, strategic merge or JSON patch); the patched object
    is replaced as PUT replaces it."""
    kind = _kind_of(request)
    patch = await read_patch(request)
    name = name_param(request)
    return await guarded_update(
        plane(request).store,
        _loader(request, kind),
        patched(patch),
        _replacer(request),
        lambda: modified(kind.plural, name),
    )


async def delete_workload(request: web.Request) -> web.Response:
    """Delete. Background (the default): it goes at once, and the garbage collector
    deletes its pods after it. Foreground and Orphan, as Kubernetes does them: it is
    marked (200 with the object), its controller stops, and the collector deletes its
    pods (Foreground) or frees them of it (Orphan), then it."""
    kind = _kind_of(request)
    namespace, name = namespace_param(request), name_param(request)
    options = await delete_options(request)
    cp = plane(request)
    for _attempt in range(5):
        kv = await get_kv(cp.store, kind, namespace, name)
        obj: Any = await readable_or_removed(cp.store, kv, kind.model, options)
        if obj is None:
            return removed_unread(kind.plural, name)
        check_preconditions(options, kind.plural, name, obj.metadata.uid, kv.mod_revision)
        # Unsaid, the policy is the owner's own: the one its finalizers name, or the one
        # it is marked with already. (Unlike kube-apiserver, a batch/v1 Job deleted without
        # any is deleted with its pods, as every owner is here: kube-apiserver orphans
        # them for its older clients, and kubectl always names a policy.)
        policy = (
            options.propagation
            or finalizer_policy(obj.metadata.finalizers or ())
            or going(obj.metadata)
        )
        try:
            if policy in ("Foreground", "Orphan"):
                return json_response(with_resource_version(await _mark(cp, kv, obj, policy)))
            # Unguarded unless the client named the version it meant: a status written
            # meanwhile does not change what is deleted.
            guarded = options.uid is not None or options.revision is not None
            await cp.store.delete(kv.key, expect=kv.mod_revision if guarded else None)
        except Conflict:
            await cp.store.settled(kv.key)  # the owner changed while being marked: look again
            continue
        except NotFound:
            break
        return success(kind, obj)
    else:
        raise modified(kind.plural, name)  # changed under every attempt to mark it
    raise NotFoundError(f'{kind.plural} "{name}" not found', name=name, kind=kind.plural)


async def _mark(cp: ControlPlane, kv: KV, obj: Any, policy: str) -> KV:
    """The owner marked for deletion as Kubernetes marks it: its deletionTimestamp, and
    the finalizer of `policy` (foregroundDeletion or orphan) in place of the other's, the
    policy asked last being the one that holds. Its controller stops, and it stays (GET
    shows it) until the garbage collector has deleted or freed its dependents
    (scheduler/controllers/gc.py). Guarded: Conflict if it changed meanwhile."""
    wanted = FOREGROUND_DELETION if policy == "Foreground" else ORPHAN
    finalizers = obj.metadata.finalizers or []
    if obj.metadata.deletion_timestamp is not None and finalizer_policy(finalizers) == policy:
        return kv
    marked = mutable_copy(obj)
    marked.metadata.deletion_timestamp = obj.metadata.deletion_timestamp or now()
    kept = [f for f in finalizers if f not in (FOREGROUND_DELETION, ORPHAN)]
    marked.metadata.finalizers = [*kept, wanted]
    return await cp.store.put(kv.key, encode(marked), obj=marked, expect=kv.mod_revision)


# -- /scale -----------------------------------------------------------------------------------


def _scale(d: Deployment, kv: KV) -> dict[str, Any]:
    scale = Scale(
        # Not the Deployment's owners or finalizers (a Scale has none: kube-apiserver's
        # carries name, namespace, uid, resourceVersion and creationTimestamp only); with
        # its finalizers, the Scale of a Deployment deleted in the foreground was a 500.
        metadata=d.metadata.model_copy(
            update={
                "resource_version": str(kv.mod_revision),
                "owner_references": None,
                "finalizers": None,
            }
        ),
        spec=ScaleSpec(replicas=d.spec.replicas),
        status=ScaleStatus(replicas=d.status.replicas, selector=d.spec.selector.to_query()),
    )
    return scale.to_dict()


async def get_scale(request: web.Request) -> web.Response:
    """The Deployment's Scale (autoscaling/v1)."""
    kv = await get_kv(
        plane(request).store, DEPLOYMENTS, namespace_param(request), name_param(request)
    )
    return json_response(_scale(decode(kv, Deployment), kv))


def _scale_replacer(request: web.Request) -> Replace:
    """The Scale's replace (for `guarded_update`): the Deployment's `spec.replicas`."""
    name = name_param(request)
    store = plane(request).store

    async def replace(doc: Any, kv: KV) -> web.Response:
        spec = doc.get("spec") if isinstance(doc, dict) else None
        replicas = spec.get("replicas") if isinstance(spec, dict) else None
        # At most an int32, as Kubernetes' `replicas` (common/limits.py says why).
        if (
            isinstance(replicas, bool)
            or not isinstance(replicas, int)
            or not 0 <= replicas <= INT32_MAX
        ):
            raise Invalid(
                f'Scale "{name}" is invalid: spec.replicas must be an integer from 0 to '
                f"{INT32_MAX}",
                causes=[
                    StatusCause(
                        reason="FieldValueInvalid",
                        message=f"must be an integer from 0 to {INT32_MAX}",
                        field="spec.replicas",
                    )
                ],
            )
        current = decode(kv, Deployment)
        if current.spec.replicas == replicas:
            return json_response(_scale(current, kv))
        updated = mutable_copy(current)
        updated.spec.replicas = replicas
        updated.metadata.generation = (current.metadata.generation or 1) + 1
        new = await store.put(kv.key, encode(updated), obj=updated, expect=kv.mod_revision)
        return json_response(_scale(updated, new))

    return replace


def _scale_json(kv: KV) -> dict[str, Any]:
    return _scale(decode(kv, Deployment), kv)


async def update_scale(request: web.Request) -> web.Response:
    """Set `spec.replicas` from a Scale."""
    doc = await _one_document(request, DEPLOYMENTS)
    name = name_param(request)
    return await guarded_update(
        plane(request).store,
        _loader(request, DEPLOYMENTS),
        lambda kv: doc,
        _scale_replacer(request),
        lambda: modified(DEPLOYMENTS.plural, name),
    )


async def patch_scale(request: web.Request) -> web.Response:
    """Patch the Scale (`{"spec": {"replicas": N}}`, as `kubectl scale` sends); the patched
    Scale is replaced as PUT replaces it. `application/json` is taken as a merge patch:
    earlier `corral scale` sent that."""
    patch = await read_patch(request, plain_json=MERGE)
    name = name_param(request)
    return await guarded_update(
        plane(request).store,
        _loader(request, DEPLOYMENTS),
        patched(patch, _scale_json),
        _scale_replacer(request),
        lambda: modified(DEPLOYMENTS.plural, name),
    )


# -- ControllerRevisions ----------------------------------------------------------------------


@watchable
async def list_revisions(request: web.Request) -> web.StreamResponse:
    """A ControllerRevisionList (labelSelector, fieldSelector, watch)."""
    return await list_objects(request, REVISIONS, _namespace(request))


async def get_revision(request: web.Request) -> web.Response:
    """One ControllerRevision."""
    kv = await get_kv(
        plane(request).store, REVISIONS, namespace_param(request), name_param(request)
    )
    return json_response(with_resource_version(kv))


async def delete_revision(request: web.Request) -> web.Response:
    """Delete one ControllerRevision (`kubectl delete controllerrevision`): a revision has
    no dependents, so it goes at once whatever the propagation policy. One freed by an
    Orphan delete that nothing adopted is removed so; the current revision of a live
    Deployment is written again by its controller, numbered after those left."""
    namespace, name = namespace_param(request), name_param(request)
    options = await delete_options(request)
    store = plane(request).store
    kv = await get_kv(store, REVISIONS, namespace, name)
    revision: Any = await readable_or_removed(store, kv, REVISIONS.model, options)
    if revision is None:
        return removed_unread(REVISIONS.plural, name)
    check_preconditions(options, REVISIONS.plural, name, revision.metadata.uid, kv.mod_revision)
    # Unguarded unless the client named the version it meant, as for the other kinds.
    guarded = options.uid is not None or options.revision is not None
    try:
        await store.delete(kv.key, expect=kv.mod_revision if guarded else None)
    except Conflict:
        raise modified(REVISIONS.plural, name) from None
    except NotFound:
        raise NotFoundError(
            f'{REVISIONS.plural} "{name}" not found', name=name, kind=REVISIONS.plural
        ) from None
    return success(REVISIONS, revision)


def _routes() -> list[web.RouteDef]:
    routes = []
    for kind in (DEPLOYMENTS, JOBS):
        root = f"{kind.api_root}/namespaces/{{namespace}}/{kind.plural}"
        routes += [
            web.get(f"{kind.api_root}/{kind.plural}", list_workloads),
            web.get(root, list_workloads),
            web.post(root, create_workload),
            web.get(root + "/{name}", get_workload),
            web.put(root + "/{name}", update_workload),
            web.patch(root + "/{name}", patch_workload),
            web.delete(root + "/{name}", delete_workload),
        ]
    scale = f"{DEPLOYMENTS.api_root}/namespaces/{{namespace}}/deployments/{{name}}/scale"
    routes += [
        web.get(scale, get_scale),
        web.put(scale, update_scale),
        web.patch(scale, patch_scale),
        web.get(f"{REVISIONS.api_root}/{REVISIONS.plural}", list_revisions),
        web.get(
            f"{REVISIONS.api_root}/namespaces/{{namespace}}/{REVISIONS.plural}", list_revisions
        ),
        web.get(
            f"{REVISIONS.api_root}/namespaces/{{namespace}}/{REVISIONS.plural}/{{name}}",
            get_revision,
        ),
        web.delete(
            f"{REVISIONS.api_root}/namespaces/{{namespace}}/{REVISIONS.plural}/{{name}}",
            delete_revision,
        ),
    ]
    return routes


ROUTES = _routes()

# For the OpenAPI document: (method, path) -> (request schema, success code, response schema).
_NS = "/namespaces/{namespace}"
OPENAPI_SHAPES: dict[tuple[str, str], tuple[str | None, int, str | None]] = {}
for _kind in (DEPLOYMENTS, JOBS):
    _root = f"{_kind.api_root}{_NS}/{_kind.plural}"
    OPENAPI_SHAPES |= {
        ("GET", f"{_kind.api_root}/{_kind.plural}"): (None, 200, _kind.list_kind),
        ("GET", _root): (None, 200, _kind.list_kind),
        ("POST", _root): (_kind.kind, 201, _kind.kind),
        ("GET", _root + "/{name}"): (None, 200, _kind.kind),
        ("PUT", _root + "/{name}"): (_kind.kind, 200, _kind.kind),
        ("PATCH", _root + "/{name}"): ("Patch", 200, _kind.kind),
        ("DELETE", _root + "/{name}"): (None, 200, "Status"),
    }
OPENAPI_SHAPES |= {
    ("GET", f"/apis/apps/v1{_NS}/deployments/{{name}}/scale"): (None, 200, "Scale"),
    ("PUT", f"/apis/apps/v1{_NS}/deployments/{{name}}/scale"): ("Scale", 200, "Scale"),
    ("PATCH", f"/apis/apps/v1{_NS}/deployments/{{name}}/scale"): ("Patch", 200, "Scale"),
    ("GET", "/apis/apps/v1/controllerrevisions"): (None, 200, "ControllerRevisionList"),
    ("GET", f"/apis/apps/v1{_NS}/controllerrevisions"): (None, 200, "ControllerRevisionList"),
    ("GET", f"/apis/apps/v1{_NS}/controllerrevisions/{{name}}"): (None, 200, "ControllerRevision"),
    ("DELETE", f"/apis/apps/v1{_NS}/controllerrevisions/{{name}}"): (None, 200, "Status"),
}
