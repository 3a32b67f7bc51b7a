"""`corral top nodes|pods`: CPU and memory as the agents last reported them.

Read from the scheduler's metrics API (`/apis/metrics.k8s.io/v1beta1`, the
shape of Kubernetes' metrics-server), which holds each node's and each running
pod's usage from the agents' heartbeats (every second by default).
"""

from __future__ import annotations

import argparse
from typing import Any

from scheduler.cli import printers, tables
from scheduler.cli.client import Client
from scheduler.cli.errors import CommandError
from scheduler.cli.getting import err, out
from scheduler.cli.kinds import NODES, PODS, lookup

ROOT = "/apis/metrics.k8s.io/v1beta1"
Object = dict[str, Any]


def _sort(items: list[Object], by: str | None, usage: Any) -> list[Object]:
    if by is None:
        return sorted(
            items, key=lambda m: (m["metadata"].get("namespace", ""), m["metadata"]["name"])
        )
    index = {"cpu": 0, "memory": 1}[by]
    return sorted(items, key=lambda m: usage(m)[index], reverse=True)


def _node_usage(m: Object) -> tuple[int, int]:
    usage = m.get("usage") or {}
    return (printers.cpu_of(usage.get("cpu")) or 0, printers.memory_of(usage.get("memory")) or 0)


def top(client: Client, args: argparse.Namespace) -> int:
    """`corral top nodes [NAME]` / `corral top pods [NAME] [-n NS | -A] [-l SELECTOR]`."""
    res = lookup(args.what)
    if res not in (NODES, PODS):
        raise CommandError("top shows nodes or pods")
    if res is NODES:
        path = f"{ROOT}/nodes/{args.name}" if args.name else f"{ROOT}/nodes"
        found = client.get(path, labelSelector=None if args.name else args.selector)
        items = [found] if args.name else list(found.get("items") or [])
        if args.output in ("json", "yaml"):
            out(printers.dump(found, args.output))
            return 0
        if not items:
            why = (
                f"no connected node matches {args.selector}"
                if args.selector
                else "no node is connected"
            )
            err(f"error: metrics not available yet ({why})")
            return 1
        nodes = {n["metadata"]["name"]: n for n in client.get("/api/v1/nodes").get("items") or []}
        out(tables.top_nodes_table(_sort(items, args.sort_by, _node_usage), nodes))
        return 0
    every = getattr(args, "all_namespaces", False)
    ns = None if every else (args.namespace or "default")
    if args.name:
        if ns is None:
            raise CommandError("a pod cannot be shown by name across all namespaces")
        found = client.get(f"{ROOT}/namespaces/{ns}/pods/{args.name}")
        items = [found]
    else:
        path = f"{ROOT}/pods" if ns is None else f"{ROOT}/namespaces/{ns}/pods"
        found = client.get(path, labelSelector=args.selector)
        items = list(found.get("items") or [])
    if args.output in ("json", "yaml"):
        out(printers.dump(found, args.output))
        return 0
    if not items:
        err(f"No resources found{f' in {ns} namespace' if ns else ''}.")
        return 0
    out(tables.top_pods_table(_sort(items, args.sort_by, tables.pod_usage), namespaces=ns is None))
    return 0
