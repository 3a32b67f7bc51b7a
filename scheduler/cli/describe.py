"""`corral describe`: kubectl-like, human-readable text for one pod or one node."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from common.quantity import humanize_bytes
from scheduler.cli.printers import (
    FINISHED_PHASES,
    cpu_of,
    format_cpu,
    memory_of,
    node_cpu,
    node_memory,
    percent,
    table,
)
from scheduler.printing.cells import age, parse_time, pod_status

Object = dict[str, Any]


class Writer:
    """Accumulates `Key:  value` lines with values aligned per block, kubectl style."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def fields(
        self,
        pairs: Sequence[tuple[str, object]],
        indent: int = 0,
        width: int = 0,
        empty: str = "<none>",
    ) -> None:
        """Aligned `Key:  value` lines; a value of None is left out, '' prints `empty`.

        Values start two columns after the longest key, or at `width` when that is further,
        so that separate calls can share one alignment.
        """
        shown = [(k, v) for k, v in pairs if v is not None]
        if not shown:
            return
        width = max(width, max(len(k) for k, _ in shown) + 3)
        pad = " " * indent
        for key, value in shown:
            text = str(value) if value != "" else empty
            first, *rest = text.split("\n")
            self.lines.append(f"{pad}{(key + ':').ljust(width)}{first}".rstrip())
            for more in rest:
                self.lines.append(f"{pad}{' ' * width}{more}".rstrip())

    def line(self, text: str = "", indent: int = 0) -> None:
        self.lines.append((" " * indent + text).rstrip())

    def block(self, text: str, indent: int) -> None:
        for line in text.split("\n"):
            self.line(line, indent)

    def text(self) -> str:
        return "\n".join(self.lines)


def timestamp(value: object) -> str | None:
    """RFC 1123 with numeric zone, as kubectl describe prints times."""
    when = parse_time(value)
    return when.strftime("%a, %d %b %Y %H:%M:%S %z") if when else None


def mapping(values: object) -> str:
    """Labels and annotations: `k=v`, one a line; `<none>` when empty."""
    if not isinstance(values, dict) or not values:
        return "<none>"
    return "\n".join(f"{k}={v}" for k, v in sorted(values.items()))


def _conditions_table(conditions: Sequence[Object], columns: Sequence[str]) -> str:
    headers = ["Type", "Status", *columns, "Reason", "Message"]
    rows = []
    for cond in conditions:
        extra = [timestamp(cond.get(c[0].lower() + c[1:])) or "-" for c in columns]
        rows.append(
            [
                cond.get("type", ""),
                cond.get("status", ""),
                *extra,
                cond.get("reason") or "-",
                cond.get("message") or "-",
            ]
        )
    return table(headers, rows)


# --- pods ----------------------------------------------------------------------------------


# Keys of a container's block share one column, as do the details of a container state.
_CONTAINER_WIDTH = len("Restart Count:") + 2
_STATE_WIDTH = len("Exit Code:") + 2


def _state(w: Writer, title: str, state: Object, indent: int) -> None:
    """`State:  Running` / `Waiting` / `Terminated` and its details."""
    cw, sw = _CONTAINER_WIDTH, _STATE_WIDTH
    if state.get("running") is not None:
        w.fields([(title, "Running")], indent, cw)
        w.fields([("Started", timestamp(state["running"].get("startedAt")))], indent + 2, sw)
    elif state.get("terminated") is not None:
        term = state["terminated"]
        w.fields([(title, "Terminated")], indent, cw)
        w.fields(
            [
                ("Reason", term.get("reason")),
                ("Message", term.get("message")),
                ("Exit Code", term.get("exitCode")),
                ("Signal", term.get("signal")),
                ("Started", timestamp(term.get("startedAt"))),
                ("Finished", timestamp(term.get("finishedAt"))),
            ],
            indent + 2,
            sw,
        )
    elif state.get("waiting") is not None:
        wait = state["waiting"]
        w.fields([(title, "Waiting")], indent, cw)
        w.fields([("Reason", wait.get("reason")), ("Message", wait.get("message"))], indent + 2, sw)
    elif title == "State":
        w.fields([(title, "Waiting")], indent, cw)


def _resources(w: Writer, title: str, values: object, indent: int) -> None:
    if isinstance(values, dict) and values:
        w.line(f"{title}:", indent)
        w.fields([(k, v) for k, v in sorted(values.items())], indent + 2)


