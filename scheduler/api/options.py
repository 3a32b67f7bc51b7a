"""What a write may carry in its query beside its body, as kube-apiserver's CreateOptions,
UpdateOptions and PatchOptions: read once, by the API's middleware (scheduler/api/app.py),
for every route, so that no handler has to remember it.

`dryRun` is refused: corral has no dry run, and ignoring it would make the write that
`kubectl apply --dry-run=server` only meant to try. A handler that does a dry run itself
says so (`honours_dry_run`: the eviction subresource, scheduler/api/evictions.py).

`fieldValidation` (Strict, Warn or Ignore) is accepted and changes nothing: corral
always refuses a field it does not know, naming its path (common/models.py), whatever
the client asks. Dropping one instead, as Ignore asks, would run an object other than
the one written (a pod without the `securityContext` it asked for runs less safely),
and Warn would write that object too. kubectl sends `fieldValidation=Strict` once the
server's OpenAPI v3 says the parameter is served (scheduler/api/openapi_v3.py), and then
leaves the validation to the server. Any other value is refused, as kube-apiserver
refuses it (there a 422 about the CreateOptions; here a 400, as for every other query
parameter corral cannot take).

`fieldManager` names the writer for server-side apply's managed fields, which corral does
not keep: it is accepted and unused, but checked as kube-apiserver checks it (at most 128
bytes, printable characters only), with kube-apiserver's answer: 422 Invalid about the
write's options (`CreateOptions.meta.k8s.io "" is invalid: fieldManager: ...`), so that a
client that works here is not refused by a Kubernetes cluster.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common.models import StatusCause
from scheduler.api.errors import BadRequest, Invalid

WRITES = frozenset({"POST", "PUT", "PATCH"})
FIELD_VALIDATION = ("Ignore", "Strict", "Warn")  # kube-apiserver's, in its order
FIELD_MANAGER_MAX_BYTES = 128  # kube-apiserver's FieldManagerMaxLength
# The options kube-apiserver reads a write's query into, by method (named in its 422).
_OPTIONS_KIND = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}

# The parameter in the OpenAPI document, on every write (scheduler/api/openapi.py).
FIELD_VALIDATION_PARAMETER: dict[str, Any] = {
    "name": "fieldValidation",
    "in": "query",
    "required": False,
    "description": (
        "How the server treats fields it does not know. corral always refuses them "
        "(Strict), naming their path; Warn and Ignore are accepted and act as Strict."
    ),
    "schema": {"type": "string", "enum": list(FIELD_VALIDATION)},
}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_DRY_RUN = "corral_honours_dry_run"


def honours_dry_run(handler: Handler) -> Handler:
    """Mark a handler that reads `?dryRun` itself and writes nothing when asked: `check`
    lets the parameter through to it."""
    setattr(handler, _DRY_RUN, True)
    return handler


def check(request: web.Request) -> None:
    """400 for a write option corral cannot honour."""
    handled = getattr(request.match_info.handler, _DRY_RUN, False) is True
    if "dryRun" in request.query and request.method not in ("GET", "HEAD") and not handled:
        # Refused, not ignored: `kubectl apply --dry-run=server` would change the cluster.
        raise BadRequest("query parameter dryRun: not supported (the write would be made)")
    if request.method not in WRITES:
        return  # kube-apiserver reads it only on create, update and patch
    for value in request.query.getall("fieldValidation", []):
        if value and value not in FIELD_VALIDATION:  # "" is unset, as in kube-apiserver
            supported = ", ".join(f'"{v}"' for v in FIELD_VALIDATION)
            message = f'Unsupported value: "{value}": supported values: {supported}'
            raise BadRequest(
                f"query parameter fieldValidation: {message}",
                causes=[
                    StatusCause(
                        reason="FieldValueNotSupported", message=message, field="fieldValidation"
                    )
                ],
            )
    for manager in request.query.getall("fieldManager", []):
        _check_field_manager(request.method, manager)


def _check_field_manager(method: str, manager: str) -> None:
    """422, as kube-apiserver's ValidateFieldManager: a name past FIELD_MANAGER_MAX_BYTES
    (as UTF-8), or with a character that is not printable (its position in bytes, as Go
    counts it)."""
    causes = []
    if len(manager.encode()) > FIELD_MANAGER_MAX_BYTES:
        causes.append(
            StatusCause(
                reason="FieldValueTooLong",
                message=f"Too long: must have at most {FIELD_MANAGER_MAX_BYTES} bytes",
                field="fieldManager",
            )
        )
    for i, char in enumerate(manager):
        if not char.isprintable():
            where = len(manager[:i].encode())
            causes.append(
                StatusCause(
                    reason="FieldValueInvalid",
                    message=f"Invalid value: invalid character U+{ord(char):04X} "
                    f"(at position {where})",
                    field="fieldManager",
                )
            )
    if causes:
        kind = _OPTIONS_KIND[method]
        problems = ", ".join(f"{c.field}: {c.message}" for c in causes)
        raise Invalid(f'{kind}.meta.k8s.io "" is invalid: {problems}', causes=causes, kind=kind)
