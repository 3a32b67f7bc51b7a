"""Manifests: YAML or JSON documents in the Kubernetes shape, turned into typed objects.

Errors name the field by its path (`spec.containers[0].securityContext: not
supported`) so a person can find the line to fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import ValidationError

from common.models import Node, Pod, StatusCause

# (apiVersion, kind) -> model. Later kinds (Deployment, Job, Namespace) register here.
KINDS: dict[tuple[str, str], type[Pod] | type[Node]] = {
    ("v1", "Pod"): Pod,
    ("v1", "Node"): Node,
}


class ManifestError(ValueError):
    """A manifest that cannot be accepted; `causes` name each offending field."""

    def __init__(self, message: str, causes: list[StatusCause] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.causes = causes or []

    def __str__(self) -> str:
        if not self.causes:
            return self.message
        lines = [self.message] + [
            f"  {c.field}: {c.message}" if c.field else f"  {c.message}" for c in self.causes
        ]
        return "\n".join(lines)


def field_path(loc: Iterable[int | str], prefix: str = "") -> str:
    """`('spec', 'containers', 0, 'image')` -> `spec.containers[0].image`."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-after") or part in ("str", "int", "float"):
            continue  # pydantic names union/validator branches in loc; not a field
        else:
            path += f".{part}" if path else part
    return path


_REASONS = {
    "missing": ("FieldValueRequired", "Required value"),
    "extra_forbidden": ("FieldValueNotSupported", "not supported"),
}


def causes_from_validation(error: ValidationError, prefix: str = "") -> list[StatusCause]:
    """Turn pydantic's errors into Kubernetes-style causes with field paths."""
    causes = []
    for err in error.errors(include_url=False):
        reason, message = _REASONS.get(err["type"], ("FieldValueInvalid", err["msg"]))
        message = message.removeprefix("Value error, ")
        causes.append(StatusCause(reason=reason, message=message, field=field_path(err["loc"], prefix)))
    return causes


def parse_documents(text: str | bytes, content_type: str = "") -> list[Any]:
    """Parse JSON or (multi-document) YAML; empty documents are skipped."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"body is not UTF-8: {exc}") from None
    if "json" in content_type:
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise ManifestError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        # JSON is a subset of YAML 1.2, so one parser serves both when the type is unknown.
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"malformed YAML{where}: {problem}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind", "").endswith("List") and "items" in doc:
            docs = [*docs[: docs.index(doc)], *doc["items"], *docs[docs.index(doc) + 1 :]]
    return docs


def load_object(doc: Any, index: int | None = None) -> Pod | Node:
    """Validate one document as the object its apiVersion and kind name."""
    where = f"document {index}: " if index is not None else ""
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}expected an object, got {type(doc).__name__}")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not api_version or not kind:
        missing = [f for f in ("apiVersion", "kind") if not doc.get(f)]
        raise ManifestError(
            f"{where}missing {' and '.join(missing)}",
            [StatusCause(reason="FieldValueRequired", message="Required value", field=f) for f in missing],
        )
    model = KINDS.get((api_version, kind))
    if model is None:
        supported = ", ".join(f"{v}/{k}" for v, k in KINDS)
        raise ManifestError(f"{where}{api_version}/{kind} is not supported (supported: {supported})")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        name = doc.get("metadata", {}).get("name") if isinstance(doc.get("metadata"), dict) else None
        raise ManifestError(
            f"{where}{kind} {name!r} is invalid" if name else f"{where}{kind} is invalid",
            causes_from_validation(exc),
        ) from None


def load_manifests(text: str | bytes, content_type: str = "") -> list[Pod | Node]:
    """Every object in a manifest file; the first invalid document fails the whole load."""
    docs = parse_documents(text, content_type)
    many = len(docs) > 1
    return [load_object(doc, i if many else None) for i, doc in enumerate(docs)]
