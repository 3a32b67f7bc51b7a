"""`corral rollout status|history|undo|restart|pause|resume`, `corral scale`, and `--wait`.

Waiting follows the object through the API's watch stream and shows one live
line: on a terminal it is rewritten in place; otherwise each new message is
printed once (what kubectl's `rollout status` prints, so scripts can read it).
A Deployment is rolled out when every replica is updated and available and no
old one is left; a rollout whose Progressing condition turns False
(ProgressDeadlineExceeded) fails, as does a Job that fails. Exit codes: 0 done,
1 failed or timed out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from scheduler.cli import printers, tables
from scheduler.cli.client import ApiError, Client
from scheduler.cli.errors import CommandError
from scheduler.cli.getting import follow, out
from scheduler.cli.kinds import DEPLOYMENTS, JOBS, REVISIONS, Resource, lookup, split_ref
from scheduler.printing import cells

Object = dict[str, Any]
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class Progress:
    """A status line: rewritten in place on a terminal, one line per change elsewhere."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.last: str | None = None

    def show(self, message: str) -> None:
        if message == self.last:
            return
        self.last = message
        if self.tty:
            self.stream.write("\r\x1b[K" + message)
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def finish(self, message: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + message + "\n")
        elif message != self.last:
            self.stream.write(message + "\n")
        self.last = message
        self.stream.flush()


# -- what "done" means, per kind (pure: unit-tested) -----------------------------------------