def _container(w: Writer, container: Object, cstatus: Object) -> None:
    w.line(f"{container.get('name', '')}:", 2)
    # As kubectl: the run's ids once the container has a status, blank until it has run.
    reported = bool(cstatus)
    w.fields(
        [
            ("Container ID", (cstatus.get("containerID") or "") if reported else None),
            ("Image", container.get("image", "")),
            ("Image ID", (cstatus.get("imageID") or "") if reported else None),
            ("Command", " ".join(container["command"]) if container.get("command") else None),
            ("Args", " ".join(container["args"]) if container.get("args") else None),
        ],
        4,
        _CONTAINER_WIDTH,
        empty="",
    )
    _state(w, "State", cstatus.get("state") or {}, 4)
    _state(w, "Last State", cstatus.get("lastState") or {}, 4)
    w.fields(
        [
            ("Ready", "True" if cstatus.get("ready") else "False"),
            ("Restart Count", cstatus.get("restartCount", 0)),
        ],
        4,
        _CONTAINER_WIDTH,
    )
    resources = container.get("resources") or {}
    _resources(w, "Limits", resources.get("limits"), 4)
    _resources(w, "Requests", resources.get("requests"), 4)
    env = container.get("env") or []
    if env:
        w.line("Environment:", 4)
        w.fields([(e.get("name", ""), e.get("value", "")) for e in env], 6)


def describe_pod(pod: Object, now: datetime) -> str:
    """`corral describe pod NAME`."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    w = Writer()
    node = spec.get("nodeName") or "<none>"
    if spec.get("nodeName") and status.get("hostIP"):
        node += f"/{status['hostIP']}"
    created = meta.get("creationTimestamp")
    w.fields(
        [
            ("Name", meta.get("name", "")),
            ("Namespace", meta.get("namespace", "")),
            ("Node", node),
            ("Start Time", timestamp(status.get("startTime"))),
            ("Created", f"{timestamp(created)} ({age(created, now)} ago)" if created else None),
            ("Labels", mapping(meta.get("labels"))),
            ("Annotations", mapping(meta.get("annotations"))),
            ("Status", pod_status(pod)),
            ("Phase", status.get("phase", "Pending")),
            ("Reason", status.get("reason")),
            ("Message", status.get("message")),
            ("Terminating", timestamp(meta.get("deletionTimestamp"))),
            ("Grace Period", spec.get("terminationGracePeriodSeconds")),
            ("IP", status.get("podIP") or status.get("hostIP")),
            ("UID", meta.get("uid")),
            ("Restart Policy", spec.get("restartPolicy")),
            ("Controlled By", _controller(meta)),
            ("Node Selector", mapping(spec["nodeSelector"]) if spec.get("nodeSelector") else None),
        ]
    )
    w.line("Containers:")
    by_name = {cs.get("name"): cs for cs in status.get("containerStatuses") or []}
    for container in spec.get("containers") or []:
        _container(w, container, by_name.get(container.get("name")) or {})
    conditions = status.get("conditions") or []
    if conditions:
        w.line("Conditions:")
        w.block(_conditions_table(conditions, ["LastTransitionTime"]), 2)
    else:
        w.fields([("Conditions", "")])
    volumes = spec.get("volumes") or []
    if volumes:
        w.line("Volumes:")
        for vol in volumes:
            source = "EmptyDir" if vol.get("emptyDir") is not None else "HostPath"
            detail = (vol.get("hostPath") or {}).get("path", "")
            w.line(f"{vol.get('name', '')}: {source} {detail}".rstrip(), 2)
    return w.text()


def _controller(meta: Object) -> str | None:
    """`Deployment/web`: the owner with `controller: true`, as kubectl shows it."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref.get('kind', '')}/{ref.get('name', '')}"
    return None


# --- nodes ---------------------------------------------------------------------------------


def pod_resources(pod: Object) -> tuple[int, int, int, int]:
    """(cpu request, cpu limit, memory request, memory limit) summed over containers.

    As in Kubernetes, a container with a limit and no request requests its limit.
    """
    cpu_req = cpu_lim = mem_req = mem_lim = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        res = container.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        cpu_req += cpu_of(requests.get("cpu", limits.get("cpu"))) or 0
        mem_req += memory_of(requests.get("memory", limits.get("memory"))) or 0
        cpu_lim += cpu_of(limits.get("cpu")) or 0
        mem_lim += memory_of(limits.get("memory")) or 0
    return cpu_req, cpu_lim, mem_req, mem_lim


