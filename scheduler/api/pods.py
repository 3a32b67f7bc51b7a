"""Pod routes: create (one or a batch), list, get, update or patch (labels, annotations,
finalizers, containers' images), delete."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from common.logsince import parse_stamp
from common.manifest import ManifestError, is_list, load_object
from common.models import DEFAULT_DNS_POLICY, Pod, PodStatus, StatusCause, now
from common.selector import SelectorError, parse_selector
from common.selector import matches as selector_matches
from scheduler.admission import admit
from scheduler.api.common import (
    body_name,
    field_selector,
    int_param,
    json_response,
    name_param,
    namespace_param,
    plane,
    read_documents,
    require_url_name,
)
from scheduler.api.deleting import (
    DeleteOptions,
    check_preconditions,
    delete_options,
    readable_or_removed,
    removed_unread,
)
from scheduler.api.errors import (
    BadRequest,
    ConflictError,
    Invalid,
    NotFoundError,
    modified,
)
from scheduler.api.generic import (
    GENERATE_NAME_ATTEMPTS,
    Replace,
    already_exists,
    check_new_finalizers,
    create_object,
    get_kv,
    guarded_update,
    name_to_generate,
    named,
    rename,
    require_namespace,
)
from scheduler.api.paging import check_list_options, page, with_continue
from scheduler.api.patch import patched, read_patch
from scheduler.api.watch import serve_watch, wants_watch, watchable
from scheduler.cluster import TERMINAL_PHASES
from scheduler.controlplane import ControlPlane
from scheduler.hub import LogsUnavailable
from scheduler.kinds import PODS as PODS_KIND
from scheduler.logfilter import LOG_ENDED_PREFIX, LogFilter
from scheduler.objects import (
    PODS,
    decode,
    encode,
    list_json,
    mutable_copy,
    new_uids,
    pod_key,
    set_fields,
    with_resource_version,
)
from scheduler.podfinal import mark_deleted, may_run, must_wait
from scheduler.store import KV, Conflict, NotFound, Op

MAX_BATCH = 5000
_FIELDS: dict[str, Callable[[Pod], str]] = {
    "metadata.name": lambda p: p.metadata.name,
    "metadata.namespace": lambda p: p.metadata.namespace or "",
    "spec.nodeName": lambda p: p.spec.node_name or "",
    "status.phase": lambda p: p.status.phase,
}


def _validate(
    doc: Any,
    namespace: str,
    prefix: str = "",
    *,
    created: datetime | None = None,
    uid: str | None = None,
    keep_status: bool = False,
) -> Pod:
    """A client's pod, checked, with the fields the server owns set.

    `created` and `uid` are the creation time and uid to give it (a batch passes one time
    for all its pods and uids made together); by default, now and a new uid. The status
    the client sent is dropped, unless `keep_status` (a write of the status subresource).
    """
    if isinstance(doc, dict):
        # What the URL says, as kube-apiserver fills it in (clients send objects without).
        doc.setdefault("apiVersion", "v1")
        doc.setdefault("kind", "Pod")
        if doc["kind"] != "Pod":
            raise Invalid(f"{prefix}kind: expected Pod, got {doc['kind']!r}")
    try:
        obj = load_object(doc)
    except ManifestError as exc:
        causes = [
            StatusCause(
                reason=c.reason,
                message=c.message,
                field=f"{prefix}{c.field}" if c.field else prefix.rstrip("."),
            )
            for c in exc.causes
        ]
        raise Invalid(exc.message, causes=causes, name=body_name(doc), kind="Pod") from None
    assert isinstance(obj, Pod)
    meta = obj.metadata
    if meta.namespace is not None and meta.namespace != namespace:
        raise Invalid(
            f"the namespace of the object ({meta.namespace}) does not match the namespace "
            f"of the request ({namespace})",
            causes=[
                StatusCause(
                    reason="FieldValueInvalid",
                    message="does not match the request",
                    field=f"{prefix}metadata.namespace",
                )
            ],
            name=meta.name,
            kind="Pod",
        )
    # The server's fields, set together (set_fields: about a quarter of the cost of
    # assigning them one by one); the fields a client rarely sends are only reset when it
    # did send them.
    owned: dict[str, Any] = {
        "uid": uid or new_uids(1)[0],
        "creation_timestamp": created or now(),
        "generation": 1,
    }
    if meta.namespace is None:
        owned["namespace"] = namespace
    if meta.resource_version is not None:
        owned["resource_version"] = None
    if meta.deletion_timestamp is not None:
        owned["deletion_timestamp"] = None
    set_fields(meta, owned)
    if obj.spec.dns_policy is None:  # kube-apiserver's default, so a PUT without it matches
        set_fields(obj.spec, {"dns_policy": DEFAULT_DNS_POLICY})
    if "status" in doc and not keep_status:  # dropped (validated, above)
        obj.status = PodStatus()
    return obj


async def create_pods(request: web.Request) -> web.Response:
    namespace = namespace_param(request)
    docs = await read_documents(request)
    if len(docs) != 1:
        raise BadRequest(f"expected one object (a Pod or a PodList), got {len(docs)} documents")
    doc = docs[0]
    store = plane(request).store
    await require_namespace(store, namespace)  # 404 if it does not exist, as in Kubernetes
    config = plane(request).config
    if not is_list(doc):

        def build() -> Pod:
            pod = _validate(doc, namespace)
            admit(config, pod)  # hostNetwork, hostPath: by the scheduler's options
            return pod

        kv = await create_object(store, PODS_KIND, namespace, *named(doc, build))
        return json_response(with_resource_version(kv), status=201)
    items = doc["items"]
    if len(items) > MAX_BATCH:
        raise BadRequest(f"a batch holds at most {MAX_BATCH} pods, got {len(items)}")
    created = now()  # one creation time and one read of randomness for the whole batch
    uids = new_uids(len(items))
    bases = [name_to_generate(item) for item in items]

    def build_item(i: int) -> Pod:
        prefix = f"items[{i}]."
        pod = _validate(items[i], namespace, prefix, created=created, uid=uids[i])
        admit(config, pod, prefix)
        return pod

    pods = [build_item(i) for i in range(len(items))]
    tries = [1] * len(pods)

    def retry(i: int) -> None:
        """Item `i`, named from its generateName, under another name, its name being
        taken (409 after GENERATE_NAME_ATTEMPTS names, or if it was named in the body)."""
        base = bases[i]
        if base is None or tries[i] == GENERATE_NAME_ATTEMPTS:
            name, more = pods[i].metadata.name, "; nothing in the batch was created"
            raise already_exists(PODS_KIND, name, base is not None, more)
        rename(items[i], base)
        pods[i] = build_item(i)
        tries[i] += 1

    _unique_names(pods, bases, retry)
    while True:
        ops = [Op("put", pod_key(namespace, p.metadata.name), encode(p), p, expect=0) for p in pods]
        try:
            kvs = await store.txn(ops)
            break
        except Conflict as exc:
            taken = exc.key.rsplit("/", 1)[-1]
            i = next(i for i, p in enumerate(pods) if p.metadata.name == taken)
            retry(i)
            _unique_names(pods, bases, retry)
    revision = max(kv.mod_revision for kv in kvs) if kvs else store.revision
    return json_response(list_json("PodList", kvs, revision), status=201)


def _unique_names(pods: list[Pod], bases: list[str | None], retry: Callable[[int], None]) -> None:
    """A batch's names each once: 422 for a name given twice in the body; a name made
    from a generateName that another item has is made anew (`retry`)."""
    seen: set[str] = set()
    for i, pod in enumerate(pods):
        if bases[i] is None:
            if pod.metadata.name in seen:
                raise Invalid(
                    f"pod name {pod.metadata.name!r} appears twice in the batch",
                    causes=[
                        StatusCause(
                            reason="FieldValueDuplicate",
                            message="Duplicate value",
                            field=f"items[{i}].metadata.name",
                        )
                    ],
                )
            seen.add(pod.metadata.name)
    for i in range(len(pods)):
        if bases[i] is not None:
            while pods[i].metadata.name in seen:
                retry(i)
            seen.add(pods[i].metadata.name)


def _filters(request: web.Request) -> Callable[[Pod], bool] | None:
    try:
        labels = parse_selector(request.query.get("labelSelector"))
    except SelectorError as exc:
        raise BadRequest(f"labelSelector: {exc}") from None
    fields = [(_FIELDS[f], value, neg) for f, value, neg in field_selector(request, _FIELDS)]
    if not labels and not fields:
        return None

    def keep(pod: Pod) -> bool:
        if labels and not selector_matches(labels, pod.metadata.labels):
            return False
        return all(
            (get(pod) != value) if negate else (get(pod) == value) for get, value, negate in fields
        )

    return keep


@watchable
async def list_pods(request: web.Request) -> web.StreamResponse:
    namespace = namespace_param(request) if "namespace" in request.match_info else None
    keep = _filters(request)
    prefix = pod_key(namespace, "") if namespace else PODS
    if wants_watch(request):  # ?watch=true: a stream of changes (scheduler/api/watch.py)
        test = keep
        return await serve_watch(
            request, prefix, None if test is None else lambda kv: test(decode(kv, Pod))
        )
    kvs, revision = await plane(request).store.list(prefix)
    check_list_options(request, revision)
    if keep is not None:
        kvs = [kv for kv in kvs if keep(decode(kv, Pod))]
    kvs, more = page(request, kvs, prefix)  # ?limit= and ?continue= (api/paging.py)
    return json_response(with_continue(list_json("PodList", kvs, revision), more))


async def get_pod(request: web.Request) -> web.Response:
    namespace, name = namespace_param(request), name_param(request)
    kv = await plane(request).store.get(pod_key(namespace, name))
    if kv is None:
        raise NotFoundError(f'pods "{name}" not found', name=name, kind="pods")
    return json_response(with_resource_version(kv))


# What a pod update may change in the spec: kube-apiserver's ValidatePodUpdate also lets
# `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` and
# (from a negative value) `spec.terminationGracePeriodSeconds` change, fields a corral pod
# does not have (unknown fields are refused) or cannot hold (a negative grace period).
_UPDATABLE_SPEC = "`spec.containers[*].image`"


def _spec_forbidden(name: str, message: str, field: str) -> Invalid:
    return Invalid(
        f'Pod "{name}" is invalid: {field}: Forbidden: {message}',
        causes=[StatusCause(reason="FieldValueForbidden", message=message, field=field)],
        name=name,
        kind="Pod",
    )


def _first_difference(old: Any, new: Any, path: str) -> str:
    """The path of the first field where two JSON values differ (`old != new`), to name
    it in a 422: kube-apiserver appends a diff of the specs to its message."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}")
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{i}]")
    return path


