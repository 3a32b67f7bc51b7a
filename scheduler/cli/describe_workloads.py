"""`corral describe deployment|job|namespace NAME`: kubectl-like text (the caller adds events)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.cli.describe import Writer, mapping, timestamp
from scheduler.cli.printers import table
from scheduler.printing.cells import age, job_completions, job_duration, selector_text

Object = dict[str, Any]


def _conditions(w: Writer, obj: Object) -> None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    if not conditions:
        w.fields([("Conditions", "")])
        return
    w.line("Conditions:")
    rows = [
        (c.get("type", ""), c.get("status", ""), c.get("reason") or "-", c.get("message") or "-")
        for c in conditions
    ]
    w.block(table(["Type", "Status", "Reason", "Message"], rows), 2)


def template_text(template: Object) -> str:
    """The `Pod Template:` block: labels, annotations, and each container."""
    w = Writer()
    meta, spec = template.get("metadata") or {}, template.get("spec") or {}
    w.fields([("Labels", mapping(meta.get("labels")))], 2)
    if meta.get("annotations"):
        w.fields([("Annotations", mapping(meta.get("annotations")))], 2)
    if spec.get("restartPolicy") and spec["restartPolicy"] != "Always":
        w.fields([("Restart Policy", spec["restartPolicy"])], 2)
    w.line("Containers:", 2)
    for c in spec.get("containers") or []:
        w.line(f"{c.get('name', '')}:", 3)
        ports = ", ".join(
            f"{p.get('containerPort')}/{p.get('protocol', 'TCP')}" for p in c.get("ports") or []
        )
        w.fields(
            [
                ("Image", c.get("image", "")),
                ("Port", ports or "<none>"),
                ("Command", " ".join(c["command"]) if c.get("command") else None),
                ("Args", " ".join(c["args"]) if c.get("args") else None),
            ],
            4,
        )
        resources = c.get("resources") or {}
        for title in ("limits", "requests"):
            values = resources.get(title) or {}
            if values:
                w.line(f"{title.capitalize()}:", 4)
                w.fields(sorted(values.items()), 6)
        env = c.get("env") or []
        if env:
            w.line("Environment:", 4)
            w.fields([(e.get("name", ""), e.get("value", "")) for e in env], 6)
        else:
            w.fields([("Environment", "")], 4)
    return w.text()


def _head(w: Writer, obj: Object, now: datetime, namespaced: bool = True) -> None:
    meta = obj.get("metadata") or {}
    created = meta.get("creationTimestamp")
    w.fields(
        [
            ("Name", meta.get("name", "")),
            ("Namespace", meta.get("namespace", "") if namespaced else None),
            (
                "CreationTimestamp",
                f"{timestamp(created)} ({age(created, now)} ago)" if created else None,
            ),
            ("Labels", mapping(meta.get("labels"))),
            ("Annotations", mapping(meta.get("annotations"))),
        ],
        width=24,
    )


def describe_deployment(d: Object, now: datetime) -> str:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    w = Writer()
    _head(w, d, now)
    replicas = spec.get("replicas", 1)
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type", "RollingUpdate")
    rolling = strategy.get("rollingUpdate") or {}
    w.fields(
        [
            ("Selector", selector_text(spec.get("selector"))),
            (
                "Replicas",
                f"{replicas} desired | {status.get('updatedReplicas') or 0} updated | "
                f"{status.get('replicas') or 0} total | {status.get('availableReplicas') or 0} "
                f"available | {status.get('unavailableReplicas') or 0} unavailable",
            ),
            ("StrategyType", kind),
            ("MinReadySeconds", spec.get("minReadySeconds", 0)),
            (
                "RollingUpdateStrategy",
                f"{rolling.get('maxUnavailable', '25%')} max unavailable, "
                f"{rolling.get('maxSurge', '25%')} max surge"
                if kind == "RollingUpdate"
                else None,
            ),
            ("Paused", "true" if spec.get("paused") else None),
            (
                "Revision",
                (d.get("metadata") or {})
                .get("annotations", {})
                .get("deployment.kubernetes.io/revision"),
            ),
        ],
        width=24,
    )
    w.line("Pod Template:")
    w.block(template_text(spec.get("template") or {}), 0)
    _conditions(w, d)
    return w.text()


def describe_job(job: Object, now: datetime) -> str:
    meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
    w = Writer()
    _head(w, job, now)
    selector = spec.get("selector") or {
        "matchLabels": {"batch.kubernetes.io/controller-uid": meta.get("uid", "")}
    }
    w.fields(
        [
            ("Selector", selector_text(selector)),
            ("Parallelism", spec.get("parallelism", 1)),
            ("Completions", job_completions(job).split("/", 1)[1]),
            ("Completion Mode", spec.get("completionMode", "NonIndexed")),
            ("Suspend", "true" if spec.get("suspend") else "false"),
            ("Backoff Limit", spec.get("backoffLimit", 6)),
            ("TTL Seconds After Finished", spec.get("ttlSecondsAfterFinished")),
            ("Active Deadline Seconds", spec.get("activeDeadlineSeconds")),
            ("Start Time", timestamp(status.get("startTime"))),
            ("Completed At", timestamp(status.get("completionTime"))),
            ("Duration", job_duration(job, now) or None),
            (
                "Pods Statuses",
                f"{status.get('active') or 0} Active ({status.get('ready') or 0} Ready) / "
                f"{status.get('succeeded') or 0} Succeeded / {status.get('failed') or 0} Failed",
            ),
        ],
        width=24,
    )
    w.line("Pod Template:")
    w.block(template_text(spec.get("template") or {}), 0)
    _conditions(w, job)
    return w.text()


def describe_namespace(ns: Object, counts: dict[str, int], now: datetime) -> str:
    w = Writer()
    _head(w, ns, now, namespaced=False)
    w.fields([("Status", (ns.get("status") or {}).get("phase") or "Active")], width=24)
    if counts:
        w.line("Resources:")
        w.fields([(kind, count) for kind, count in counts.items()], 2)
    return w.text()
