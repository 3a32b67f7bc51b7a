"""pydantic's JSON Schema (draft 2020-12) in the dialect of OpenAPI 3.0, which the API's
documents declare (scheduler/api/openapi.py), as kube-apiserver's do: kubectl reads
them with kube-openapi's 3.0 types, and a validator of 3.0 refuses 2020-12's words.

    anyOf: [X, {type: null}]   X with nullable: true (a $ref as allOf: [$ref])
    type: [T, "null"]          type: T, nullable: true
    const: V                   enum: [V]
    exclusiveMinimum: N        minimum: N, exclusiveMinimum: true (and the maximum)
    examples: [V, ...]         example: V
    $ref beside other words    allOf: [$ref] beside them (3.0 ignores a $ref's siblings)
    propertyNames              left out: 3.0 cannot say it (the API still checks it)

Only schema positions are converted: property names and the values of `enum`,
`default`, `example` and extensions are data, whatever words they hold.
"""

from __future__ import annotations

from typing import Any

_NULL = {"type": "null"}
_SCHEMA_MAPS = ("properties", "patternProperties")  # name -> schema
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf")
_SCHEMAS = ("items", "not")  # additionalProperties too, unless it is a boolean


def convert(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` and every schema in it, in OpenAPI 3.0's words."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS:
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS:
            out[key] = [convert(sub) for sub in value]
        elif key in _SCHEMAS or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = convert(value)
        else:
            out[key] = value
    return _words(out)


def _words(out: dict[str, Any]) -> dict[str, Any]:
    """One schema's own keywords in 3.0's words (its subschemas already are)."""
    out.pop("propertyNames", None)
    if "const" in out:
        out.setdefault("enum", [out["const"]])
        del out["const"]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(bound)
        if not isinstance(value, bool) and isinstance(value, int | float):
            out[limit], out[bound] = value, True
    if isinstance(out.get("examples"), list):
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    if isinstance(out.get("type"), list):
        types = [t for t in out["type"] if t != "null"]
        if len(types) < len(out["type"]):
            out["nullable"] = True
        if len(types) == 1:
            out["type"] = types[0]
        else:  # several types: 3.0 says it with anyOf
            out["anyOf"] = [{"type": t} for t in types]
            del out["type"]
    if _NULL in out.get("anyOf", []):
        rest = [sub for sub in out.pop("anyOf") if sub != _NULL]
        out["nullable"] = True
        if len(rest) != 1:
            out["anyOf"] = rest
        elif "$ref" in rest[0]:
            out["allOf"] = rest
        else:
            out = {**rest[0], **out}  # the outer words (title, default) over the inner ones
    if "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}, *out.get("allOf", [])]
    return out
