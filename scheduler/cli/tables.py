"""Tables for Deployments, Jobs, Namespaces, ControllerRevisions and `corral top`, as kubectl.

Pure functions of API objects (plain dicts) and the current time, like
`printers.py`, so they are unit-tested without a server. The columns of the
first four are the API's own (scheduler/printing/columns.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from scheduler.cli.printers import cpu_of, memory_of, printed, table
from scheduler.printing import columns

Object = dict[str, Any]


def _meta(obj: Object) -> Object:
    return obj.get("metadata") or {}


def _status(obj: Object) -> Object:
    return obj.get("status") or {}


def _with_namespace(row: list[str], obj: Object, namespaces: bool) -> list[str]:
    return [_meta(obj).get("namespace", ""), *row] if namespaces else row


def deployments_table(
    items: Sequence[Object], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    """NAME READY UP-TO-DATE AVAILABLE AGE; `-o wide` adds CONTAINERS IMAGES SELECTOR."""
    return printed(columns.DEPLOYMENTS, items, now, wide=wide, namespaces=namespaces)


def jobs_table(
    items: Sequence[Object], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    """NAME STATUS COMPLETIONS DURATION AGE; `-o wide` adds CONTAINERS IMAGES SELECTOR."""
    return printed(columns.JOBS, items, now, wide=wide, namespaces=namespaces)


def namespaces_table(items: Sequence[Object], now: datetime, **_: Any) -> str:
    """NAME STATUS AGE."""
    return printed(columns.NAMESPACES, items, now)


def revisions_table(
    items: Sequence[Object], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    """NAME CONTROLLER REVISION AGE."""
    return printed(columns.REVISIONS, items, now, namespaces=namespaces)


# --- rollout history -----------------------------------------------------------------------


def history_table(revisions: Sequence[Object]) -> str:
    """`corral rollout history`: REVISION and CHANGE-CAUSE, oldest first."""
    rows = [
        (
            str(r.get("revision", "")),
            (_meta(r).get("annotations") or {}).get("kubernetes.io/change-cause") or "<none>",
        )
        for r in sorted(revisions, key=lambda r: int(r.get("revision") or 0))
    ]
    return table(["REVISION", "CHANGE-CAUSE"], rows)


# --- top -----------------------------------------------------------------------------------


def _mebibytes(value: object) -> str:
    amount = memory_of(value)
    return "<unknown>" if amount is None else f"{amount // (1024 * 1024)}Mi"


def _millicores(value: object) -> str:
    amount = cpu_of(value)
    return "<unknown>" if amount is None else f"{amount}m"


def _percent(used: int | None, whole: int | None) -> str:
    if used is None or not whole:
        return "<unknown>"
    return f"{used * 100 // whole}%"


def top_nodes_table(metrics: Sequence[Object], nodes: dict[str, Object]) -> str:
    """`corral top nodes`: NAME CPU(cores) CPU% MEMORY(bytes) MEMORY%."""
    rows = []
    for m in metrics:
        name = _meta(m).get("name", "")
        usage = m.get("usage") or {}
        alloc = _status(nodes.get(name) or {}).get("allocatable") or {}
        rows.append(
            [
                name,
                _millicores(usage.get("cpu")),
                _percent(cpu_of(usage.get("cpu")), cpu_of(alloc.get("cpu"))),
                _mebibytes(usage.get("memory")),
                _percent(memory_of(usage.get("memory")), memory_of(alloc.get("memory"))),
            ]
        )
    return table(["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"], rows)


def pod_usage(metrics: Object) -> tuple[int, int]:
    """(millicores, bytes) summed over the containers of a PodMetrics."""
    cpu = mem = 0
    for c in metrics.get("containers") or []:
        usage = c.get("usage") or {}
        cpu += cpu_of(usage.get("cpu")) or 0
        mem += memory_of(usage.get("memory")) or 0
    return cpu, mem


def top_pods_table(metrics: Sequence[Object], *, namespaces: bool = False) -> str:
    """`corral top pods`: NAME CPU(cores) MEMORY(bytes)."""
    headers = ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    if namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for m in metrics:
        cpu, mem = pod_usage(m)
        row = [_meta(m).get("name", ""), f"{cpu}m", f"{mem // (1024 * 1024)}Mi"]
        rows.append(_with_namespace(row, m, namespaces))
    return table(headers, rows)
