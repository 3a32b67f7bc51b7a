"""API errors: each carries its HTTP status and Kubernetes reason; one middleware renders them."""

from __future__ import annotations

from common.models import Status, StatusCause, StatusDetails


class ApiError(Exception):
    code = 500
    reason = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        causes: list[StatusCause] | None = None,
        name: str | None = None,
        kind: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.causes = causes or []
        self.name = name
        self.kind = kind
        self.retry_after = retry_after  # seconds, for `details.retryAfterSeconds`

    def status(self) -> Status:
        details = None
        if self.causes or self.name or self.kind:
            details = StatusDetails(
                name=self.name,
                kind=self.kind,
                causes=self.causes,
                retry_after_seconds=self.retry_after,
            )
        return Status(message=self.message, reason=self.reason, code=self.code, details=details)


class BadRequest(ApiError):
    code, reason = 400, "BadRequest"


class Unauthorized(ApiError):
    code, reason = 401, "Unauthorized"


class Forbidden(ApiError):
    code, reason = 403, "Forbidden"


class NotFoundError(ApiError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(ApiError):
    code, reason = 405, "MethodNotAllowed"


class NotAcceptable(ApiError):
    code, reason = 406, "NotAcceptable"


class AlreadyExists(ApiError):
    code, reason = 409, "AlreadyExists"


class ConflictError(ApiError):
    code, reason = 409, "Conflict"


def modified(plural: str, name: str) -> ConflictError:
    """Kubernetes' 409 for a write that lost to another, or was guarded by a stale
    resourceVersion."""
    return ConflictError(
        f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        name=name,
        kind=plural,
    )


class Gone(ApiError):
    code, reason = 410, "Expired"


class TooLarge(ApiError):
    code, reason = 413, "RequestEntityTooLarge"


class UnsupportedMediaType(ApiError):
    code, reason = 415, "UnsupportedMediaType"


class Invalid(ApiError):
    """422. Its `details.kind` is the object's kind ("Pod"), where the other errors name
    the resource ("pods"): kube-apiserver's NewInvalid takes a GroupKind, NewNotFound,
    NewAlreadyExists, NewConflict and NewForbidden a GroupResource."""

    code, reason = 422, "Invalid"


class StorageReadError(ApiError):
    """Kubernetes' answer for a stored object it cannot read (KEP-3926)."""

    code, reason = 500, "StorageReadError"


class Unavailable(ApiError):
    code, reason = 503, "ServiceUnavailable"
