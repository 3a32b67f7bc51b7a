"""`corral status`: the operator summary from `GET /api/v1/status`, as readable text.

The summary's shape belongs to the server and grows over time, so this renders any
JSON object generically: nested keys become indented, aligned sections and camelCase
keys become words. A key naming its unit sets how the numbers below it print:
`...Bytes` (or memory, RAM) as `1.5Gi`, `...Millicores` as a CPU quantity (`12`,
`500m`); the unit word is then dropped from the label.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from common.quantity import humanize_bytes
from scheduler.cli.printers import format_cpu

Unit = Literal["", "bytes", "cpu"]

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+|[A-Z]")
_BYTE_WORDS = {"memory", "ram", "bytes", "mem"}
_CPU_WORDS = {"millicores", "millis", "millicpu"}
_UNIT_WORDS = {"bytes", "millicores", "millis", "millicpu"}
_ACRONYMS = {"cpu": "CPU", "ram": "RAM", "ip": "IP", "id": "ID", "api": "API", "uid": "UID"}


def words(key: str) -> list[str]:
    """`pendingQueueLength` -> `['pending', 'queue', 'length']`; `cpu_used` -> `['cpu', 'used']`."""
    return [w.lower() for w in _WORD.findall(key)]


def unit_of(key: str, inherited: Unit = "") -> Unit:
    """What the numbers under `key` count, from the words of the key or its parent's."""
    found = set(words(key))
    if found & _CPU_WORDS:
        return "cpu"
    if found & _BYTE_WORDS:
        return "bytes"
    return inherited


def title(key: str) -> str:
    """`pendingQueueLength` -> `Pending queue length`; `cpuMillicores` -> `CPU`.

    Keys that do not start lowercase (`NotReady`) are names, not prose: kept as they are.
    """
    if not key[:1].islower() or not key.isascii():
        return key
    parts = words(key)
    shown = [w for w in parts if w not in _UNIT_WORDS] or parts
    text = " ".join(_ACRONYMS.get(w, w) for w in shown)
    return text[:1].upper() + text[1:] if text else key


def _scalar(value: Any, unit: Unit) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and value >= 0:
        if unit == "bytes":
            return humanize_bytes(value)
        if unit == "cpu":
            return format_cpu(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _inline(item: Any, unit: Unit) -> str:
    """A list element on one line: a scalar, or `key=value` pairs of a flat object."""
    if isinstance(item, dict) and all(_is_scalar(v) for v in item.values()):
        return ", ".join(f"{k}={_scalar(v, unit_of(k, unit))}" for k, v in item.items())
    if _is_scalar(item):
        return _scalar(item, unit)
    return json.dumps(item, separators=(",", ":"))


def _render(obj: dict[str, Any], indent: int, unit: Unit, out: list[str]) -> None:
    # Keys printed with their value on the same line share one column.
    inline = [k for k, v in obj.items() if _is_scalar(v) or not v]
    width = max((len(title(k)) for k in inline), default=0) + 3
    pad = " " * indent
    for key, value in obj.items():
        key_unit = unit_of(key, unit)
        label = title(key) + ":"
        if _is_scalar(value):
            out.append(f"{pad}{label.ljust(width)}{_scalar(value, key_unit)}".rstrip())
        elif not value:
            out.append(f"{pad}{label.ljust(width)}<none>")
        elif isinstance(value, dict):
            out.append(f"{pad}{label}")
            _render(value, indent + 2, key_unit, out)
        else:
            out.append(f"{pad}{label}")
            out.extend(f"{pad}  - {_inline(item, key_unit)}" for item in value)


def render_status(summary: Any) -> str:
    """The whole summary as text; a non-object answer is printed as it came."""
    if not isinstance(summary, dict):
        return str(summary)
    out: list[str] = []
    _render(summary, 0, "", out)
    return "\n".join(out)
