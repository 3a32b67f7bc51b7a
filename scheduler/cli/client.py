"""A small blocking client for the corral API, on urllib so the CLI starts fast."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import Message
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.models import Status

Object = dict[str, Any]


class ClientError(Exception):
    """Root of what a request can fail with."""


class ConnectionFailed(ClientError):
    """The server could not be reached at all (refused, unknown host, timeout)."""

    def __init__(self, server: str, reason: str) -> None:
        hint = "is corral-scheduler running? set --server or CORRAL_SERVER"
        if "wrong version number" in reason.lower():
            # What OpenSSL makes of a plain-HTTP answer to its hello: no CA helps.
            hint = f"the server does not speak TLS there: is it {_as_http(server)}?"
        elif "certificate" in reason.lower() or "ssl" in reason.lower():
            hint = "TLS: set --ca-file or CORRAL_CA_FILE to the cluster's CA (corral certs)"
        super().__init__(f"cannot connect to the corral server at {server}: {reason} ({hint})")
        self.server = server
        self.reason = reason


class ApiError(ClientError):
    """The server answered with an error; `status` is its Kubernetes `Status` object."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.message or status.reason)
        self.status = status

    @property
    def code(self) -> int:
        return self.status.code

    @property
    def reason(self) -> str:
        return self.status.reason

    @classmethod
    def from_response(cls, code: int, body: bytes) -> ApiError:
        """Parse the error body as a `Status`; anything else (a proxy's HTML page) is wrapped."""
        # Imported here: pydantic costs a few hundred milliseconds, paid only on errors.
        from pydantic import ValidationError

        from common.models import Status, StatusDetails

        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            try:
                return cls(Status.model_validate(data))
            except ValidationError:
                pass
            # A Status from a newer server, with fields this client does not know: keep
            # what it can show rather than nothing.
            details = None
            try:
                details = StatusDetails.model_validate(data.get("details") or {})
            except ValidationError:
                pass
            if isinstance(data.get("message"), str):
                reason = data.get("reason")
                return cls(
                    Status(
                        code=code,
                        reason=reason if isinstance(reason, str) else _phrase(code),
                        message=data["message"],
                        details=details,
                    )
                )
        text = body.decode("utf-8", "replace").strip()
        message = text.splitlines()[0][:200] if text else f"HTTP {code}"
        return cls(Status(code=code, reason=_phrase(code), message=message))


class UnexpectedAnswer(ClientError):
    """The server answered 2xx with something other than a JSON object: not a corral API
    (a proxy's login page, another service on that port)."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """The API never redirects, and following one would send the bearer token to wherever
    `Location` points (another host, or plain http)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        fp.close()
        path = urllib.parse.urlsplit(req.full_url).path
        raise UnexpectedAnswer(
            f"the server answered {req.get_method()} {path} with a redirect ({code}) to "
            f"{newurl}; corral does not follow redirects (the token would go along): set "
            "--server or CORRAL_SERVER to the API's own address"
        )


def _as_http(server: str) -> str:
    """`https://host:7070` -> `http://host:7070`."""
    return "http://" + server.removeprefix("https://")


def _phrase(code: int) -> str:
    """`404` -> `NotFound`, as Kubernetes names reasons."""
    try:
        return HTTPStatus(code).phrase.replace(" ", "")
    except ValueError:
        return "Unknown"


class Client:
    """Blocking JSON requests to one server, with an optional bearer token."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ssl_context = ssl_context  # for https: verifies the server (common/tls.py)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Object | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON object (None for an empty answer).

        Raises `ApiError` for a 4xx/5xx answer, `ConnectionFailed` when there is none, and
        `UnexpectedAnswer` for a success that is not a JSON object.
        """
        url = self.server + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json", "User-Agent": "corral-cli"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._open(req, self.timeout) as resp:
                raw = resp.read()
                content_type = resp.headers.get("Content-Type") or "no Content-Type"
        except urllib.error.HTTPError as exc:
            with exc:
                raise ApiError.from_response(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise ConnectionFailed(self.server, _describe(exc.reason)) from None
        except TimeoutError:
            raise ConnectionFailed(self.server, f"no answer within {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionFailed(self.server, _describe(exc)) from None
        if not raw:
            return None
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise UnexpectedAnswer(
                f"the server at {self.server} answered {method} {path} with something other "
                f"than a JSON object ({content_type}, {len(raw)} bytes): is it a corral "
                "scheduler? (check --server or CORRAL_SERVER)"
            )
        return answer

    def _open(self, req: urllib.request.Request, timeout: float | None) -> Any:
        """urlopen, with the client's TLS context and without following redirects."""
        handlers: list[urllib.request.BaseHandler] = [_RefuseRedirects()]
        if self.ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
        return urllib.request.build_opener(*handlers).open(req, timeout=timeout)

    def get(self, path: str, **query: str | None) -> Any:
        return self.request("GET", path, query=_clean(query))

    def stream(self, path: str, **query: str | None) -> Iterator[bytes]:
        """GET a streamed body (a followed log) and yield it as it arrives.

        Raises `ConnectionFailed` when the connection cannot be made or is lost mid-stream.
        """
        url = self.server + path
        params = _clean(query)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"User-Agent": "corral-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, headers=headers, method="GET")
        try:
            # No read timeout: a followed log may be quiet for a long time.
            resp = self._open(req, None)
        except urllib.error.HTTPError as exc:
            with exc:
                raise ApiError.from_response(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ConnectionFailed(self.server, _describe(reason)) from None
        with resp:
            try:
                while chunk := resp.read1(65536):
                    yield chunk
            except (OSError, http.client.HTTPException) as exc:
                # The server died or the network dropped mid-stream (a chunked body cut
                # short is an IncompleteRead).
                detail = f": {_describe(exc)}" if isinstance(exc, OSError) else ""
                raise ConnectionFailed(self.server, f"connection lost{detail}") from None

    def post(self, path: str, body: Object | None = None) -> Any:
        return self.request("POST", path, body=body)

    def put(self, path: str, body: Object) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str, **query: str | None) -> Any:
        return self.request("DELETE", path, query=_clean(query))


def _clean(query: dict[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in query.items() if v is not None}


def _describe(reason: object) -> str:
    """`[Errno 111] Connection refused` -> `connection refused`."""
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        text = reason.strerror
    else:
        text = str(reason)
    return text[:1].lower() + text[1:]


def pods_path(namespace: str | None, name: str | None = None) -> str:
    """`/api/v1/namespaces/NS/pods[/NAME]`, or `/api/v1/pods` for all namespaces."""
    if namespace is None:
        return "/api/v1/pods"
    path = f"/api/v1/namespaces/{_quote(namespace)}/pods"
    return f"{path}/{_quote(name)}" if name else path


def nodes_path(name: str | None = None, action: str | None = None) -> str:
    """`/api/v1/nodes[/NAME[/ACTION]]`."""
    path = "/api/v1/nodes"
    if name:
        path += f"/{_quote(name)}"
    if action:
        path += f"/{action}"
    return path


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
