"""Manifests: YAML or JSON documents in the Kubernetes shape, turned into typed objects.

Errors name the field by its path (`spec.containers[0].securityContext: not
supported`) so a person can find the line to fix.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import ValidationError

from common.models import NOT_SUPPORTED, Deployment, Job, Namespace, Node, Pod, StatusCause

# An object a manifest may hold.
ManifestObject = Pod | Node | Deployment | Job | Namespace

# (apiVersion, kind) -> model.
KINDS: dict[tuple[str, str], type[ManifestObject]] = {
    ("v1", "Pod"): Pod,
    ("v1", "Node"): Node,
    ("v1", "Namespace"): Namespace,
    ("apps/v1", "Deployment"): Deployment,
    ("batch/v1", "Job"): Job,
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


# Parts pydantic inserts into `loc` that name a schema rather than a field:
# validators and parametrised types (`function-after[...]`, `list[str]`), the
# members of a plain union (`int`, `str`), and the marker of a bad dict key.
_SCHEMA_TAG = re.compile(r"^[a-z][a-z0-9_-]*\[.*\]$")
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "none", "[key]"})


def field_path(loc: Iterable[int | str], prefix: str = "") -> str:
    """`('spec', 'containers', 0, 'image')` -> `spec.containers[0].image`."""
    path = prefix
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            path += f"[{part}]"
            continue
        part = str(part)
        if part in _TYPE_TAGS or _SCHEMA_TAG.match(part):
            continue
        path += f".{part}" if path else part
    return path


_REASONS = {
    "missing": ("FieldValueRequired", "Required value"),
    "extra_forbidden": ("FieldValueNotSupported", "not supported"),
}


def causes_from_validation(error: ValidationError, prefix: str = "") -> list[StatusCause]:
    """Turn pydantic's errors into Kubernetes-style causes with field paths."""
    causes: list[StatusCause] = []
    for err in error.errors(include_url=False):
        reason, message = _REASONS.get(err["type"], ("FieldValueInvalid", err["msg"]))
        if err["type"] == NOT_SUPPORTED:
            reason = "FieldValueNotSupported"
        message = message.removeprefix("Value error, ")
        cause = StatusCause(reason=reason, message=message, field=field_path(err["loc"], prefix))
        if cause not in causes:
            causes.append(cause)
    return causes


# A manifest expands to at most this many values once YAML aliases are followed:
# ten nested aliases of ten items each ("billion laughs") would otherwise take
# the validator hours.
MAX_VALUES = 1_000_000


# Integers of at most this many bits: fewer than the 4300 decimal digits past which
# Python's int() and str() refuse to convert (sys.get_int_max_str_digits()).
MAX_INT_BITS = 14_000


# Far deeper than any object corral knows. PyYAML composes recursively; refusing
# here answers with a line and column long before Python's recursion limit.
MAX_DEPTH = 100


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, as Kubernetes does,
    and nesting deeper than MAX_DEPTH."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` may repeat keys of the base on purpose
            key = self.construct_object(key_node, deep=deep)
            with contextlib.suppress(TypeError):  # unhashable keys fail below
                if key in seen:
                    mark = key_node.start_mark
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """An integer, refused past MAX_INT_BITS: JSON's parser refuses more than 4300
        digits, but PyYAML reads `0x` and `0b` numbers of any length, and such a number
        cannot even be written in decimal (in an error message, or in the store's JSON)."""
        try:
            value: int = super().construct_yaml_int(node)
        except ValueError:  # int() of more than 4300 decimal digits
            value = 1 << (MAX_INT_BITS + 1)
        if value.bit_length() > MAX_INT_BITS:
            raise yaml.constructor.ConstructorError(
                None, None, "integer too large", node.start_mark
            )
        return value


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):  # the rare case, found without a Python-level loop
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ManifestError(f"malformed JSON: duplicate key {key!r}")
            seen.add(key)
    return result


def _loads(text: str) -> Any:
    """`json.loads` with duplicate keys refused; JSONDecodeError where the JSON breaks."""
    try:
        return json.loads(text, object_pairs_hook=_json_pairs)
    except (json.JSONDecodeError, ManifestError):
        raise
    except ValueError:  # an integer past the 4300 digits int() converts: not a 500
        digits = sys.get_int_max_str_digits()
        raise ManifestError(f"malformed JSON: an integer of more than {digits} digits") from None


