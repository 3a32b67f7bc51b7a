"""What each cell of a `get` table holds, in kubectl's words: ages, READY, STATUS, RESTARTS...

Pure functions of API objects (plain dicts) and the current time, so they are
unit-tested without a server, and the CLI and the API print alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Object = dict[str, Any]


def _meta(obj: Object) -> Object:
    return obj.get("metadata") or {}


def _spec(obj: Object) -> Object:
    return obj.get("spec") or {}


def _status(obj: Object) -> Object:
    return obj.get("status") or {}


def condition(obj: Object, kind: str) -> Object | None:
    """The `status.conditions` entry of type `kind`, if any."""
    for cond in _status(obj).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


# --- times ---------------------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp from the API as an aware datetime; None when absent or garbled."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """A duration the way kubectl prints ages: `5s`, `3m20s`, `45m`, `3h5m`, `20h`, `2d5h`, `9d`."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def age(timestamp: object, now: datetime) -> str:
    """The AGE column: time since `timestamp`, or `<unknown>`."""
    when = parse_time(timestamp)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


def created(obj: Object, now: datetime) -> str:
    """The AGE of an object: since its `metadata.creationTimestamp`."""
    return age(_meta(obj).get("creationTimestamp"), now)


# --- pods ----------------------------------------------------------------------------------


def container_statuses(pod: Object) -> list[Object]:
    return list(_status(pod).get("containerStatuses") or [])


def pod_ready(pod: Object) -> str:
    """The READY column: `ready/total` containers."""
    total = len(_spec(pod).get("containers") or [])
    ready = sum(1 for cs in container_statuses(pod) if cs.get("ready"))
    return f"{ready}/{total}"


def pod_restarts(pod: Object, now: datetime) -> str:
    """The RESTARTS column: the sum over containers, with the last restart's age (`3 (2m ago)`)."""
    count = 0
    last: datetime | None = None
    for cs in container_statuses(pod):
        count += int(cs.get("restartCount") or 0)
        terminated = (cs.get("lastState") or {}).get("terminated") or {}
        finished = parse_time(terminated.get("finishedAt"))
        if finished is not None and (last is None or finished > last):
            last = finished
    if count and last is not None:
        return f"{count} ({human_duration((now - last).total_seconds())} ago)"
    return str(count)


def pod_status(pod: Object) -> str:
    """The STATUS column, following kubectl's rules.

    `Terminating` while a deletion is pending; otherwise the reason a container is
    waiting or terminated (`CrashLoopBackOff`, `OOMKilled`, `Completed`, ...); otherwise
    the pod's own reason (`NodeLost`, `Evicted`); otherwise its phase.
    """
    if _meta(pod).get("deletionTimestamp"):
        return "Terminating"
    status = _status(pod)
    reason = str(status.get("reason") or status.get("phase") or "Unknown")
    running_and_ready = False
    # The first container with something to say wins, as in kubectl (which walks backwards).
    for cs in reversed(container_statuses(pod)):
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated")
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None:
            if terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated.get("signal"):
                reason = f"Signal:{terminated['signal']}"
            else:
                reason = f"ExitCode:{terminated.get('exitCode', '?')}"
        elif state.get("running") is not None and cs.get("ready"):
            running_and_ready = True
    if reason == "Completed" and running_and_ready:
        # Some containers finished and others still serve: the pod as a whole is running.
        ready = condition(pod, "Ready")
        reason = "Running" if ready is not None and ready.get("status") == "True" else "NotReady"
    return reason


def pod_ip(pod: Object) -> str:
    """The IP column: the pod's first IP, or `<none>` (corral's pods share their node's)."""
    status = _status(pod)
    ips = status.get("podIPs") or []
    first = ips[0].get("ip") if ips and isinstance(ips[0], dict) else None
    return str(first or status.get("podIP") or "<none>")


def pod_readiness_gates(pod: Object) -> str:
    """The READINESS GATES column: `true/all` of the gates' conditions, `<none>` without."""
    gates = _spec(pod).get("readinessGates") or []
    if not gates:
        return "<none>"
    met = 0
    for gate in gates:
        cond = condition(pod, str(gate.get("conditionType", "")))
        met += cond is not None and cond.get("status") == "True"
    return f"{met}/{len(gates)}"