def _checked_spec_update(name: str, current: Pod, incoming: Pod) -> list[str] | None:
    """The containers' images an update of `current` to `incoming` sets, or None if it
    leaves them as they are; 422 for any other change to the spec. kube-apiserver's
    ValidatePodUpdate: the images are compared by position, everything else must match
    (`nodeName` may be left out, and a pod stored before corral set `dnsPolicy` has
    none, which means the default)."""
    old, new = current.spec, incoming.spec
    if len(new.containers) != len(old.containers):
        message = "pod updates may not add or remove containers"
        raise _spec_forbidden(name, message, "spec.containers")
    images = [c.image for c in new.containers]
    for i, image in enumerate(images):
        if image != old.containers[i].image and image.strip() != image:
            # kube-apiserver's ValidateContainerUpdates; a create takes the image as given.
            where = f"spec.containers[{i}].image"
            message = "must not have leading or trailing whitespace"
            raise Invalid(
                f'Pod "{name}" is invalid: {where}: Invalid value: {image!r}: {message}',
                causes=[StatusCause(reason="FieldValueInvalid", message=message, field=where)],
                name=name,
                kind="Pod",
            )
    comparable = old.model_copy(
        update={
            "containers": [
                c.model_copy(update={"image": image})
                for c, image in zip(old.containers, images, strict=True)
            ],
            "node_name": new.node_name,
            "dns_policy": old.dns_policy or DEFAULT_DNS_POLICY,
        }
    )
    wanted, allowed = new.to_dict(), comparable.to_dict()
    rebound = new.node_name not in (None, old.node_name)
    if wanted != allowed or rebound:
        changed = "spec.nodeName" if rebound else _first_difference(allowed, wanted, "spec")
        message = (
            f"pod updates may not change fields other than {_UPDATABLE_SPEC} (changed: {changed})"
        )
        raise _spec_forbidden(name, message, "spec")
    if images == [c.image for c in old.containers]:
        return None
    return images


