"""Token routes (admin only): create, list and revoke API tokens."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from common.models import StatusCause
from scheduler.api.common import json_response, plane, read_documents
from scheduler.api.errors import BadRequest, Invalid, NotFoundError
from scheduler.auth import TokenRecord

MAX_DESCRIPTION = 200


class TokenRequest(BaseModel):
    """The body of POST /api/v1/tokens."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "viewer"]
    description: str = Field("", max_length=MAX_DESCRIPTION)


class TokenCreated(TokenRecord):
    """The answer to POST /api/v1/tokens: the record and, this once, the token."""

    token: str


class TokenList(BaseModel):
    kind: Literal["TokenList"] = "TokenList"
    items: list[TokenRecord]


# For scheduler/api/openapi.py: the shapes of these routes.
OPENAPI_MODELS = (TokenRequest, TokenCreated, TokenList)
OPENAPI_SHAPES: dict[tuple[str, str], tuple[str | None, int, str | None]] = {
    ("GET", "/api/v1/tokens"): (None, 200, "TokenList"),
    ("POST", "/api/v1/tokens"): ("TokenRequest", 201, "TokenCreated"),
    ("DELETE", "/api/v1/tokens/{id}"): (None, 200, "TokenRecord"),
}


async def create_token(request: web.Request) -> web.Response:
    """A new token: `{"role": "admin"|"viewer", "description": "..."}`; shown only now."""
    docs = await read_documents(request)
    body = docs[0] if len(docs) == 1 else None
    if not isinstance(body, dict):
        raise BadRequest('expected one object: {"role": "viewer", "description": "..."}')
    role = body.get("role")
    if role not in ("admin", "viewer"):
        raise Invalid(
            f"role {role!r} is not one of admin, viewer",
            causes=[
                StatusCause(
                    reason="FieldValueNotSupported", message="admin or viewer", field="role"
                )
            ],
        )
    unknown = set(body) - {"role", "description"}
    if unknown:
        field = sorted(unknown)[0]
        raise Invalid(
            f"{field}: not supported",
            causes=[
                StatusCause(reason="FieldValueNotSupported", message="not supported", field=field)
            ],
        )
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise Invalid(
            f"description must be a string of at most {MAX_DESCRIPTION} characters",
            causes=[
                StatusCause(
                    reason="FieldValueInvalid",
                    message=f"a string of at most {MAX_DESCRIPTION} characters",
                    field="description",
                )
            ],
        )
    record, token = await plane(request).auth.create(role, description)
    return json_response({**record.model_dump(), "token": token}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    """Token ids, roles and descriptions; never the tokens."""
    records = await plane(request).auth.list()
    return json_response({"kind": "TokenList", "items": [r.model_dump() for r in records]})


async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a token by id: it stops working at once."""
    token_id = request.match_info["id"]
    record = await plane(request).auth.revoke(token_id)
    if record is None:
        raise NotFoundError(f'tokens "{token_id}" not found', name=token_id, kind="tokens")
    return json_response(record.model_dump())


ROUTES = [
    web.get("/api/v1/tokens", list_tokens),
    web.post("/api/v1/tokens", create_token),
    web.delete("/api/v1/tokens/{id}", revoke_token),
]
