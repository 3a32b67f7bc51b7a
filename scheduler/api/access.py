"""Request ids and the access log: one info line per API request, never a credential.

Each request gets an id: the client's `X-Request-Id` when it is a short token of safe
characters (so a proxy's id carries through), else a fresh one. It is returned in the
`X-Request-Id` response header and is on every log line written while the request is
handled (common/logs.py), the access line included:

    ... INFO corral.access: GET /api/v1/pods 200 1.4ms method=GET path=/api/v1/pods ...

The line has the method, the path, the query with credentials (`token=`) redacted, the
status, the duration and the client address; never a header, so never Authorization.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from common.logs import REQUEST_ID

_LOGGER = logging.getLogger("corral.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEADER = "X-Request-Id"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SECRET_PARAMS = frozenset({"token", "access_token"})
REQUEST_ID_KEY: web.RequestKey[str] = web.RequestKey("corral_request_id", str)


def safe_query(request: web.Request) -> str:
    """The query string with the values of credential parameters replaced."""
    if not request.query_string:
        return ""
    return "&".join(
        f"{quote(k, safe='')}=" + ("REDACTED" if k in _SECRET_PARAMS else quote(v, safe=",=!"))
        for k, v in request.query.items()
    )


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: assign the request id, log one line once the response is known."""
    incoming = request.headers.get(HEADER, "")
    request_id = incoming if _CLIENT_ID.fullmatch(incoming) else secrets.token_hex(8)
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # raised past the error middleware (redirects)
        status = exc.status
        exc.headers[HEADER] = request_id
        raise
    finally:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if _LOGGER.isEnabledFor(logging.INFO):
            query = safe_query(request)
            _LOGGER.info(
                "%s %s %d %.1fms",
                request.method,
                request.path,
                status,
                elapsed_ms,
                extra={
                    "method": request.method,
                    "path": request.path,
                    **({"query": query} if query else {}),
                    "status": status,
                    "duration_ms": round(elapsed_ms, 2),
                    "remote": request.remote or "",
                },
            )
        REQUEST_ID.reset(token)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the header goes out with every response, streamed ones too."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[HEADER] = request_id


def install(app: web.Application) -> None:
    """Put the access middleware outermost and the header hook on `app`."""
    app.middlewares.insert(0, access_middleware)
    app.on_response_prepare.append(add_request_id)
