"""pydantic's JSON Schema in OpenAPI 3.0's words (scheduler/api/schema30.py)."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from pydantic.json_schema import models_json_schema

from common.models import Deployment, Job, Pod
from scheduler.api.schema30 import convert

REF = {"$ref": "#/components/schemas/Probe"}


def test_2020_12_words_become_3_0_words() -> None:
    """Each rewriting the module names, one by one."""
    cases: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
        (
            {"anyOf": [REF, {"type": "null"}], "default": None},
            {"allOf": [REF], "nullable": True, "default": None},
        ),
        (
            {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "T"},
            {"type": "string", "title": "T", "nullable": True},
        ),
        (
            {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
            {"anyOf": [{"type": "integer"}, {"type": "string"}], "nullable": True},
        ),
        ({"type": ["string", "null"]}, {"type": "string", "nullable": True}),
        ({"type": ["string", "integer"]}, {"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        ({"type": "string", "const": "v1"}, {"type": "string", "enum": ["v1"]}),
        ({"exclusiveMinimum": 0}, {"minimum": 0, "exclusiveMinimum": True}),
        ({"exclusiveMaximum": 1.5}, {"maximum": 1.5, "exclusiveMaximum": True}),
        ({"examples": ["a", "b"]}, {"example": "a"}),
        ({"$ref": REF["$ref"], "description": "d"}, {"allOf": [REF], "description": "d"}),
        ({"type": "object", "propertyNames": {"enum": ["cpu"]}}, {"type": "object"}),
        ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, None),  # already 3.0
    ]
    for given, expected in cases:
        assert convert(given) == (given if expected is None else expected), given


def test_only_schema_positions_are_rewritten() -> None:
    """Nested schemas are converted (properties, items, maps, allOf); names and data that
    look like keywords are not."""
    schema = {
        "type": "object",
        "properties": {
            "const": {"const": 1},  # a property named `const`
            "anyOf": {"type": "array", "items": {"anyOf": [REF, {"type": "null"}]}},
            "labels": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        },
        "default": {"const": 2, "anyOf": [{"type": "null"}]},  # data
        "enum": [{"type": "null"}],
        "x-kubernetes-group-version-kind": [{"const": "x"}],
    }
    out = convert(schema)
    assert out["properties"]["const"] == {"enum": [1]}
    assert out["properties"]["anyOf"]["items"] == {"allOf": [REF], "nullable": True}
    labels = out["properties"]["labels"]["additionalProperties"]
    assert labels == {"type": "string", "nullable": True}
    for data in ("default", "enum", "x-kubernetes-group-version-kind"):
        assert out[data] == schema[data], data


def test_the_models_are_valid_openapi_3_0() -> None:
    """The kinds' schemas as pydantic makes them are not OpenAPI 3.0; converted, they are."""
    _, defs = models_json_schema(
        [(m, "validation") for m in (Pod, Deployment, Job)],
        by_alias=True,
        ref_template="#/components/schemas/{model}",
    )

    def document(schemas: dict[str, Any]) -> dict[str, Any]:
        return {
            "openapi": "3.0.3",
            "info": {"title": "t", "version": "1"},
            "paths": {},
            "components": {"schemas": schemas},
        }

    raw = defs["$defs"]
    with pytest.raises(OpenAPIValidationError):  # else there is nothing to convert
        validate(document(raw))
    validate(document({name: convert(schema) for name, schema in raw.items()}))