def _metadata_written(name: str, current: Pod, incoming: Pod) -> Pod:
    """`current`, copied, with the labels, annotations and finalizers of `incoming`: what a
    write of a pod, or of its status, takes of its metadata."""
    meta, wanted = current.metadata, incoming.metadata
    finalizers = wanted.finalizers or None
    deleting = meta.deletion_timestamp is not None
    check_new_finalizers("Pod", name, deleting, meta.finalizers, finalizers)
    updated = mutable_copy(current)
    updated.metadata.labels = wanted.labels
    updated.metadata.annotations = wanted.annotations
    updated.metadata.finalizers = finalizers
    return updated


def _writable(pod: Pod) -> tuple[object, ...]:
    meta = pod.metadata
    return meta.labels, meta.annotations, meta.finalizers


def _replacer(request: web.Request) -> Replace:
    """A pod's replace (for `guarded_update`): labels, annotations and finalizers, and the
    containers' images; the rest of the spec is immutable, as in Kubernetes."""
    namespace, name = namespace_param(request), name_param(request)
    store = plane(request).store

    async def replace(doc: Any, kv: KV) -> web.Response:
        incoming = _validate(doc, namespace)
        require_url_name(incoming.metadata.name, name)
        current = decode(kv, Pod)
        images = _checked_spec_update(name, current, incoming)
        updated = _metadata_written(name, current, incoming)
        if images is None and _writable(updated) == _writable(current):
            return json_response(with_resource_version(kv))  # no change, no new version
        if images is not None:
            # The pod's agent restarts each container whose image changed (agent/
            # supervisor.py); generation counts spec changes, as kube-apiserver's does.
            for container, image in zip(updated.spec.containers, images, strict=True):
                container.image = image
            updated.metadata.generation = (current.metadata.generation or 1) + 1
        new = await store.put(kv.key, encode(updated), obj=updated, expect=kv.mod_revision)
        return json_response(with_resource_version(new))

    return replace


