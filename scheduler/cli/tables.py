"""Tables for Deployments, Jobs, Namespaces, ControllerRevisions and `corral top`, as kubectl.

Pure functions of API objects (plain dicts) and the current time, like
`printers.py`, so they are unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from scheduler.cli.printers import age, cpu_of, human_duration, memory_of, parse_time, table

Object = dict[str, Any]


def _meta(obj: Object) -> Object:
    return obj.get("metadata") or {}


def _spec(obj: Object) -> Object:
    return obj.get("spec") or {}


def _status(obj: Object) -> Object:
    return obj.get("status") or {}


def condition(obj: Object, kind: str) -> Object | None:
    for cond in _status(obj).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def selector_text(selector: object) -> str:
    """A LabelSelector as `app=web,tier in (a,b)`; `<none>` when empty."""
    if not isinstance(selector, dict):
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        joined = ",".join(values)
        parts.append(
            {
                "In": f"{key} in ({joined})",
                "NotIn": f"{key} notin ({joined})",
                "Exists": str(key),
                "DoesNotExist": f"!{key}",
            }.get(str(op), str(key))
        )
    return ",".join(parts) or "<none>"


def _containers(obj: Object) -> list[Object]:
    template = _spec(obj).get("template") or {}
    return list((template.get("spec") or {}).get("containers") or [])


def _wide(obj: Object, selector: object) -> list[str]:
    containers = _containers(obj)
    return [
        ",".join(c.get("name", "") for c in containers) or "<none>",
        ",".join(c.get("image", "") for c in containers) or "<none>",
        selector_text(selector),
    ]


def _with_namespace(row: list[str], obj: Object, namespaces: bool) -> list[str]:
    return [_meta(obj).get("namespace", ""), *row] if namespaces else row


# --- deployments ---------------------------------------------------------------------------


def deployment_row(d: Object, now: datetime, *, wide: bool = False) -> list[str]:
    spec, status = _spec(d), _status(d)
    row = [
        _meta(d).get("name", ""),
        f"{status.get('readyReplicas') or 0}/{spec.get('replicas', 1)}",
        str(status.get("updatedReplicas") or 0),
        str(status.get("availableReplicas") or 0),
        age(_meta(d).get("creationTimestamp"), now),
    ]
    return row + (_wide(d, spec.get("selector")) if wide else [])


def deployments_table(
    items: Sequence[Object], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    headers = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    if wide:
        headers += ["CONTAINERS", "IMAGES", "SELECTOR"]
    if namespaces:
        headers.insert(0, "NAMESPACE")
    rows = [_with_namespace(deployment_row(d, now, wide=wide), d, namespaces) for d in items]
    return table(headers, rows)


# --- jobs ----------------------------------------------------------------------------------


def job_status(job: Object) -> str:
    """The STATUS column: Complete, Failed, Suspended or Running."""
    for kind in ("Complete", "Failed", "Suspended"):
        cond = condition(job, kind)
        if cond is not None and cond.get("status") == "True":
            return kind
    return "Running"


def job_completions(job: Object) -> str:
    """`2/3`; for a work queue (no completions), `1/1 of 4` as kubectl shows it."""
    spec, status = _spec(job), _status(job)
    succeeded = status.get("succeeded") or 0
    completions = spec.get("completions")
    parallelism = spec.get("parallelism")
    if completions is None and parallelism is not None:
        return f"{succeeded}/1 of {parallelism}"
    return f"{succeeded}/{completions if completions is not None else 1}"


def job_duration(job: Object, now: datetime) -> str:
    status = _status(job)
    start = parse_time(status.get("startTime"))
    if start is None:
        return ""
    end = parse_time(status.get("completionTime"))
    if end is None:
        failed = condition(job, "Failed")
        end = parse_time(failed.get("lastTransitionTime")) if failed else None
    return human_duration(((end or now) - start).total_seconds())


def job_row(job: Object, now: datetime, *, wide: bool = False) -> list[str]:
    row = [
        _meta(job).get("name", ""),
        job_status(job),
        job_completions(job),
        job_duration(job, now),
        age(_meta(job).get("creationTimestamp"), now),
    ]
    selector = _spec(job).get("selector") or {
        "matchLabels": {"batch.kubernetes.io/controller-uid": _meta(job).get("uid", "")}
    }
    return row + (_wide(job, selector) if wide else [])


def jobs_table(
    items: Sequence[Object], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    headers = ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    if wide:
        headers += ["CONTAINERS", "IMAGES", "SELECTOR"]
    if namespaces:
        headers.insert(0, "NAMESPACE")
    rows = [_with_namespace(job_row(j, now, wide=wide), j, namespaces) for j in items]
    return table(headers, rows)


# --- namespaces and revisions --------------------------------------------------------------


def namespace_row(ns: Object, now: datetime, *, wide: bool = False) -> list[str]:
    return [
        _meta(ns).get("name", ""),
        _status(ns).get("phase") or "Active",
        age(_meta(ns).get("creationTimestamp"), now),
    ]


def namespaces_table(items: Sequence[Object], now: datetime, **_: Any) -> str:
    return table(["NAME", "STATUS", "AGE"], [namespace_row(n, now) for n in items])


def revision_row(rev: Object, now: datetime, *, wide: bool = False) -> list[str]:
    owner = next((r for r in _meta(rev).get("ownerReferences") or [] if r.get("controller")), None)
    controller = "<none>"
    if owner:
        group, slash, _ = str(owner.get("apiVersion", "")).partition("/")
        kind = str(owner.get("kind", "")).lower() + (f".{group}" if slash else "")
        controller = f"{kind}/{owner.get('name', '')}"
    return [
        _meta(rev).get("name", ""),
        controller,
        str(rev.get("revision", "")),
        age(_meta(rev).get("creationTimestamp"), now),
    ]


def revisions_table(
    items: Sequence[Object], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    headers = ["NAME", "CONTROLLER", "REVISION", "AGE"]
    if namespaces:
        headers.insert(0, "NAMESPACE")
    rows = [_with_namespace(revision_row(r, now), r, namespaces) for r in items]
    return table(headers, rows)


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
