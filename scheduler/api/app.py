"""The aiohttp application: routes, the error middleware, and the control plane's lifetime."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.web_urldispatcher import SystemRoute

from common.heap import drop_tracebacks
from common.models import StatusCause
from scheduler.api import (
    access,
    discovery,
    events,
    evictions,
    namespaces,
    nodes,
    openapi,
    openapi_v3,
    ops,
    options,
    pods,
    tables,
    tokens,
    ui,
    usage,
    watch,
    workloads,
)
from scheduler.api.common import CONTROL_PLANE, json_response
from scheduler.api.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFoundError,
    StorageReadError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from scheduler.config import SchedulerConfig
from scheduler.controlplane import ControlPlane
from scheduler.objects import UnreadableObject
from scheduler.store import StoreUnavailable

_LOGGER = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    404: NotFoundError,
    405: MethodNotAllowed,
    413: TooLarge,
    415: UnsupportedMediaType,
}


def _error_response(error: ApiError) -> web.Response:
    return json_response(error.status().to_dict(), status=error.code)


def _unreadable(exc: UnreadableObject) -> StorageReadError:
    return StorageReadError(
        f"corrupt object: {exc.key} cannot be read by this corral ({exc.problem}); it was "
        "stored by an older corral, or damaged. Delete it with "
        "?ignoreStoreReadErrorWithClusterBreakingPotential=true (docs/operations.md)",
        causes=[StatusCause(reason="UnexpectedServerResponse", message=exc.problem, field=exc.key)],
    )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a Kubernetes `Status`; no traceback ever reaches a client."""
    cp = request.app[CONTROL_PLANE]
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error_response(exc)
    except UnreadableObject as exc:
        response = _error_response(_unreadable(exc))
    except StoreUnavailable as exc:
        response = _error_response(
            Unavailable(f"the store could not make the write durable: {exc}")
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # aiohttp answers with it (`drop_error_tracebacks`)
        kind = _HTTP_ERRORS.get(exc.status)
        if exc.status == 404:
            message = (
                "the server could not find the requested resource "
                f"({request.method} {request.path})"
            )
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        elif exc.status == 413:
            message = f"request body is larger than the limit of {cp.config.max_body_bytes} bytes"
        else:
            message = exc.text or exc.reason
        try:
            error = kind(message) if kind else ApiError(message)
            error.code = exc.status
            response = _error_response(error)
        finally:
            # The router's 404 and 405 are kept on the request (`match_info`), and their
            # traceback holds the frames that hold the request: a cycle per unknown path
            # or wrong method, never freed once frozen (common/heap.py). So is the route
            # aiohttp makes for each: its handler is its own bound method.
            drop_tracebacks(exc)
            route = request.match_info.route
            if isinstance(route, SystemRoute):
                route._handler = None  # type: ignore[assignment]  # it has answered
    except Exception:
        _LOGGER.exception("unhandled error in %s %s", request.method, request.path)
        response = _error_response(ApiError("internal error; see the scheduler log"))
    # The API's methods by name, any other as one: aiohttp's parser takes a few dozen
    # (WebDAV's among them), and a client without a token could add a series for each.
    method = request.method if request.method in _METHODS else "other"
    cp.metrics.http_latency.labels(method).observe(time.perf_counter() - started)
    cp.metrics.http_requests.labels(method=method, code=str(response.status)).inc()
    return response


# Reachable without an API token: probes of the process itself, the API's own
# description (`/openapi.json`, and the same cut by group-version under `/openapi/v3`:
# kube-apiserver asks for a token there, but this is no more than `/openapi.json` says),
# the server's version (kube-apiserver's `system:public-info-viewer` allows
# it too; `/api` and `/apis` need a token there and here), the agent link (which checks
# the join token itself) and the status page `/` (which checks a token itself: from the
# header, ?token= or its cookie; ui.py).
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/openapi/v3",
        "/version",
        "/version/",
        "/api/v1/agent",
        "/",
    }
)
PUBLIC_PREFIXES = (openapi_v3.PREFIX + "/",)
ADMIN_ONLY_PREFIXES = ("/api/v1/tokens",)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route but PUBLIC_PATHS (and PUBLIC_PREFIXES) needs a bearer token; viewers
    may only read."""
    cp = request.app[CONTROL_PLANE]
    path = request.path
    public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
    if public or (path == "/metrics" and cp.config.metrics_public):
        return await handler(request)
    if not cp.ready:
        raise Unavailable("the control plane is starting")
    record = await cp.auth.authenticate(request.headers.get("Authorization"))
    if record is None:
        raise Unauthorized(
            "a valid bearer token is required (Authorization: Bearer <token>); "
            "see `corral token` and STATE_DIR/admin-token"
        )
    if record.role != "admin":
        if request.method not in ("GET", "HEAD") or path.startswith(ADMIN_ONLY_PREFIXES):
            raise Forbidden(
                f"token {record.id} (role {record.role}) may not {request.method} {path}"
            )
        if path.endswith("/log"):
            raise Forbidden(f"token {record.id} (role {record.role}) may not read container logs")
    options.check(request)  # dryRun, fieldValidation: for every route, before any body is read
    return await handler(request)


async def drop_error_tracebacks(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: where aiohttp answers with an HTTPException itself (one raised
    before any middleware, as its 417 for an unknown `Expect`, or a 3xx the error
    middleware passes on), the error's traceback holds the frame that holds it as the
    response: a cycle, kept for good once a young collection saw it (common/heap.py)."""
    if isinstance(response, web.HTTPException):
        drop_tracebacks(response)


def create_app(
    config: SchedulerConfig, control_plane: ControlPlane | None = None
) -> web.Application:
    """The scheduler's application; the control plane starts and stops with it."""
    cp = control_plane or ControlPlane(config)
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=config.max_body_bytes
    )
    app[CONTROL_PLANE] = cp
    access.install(app)  # request ids and the access log, outermost
    app.on_response_prepare.append(drop_error_tracebacks)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await cp.start()
        yield
        await cp.stop()

    async def close_links(app: web.Application) -> None:
        if cp.ready or hasattr(cp, "hub"):
            await cp.hub.close()

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(close_links)  # websockets first, or shutdown waits on them

    async def agent_link(request: web.Request) -> web.StreamResponse:
        """The agent link (WebSocket; see docs/api.md)."""
        return await request.app[CONTROL_PLANE].hub.handle(request)

    for routes in (
        pods.ROUTES,
        evictions.ROUTES,
        nodes.ROUTES,
        events.ROUTES,
        tokens.ROUTES,
        ops.ROUTES,
        openapi.ROUTES,
        openapi_v3.ROUTES,
        ui.ROUTES,
        namespaces.ROUTES,
        workloads.ROUTES,
        usage.ROUTES,
    ):
        # Each GET of a resource answers a Table when asked (`kubectl get`; api/tables.py).
        app.router.add_routes(tables.serving(routes))
    app.router.add_routes(discovery.ROUTES)  # reads the routes above when asked
    watch.setup(app)  # ?watch=true streams, ended on shutdown
    app.router.add_get("/api/v1/agent", agent_link)
    return app