# --- nodes ---------------------------------------------------------------------------------


def node_status(node: Object) -> str:
    """The STATUS column: `Ready`, `NotReady` or `Unknown`, plus `,SchedulingDisabled`."""
    ready = condition(node, "Ready")
    if ready is None:
        text = "Unknown"
    else:
        text = "Ready" if ready.get("status") == "True" else "NotReady"
    if _spec(node).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


_ROLE_PREFIX = "node-role.kubernetes.io/"


def node_roles(node: Object) -> str:
    """The ROLES column: from `node-role.kubernetes.io/ROLE` and `kubernetes.io/role` labels."""
    roles = set()
    for key, value in (_meta(node).get("labels") or {}).items():
        if key.startswith(_ROLE_PREFIX) and key != _ROLE_PREFIX:
            roles.add(key.removeprefix(_ROLE_PREFIX))
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or "<none>"


def node_address(node: Object, kind: str) -> str:
    """The first address of type `kind` (`InternalIP`, `ExternalIP`), or `<none>`."""
    for address in _status(node).get("addresses") or []:
        if address.get("type") == kind:
            return str(address.get("address", ""))
    return "<none>"


def node_info(node: Object, *keys: str) -> str:
    """The first of `keys` that `status.nodeInfo` has, or `<unknown>`. Kubernetes' keys
    first: corral's agent reports its own (`agentVersion`, `runtime`) where it has no
    kubelet's to give."""
    info = _status(node).get("nodeInfo") or {}
    return next((str(info[k]) for k in keys if info.get(k)), "<unknown>")


# --- workloads -----------------------------------------------------------------------------


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


def template_containers(obj: Object) -> str:
    """The CONTAINERS column of a Deployment or Job: its template's container names."""
    return ",".join(c.get("name", "") for c in _template_containers(obj)) or "<none>"


def template_images(obj: Object) -> str:
    """The IMAGES column: its template's images, in the containers' order."""
    return ",".join(c.get("image", "") for c in _template_containers(obj)) or "<none>"


def _template_containers(obj: Object) -> list[Object]:
    template = _spec(obj).get("template") or {}
    return list((template.get("spec") or {}).get("containers") or [])


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
    """The DURATION column: from start to completion (or failure, or now); empty before."""
    status = _status(job)
    start = parse_time(status.get("startTime"))
    if start is None:
        return ""
    end = parse_time(status.get("completionTime"))
    if end is None:
        failed = condition(job, "Failed")
        end = parse_time(failed.get("lastTransitionTime")) if failed else None
    return human_duration(((end or now) - start).total_seconds())


def job_selector(job: Object) -> str:
    """The SELECTOR column of a Job: its selector, or the one its controller gives it."""
    selector = _spec(job).get("selector") or {
        "matchLabels": {"batch.kubernetes.io/controller-uid": _meta(job).get("uid", "")}
    }
    return selector_text(selector)


def revision_controller(rev: Object) -> str:
    """The CONTROLLER column of a ControllerRevision: `deployment.apps/web`, or `<none>`."""
    owner = next((r for r in _meta(rev).get("ownerReferences") or [] if r.get("controller")), None)
    if not owner:
        return "<none>"
    group, slash, _ = str(owner.get("apiVersion", "")).partition("/")
    kind = str(owner.get("kind", "")).lower() + (f".{group}" if slash else "")
    return f"{kind}/{owner.get('name', '')}"


# --- events --------------------------------------------------------------------------------


def event_last_seen(event: Object, now: datetime) -> str:
    """The LAST SEEN column: since the last occurrence (the first, if only that is known)."""
    return age(event.get("lastTimestamp") or event.get("firstTimestamp"), now)


def event_object(event: Object) -> str:
    """The OBJECT column: `pod/web-1`."""
    ref = event.get("involvedObject") or {}
    kind = str(ref.get("kind", "")).lower()
    return f"{kind}/{ref['name']}" if ref.get("name") else kind


def event_source(event: Object) -> str:
    """The SOURCE column: `component, host`."""
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return f"{component}, {host}" if host else str(component)