async def update_pod(request: web.Request) -> web.Response:
    """Replace labels, annotations, finalizers and containers' images.

    The rest of a pod's spec is immutable, as in Kubernetes (422); the pod's agent
    restarts a container whose image changed.

    Guarded by the body's `metadata.resourceVersion` (409 if it is not the pod's); without
    one the update is unconditional: a write that lands first (a status report) is read
    and the update made on top of it, as Kubernetes does, not answered 409."""
    return await _replace_pod(request, _replacer(request))


async def patch_pod(request: web.Request) -> web.Response:
    """Patch labels, annotations, finalizers and containers' images.

    Merge, strategic merge or JSON patch: the patched pod is replaced as PUT replaces it."""
    return await _patch_pod(request, _replacer(request))


async def _replace_pod(request: web.Request, replace: Replace) -> web.Response:
    """PUT of the pod or its status: the body's one Pod, replaced by `replace`."""
    docs = await read_documents(request)
    if len(docs) != 1:
        raise BadRequest(f"expected one Pod, got {len(docs)} documents")
    return await _update_pod(request, lambda kv: docs[0], replace)


async def _patch_pod(request: web.Request, replace: Replace) -> web.Response:
    """PATCH of the pod or its status: the stored pod patched, replaced by `replace`."""
    return await _update_pod(request, patched(await read_patch(request)), replace)


async def _update_pod(
    request: web.Request, wanted: Callable[[KV], Any], replace: Replace
) -> web.Response:
    name = name_param(request)
    store = plane(request).store
    return await guarded_update(
        store,
        lambda: get_kv(store, PODS_KIND, namespace_param(request), name),
        wanted,
        replace,
        lambda: modified("pods", name),
    )


async def delete_pod(request: web.Request) -> web.Response:
    namespace, name = namespace_param(request), name_param(request)
    options = await delete_options(request)
    kv = await delete_pod_object(plane(request), namespace, name, options)
    return json_response(with_resource_version(kv)) if kv else removed_unread("pods", name)


async def delete_pod_object(
    cp: ControlPlane, namespace: str, name: str, options: DeleteOptions
) -> KV | None:
    """Delete a pod as DELETE does (an eviction too: api/evictions.py): gracefully where it
    may run, 404 if there is none, 409 for a failed precondition. The pod as answered
    (marked for deletion, or as it was when removed); None if it was removed unread. With
    `options.dry_run`, all of it is checked and nothing written."""
    grace = options.grace
    key = pod_key(namespace, name)
    for _attempt in range(5):
        kv = await cp.store.get(key)
        if kv is None:
            raise NotFoundError(f'pods "{name}" not found', name=name, kind="pods")
        if options.dry_run:
            pod = decode(kv, Pod)  # unreadable: a 500, as the delete itself would be
            check_preconditions(options, "pods", name, pod.metadata.uid, kv.mod_revision)
            return kv
        read = await readable_or_removed(cp.store, kv, Pod, options)
        if read is None:
            return None
        pod = read
        check_preconditions(options, "pods", name, pod.metadata.uid, kv.mod_revision)
        # Grace 0 (--force) removes a pod that may still run without waiting for its
        # agent, which stops it when it learns; finalizers hold it whatever the grace.
        try:
            if must_wait(pod, may_run(cp.cluster, pod) and grace != 0):
                # Marked: the agent stops it within its grace period and confirms, and
                # the hub removes it then (scheduler/podfinal.py).
                if pod.metadata.deletion_timestamp is not None:
                    return kv
                return await mark_deleted(cp.store, key, kv, pod, now(), grace)
            await cp.store.delete(key, expect=kv.mod_revision)
            return kv
        except (Conflict, NotFound):
            # Changed under us (a status report, say): look again once that is durable.
            await cp.store.settled(key)
    raise ConflictError(f'pods "{name}" kept changing; try again', name=name, kind="pods")


