"""The scheduler's memory across waves of agents that join, are killed and are deleted;
JSON lines out.

    python -m bench.link_churn [--waves 12] [--nodes 500]

Starts `python -m scheduler.main` on a loopback port with a fresh state directory. Each
wave starts one `agent.hollow` process of N nodes (names new to the wave), waits until
all are connected, kills it with SIGKILL (the links reset, as when an agent's machine
dies), waits until the scheduler has ended every link, deletes the nodes through the
API, and samples the scheduler's RSS. Prints `link_churn.rss` (MiB after each wave) and
`link_churn.growth` (KiB a node lifecycle from the second wave to the last, the first
being warm-up). Some growth is kept by design: the store's watch history (the last
100,000 changes) and the event recorder (the last `max_events`).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from bench._common import MIB, BenchError, Cleanup, emit, note, run_bench, stop_process
from bench.placement import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "corral_bench_link_churn_admin"
JOIN_TOKEN = "bench-link-churn-join"


def growth_kib_per_node(rss_mib: Sequence[float], nodes: int) -> float | None:
    """KiB of RSS a node lifecycle, from the first wave's sample to the last (None with
    fewer than two waves)."""
    if len(rss_mib) < 2 or nodes < 1:
        return None
    per_wave = (rss_mib[-1] - rss_mib[0]) / (len(rss_mib) - 1)
    return round(per_wave * 1024 / nodes, 1)


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            self.base + path, method=method, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def connected(self) -> int:
        try:
            return int(self.call("GET", "/api/v1/status")["nodes"]["connected"])
        except OSError:
            return -1


def until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.2)


def start_scheduler(cleanup: Cleanup) -> tuple[subprocess.Popen[bytes], Api]:
    """The real scheduler on a loopback port with a fresh state directory, answering."""
    port = free_port()
    api = Api(f"http://127.0.0.1:{port}")
    tmp = tempfile.TemporaryDirectory(prefix="corral-churn-")
    cleanup.push("temporary directory", tmp.cleanup)
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "scheduler.main", "--listen", f"127.0.0.1:{port}",
         "--state-dir", tmp.name, "--join-token", JOIN_TOKEN, "--admin-token", ADMIN_TOKEN],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    cleanup.push("scheduler", lambda: stop_process(scheduler, 30))
    until(lambda: api.connected() >= 0, "the scheduler", 30)
    return scheduler, api


def run(args: argparse.Namespace, cleanup: Cleanup) -> None:
    scheduler, api = start_scheduler(cleanup)
    rss: list[float] = []
    for wave in range(args.waves):
        prefix = f"w{wave}"
        hollow = subprocess.Popen(
            [sys.executable, "-m", "agent.hollow", "--server", api.base,
             "--token", JOIN_TOKEN, "--nodes", str(args.nodes), "--name-prefix", prefix],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            until(lambda: api.connected() >= args.nodes, "the wave's links", 120)
        finally:
            hollow.send_signal(signal.SIGKILL)  # the links reset, as when a machine dies
            hollow.wait()
        until(lambda: api.connected() == 0, "the links to end", 120)
        for i in range(args.nodes):
            api.call("DELETE", f"/api/v1/nodes/{prefix}-{i:04d}")
        rss.append(round(psutil.Process(scheduler.pid).memory_info().rss / MIB, 1))
        note(f"wave {wave + 1}/{args.waves}: scheduler RSS {rss[-1]} MiB")
    emit("link_churn.rss", "MiB", values=rss, nodes=args.nodes)
    emit("link_churn.growth", "KiB/node", value=growth_kib_per_node(rss, args.nodes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.link_churn", description=__doc__)
    parser.add_argument("--waves", type=int, default=12, help="waves of agents")
    parser.add_argument("--nodes", type=int, default=500, help="hollow nodes a wave")
    args = parser.parse_args(argv)
    if args.waves < 2 or args.nodes < 1:
        parser.error("--waves must be at least 2 and --nodes at least 1")
    return run_bench(run, args)


if __name__ == "__main__":
    sys.exit(main())