def _quantities(w: Writer, title: str, values: object) -> None:
    if isinstance(values, dict) and values:
        w.line(f"{title}:")
        w.fields([(k, v) for k, v in sorted(values.items())], 2)


def describe_node(node: Object, pods: Sequence[Object], now: datetime) -> str:
    """`corral describe node NAME`; `pods` are those bound to it (finished ones are skipped)."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    w = Writer()
    created = meta.get("creationTimestamp")
    w.fields(
        [
            ("Name", meta.get("name", "")),
            ("Labels", mapping(meta.get("labels"))),
            ("Annotations", mapping(meta.get("annotations"))),
            (
                "CreationTimestamp",
                f"{timestamp(created)} ({age(created, now)} ago)" if created else None,
            ),
            ("Unschedulable", "true" if spec.get("unschedulable") else "false"),
            ("Last Heartbeat", timestamp(status.get("lastHeartbeatTime"))),
        ]
    )
    conditions = status.get("conditions") or []
    if conditions:
        w.line("Conditions:")
        w.block(_conditions_table(conditions, ["LastHeartbeatTime", "LastTransitionTime"]), 2)
    else:
        w.fields([("Conditions", "")])
    addresses = status.get("addresses") or []
    if addresses:
        w.line("Addresses:")
        w.fields([(a.get("type", ""), a.get("address", "")) for a in addresses], 2)
    _quantities(w, "Capacity", status.get("capacity"))
    _quantities(w, "Allocatable", status.get("allocatable"))
    cpu, cpu_used = node_cpu(node)
    mem, mem_used = node_memory(node)
    w.line("Usage:")
    w.fields(
        [
            (
                "cpu",
                f"{format_cpu(cpu_used)}{percent(cpu_used, cpu)}"
                if cpu_used is not None
                else "<unknown>",
            ),
            (
                "memory",
                f"{humanize_bytes(mem_used)}{percent(mem_used, mem)}"
                if mem_used is not None
                else "<unknown>",
            ),
        ],
        2,
    )
    info = status.get("nodeInfo") or {}
    if info:
        w.line("System Info:")
        w.fields(sorted(info.items()), 2)
    active = [p for p in pods if (p.get("status") or {}).get("phase") not in FINISHED_PHASES]
    w.line(f"Non-terminated Pods:  ({len(active)} in total)")
    totals = [0, 0, 0, 0]
    rows = []
    for pod in sorted(active, key=lambda p: (_ns(p), _name(p))):
        cpu_req, cpu_lim, mem_req, mem_lim = res = pod_resources(pod)
        totals = [a + b for a, b in zip(totals, res, strict=True)]
        rows.append(
            [
                _ns(pod),
                _name(pod),
                f"{format_cpu(cpu_req)}{percent(cpu_req, cpu)}",
                f"{format_cpu(cpu_lim)}{percent(cpu_lim, cpu)}",
                f"{humanize_bytes(mem_req)}{percent(mem_req, mem)}",
                f"{humanize_bytes(mem_lim)}{percent(mem_lim, mem)}",
                age((pod.get("metadata") or {}).get("creationTimestamp"), now),
            ]
        )
    if rows:
        headers = [
            "Namespace",
            "Name",
            "CPU Requests",
            "CPU Limits",
            "Memory Requests",
            "Memory Limits",
            "Age",
        ]
        w.block(table(headers, rows), 2)
    w.line("Allocated resources:")
    w.block(
        table(
            ["Resource", "Requests", "Limits"],
            [
                [
                    "cpu",
                    f"{format_cpu(totals[0])}{percent(totals[0], cpu)}",
                    f"{format_cpu(totals[1])}{percent(totals[1], cpu)}",
                ],
                [
                    "memory",
                    f"{humanize_bytes(totals[2])}{percent(totals[2], mem)}",
                    f"{humanize_bytes(totals[3])}{percent(totals[3], mem)}",
                ],
            ],
        ),
        2,
    )
    return w.text()


def _ns(pod: Object) -> str:
    return str((pod.get("metadata") or {}).get("namespace", ""))


def _name(pod: Object) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))