def _status_replacer(request: web.Request) -> Replace:
    """A replace of the status subresource (for `guarded_update`), as kube-apiserver's
    pod status strategy makes it: the status is the body's; the spec, ownerReferences
    and deletionTimestamp stay the stored ones whatever the body says; labels,
    annotations and finalizers are taken as a PUT of the pod takes them."""
    namespace, name = namespace_param(request), name_param(request)
    store = plane(request).store

    async def replace(doc: Any, kv: KV) -> web.Response:
        current = decode(kv, Pod)
        if not isinstance(doc, dict):
            raise BadRequest(f"expected a Pod object, got {type(doc).__name__}")
        # The spec is the stored one before anything is checked, as kube-apiserver resets
        # it first: a status written with a partial pod (no spec) is accepted.
        doc = {**doc, "spec": current.spec.to_dict()}
        incoming = _validate(doc, namespace, keep_status=True)
        require_url_name(incoming.metadata.name, name)
        _check_status_transition(name, current, incoming.status)
        updated = _metadata_written(name, current, incoming)
        updated.status = incoming.status
        if updated.to_dict() == current.to_dict():
            return json_response(with_resource_version(kv))  # no change, no new version
        new = await store.put(kv.key, encode(updated), obj=updated, expect=kv.mod_revision)
        return json_response(with_resource_version(new))

    return replace


def _check_status_transition(name: str, current: Pod, status: PodStatus) -> None:
    """What a status write may not do (422, writing nothing). As kube-apiserver's
    ValidateContainerStateTransition: a terminated container of a pod that does not
    restart it (Never; OnFailure after exit 0) may not become running or waiting again.
    And, corral's own rule: a pod in a terminal phase (Succeeded, Failed) stays in it,
    as its agent's reports cannot move it either (the hub refuses them): Jobs count a
    finished pod once, and a node's pods are evicted by what they are."""
    causes: list[StatusCause] = []
    if current.status.phase in TERMINAL_PHASES and status.phase != current.status.phase:
        causes.append(
            StatusCause(
                reason="FieldValueForbidden",
                message=f"may not change from the terminal phase {current.status.phase}",
                field="status.phase",
            )
        )
    policy = current.spec.restart_policy
    if policy != "Always":
        wanted = {cs.name: cs for cs in status.container_statuses}
        for i, old in enumerate(current.status.container_statuses):
            ended = old.state.terminated
            if ended is None or (ended.exit_code != 0 and policy == "OnFailure"):
                continue
            new = wanted.get(old.name)
            if new is not None and new.state.terminated is None:
                causes.append(
                    StatusCause(
                        reason="FieldValueForbidden",
                        message="may not be transitioned to non-terminated state",
                        field=f"status.containerStatuses[{i}].state",
                    )
                )
    if causes:
        what = "; ".join(f"{c.field}: Forbidden: {c.message}" for c in causes)
        raise Invalid(f'Pod "{name}" is invalid: {what}', causes=causes, name=name, kind="Pod")


async def get_pod_status(request: web.Request) -> web.Response:
    """Read a pod, through its status subresource (the whole pod, as kube-apiserver)."""
    return await get_pod(request)


async def update_pod_status(request: web.Request) -> web.Response:
    """Replace a pod's status: spec changes are ignored; guarded by
    `metadata.resourceVersion` when the body gives one (409 if not the pod's)."""
    return await _replace_pod(request, _status_replacer(request))


async def patch_pod_status(request: web.Request) -> web.Response:
    """Patch a pod's status (merge, strategic merge or JSON patch), replaced as PUT of
    the status subresource replaces it."""
    return await _patch_pod(request, _status_replacer(request))


