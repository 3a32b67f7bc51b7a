"""What a DELETE takes, as kube-apiserver reads it: query parameters, or the same
fields of a `DeleteOptions` body (kubectl sends `--grace-period`, `--force` and
`--cascade` there), and the body's `preconditions`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from common.limits import INT64_MAX
from common.models import Model
from scheduler.api.common import int_param, json_response, parse_revision, read_documents
from scheduler.api.errors import BadRequest, ConflictError
from scheduler.objects import UnreadableObject, decode
from scheduler.store import KV, Conflict, NotFound, Store

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T", bound=Model)
# Kubernetes' DeleteOptions field (KEP-3926), as a query parameter or in the body.
IGNORE_READ_ERROR = "ignoreStoreReadErrorWithClusterBreakingPotential"

PROPAGATION = ("Background", "Foreground", "Orphan")


@dataclass(frozen=True)
class DeleteOptions:
    grace: int | None = None  # gracePeriodSeconds (pods)
    propagation: str | None = None  # propagationPolicy (owners); None: not said
    uid: str | None = None  # preconditions.uid: delete only this incarnation
    revision: int | None = None  # preconditions.resourceVersion
    # An object this corral cannot read is removed as it is (`readable_or_removed`).
    ignore_read_error: bool = False
    dry_run: bool = False  # dryRun: ["All"]; only an eviction honours it (api/evictions.py)


async def delete_options(request: web.Request) -> DeleteOptions:
    """The request's options; 400 naming a malformed one (none is silently dropped).

    A body's `dryRun` is refused as the query's is (scheduler/api/options.py): `kubectl
    delete --dry-run=server` sends it there, and a DELETE that ignored it deleted."""
    body: dict[str, object] = {}
    if request.can_read_body:
        docs = await read_documents(request)
        sent = docs[0] if len(docs) == 1 else None
        if not isinstance(sent, dict):
            raise BadRequest("expected one DeleteOptions object as the body")
        body = sent
    options = options_from(body, request.query, grace=int_param(request, "gracePeriodSeconds"))
    if options.dry_run:
        raise BadRequest("dryRun: not supported (the delete would be made)")
    return options


def options_from(
    body: dict[str, object],
    query: Mapping[str, str],
    prefix: str = "",
    *,
    grace: int | None = None,
) -> DeleteOptions:
    """DeleteOptions from a body's fields (`prefix` names where they are in it, for the
    messages: an Eviction's `deleteOptions.`) and a DELETE's query (`grace`: its
    gracePeriodSeconds, read), which wins."""
    policy = query.get("propagationPolicy")
    value = body.get("gracePeriodSeconds")
    if grace is None and value is not None:
        # At most an int64, as in Kubernetes: it becomes the pod's grace period, stored.
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
            raise BadRequest(
                f"{prefix}gracePeriodSeconds: {value!r} is not an integer from 0 to {INT64_MAX}"
            )
        grace = value
    if not policy:
        sent = body.get("propagationPolicy")
        policy = sent if isinstance(sent, str) or sent is None else str(sent)
    orphan = _orphan_dependents(query.get("orphanDependents"), body)
    if orphan is not None:  # the deprecated spelling, as kube-apiserver still reads it
        if policy is not None:
            raise BadRequest("orphanDependents and propagationPolicy cannot be both set")
        policy = "Orphan" if orphan else "Background"
    if policy is not None and policy not in PROPAGATION:
        raise BadRequest(
            f"{prefix}propagationPolicy: {policy!r} is not one of {', '.join(PROPAGATION)}"
        )
    pre = body.get("preconditions") or {}
    if not isinstance(pre, dict):
        raise BadRequest(f"{prefix}preconditions: expected an object with uid and resourceVersion")
    uid, revision = pre.get("uid"), pre.get("resourceVersion")
    if uid is not None and not isinstance(uid, str):
        raise BadRequest(f"{prefix}preconditions.uid: {uid!r} is not a string")
    wanted = parse_revision(revision) if isinstance(revision, str) else None
    if revision is not None and wanted is None:
        raise BadRequest(f"{prefix}preconditions.resourceVersion: {revision!r} is not a revision")
    return DeleteOptions(
        grace,
        policy,
        uid,
        wanted,
        _ignore_read_error(query, body),
        dry_run(body.get("dryRun"), f"{prefix}dryRun"),
    )


def dry_run(value: object, field: str) -> bool:
    """Whether a `dryRun` list asks for one: kube-apiserver's only value is `All`."""
    if value is None or value == []:
        return False
    if not isinstance(value, list) or any(v != "All" for v in value):
        raise BadRequest(f'{field}: {value!r} is not supported (supported: ["All"])')
    return True


