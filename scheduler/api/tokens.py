"""Token routes (admin only): create, list and revoke API tokens."""

from __future__ import annotations

from aiohttp import web

from common.models import StatusCause
from scheduler.api.common import json_response, plane, read_documents
from scheduler.api.errors import BadRequest, Invalid, NotFoundError


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
    if not isinstance(description, str):
        raise Invalid("description must be a string")
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