ROUTES = [
    web.get("/api/v1/pods", list_pods),
    web.get("/api/v1/namespaces/{namespace}/pods", list_pods),
    web.post("/api/v1/namespaces/{namespace}/pods", create_pods),
    web.get("/api/v1/namespaces/{namespace}/pods/{name}", get_pod),
    web.put("/api/v1/namespaces/{namespace}/pods/{name}", update_pod),
    web.patch("/api/v1/namespaces/{namespace}/pods/{name}", patch_pod),
    web.delete("/api/v1/namespaces/{namespace}/pods/{name}", delete_pod),
    web.get("/api/v1/namespaces/{namespace}/pods/{name}/status", get_pod_status),
    web.put("/api/v1/namespaces/{namespace}/pods/{name}/status", update_pod_status),
    web.patch("/api/v1/namespaces/{namespace}/pods/{name}/status", patch_pod_status),
]


def _bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0", ""):
        raise BadRequest(f"query parameter {name}: {raw!r} is not true or false")
    return raw in ("true", "1")


def _log_since(request: web.Request) -> tuple[int | None, str | None]:
    """The start of a log read, checked: (`sinceSeconds`, `sinceTime` as RFC 3339), at
    most one of them. The node applies it, by its own clock and stamps (hub.stream_logs)."""
    seconds = int_param(request, "sinceSeconds", minimum=1)
    raw = request.query.get("sinceTime", "")
    if seconds is not None and raw:
        raise BadRequest("at most one of sinceTime or sinceSeconds may be specified")
    if not raw:
        return seconds, None
    when = parse_stamp(raw)
    if when is None:
        raise BadRequest(f"query parameter sinceTime: {raw!r} is not an RFC 3339 time")
    # To the second, as kube-apiserver passes it on to the kubelet (RFC 3339, no fraction).
    return None, when.replace(microsecond=0).isoformat()


async def pod_log(request: web.Request) -> web.StreamResponse:
    """A container's log, streamed from its node (`?container=&follow=&tailLines=&timestamps=
    &previous=&sinceSeconds=&sinceTime=&limitBytes=`)."""
    namespace, name = namespace_param(request), name_param(request)
    cp = plane(request)
    kv = await cp.store.get(pod_key(namespace, name))
    if kv is None:
        raise NotFoundError(f'pods "{name}" not found', name=name, kind="pods")
    pod = decode(kv, Pod)
    names = [c.name for c in pod.spec.containers]
    container = request.query.get("container") or (names[0] if len(names) == 1 else None)
    if container is None:
        raise BadRequest(
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
        )
    if container not in names:
        raise BadRequest(f"container {container} is not valid for pod {name}")
    since_seconds, since_time = _log_since(request)
    timestamps = _bool_param(request, "timestamps")
    shown = LogFilter(None, timestamps, int_param(request, "limitBytes", minimum=1))
    if pod.spec.node_name is None:
        raise BadRequest(f'pod "{name}" is not bound to a node yet; no logs')
    stream = cp.hub.stream_logs(
        pod.spec.node_name,
        pod.metadata.uid or "",
        container,
        tail_lines=int_param(request, "tailLines"),
        follow=_bool_param(request, "follow"),
        timestamps=timestamps,
        previous=_bool_param(request, "previous"),
        since_seconds=since_seconds,
        since_time=since_time,
    )
    iterator = aiter(stream)
    try:
        first = await anext(iterator, None)  # errors before the first byte become a Status
    except LogsUnavailable as exc:
        await stream.aclose()
        raise BadRequest(f"cannot read logs of pod {name}: {exc}") from None
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    try:
        if first is not None:
            await response.write(shown.feed(first))
            while not shown.done and (data := await anext(iterator, None)) is not None:
                await response.write(shown.feed(data))
            await response.write(shown.flush())
    except LogsUnavailable as exc:
        await response.write(f"{LOG_ENDED_PREFIX}{exc}]\n".encode())
        _cut_short(request)
        return response
    finally:
        await stream.aclose()  # also what ends a followed log at `limitBytes`
    await response.write_eof()
    return response


def _cut_short(request: web.Request) -> None:
    """End a streamed response without its last chunk: every HTTP client then sees the
    read fail (kubectl an unexpected EOF, `corral logs` a lost stream, exit 1), as when
    the server itself goes away, where a complete response would be a log that ended
    because its container did. What was written is still sent: closing the transport
    flushes it first. aiohttp's own last chunk, after the handler, then finds the
    connection closing and drops the response without logging an error."""
    if request.transport is not None:
        request.transport.close()


ROUTES.append(web.get("/api/v1/namespaces/{namespace}/pods/{name}/log", pod_log))