def _ignore_read_error(query_args: Mapping[str, str], body: dict[str, object]) -> bool:
    query = query_args.get(IGNORE_READ_ERROR)
    if query is not None:
        if query not in ("true", "false"):
            raise BadRequest(f"{IGNORE_READ_ERROR}: {query!r} is not true or false")
        return query == "true"
    value = body.get(IGNORE_READ_ERROR, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{IGNORE_READ_ERROR}: {value!r} is not a boolean")
    return value


async def readable_or_removed(
    store: Store, kv: KV, model: type[T], options: DeleteOptions
) -> T | None:
    """The object a DELETE is about, decoded; if this corral cannot read it and the client
    said `ignoreStoreReadErrorWithClusterBreakingPotential`, None once it is removed from
    the store as it is (a 409 if it changed since `kv` was read), as kube-apiserver's
    unsafe delete does (KEP-3926): its finalizers,
    the preconditions, a pod's graceful stop and an owner's propagation policy are not
    looked at, since none of them can be read. Its dependents go as any gone owner's (the
    garbage collector), a pod's containers as any the scheduler does not know (its node
    stops them). Without the option, UnreadableObject (a 500 naming the option)."""
    obj = decoded_unless_unreadable(kv, model, options)
    if obj is not None:
        return obj
    try:
        # Guarded by the version read: one written meanwhile (a repair) is not removed
        # unread, and the client is told to look again.
        await store.delete(kv.key, expect=kv.mod_revision)
    except (Conflict, NotFound):
        raise ConflictError(
            f"{kv.key} changed while it was being deleted; try again", name=kv.key
        ) from None
    _LOGGER.warning("removed %s, which could not be read, as asked", kv.key)
    return None


def decoded_unless_unreadable(kv: KV, model: type[T], options: DeleteOptions) -> T | None:
    """The object in `kv`; None if this corral cannot read it and the client said
    `ignoreStoreReadErrorWithClusterBreakingPotential`; else UnreadableObject (a 500)."""
    try:
        return decode(kv, model)
    except UnreadableObject:
        if not options.ignore_read_error:
            raise
        return None


def removed_unread(plural: str, name: str) -> web.Response:
    """The `Status` answering an unsafe delete: there is no object to show."""
    details: dict[str, Any] = {"name": name, "kind": plural}
    return json_response(
        {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Success",
            "details": details,
        }
    )


def _orphan_dependents(query: str | None, body: dict[str, object]) -> bool | None:
    """`orphanDependents`, from the query (`true`/`false`) or the body (a boolean)."""
    if query is not None:
        if query not in ("true", "false"):
            raise BadRequest(f"orphanDependents: {query!r} is not true or false")
        return query == "true"
    value = body.get("orphanDependents")
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"orphanDependents: {value!r} is not a boolean")
    return value


def check_preconditions(
    options: DeleteOptions, plural: str, name: str, uid: str | None, revision: int
) -> None:
    """409, worded as kube-apiserver words it, when the object is not the one the client
    meant: a pod replaced in place keeps its name with a new uid (docs/architecture.md)."""
    failed = None
    if options.uid is not None and options.uid != uid:
        failed = f"UID in precondition: {options.uid}, UID in object meta: {uid}"
    elif options.revision is not None and options.revision != revision:
        failed = (
            f"ResourceVersion in precondition: {options.revision}, "
            f"ResourceVersion in object meta: {revision}"
        )
    if failed is not None:
        raise ConflictError(
            f'Operation cannot be fulfilled on {plural} "{name}": Precondition failed: {failed}',
            name=name,
            kind=plural,
        )
