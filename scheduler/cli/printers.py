"""Tables and machine-readable output for `corral get`, in kubectl's shapes.

Everything here is a pure function of API objects (plain dicts, as decoded from
JSON) and the current time, so it is unit-tested without a server. What a cell
holds, and the columns of most kinds, are shared with the API's Tables
(scheduler/printing); what is here is how the CLI lays them out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from common.quantity import QuantityError, cpu_millis, humanize_bytes, memory_bytes
from scheduler.printing.cells import age, node_status, pod_ready, pod_restarts, pod_status
from scheduler.printing.columns import EVENTS, Printer

Object = dict[str, Any]

FINISHED_PHASES = ("Succeeded", "Failed")


# --- small helpers -------------------------------------------------------------------------


def format_cpu(millis: int) -> str:
    """Millicores as a quantity: 2000 -> `2`, 250 -> `250m`."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def cpu_of(value: object) -> int | None:
    """A CPU quantity in millicores; None when absent or unparseable."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return cpu_millis(value)
    except QuantityError:
        return None


def memory_of(value: object) -> int | None:
    """A memory quantity in bytes; None when absent or unparseable."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return memory_bytes(value)
    except QuantityError:
        return None


def percent(part: int, whole: int | None) -> str:
    """` (12%)`, or nothing when there is no whole to compare with."""
    if not whole:
        return ""
    return f" ({part * 100 // whole}%)"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by three spaces, as kubectl prints them."""
    lines = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        out.append("   ".join(cells).rstrip())
    return "\n".join(out)


def printed(
    printer: Printer,
    items: Sequence[Object],
    now: datetime,
    *,
    wide: bool = False,
    namespaces: bool = False,
) -> str:
    """`items` in `printer`'s columns, as kubectl prints the API's Table of them: headers
    upper-cased, the priority 1 columns only when `wide`, NAMESPACE first when `namespaces`."""
    shown = [i for i, column in enumerate(printer.columns) if wide or column.priority == 0]
    headers = [printer.columns[i].name.upper() for i in shown]
    rows = []
    for item in items:
        cells = printer.row(item, now)
        row: list[object] = [cells[i] for i in shown]
        if namespaces:
            row.insert(0, printer.metadata(item).get("namespace", ""))
        rows.append(row)
    return table(["NAMESPACE", *headers] if namespaces else headers, rows)


def dump(obj: Any, fmt: str) -> str:
    """`-o json` / `-o yaml`."""
    if fmt == "json":
        return json.dumps(obj, indent=2)
    import yaml  # only when asked for: it is not free to import

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).rstrip("\n")


# --- pods ----------------------------------------------------------------------------------


def _meta(obj: Object) -> Object:
    return obj.get("metadata") or {}


def _status(obj: Object) -> Object:
    return obj.get("status") or {}


def pod_nominated(pod: Object) -> str:
    """Why a pod waits for a node (`Unschedulable: 0/3 nodes ...`); empty when it does not."""
    if (pod.get("spec") or {}).get("nodeName"):
        return ""
    for cond in _status(pod).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") != "True":
            return _reason_message(cond.get("reason"), cond.get("message"))
    status = _status(pod)
    if status.get("phase", "Pending") == "Pending":
        return _reason_message(status.get("reason"), status.get("message"))
    return ""


def _reason_message(reason: object, message: object) -> str:
    parts = [str(p) for p in (reason, message) if p]
    return ": ".join(parts)


def pods_table(
    pods: Sequence[Object], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    """`corral get pods`: NAME READY STATUS RESTARTS AGE, `-o wide` adds NODE (and NOMINATED)."""
    headers = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    nominated = [pod_nominated(p) for p in pods] if wide else []
    show_nominated = any(nominated)
    if namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers.append("NODE")
        if show_nominated:
            headers.append("NOMINATED")
    rows = []
    for i, pod in enumerate(pods):
        meta = _meta(pod)
        row = [
            meta.get("name", ""),
            pod_ready(pod),
            pod_status(pod),
            pod_restarts(pod, now),
            age(meta.get("creationTimestamp"), now),
        ]
        if namespaces:
            row.insert(0, meta.get("namespace", ""))
        if wide:
            row.append((pod.get("spec") or {}).get("nodeName") or "<none>")
            if show_nominated:
                row.append(nominated[i] or "<none>")
        rows.append(row)
    return table(headers, rows)


# --- nodes ---------------------------------------------------------------------------------


def node_cpu(node: Object) -> tuple[int | None, int | None]:
    """(allocatable, used) CPU in millicores."""
    status = _status(node)
    alloc = cpu_of((status.get("allocatable") or {}).get("cpu"))
    if alloc is None:
        alloc = cpu_of((status.get("capacity") or {}).get("cpu"))
    return alloc, cpu_of((status.get("usage") or {}).get("cpu"))


def node_memory(node: Object) -> tuple[int | None, int | None]:
    """(allocatable, used) memory in bytes."""
    status = _status(node)
    alloc = memory_of((status.get("allocatable") or {}).get("memory"))
    if alloc is None:
        alloc = memory_of((status.get("capacity") or {}).get("memory"))
    return alloc, memory_of((status.get("usage") or {}).get("memory"))


def _usage_cell(used: int | None, alloc: int | None, fmt: Any) -> str:
    if used is None:
        return "<unknown>"
    return f"{fmt(used)}{percent(used, alloc)}"


def nodes_table(nodes: Sequence[Object], now: datetime, *, wide: bool = False) -> str:
    """`corral get nodes`: NAME STATUS AGE; `-o wide` adds allocatable CPU/MEMORY and usage."""
    headers = ["NAME", "STATUS", "AGE"]
    if wide:
        headers += ["CPU", "MEMORY", "CPU USED", "MEMORY USED"]
    rows = []
    for node in nodes:
        meta = _meta(node)
        row = [meta.get("name", ""), node_status(node), age(meta.get("creationTimestamp"), now)]
        if wide:
            cpu, cpu_used = node_cpu(node)
            mem, mem_used = node_memory(node)
            row += [
                format_cpu(cpu) if cpu is not None else "<unknown>",
                humanize_bytes(mem) if mem is not None else "<unknown>",
                _usage_cell(cpu_used, cpu, format_cpu),
                _usage_cell(mem_used, mem, humanize_bytes),
            ]
        rows.append(row)
    return table(headers, rows)


# --- events --------------------------------------------------------------------------------


def event_age(event: Object, now: datetime) -> str:
    """`3m (x5 over 10m)` when repeated, as kubectl describe prints it."""
    last = age(event.get("lastTimestamp"), now)
    count = event.get("count") or 1
    if count > 1:
        return f"{last} (x{count} over {age(event.get('firstTimestamp'), now)})"
    return last


def events_table(
    events: Sequence[Object], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    """`corral get events`: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE; `-o wide` adds
    SUBOBJECT and SOURCE before MESSAGE, FIRST SEEN, COUNT and NAME after it (kubectl's)."""
    return printed(EVENTS, events, now, wide=wide, namespaces=namespaces)


def events_section(events: Sequence[Object], now: datetime) -> str:
    """The `Events:` block at the end of `corral describe`: oldest first by lastTimestamp,
    as kubectl describe sorts them (SortableEvents); the sort is stable, so the events of
    one second stay in the server's order, which is the order they were recorded in."""
    if not events:
        return "Events:  <none>"
    events = sorted(events, key=_last_seen)
    rows = [
        (
            e.get("type", ""),
            e.get("reason", ""),
            event_age(e, now),
            (e.get("source") or {}).get("component", ""),
            e.get("message", ""),
        )
        for e in events
    ]
    body = table(["Type", "Reason", "Age", "From", "Message"], rows)
    return "Events:\n" + "\n".join("  " + line for line in body.splitlines())


def _last_seen(event: Object) -> datetime:
    """An event's lastTimestamp, for sorting; one without (or with an unreadable one)
    sorts first, as Go's zero time does in kubectl's."""
    stamp = event.get("lastTimestamp")
    try:
        when = datetime.fromisoformat(str(stamp))
    except ValueError:
        return _NO_TIME
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


_NO_TIME = datetime.min.replace(tzinfo=UTC)