def _check_size(doc: Any) -> None:
    """Refuse documents that are cyclic or expand (through YAML aliases) beyond MAX_VALUES.

    Counts values as if every alias were expanded, without expanding: each shared
    node is sized once. Iterative, so deep nesting cannot exhaust the stack.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()  # expanded but not yet sized: the current path
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack:
        value, expanded = stack.pop()
        if not isinstance(value, dict | list):
            continue
        ident = id(value)
        children = list(value.values()) if isinstance(value, dict) else value
        if expanded:
            active.discard(ident)
            sizes[ident] = 1 + sum(sizes.get(id(c), 1) for c in children)
            if sizes[ident] > MAX_VALUES:
                raise ManifestError(f"manifest is too large: more than {MAX_VALUES} values")
        elif ident in active:
            raise ManifestError("manifest refers to itself (a YAML alias inside its own anchor)")
        elif ident not in sizes:
            active.add(ident)
            stack.append((value, True))
            stack.extend((c, False) for c in children)


def _expand_lists(docs: list[Any]) -> list[Any]:
    """Replace each `kind: ...List` document with its items, as kubectl does."""
    result: list[Any] = []
    for doc in docs:
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
            if not isinstance(doc["items"], list):
                raise ManifestError(f"{kind}.items must be a list")
            result.extend(doc["items"])
        else:
            result.append(doc)
    return result


def _parse_json(text: str) -> Any:
    try:
        return _loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def parse_documents(
    text: str | bytes, content_type: str = "", *, flatten: bool = True
) -> list[Any]:
    """Parse JSON or (multi-document) YAML; empty documents are skipped.

    With `flatten`, the items of a `List`/`PodList` document become documents of their own.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"body is not UTF-8: {exc}") from None
    from_yaml = True
    try:
        if "json" in content_type:
            docs = [_parse_json(text)]
            from_yaml = False
        elif text.lstrip().startswith("{"):
            # Most likely JSON, which YAML mostly (not wholly: tabs) accepts too;
            # try JSON first for exact messages, fall back to YAML.
            try:
                docs = [_loads(text)]
                from_yaml = False
            except json.JSONDecodeError:
                try:
                    docs = _parse_yaml(text)  # a YAML flow mapping: `{name: x}`
                except ManifestError:
                    docs = [_parse_json(text)]  # raises, naming where the JSON broke
        else:
            docs = _parse_yaml(text)
    except RecursionError:
        raise ManifestError("manifest is nested too deeply") from None
    if flatten:
        docs = _expand_lists(docs)
    if from_yaml:  # only YAML aliases can make a document bigger than its text
        for doc in docs:
            _check_size(doc)
    return docs


def _parse_yaml(text: str) -> list[Any]:
    try:
        return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"malformed YAML{where}: {problem}") from None


def load_object(doc: Any, index: int | None = None) -> ManifestObject:
    """Validate one document as the object its apiVersion and kind name."""
    model = _model_of(doc, index)
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        meta, kind = doc.get("metadata"), doc["kind"]
        name = meta.get("name") if isinstance(meta, dict) else None
        where = f"document {index}: " if index is not None else ""
        raise ManifestError(
            f"{where}{kind} {name!r} is invalid" if name else f"{where}{kind} is invalid",
            causes_from_validation(exc),
        ) from None


def _model_of(doc: Any, index: int | None) -> type[ManifestObject]:
    """The model a document names by apiVersion and kind, or ManifestError saying why not."""
    if isinstance(doc, dict):  # the common case first, in one lookup: a known kind
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        if isinstance(api_version, str) and isinstance(kind, str):
            known = KINDS.get((api_version, kind))
            if known is not None:
                return known
    where = f"document {index}: " if index is not None else ""
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}expected an object, got {type(doc).__name__}")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not api_version or not kind:
        missing = [f for f in ("apiVersion", "kind") if not doc.get(f)]
        raise ManifestError(
            f"{where}missing {' and '.join(missing)}",
            [
                StatusCause(reason="FieldValueRequired", message="Required value", field=f)
                for f in missing
            ],
        )
    for field, value in (("apiVersion", api_version), ("kind", kind)):
        if not isinstance(value, str):
            raise ManifestError(
                f"{where}{field} must be a string",
                [StatusCause(reason="FieldValueInvalid", message="must be a string", field=field)],
            )
    model = KINDS.get((api_version, kind))
    if model is None:
        supported = ", ".join(f"{v}/{k}" for v, k in KINDS)
        raise ManifestError(
            f"{where}{api_version}/{kind} is not supported (supported: {supported})",
            [StatusCause(reason="FieldValueNotSupported", message="not supported", field="kind")],
        )
    return model


def load_manifests(text: str | bytes, content_type: str = "") -> list[ManifestObject]:
    """Every object in a manifest file; the first invalid document fails the whole load."""
    docs = parse_documents(text, content_type)
    many = len(docs) > 1
    return [load_object(doc, i if many else None) for i, doc in enumerate(docs)]


def is_list(doc: Any) -> bool:
    """A `List`, `PodList`, ... document: a wrapper around `items`."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("kind"), str)
        and doc["kind"].endswith("List")
        and isinstance(doc.get("items"), list)
    )