def deployment_state(d: Object) -> tuple[str, str]:
    """("waiting" | "done" | "failed", message), by kubectl's rollout status rules."""
    meta, spec, status = d.get("metadata") or {}, d.get("spec") or {}, d.get("status") or {}
    name = meta.get("name", "")
    observed = status.get("observedGeneration")
    if observed is None or int(meta.get("generation") or 1) > int(observed):
        return "waiting", "Waiting for deployment spec update to be observed..."
    progressing = cells.condition(d, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return "failed", f'deployment "{name}" exceeded its progress deadline'
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    prefix = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < replicas:
        return "waiting", f"{prefix}{updated} out of {replicas} new replicas have been updated..."
    if total > updated:
        return "waiting", f"{prefix}{total - updated} old replicas are pending termination..."
    if available < updated:
        return "waiting", f"{prefix}{available} of {updated} updated replicas are available..."
    return "done", f'deployment "{name}" successfully rolled out'


def job_state(job: Object) -> tuple[str, str]:
    name = (job.get("metadata") or {}).get("name", "")
    status = job.get("status") or {}
    failed = cells.condition(job, "Failed")
    if failed and failed.get("status") == "True":
        return "failed", (
            f"job.batch/{name} failed: {failed.get('reason', '')}: {failed.get('message', '')}"
        )
    complete = cells.condition(job, "Complete")
    if complete and complete.get("status") == "True":
        return "done", f"job.batch/{name} complete ({cells.job_completions(job)} succeeded)"
    return "waiting", (
        f"Waiting for job.batch/{name}: {cells.job_completions(job)} succeeded, "
        f"{status.get('active') or 0} active, {status.get('failed') or 0} failed..."
    )


def pod_state(pod: Object) -> tuple[str, str]:
    """Done once Running and Ready, as `kubectl wait --for=condition=Ready`. A pod that
    has terminated is never ready again (its phase is final; kubelet's Ready is False
    then): Failed is a failure, and so is Succeeded, where kubectl would wait out its
    timeout for a Ready that cannot come."""
    name = (pod.get("metadata") or {}).get("name", "")
    phase = (pod.get("status") or {}).get("phase", "Pending")
    ready = cells.condition(pod, "Ready")
    if phase == "Failed":
        return "failed", f"pod/{name} failed: {_termination(pod)}"
    if phase == "Succeeded":
        return "failed", f"pod/{name} has run to completion (Succeeded) and will never be ready"
    if phase == "Running" and ready and ready.get("status") == "True":
        return "done", f"pod/{name} ready"
    return "waiting", f"Waiting for pod/{name}: {printers.pod_status(pod)}..."


def _termination(pod: Object) -> str:
    """Why a Failed pod failed: its own reason (`Evicted`, `NodeLost`), else each failed
    container's exit (`container main exited with code 3 (Error)`)."""
    status = pod.get("status") or {}
    if status.get("reason"):
        message = status.get("message")
        return f"{status['reason']}: {message}" if message else str(status["reason"])
    exits = []
    for cs in cells.container_statuses(pod):
        ended = (cs.get("state") or {}).get("terminated") or {}
        code = ended.get("exitCode")
        if code:
            reason = f" ({ended['reason']})" if ended.get("reason") else ""
            exits.append(f"container {cs.get('name', '')} exited with code {code}{reason}")
    return "; ".join(exits) or printers.pod_status(pod)


STATES: dict[str, Callable[[Object], tuple[str, str]]] = {
    "deployments": deployment_state,
    "jobs": job_state,
    "pods": pod_state,
}


def wait_for(
    client: Client, res: Resource, namespace: str | None, name: str, timeout: float | None
) -> bool:
    """Follow one object until it is done (True) or failed or timed out (False).

    Raises `ApiError` (NotFound) when there is no such object.
    """
    state_of = STATES.get(res.plural)
    if state_of is None:
        return True  # namespaces: ready once created
    # A watch of a name that does not exist would wait for it forever: NotFound ends it here.
    client.get(res.path(namespace, name))
    progress = Progress()
    query: dict[str, str | None] = {"fieldSelector": f"metadata.name={name}"}
    for event in follow(client, res.path(namespace), query, timeout=timeout):
        if event.get("type") == "DELETED":
            progress.finish(f"error: {res.ref(name)} was deleted")
            return False
        state, message = state_of(event["object"])
        if state == "waiting":
            progress.show(message)
            continue
        if state == "done" and res.plural == "pods":
            # A pod may be Ready only for a moment (a Never pod whose command exits at
            # once: its node reports it running, then ended); its status as the server
            # has it now, not as this event had it, decides.
            state, message = pod_state(client.get(res.path(namespace, name)))
            if state == "waiting":
                progress.show(message)
                continue
        progress.finish(message if state == "done" else f"error: {message}")
        return state == "done"
    progress.finish(f"error: timed out waiting for {res.ref(name)}")
    return False


# -- rollout ----------------------------------------------------------------------------------


def _target(args: argparse.Namespace) -> tuple[Resource, str]:
    res, name = split_ref(args.target)
    if res is None:
        res, name = (lookup(args.target), args.name) if args.name else (DEPLOYMENTS, args.target)
    if name is None:
        raise CommandError("say which deployment: `rollout ACTION deployment/NAME`")
    if res is not DEPLOYMENTS and not (res is JOBS and args.action == "status"):
        raise CommandError(f"rollout {args.action} works on deployments, not {res.plural}")
    return res, name


def _namespace(args: argparse.Namespace) -> str:
    return getattr(args, "namespace", None) or "default"


def update(
    client: Client, res: Resource, ns: str, name: str, change: Callable[[Object], bool]
) -> bool:
    """GET, change, PUT (guarded by resourceVersion), again on a conflict; False: no change."""
    for _attempt in range(5):
        obj: Object = client.get(res.path(ns, name))
        if not change(obj):
            return False
        obj.pop("status", None)
        try:
            client.put(res.path(ns, name), obj)
            return True
        except ApiError as error:
            if error.code != 409:
                raise
    raise CommandError(f"{res.ref(name)} kept changing; try again")


def revisions_of(client: Client, ns: str, deployment: Object) -> list[Object]:
    """The ControllerRevisions this Deployment owns, oldest first: found by their owner
    reference alone. A revision's labels are its Deployment's `matchLabels` when it was
    written, so a label query misses those of a set-based selector and those a
    Deployment adopted under another selector; a namespace holds a few per Deployment."""
    found = client.get(REVISIONS.path(ns))
    uid = (deployment.get("metadata") or {}).get("uid")
    owned = [
        r
        for r in found.get("items") or []
        if any(o.get("uid") == uid for o in (r.get("metadata") or {}).get("ownerReferences") or [])
    ]
    return sorted(owned, key=lambda r: int(r.get("revision") or 0))


def rollout(client: Client, args: argparse.Namespace) -> int:
    """`corral rollout status|history|undo|restart|pause|resume deployment/NAME`."""
    res, name = _target(args)
    ns = _namespace(args)
    action = args.action
    if action == "status":
        return 0 if wait_for(client, res, ns, name, args.wait_timeout) else 1
    if action == "history":
        return _history(client, args, ns, name)
    if action == "undo":
        return _undo(client, args, ns, name)
    stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")

    def change(obj: Object) -> bool:
        spec = obj.setdefault("spec", {})
        if action == "restart":
            template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
            template_meta.setdefault("annotations", {})[RESTARTED_AT] = stamp
            return True
        want = action == "pause"
        if bool(spec.get("paused")) == want:
            return False
        spec["paused"] = want
        return True

    done = {"restart": "restarted", "pause": "paused", "resume": "resumed"}[action]
    if update(client, DEPLOYMENTS, ns, name, change):
        out(f"{DEPLOYMENTS.ref(name)} {done}")
    else:
        out(f"{DEPLOYMENTS.ref(name)} already {done}")
    return 0


def _history(client: Client, args: argparse.Namespace, ns: str, name: str) -> int:
    deployment = client.get(DEPLOYMENTS.path(ns, name))
    revisions = revisions_of(client, ns, deployment)
    if args.output in ("json", "yaml"):
        out(printers.dump({"apiVersion": "v1", "kind": "List", "items": revisions}, args.output))
        return 0
    if args.revision is not None:
        chosen = [r for r in revisions if int(r.get("revision") or 0) == args.revision]
        if not chosen:
            raise CommandError(f"unable to find the specified revision {args.revision}")
        from scheduler.cli.describe_workloads import template_text

        template = ((chosen[0].get("data") or {}).get("spec") or {}).get("template") or {}
        out(f"{DEPLOYMENTS.ref(name)} with revision #{args.revision}")
        out(template_text(template))
        return 0
    out(DEPLOYMENTS.ref(name))
    out(tables.history_table(revisions))
    return 0


def _undo(client: Client, args: argparse.Namespace, ns: str, name: str) -> int:
    deployment = client.get(DEPLOYMENTS.path(ns, name))
    if (deployment.get("spec") or {}).get("paused"):
        # kubectl's refusal: a paused Deployment records no revision until it is resumed.
        raise CommandError(
            f"you cannot rollback a paused deployment; resume it first with `corral rollout "
            f"resume {DEPLOYMENTS.ref(name)}` and try again"
        )
    revisions = revisions_of(client, ns, deployment)
    if not revisions:
        raise CommandError(f"no rollout history found for {DEPLOYMENTS.ref(name)}")
    current = max(int(r.get("revision") or 0) for r in revisions)
    wanted = args.to_revision
    if not wanted:
        older = [int(r.get("revision") or 0) for r in revisions if int(r["revision"]) < current]
        if not older:
            raise CommandError(f"no revision to roll back to for {DEPLOYMENTS.ref(name)}")
        wanted = max(older)
    chosen = next((r for r in revisions if int(r.get("revision") or 0) == wanted), None)
    if chosen is None:
        raise CommandError(f"unable to find specified revision {wanted} in history")
    template = ((chosen.get("data") or {}).get("spec") or {}).get("template")
    if not isinstance(template, dict):
        raise CommandError(f"revision {wanted} holds no pod template")
    if wanted == current:
        out(
            f"{DEPLOYMENTS.ref(name)} skipped rollback (current template already matches "
            f"revision {wanted})"
        )
        return 0

    def change(obj: Object) -> bool:
        obj.setdefault("spec", {})["template"] = template
        return True

    update(client, DEPLOYMENTS, ns, name, change)
    out(f"{DEPLOYMENTS.ref(name)} rolled back")
    return 0


def scale(client: Client, args: argparse.Namespace) -> int:
    """`corral scale deployment/NAME --replicas N`."""
    res, name = split_ref(args.target)
    if res is None:
        if not args.name:
            raise CommandError("say what to scale: `scale deployment/NAME --replicas N`")
        res, name = lookup(args.target), args.name
    if res is not DEPLOYMENTS:
        raise CommandError(f"{res.plural} cannot be scaled (deployments can)")
    if args.replicas < 0:
        raise CommandError("--replicas must be 0 or more")
    ns = _namespace(args)
    client.request(
        "PATCH",
        DEPLOYMENTS.path(ns, name) + "/scale",
        body={"spec": {"replicas": args.replicas}},
    )
    out(f"{DEPLOYMENTS.ref(name)} scaled")
    if args.wait:
        return 0 if wait_for(client, DEPLOYMENTS, ns, name, args.wait_timeout) else 1
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600}


def wait_seconds(value: str) -> float | None:
    """`--wait-timeout`: seconds (`90`, `90s`), or kubectl's `5m` and `1h`; 0 for no limit."""
    text = value.strip()
    unit = _UNITS.get(text[-1:], 0)
    try:
        seconds = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of seconds (or of minutes with m, hours with h)"
        ) from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: must be 0 (no limit) or more seconds")
    return seconds or None
