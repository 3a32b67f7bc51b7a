"""What each `corral` subcommand does: requests through the client, output through printers.

Each command takes the client and the parsed arguments and returns an exit code.
Errors it cannot get past are raised (`CommandError`, `ApiError`, `ConnectionFailed`)
and printed by `main`; commands that act on several objects report each failure
and go on, then exit 1.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scheduler.cli import printers
from scheduler.cli.client import ApiError, Client, ConnectionFailed, nodes_path, pods_path
from scheduler.cli.errors import CommandError
from scheduler.logfilter import ended_because

if TYPE_CHECKING:
    from scheduler.cli.manifests import PodManifest

Object = dict[str, Any]

# Accepted spellings of each resource, as in kubectl.
RESOURCES = {
    "pod": "pods",
    "pods": "pods",
    "po": "pods",
    "node": "nodes",
    "nodes": "nodes",
    "no": "nodes",
    "event": "events",
    "events": "events",
    "ev": "events",
}


def out(text: str) -> None:
    if text:
        print(text)


def err(text: str) -> None:
    print(text, file=sys.stderr)


def api_error_text(error: ApiError) -> str:
    """`Error from server (NotFound): pods "x" not found`, then one line per cause."""
    status = error.status
    lines = [f"Error from server ({status.reason or status.code}): {status.message}"]
    for cause in status.details.causes if status.details else []:
        line = f"  {cause.field}: {cause.message}" if cause.field else f"  {cause.message}"
        if line.strip() not in status.message:
            lines.append(line)
    if status.code == 401:
        lines.append("  (set a token with --token, CORRAL_TOKEN or `token` in the config file)")
    return "\n".join(lines)


def resource(name: str) -> str:
    try:
        return RESOURCES[name.lower()]
    except KeyError:
        raise CommandError(
            f'the server doesn\'t have a resource type "{name}" (known: pods, nodes, events)'
        ) from None


def namespace_of(args: argparse.Namespace) -> str | None:
    """The namespace to act in; None means all of them (`-A`)."""
    if getattr(args, "all_namespaces", False):
        return None
    return getattr(args, "namespace", None) or "default"


def _now() -> datetime:
    return datetime.now(UTC)


def _events_for(client: Client, kind: str, name: str, namespace: str) -> list[Object]:
    try:
        found = client.get(
            f"/api/v1/namespaces/{namespace}/events",
            fieldSelector=f"involvedObject.kind={kind},involvedObject.name={name}",
        )
    except ApiError:
        return []  # an older server without events: describe still works
    return list(found.get("items") or [])


# --- describe ------------------------------------------------------------------------------


def describe(client: Client, args: argparse.Namespace) -> int:
    """`corral describe pod|node NAME`, or `describe TYPE/NAME` as kubectl takes it."""
    from scheduler.cli.describe import describe_node, describe_pod
    from scheduler.cli.kinds import split_ref
    from scheduler.cli.verbs import dispatch_describe

    ref, name = split_ref(args.resource)
    if ref is not None and args.name is not None:
        raise CommandError(
            f"there is no need to specify a resource type as a separate argument when "
            f"passing arguments in resource/name form: `describe {args.resource}`"
        )
    if ref is not None:
        args.resource, args.name = ref.plural, name
    if args.name is None:
        raise CommandError(
            f"say what to describe: `describe {args.resource} NAME` or `describe TYPE/NAME`"
        )
    handled = dispatch_describe(client, args)  # deployments, jobs, namespaces
    if handled is not None:
        return handled
    kind = resource(args.resource)
    if kind == "pods":
        ns = namespace_of(args) or "default"
        pod = client.get(pods_path(ns, args.name))
        out(describe_pod(pod, _now()))
        out(printers.events_section(_events_for(client, "Pod", args.name, ns), _now()))
        return 0
    node = client.get(nodes_path(args.name))
    pods = client.get(pods_path(None), fieldSelector=f"spec.nodeName={args.name}")
    out(describe_node(node, list(pods.get("items") or []), _now()))
    out(printers.events_section(_events_for(client, "Node", args.name, "default"), _now()))
    return 0


# --- apply ----------------------------------------------------------------------


def apply(client: Client, args: argparse.Namespace) -> int:
    """`corral apply -f FILE`: create each object; an existing one is left or updated in place."""
    from scheduler.cli.apply import apply as apply_objects

    return apply_objects(client, args)  # every kind; pods through _apply_pod


def _apply_pod(client: Client, item: PodManifest) -> str:
    """Create one pod, or compare it with the one that exists; returns the line to print."""
    from scheduler.cli.manifests import spec_changes

    try:
        client.post(pods_path(item.namespace), item.body())
        return f"pod/{item.name} created"
    except ApiError as error:
        if error.code != 409 or error.reason != "AlreadyExists":
            raise
    existing: Object = client.get(pods_path(item.namespace, item.name))
    wanted = item.body()
    changed = spec_changes(wanted["spec"], existing.get("spec") or {})
    if changed:
        raise CommandError(
            f"pod/{item.name}: pod specs are immutable and this one differs from the "
            f"running pod's ({', '.join(changed)}); delete the pod and apply again"
        )
    meta = existing.setdefault("metadata", {})
    labels, annotations = wanted["metadata"]["labels"], wanted["metadata"]["annotations"]
    if (meta.get("labels") or {}) == labels and (meta.get("annotations") or {}) == annotations:
        return f"pod/{item.name} unchanged"
    # Labels and annotations are the mutable part: replace them, guarded by resourceVersion.
    meta["labels"], meta["annotations"] = labels, annotations
    client.put(pods_path(item.namespace, item.name), existing)
    return f"pod/{item.name} configured"


# --- nodes ---------------------------------------------------------------------------------


def cordon(client: Client, args: argparse.Namespace) -> int:
    """`corral cordon NODE` / `corral uncordon NODE`."""
    want = args.command == "cordon"
    node: Object = client.get(nodes_path(args.node))
    done = "cordoned" if want else "uncordoned"
    if bool((node.get("spec") or {}).get("unschedulable")) == want:
        out(f"node/{args.node} already {done}")
        return 0
    client.post(nodes_path(args.node, args.command))
    out(f"node/{args.node} {done}")
    return 0


def drain(client: Client, args: argparse.Namespace) -> int:
    """`corral drain NODE`: cordon it and move its pods elsewhere."""
    node: Object = client.get(nodes_path(args.node))
    if not (node.get("spec") or {}).get("unschedulable"):
        out(f"node/{args.node} cordoned")
    answer = client.post(nodes_path(args.node, "drain"))
    if isinstance(answer, dict) and answer.get("kind") == "Status" and answer.get("message"):
        # `node/NAME drained: 3 pods rescheduled, ...`
        out(str(answer["message"]))
        return 0
    items = answer.get("items") if isinstance(answer, dict) else None
    for pod in items or []:
        meta = (pod.get("metadata") or {}) if isinstance(pod, dict) else {}
        if meta.get("name"):
            out(f"pod/{meta['name']} evicted")
    out(f"node/{args.node} drained")
    return 0


# --- status --------------------------------------------------------------------------------


def status(client: Client, args: argparse.Namespace) -> int:
    """`corral status`: the operator summary."""
    summary = client.get("/api/v1/status")
    if args.output in ("json", "yaml"):
        out(printers.dump(summary, args.output))
        return 0
    from scheduler.cli.status import render_status

    out(f"Server: {client.server}")
    out(render_status(summary))
    return 0


def logs(client: Client, args: argparse.Namespace) -> int:
    """Print (or follow) a container's log, read by its node's agent."""
    from scheduler.cli.verbs import resolve_log_target

    namespace = namespace_of(args) or "default"
    pod = resolve_log_target(client, args)  # or deploy/NAME, job/NAME
    path = pods_path(namespace, pod) + "/log"
    query = {
        "container": args.container,
        "follow": "true" if args.follow else None,
        "tailLines": str(args.tail) if args.tail is not None and args.tail >= 0 else None,
        "timestamps": "true" if args.timestamps else None,
        "previous": "true" if args.previous else None,
    }
    out_stream = sys.stdout.buffer
    tail = b""  # the last bytes: a read the scheduler cut short says why there
    try:
        for chunk in client.stream(path, **query):
            out_stream.write(chunk)
            out_stream.flush()
            tail = (tail + chunk)[-_LOG_TAIL_BYTES:]
    except ConnectionFailed:
        # A stream that ends without its last chunk failed (its node was lost, the
        # scheduler went away): exit 1, as kubectl on an unexpected EOF. One that ends
        # whole ended because the container did, or at --limit-bytes.
        reason = ended_because(tail)
        if reason is None:
            raise
        raise CommandError(f"the log stream of pod {pod} ended early: {reason}") from None
    return 0


# Enough of a log's end to hold the scheduler's reason for cutting it short.
_LOG_TAIL_BYTES = 4096


# --- tokens --------------------------------------------------------------------------------


def token(client: Client, args: argparse.Namespace) -> int:
    """`corral token create|list|revoke`."""
    if args.action == "create":
        created = client.post(
            "/api/v1/tokens", {"role": args.role, "description": args.description or ""}
        )
        err(f"token {created['id']} created (role {created['role']}); it is shown only once:")
        out(created["token"])
        return 0
    if args.action == "list":
        items = client.get("/api/v1/tokens").get("items") or []
        rows = [(t["id"], t["role"], t.get("created", ""), t.get("description", "")) for t in items]
        out(printers.table(["ID", "ROLE", "CREATED", "DESCRIPTION"], rows))
        return 0
    if not args.id:
        raise CommandError("token revoke needs the token's ID (see `corral token list`)")
    client.delete(f"/api/v1/tokens/{args.id}")
    out(f"token {args.id} revoked")
    return 0
