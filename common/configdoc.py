"""A daemon's configuration model written out as a commented TOML file.

Every option of the model is listed, with its description and default, commented
out; options given in `values` are written uncommented. The example configs in
`systemd/` and the files `corral install` writes both come from here, so they can
never drift from the models (a test compares them).
"""

from __future__ import annotations

import json
import re
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic.fields import FieldInfo

from common.config import DaemonConfig

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
UNSET = object()


def toml_value(value: Any) -> str:
    """A TOML literal for a config value (strings, numbers, booleans, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = [
            f"{k if _BARE_KEY.fullmatch(k) else json.dumps(k)} = {toml_value(v)}"
            for k, v in value.items()
        ]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"no TOML form for {value!r}")


def _choices(annotation: Any) -> list[Any] | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _choices(args[0])
    return None


def _placeholder(annotation: Any) -> Any:
    """An example value of the field's type, for options whose default is unset."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args and typing.get_origin(annotation) is not typing.Literal else annotation
    origin = typing.get_origin(base) or base
    return {bool: False, int: 0, float: 0.0, list: [], dict: {}}.get(origin, "")


def _describe(name: str, field: FieldInfo, example: Any) -> tuple[list[str], Any]:
    """(comment lines, the value to show) for one option."""
    lines = textwrap.wrap(field.description or name, width=86)
    choices = _choices(field.annotation)
    if choices:
        lines.append("one of: " + ", ".join(str(c) for c in choices))
    if field.default_factory is not None and field.default_factory not in (dict, list):
        lines.append("default: computed when the daemon starts")
        shown = example if example is not UNSET else _placeholder(field.annotation)
    elif field.is_required():
        lines.append("required")
        shown = example if example is not UNSET else _placeholder(field.annotation)
    else:
        default = field.get_default(call_default_factory=True)
        if default is None:
            lines.append("default: unset")
            shown = example if example is not UNSET else _placeholder(field.annotation)
        else:
            shown = default
    return lines, shown


def render_toml(
    model: type[DaemonConfig],
    header: str,
    values: Mapping[str, Any] | None = None,
    examples: Mapping[str, Any] | None = None,
) -> str:
    """The commented TOML file: `header` (comment lines), then every option in model
    order; those in `values` set, the others commented out at their defaults (or at
    `examples[name]` where the default is unset or computed)."""
    values = values or {}
    unknown = set(values) - set(model.model_fields)
    if unknown:
        raise ValueError(f"not options of {model.__name__}: {', '.join(sorted(unknown))}")
    out = [f"# {line}".rstrip() for line in header.strip("\n").splitlines()]
    for name, field in model.model_fields.items():
        lines, shown = _describe(name, field, (examples or {}).get(name, UNSET))
        out.append("")
        out.extend(f"# {line}" for line in lines)
        if name in values:
            out.append(f"{name} = {toml_value(values[name])}")
        else:
            out.append(f"# {name} = {toml_value(shown)}")
    return "\n".join(out) + "\n"
