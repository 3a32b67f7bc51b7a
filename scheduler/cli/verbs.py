"""The workload verbs of `corral`, wired into the parser and the commands that predate them.

`extend_parser` adds `rollout`, `scale`, `top` and `completion`, and the flags
the older commands gained (`get -w`, `apply --wait`). `dispatch_describe` takes
over `describe` for the kinds beyond pods and nodes and returns None when the
original command should go on; `resolve_log_target` finds the pod `logs` reads.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from scheduler.cli import completion, getting, printers, rollout, top
from scheduler.cli.client import ApiError, Client
from scheduler.cli.errors import CommandError
from scheduler.cli.kinds import (
    DEPLOYMENTS,
    JOBS,
    NAMESPACES,
    NODES,
    PODS,
    REVISIONS,
    lookup,
    split_ref,
)

Object = dict[str, Any]
Add = Callable[..., argparse.ArgumentParser]


def _namespace_flags(p: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    p.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    if all_namespaces:
        p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")


def _wait_flags(p: argparse.ArgumentParser, flag: bool = True) -> None:
    if flag:
        p.add_argument(
            "--wait",
            action="store_true",
            help="then follow each object until it is ready (rolled out, complete, running)",
        )
    p.add_argument(
        "--wait-timeout",
        metavar="SECONDS",
        type=rollout.wait_seconds,
        default=None,
        help="give up waiting after this long (default: no limit)",
    )


def extend_parser(sub: Any, add: Add) -> None:
    """New subcommands, and new flags on `get` and `apply`."""
    get = sub.choices["get"]
    get.add_argument(
        "-w", "--watch", action="store_true", help="after the list, print each change as it happens"
    )
    apply = sub.choices["apply"]
    _wait_flags(apply)
    apply.add_argument(
        "-o", "--output", choices=["json", "yaml", "name"], help="print the applied objects"
    )

    p = add(
        "rollout",
        rollout.rollout,
        "Follow, list, undo, restart, pause or resume the rollout of a deployment.",
        "examples:\n  corral rollout status deployment/web\n  corral rollout history deploy/web\n"
        "  corral rollout undo deployment/web --to-revision 2\n"
        "  corral rollout restart deployment/web",
    )
    p.add_argument("action", choices=["status", "history", "undo", "restart", "pause", "resume"])
    p.add_argument("target", metavar="TYPE/NAME", help="deployment/NAME (or TYPE NAME)")
    p.add_argument("name", metavar="NAME", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--to-revision", type=int, default=0, help="(undo) the revision to go back to")
    p.add_argument("--revision", type=int, help="(history) show this revision's template")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="(history) output format")
    p.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    _wait_flags(p, flag=False)

    p = add(
        "scale",
        rollout.scale,
        "Set the number of replicas of a deployment.",
        "examples:\n  corral scale deployment/web --replicas 5\n"
        "  corral scale deploy web --replicas 0 --wait",
    )
    p.add_argument("target", metavar="TYPE/NAME", help="deployment/NAME (or TYPE NAME)")
    p.add_argument("name", metavar="NAME", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--replicas", type=int, required=True, help="the new number of replicas")
    p.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    _wait_flags(p)

    p = add(
        "top",
        top.top,
        "Show CPU and memory use of nodes or pods, as their agents last reported it.",
        "examples:\n  corral top nodes\n  corral top pods -A --sort-by memory",
    )
    p.add_argument("what", metavar="nodes|pods")
    p.add_argument("name", metavar="NAME", nargs="?")
    _namespace_flags(p, all_namespaces=True)
    p.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector")
    p.add_argument("--sort-by", choices=["cpu", "memory"], help="largest first")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="output format")

    p = add(
        "completion",
        completion.completion,
        "Print a shell completion script: source <(corral completion bash).",
    )
    p.add_argument("shell", choices=["bash", "zsh"])


# -- describe ---------------------------------------------------------------------------------


def _events_for(client: Client, kind: str, name: str, namespace: str) -> list[Object]:
    try:
        found = client.get(
            f"/api/v1/namespaces/{namespace}/events",
            fieldSelector=f"involvedObject.kind={kind},involvedObject.name={name}",
        )
    except ApiError:
        return []
    return list(found.get("items") or [])


def dispatch_describe(client: Client, args: argparse.Namespace) -> int | None:
    """`describe deployment|job|namespace NAME`, with the object's events."""
    from scheduler.cli.describe_workloads import (
        describe_deployment,
        describe_job,
        describe_namespace,
    )

    res = lookup(args.resource)
    if res in (PODS, NODES):
        return None
    now = datetime.now(UTC)
    ns = args.namespace or "default"
    if res is DEPLOYMENTS:
        text = describe_deployment(client.get(res.path(ns, args.name)), now)
    elif res is JOBS:
        text = describe_job(client.get(res.path(ns, args.name)), now)
    elif res is NAMESPACES:
        obj = client.get(res.path(None, args.name))
        counts = {
            r.plural: len(client.get(r.path(args.name)).get("items") or [])
            for r in (DEPLOYMENTS, JOBS, PODS)
        }
        print(describe_namespace(obj, counts, now))
        return 0
    elif res is REVISIONS:
        print(printers.dump(client.get(res.path(ns, args.name)), "yaml"))
        return 0
    else:
        raise CommandError(f"describe does not know {res.plural}")
    print(text)
    print(printers.events_section(_events_for(client, res.kind, args.name, ns), now))
    return 0


# -- logs -------------------------------------------------------------------------------------


def resolve_log_target(client: Client, args: argparse.Namespace) -> str:
    """The pod to read: `POD`, `pod/POD`, or one pod of `deploy/NAME` or `job/NAME`."""
    res, name = split_ref(args.pod)
    if res is None or res is PODS:
        return name
    ns = args.namespace or "default"
    if res is DEPLOYMENTS:
        owner = client.get(res.path(ns, name))
        selector = ((owner.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    elif res is JOBS:
        query = f"job-name={name}"
    else:
        raise CommandError(f"logs reads pods, deployments or jobs, not {res.plural}")
    pods = list(client.get(PODS.path(ns), labelSelector=query).get("items") or [])
    pods = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if not pods:
        raise CommandError(f"no pods found for {res.ref(name)}")

    def rank(pod: Object) -> tuple[int, str]:
        # As kubectl: a running, ready pod first; the oldest of those.
        ready, total = printers.pod_ready(pod).split("/")
        serving = printers.pod_status(pod) == "Running" and ready == total
        return (0 if serving else 1, (pod.get("metadata") or {}).get("creationTimestamp") or "")

    chosen = sorted(pods, key=rank)[0]["metadata"]["name"]
    if len(pods) > 1:
        getting.err(f"Found {len(pods)} pods, using pod/{chosen}")
    return str(chosen)
