"""Placement benchmark: the real scheduler, N hollow nodes, M pods; JSON lines out.

    python -m bench.placement [--nodes 1000] [--pods 10000] [--api-requests 300]
        [--scheduler-python PATH]

Starts `python -m scheduler.main` on a loopback port with a fresh state
directory, and N hollow nodes (`agent.hollow`) spread over a few processes.
Once every node is Ready it submits M pods (100m CPU, 64Mi each) through the
API in batches from several concurrent clients, and measures:

- `placement.python`: the scheduler's interpreter (`--scheduler-python`, by default
  this one): executable, version, and libpython shared or linked in;
- `placement.join`: seconds from starting the hollow processes to all N Ready;
- `placement.submit`: pods/s durably created by the API;
- `placement.throughput`: pods/s from the first submit to the last durable
  bind. Polls of `/metrics` (`corral_binds_total`) find when all M are bound;
  the scheduler's `corral_last_bind_timestamp_seconds` then says when the last
  one was (`end_from`; one clock for both processes). Without that gauge, the
  pods' `PodScheduled` times (whole seconds) narrow the polls' interval down, and
  the figure is its middle, `resolution_ms` wide (`end_from: polls`). One
  `GET /api/v1/pods` at the end verifies `spec.nodeName` on every pod;
- `placement.latency`: per-pod pending-to-bound latency, p50/p99, from the
  scheduler's `corral_scheduling_latency_seconds` histogram (interpolated
  inside buckets, as Prometheus' histogram_quantile does); if the scheduler
  has no such histogram, from submit to the list poll that first saw the
  pod bound (`source: poll`, granularity `poll_ms`);
- `placement.running`: pods/s from the first submit until the hollow agents'
  reports made all M `Running` (`corral_pods{phase="Running"}`);
- `placement.scheduler_rss_peak` (MiB, sampled every 100 ms) and
  `placement.scheduler_cpu` (user+system seconds, whole run and placement phase);
  `scheduler_gc_s` and `scheduler_gc_max_pause`: the scheduler's own
  `corral_gc_pause_seconds` over the placement phase (seconds stopped in its
  garbage collector, and the upper bound of the bucket of its longest pause);
- `placement.store`: the store's group commits over the placement phase, from the
  scheduler's metrics: how many, transactions per commit, and the commit duration
  p50/p99 (`corral_store_commit_duration_seconds`, interpolated);
- `placement.loop_lag`: how late the scheduler's event loop ran a timer over the
  placement phase, p50/p99 (`corral_event_loop_lag_seconds`, interpolated; sampled
  about twice a second), a measure of how saturated the loop was;
- `api_latency.get_node`, `api_latency.get_pod`, `api_latency.list_pods`
  (`?limit=100`): sequential requests while all N nodes heartbeat every second.

The hollow processes run at nice 10 (`--hollow-nice`): kubemark runs its
hollow nodes on machines of their own, and on a shared 2-core machine at the
scheduler's priority each frame they are woken by preempts the scheduler, the
process measured. They still have the other core. For the same reason there are
at most two of them a CPU (`--nodes-per-process`, by default 250 nodes a process
or more): 1,000 nodes take four processes, and so do 5,000 on two cores.

Every process it starts is stopped (SIGTERM, then SIGKILL) before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from scheduler.controlplane import new_join_token

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "default"
# One sample line of the Prometheus text format, and one label pair inside its braces.
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')
BINDS = "corral_binds_total"
LAST_BIND = "corral_last_bind_timestamp_seconds"
PODS_BY_PHASE = "corral_pods"
LATENCY_BUCKETS = "corral_scheduling_latency_seconds_bucket"
GC_SECONDS = "corral_gc_pause_seconds_sum"
GC_BUCKETS = "corral_gc_pause_seconds_bucket"
COMMIT_BUCKETS = "corral_store_commit_duration_seconds_bucket"
COMMITS = "corral_store_commits_total"
TRANSACTIONS = "corral_store_transactions_total"
LAG_BUCKETS = "corral_event_loop_lag_seconds_bucket"
# Scraped once before the placement phase and once after it (the latency histogram only
# after: no pod was scheduled before the phase).
PHASE_FIGURES = (GC_SECONDS, GC_BUCKETS, COMMIT_BUCKETS, COMMITS, TRANSACTIONS, LAG_BUCKETS)


def emit(metric: str, unit: str | None, **fields: Any) -> None:
    line = {"metric": metric} if unit is None else {"metric": metric, "unit": unit}
    print(json.dumps({**line, **fields}), flush=True)


# What the scheduler's interpreter is, and that it has corral's dependencies. Debian's
# python3 (built with PGO and LTO, libpython linked in) runs the scheduler in about a
# tenth less CPU than pyenv's default build (neither, libpython a shared library), so the
# figures name it (docs/benchmarks.md). sysconfig cannot tell a PGO build; the maps tell
# the rest.
_INTERPRETER = """
import json, sys
import aiohttp, aiosqlite, msgpack, prometheus_client, psutil, pydantic, yaml
with open("/proc/self/maps") as maps:
    shared = any("/libpython" in line for line in maps)
print(json.dumps({
    "executable": sys.executable,
    "version": sys.version.split()[0],
    "libpython": "shared" if shared else "linked in",
}))
"""


async def interpreter(python: str) -> dict[str, Any]:
    """The scheduler's interpreter: executable, version, libpython shared or linked in."""
    try:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-c",
            _INTERPRETER,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise RuntimeError(f"--scheduler-python {python}: {exc}") from None
    out, err = await proc.communicate()
    if proc.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(
            f"--scheduler-python {python} cannot run the scheduler: {last[0]}"
            f" (install corral into it: {python} -m pip install -e .)"
        )
    info: dict[str, Any] = json.loads(out)
    return info


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # above the largest finite bound: report that bound
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


# ---- the processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Processes:
    """Everything the benchmark started, so that all of it is stopped at the end."""

    logs: Path
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def spawn(
        self,
        name: str,
        *argv: str,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> Any:
        log = await asyncio.to_thread(open, self.logs / f"{name}.log", "wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                python,
                *argv,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()  # the child holds its own descriptor
        self.procs.append(proc)
        return proc

    async def stop_all(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    def cpu_seconds(self, skip: int = 0) -> float:
        """User+system seconds of the live processes, after the first `skip`."""
        total = 0.0
        for proc in self.procs[skip:]:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(proc.pid).cpu_times()
                total += times.user + times.system
        return total

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class RssSampler:
    """Peak RSS of one process, sampled from a thread so the event loop never reads /proc."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ---- talking to the scheduler ----------------------------------------------------------------


# The API needs a token; this run's scheduler accepts this one (it lives only as long).
ADMIN_TOKEN = "corral_bench_" + secrets.token_urlsafe(24)


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def get_json(self, path: str) -> Any:
        async with self.http.get(self.base + path) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def metrics(self, *names: str) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The samples of /metrics with these names (only those: a scrape of a big cluster
        has a line per node); empty if the scheduler serves no metrics."""
        params = [("name[]", name) for name in names]  # only those families are made
        async with self.http.get(self.base + "/metrics", params=params) as resp:
            if resp.status != 200:
                return {}
            text = await resp.text()
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for line in text.splitlines():
            if line.startswith(names) and (match := _SAMPLE.match(line)) and match[1] in names:
                labels = dict(_LABEL.findall(match[2] or ""))
                samples.setdefault(match[1], []).append((labels, float(match[3])))
        return samples

    async def wait_ready(self, sched: asyncio.subprocess.Process, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sched.returncode is not None:
                raise RuntimeError(f"the scheduler exited with {sched.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(self.base + "/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the scheduler was not ready within {seconds}s")

    async def ready_nodes(self) -> int:
        body = await self.get_json("/api/v1/nodes")
        return sum(
            1
            for n in body["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]
            )
        )


def sample(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float | None:
    values = [
        v for lbl, v in samples.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())
    ]
    return sum(values) if values else None


def pod_manifest(index: int, cpu: str, memory: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"bench-{index:06d}", "labels": {"app": "bench"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "pause",
                    "resources": {"requests": {"cpu": cpu, "memory": memory}},
                }
            ]
        },
    }


# ---- the phases ------------------------------------------------------------------------------


def batches_of_pods(args: argparse.Namespace) -> list[list[dict[str, Any]]]:
    """The M pod manifests in batches, made before the clock starts: a client's own
    preparation is not the scheduler's work (10,000 take the benchmark about 20 ms)."""
    pods = [pod_manifest(i, args.pod_cpu, args.pod_memory) for i in range(args.pods)]
    return [pods[i : i + args.batch] for i in range(0, len(pods), args.batch)]


async def submit(
    api: Api,
    args: argparse.Namespace,
    batches: list[list[dict[str, Any]]],
    submitted: dict[str, float],
) -> float:
    """Create the pods of `batches` from `clients` workers; return the end time.
    `submitted` maps each pod name to its batch's submit time."""
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    url = f"{api.base}/api/v1/namespaces/{NAMESPACE}/pods"

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            started = time.monotonic()
            for pod in batch:
                submitted[pod["metadata"]["name"]] = started
            body = {"apiVersion": "v1", "kind": "PodList", "items": batch}
            async with api.http.post(url, json=body) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"batch refused: {resp.status} {await resp.text()}")
                await resp.read()

    async with asyncio.TaskGroup() as tg:
        for _ in range(args.clients):
            tg.create_task(worker())
    return time.monotonic()


@dataclass
class Bound:
    """When a poll first saw every pod bound, and how precisely that is known."""

    at: float  # end of the poll that saw all M bound
    resolution: float  # from the start of the poll before it: the last bind lies in between
    scrape_ms: float  # median duration of one progress poll (it loads the scheduler too)
    interval_ms: float  # median time from one poll's start to the next
    polled: list[float] | None  # per-pod latencies, when measured by listing pods


def poll_pause(duration: float, ceiling: float) -> float:
    """Pause between polls: as long as the last poll took, within [20 ms, ceiling]. A poll
    asks for one counter (`?name[]=`), which costs the scheduler well under a millisecond;
    its duration under load is mostly waiting behind the scheduler's other work, and the
    pause bounds how much of that queue the benchmark's own requests take."""
    return min(ceiling, max(0.02, duration))


async def wait_bound(
    api: Api, args: argparse.Namespace, submitted: dict[str, float], t0: float
) -> Bound:
    """Poll until all M pods are bound: /metrics' bind counter, else the pod list."""
    seen: dict[str, float] = {}
    durations: list[float] = []
    starts: list[float] = []
    use_list, previous = False, t0
    while time.monotonic() < t0 + args.timeout:
        start = time.monotonic()
        starts.append(start)
        done = False
        if not use_list:
            binds = sample(await api.metrics(BINDS), BINDS)
            use_list = binds is None  # no bind counter: fall back to listing pods
            done = binds is not None and binds >= args.pods
        if use_list:
            body = await api.get_json(f"/api/v1/namespaces/{NAMESPACE}/pods")
            end = time.monotonic()
            for item in body["items"]:
                name = item["metadata"]["name"]
                if item["spec"].get("nodeName") and name not in seen and name in submitted:
                    seen[name] = end
            done = len(seen) >= args.pods
        end = time.monotonic()
        durations.append(end - start)
        if done:
            polled = sorted(seen[n] - submitted[n] for n in seen) if use_list else None
            intervals = sorted(b - a for a, b in itertools.pairwise(starts))
            return Bound(
                at=end,
                resolution=end - previous,
                scrape_ms=percentile(sorted(durations), 0.5) * 1000,
                interval_ms=percentile(intervals, 0.5) * 1000 if intervals else math.nan,
                polled=polled,
            )
        previous = start
        await asyncio.sleep(poll_pause(end - start, args.poll))
    raise TimeoutError(f"not all {args.pods} pods were bound within {args.timeout}s")


async def wait_running(api: Api, args: argparse.Namespace, t0: float) -> float | None:
    """When the agents' reports made all M pods Running; None without the gauge."""
    while time.monotonic() < t0 + args.timeout:
        metrics = await api.metrics(PODS_BY_PHASE)
        running = sample(metrics, PODS_BY_PHASE, phase="Running")
        if running is None:
            return None
        if running >= args.pods:
            return time.monotonic()
        await asyncio.sleep(args.poll / 2)
    return None


async def api_latency(api: Api, args: argparse.Namespace) -> None:
    nodes = [f"{args.name_prefix}-{i:04d}" for i in range(args.nodes)]
    pods = [f"bench-{i:06d}" for i in range(args.pods)]
    paths = {
        "get_node": lambda: f"/api/v1/nodes/{random.choice(nodes)}",
        "get_pod": lambda: f"/api/v1/namespaces/{NAMESPACE}/pods/{random.choice(pods)}",
        "list_pods": lambda: f"/api/v1/namespaces/{NAMESPACE}/pods?limit=100",
    }
    for name, path in paths.items():
        latencies = []
        for _ in range(args.api_requests):
            started = time.perf_counter()
            async with api.http.get(api.base + path()) as resp:
                await resp.read()
                resp.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        emit(
            f"api_latency.{name}",
            "ms",
            p50=round(percentile(latencies, 0.5), 2),
            p99=round(percentile(latencies, 0.99), 2),
            n=len(latencies),
            nodes=args.nodes,
            pods=args.pods,
        )


Samples = dict[str, list[tuple[dict[str, str], float]]]


def gc_pauses(before: Samples, after: Samples) -> tuple[float | None, str | None]:
    """Seconds the scheduler spent in its garbage collector between two scrapes of
    `corral_gc_pause_seconds`, and the bucket bound (`le`) its longest pause is under;
    None, None if the scheduler does not export it."""
    if GC_SECONDS not in after:
        return None, None
    seconds = sum(v for _, v in after[GC_SECONDS]) - sum(v for _, v in before.get(GC_SECONDS, []))
    return round(seconds, 3), _longest_pause(before.get(GC_BUCKETS, []), after[GC_BUCKETS])


def quantiles_between(
    before: Samples, after: Samples, buckets: str
) -> tuple[int, float | None, float | None]:
    """An unlabelled histogram's observations between two scrapes (the `_bucket` samples
    named `buckets`): how many, and their p50 and p99 in ms, interpolated in the buckets
    (None without observations)."""
    old = {lbl["le"]: v for lbl, v in before.get(buckets, [])}
    new = [(float(lbl["le"]), v - old.get(lbl["le"], 0.0)) for lbl, v in after.get(buckets, [])]
    count = int(max((n for _, n in new), default=0))
    if not count:
        return 0, None, None
    p50 = round(histogram_quantile(0.5, new) * 1000, 2)
    return count, p50, round(histogram_quantile(0.99, new) * 1000, 2)


def store_commits(before: Samples, after: Samples) -> dict[str, float | None]:
    """The store's group commits between two scrapes: how many, transactions per commit,
    and their duration's p50/p99 in ms."""

    def total(samples: Samples, name: str) -> float:
        return sum(v for _, v in samples.get(name, []))

    _, p50, p99 = quantiles_between(before, after, COMMIT_BUCKETS)
    commits = total(after, COMMITS) - total(before, COMMITS)
    transactions = total(after, TRANSACTIONS) - total(before, TRANSACTIONS)
    return {
        "commits": commits,
        "transactions_per_commit": round(transactions / commits, 1) if commits else 0.0,
        "p50": p50,
        "p99": p99,
    }


def _longest_pause(
    before: list[tuple[dict[str, str], float]], after: list[tuple[dict[str, str], float]]
) -> str | None:
    """The smallest bucket bound that holds every pause between two scrapes of the
    histogram (cumulative buckets: where the longest pause is); None if none happened."""
    old = {(lbl["generation"], lbl["le"]): v for lbl, v in before}
    new: dict[str, dict[float, float]] = {}
    for lbl, count in after:
        key = (lbl["generation"], lbl["le"])
        new.setdefault(lbl["generation"], {})[float(lbl["le"])] = count - old.get(key, 0.0)
    bound = 0.0
    for buckets in new.values():
        total = buckets.get(math.inf, 0.0)
        if total:
            bound = max(bound, min(le for le, n in buckets.items() if n == total))
    if not bound:
        return None
    return "+Inf" if bound == math.inf else repr(bound)


async def start_cluster(
    procs: Processes, api: Api, args: argparse.Namespace, tmp: Path
) -> tuple[asyncio.subprocess.Process, RssSampler]:
    """The scheduler, then the hollow processes; returns once all N nodes are Ready."""
    port = int(api.base.rsplit(":", 1)[1])
    token = new_join_token()
    env = {
        "CORRAL_SCHEDULER_LOG_LEVEL": "warning",
        # Generous, so that a starved heartbeat on a busy 2-core box does not flap a node.
        "CORRAL_SCHEDULER_NODE_GRACE_SECONDS": str(args.node_grace),
        "CORRAL_SCHEDULER_EVICTION_SECONDS": str(args.node_grace * 3),
    }
    emit("placement.python", None, **await interpreter(args.scheduler_python))
    sched = await procs.spawn(
        "scheduler",
        *("-m", "scheduler.main", "--listen", f"127.0.0.1:{port}"),
        *("--state-dir", str(tmp / "state"), "--join-token", token),
        *("--admin-token", ADMIN_TOKEN),
        env=env,
        python=args.scheduler_python,
    )
    sampler = RssSampler(sched.pid)
    try:
        await api.wait_ready(sched, 30)
    except Exception:
        print(procs.tail("scheduler"), file=sys.stderr)
        raise
    started = time.monotonic()
    per = args.nodes_per_process or nodes_per_process(args.nodes, os.cpu_count() or 1)
    for first in range(0, args.nodes, per):
        count = min(per, args.nodes - first)
        hollow = await procs.spawn(
            f"hollow-{first}",
            *("-m", "agent.hollow", "--server", api.base, "--token", token),
            *("--nodes", str(count), "--first-index", str(first)),
            *("--name-prefix", args.name_prefix, "--cpu", args.node_cpu),
            *("--memory", args.node_memory, "--ramp-seconds", str(args.ramp)),
        )
        # The hollow nodes stand in for other machines: below the scheduler's priority they
        # use the spare core instead of preempting the process measured.
        os.setpriority(os.PRIO_PROCESS, hollow.pid, args.hollow_nice)
    while (ready := await api.ready_nodes()) < args.nodes:
        if time.monotonic() - started > args.timeout:
            raise TimeoutError(f"only {ready}/{args.nodes} nodes became Ready")
        if sched.returncode is not None:
            raise RuntimeError(f"the scheduler exited with {sched.returncode}")
        await asyncio.sleep(0.5)
    emit("placement.join", "s", value=round(time.monotonic() - started, 2), nodes=args.nodes)
    return sched, sampler


async def place(api: Api, args: argparse.Namespace, sampler: RssSampler) -> None:
    """Submit M pods, wait until all are bound (then Running), and report."""
    phase_before = await api.metrics(*PHASE_FIGURES)
    cpu_before = sampler.cpu_seconds()
    submitted: dict[str, float] = {}
    batches = batches_of_pods(args)
    t0 = time.monotonic()
    submit_task = asyncio.create_task(submit(api, args, batches, submitted))
    bound = await wait_bound(api, args, submitted, t0)
    t_submitted = await submit_task
    cpu_placement = sampler.cpu_seconds() - cpu_before
    phase_after = await api.metrics(*PHASE_FIGURES, LATENCY_BUCKETS, LAST_BIND)
    gc_seconds, gc_max_pause = gc_pauses(phase_before, phase_after)

    per_node: dict[str, int] = {}
    latest = -math.inf  # wall time of the last bind, truncated to the second by the server
    for item in (await api.get_json("/api/v1/pods"))["items"]:
        if (node := item["spec"].get("nodeName")) is not None:
            per_node[node] = per_node.get(node, 0) + 1
        for cond in item["status"].get("conditions", []):
            if cond["type"] == "PodScheduled" and cond.get("lastTransitionTime"):
                stamp = datetime.fromisoformat(cond["lastTransitionTime"]).timestamp()
                latest = max(latest, stamp)
    # The last bind happened after the poll before the one that saw all bound, before that
    # poll's end. The scheduler's own time of its last durable bind, when it says, gives
    # it to a millisecond or so (its wall clock and ours are one clock). Without it, the
    # latest PodScheduled time (whole seconds) narrows the interval down.
    lower, upper = bound.at - bound.resolution, bound.at
    wall_to_mono = time.monotonic() - time.time()
    last_bind = sample(phase_after, LAST_BIND)
    if last_bind and lower - 0.05 <= last_bind + wall_to_mono <= upper + 0.05:
        lower = upper = last_bind + wall_to_mono
        source = LAST_BIND
    else:
        source = "polls"
        if lower <= latest + wall_to_mono + 1 and latest + wall_to_mono <= upper:
            lower = max(lower, latest + wall_to_mono)
            upper = min(upper, latest + wall_to_mono + 1)
    elapsed = (lower + upper) / 2 - t0
    emit(
        "placement.submit",
        "pods/s",
        value=round(args.pods / (t_submitted - t0), 1),
        pods=args.pods,
        batch=args.batch,
        clients=args.clients,
    )
    emit(
        "placement.throughput",
        "pods/s",
        value=round(args.pods / elapsed, 1),
        nodes=args.nodes,
        pods=args.pods,
        seconds=round(elapsed, 3),
        resolution_ms=round((upper - lower) * 1000),
        end_from=source,
        poll_ms=round(bound.scrape_ms, 1),
        poll_interval_ms=round(bound.interval_ms),
        bound_verified=sum(per_node.values()),
        nodes_used=len(per_node),
        max_per_node=max(per_node.values(), default=0),
        scheduler_cpu_s=round(cpu_placement, 2),
        scheduler_gc_s=gc_seconds,
        scheduler_gc_max_pause=gc_max_pause,
        cpus=os.cpu_count(),
    )
    if COMMIT_BUCKETS in phase_after:
        emit("placement.store", "ms", **store_commits(phase_before, phase_after))
    if LAG_BUCKETS in phase_after:
        count, p50, p99 = quantiles_between(phase_before, phase_after, LAG_BUCKETS)
        emit("placement.loop_lag", "ms", p50=p50, p99=p99, n=count)
    if bound.polled is None:
        count, p50, p99 = quantiles_between({}, phase_after, LATENCY_BUCKETS)
        emit(
            "placement.latency",
            "ms",
            p50=p50,
            p99=p99,
            n=count,
            source=f"{LATENCY_BUCKETS}, interpolated",
        )
    else:
        emit(
            "placement.latency",
            "ms",
            p50=round(percentile(bound.polled, 0.5) * 1000, 1),
            p99=round(percentile(bound.polled, 0.99) * 1000, 1),
            n=len(bound.polled),
            source="poll of the pod list, from the batch's submit",
            granularity_ms=round(bound.interval_ms),
        )
    t_running = await wait_running(api, args, t0)
    if t_running is not None:
        emit(
            "placement.running",
            "pods/s",
            value=round(args.pods / (t_running - t0), 1),
            seconds=round(t_running - t0, 3),
            nodes=args.nodes,
            pods=args.pods,
        )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        procs = Processes(Path(tmp))
        sampler: RssSampler | None = None
        connector = aiohttp.TCPConnector(limit=args.clients + 4)
        try:
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with aiohttp.ClientSession(connector=connector, headers=auth) as http:
                api = Api(http, f"http://127.0.0.1:{free_port()}")
                sched, sampler = await start_cluster(procs, api, args, Path(tmp))
                await place(api, args, sampler)
                if args.api_requests:
                    await api_latency(api, args)
                emit("placement.scheduler_cpu", "s", value=round(sampler.cpu_seconds(), 2))
                emit("placement.scheduler_rss_peak", "MiB", value=round(sampler.peak / 2**20, 1))
                hollow_cpu = round(procs.cpu_seconds(skip=1), 2)
                emit("placement.hollow_cpu", "s", value=hollow_cpu, processes=len(procs.procs) - 1)
                if sched.returncode is not None:
                    raise RuntimeError(f"the scheduler exited with {sched.returncode}")
        finally:
            if sampler is not None:
                sampler.stop()
            await procs.stop_all()


def nodes_per_process(nodes: int, cpus: int) -> int:
    """Hollow nodes a process by default: 250, or as many as keep the hollow processes to
    two a CPU. Twenty processes for 5,000 nodes on two cores cost the scheduler a sixth
    more CPU a pod than four did, in cache and context switches of its own machine's
    harness (docs/benchmarks.md, session 11)."""
    return max(250, math.ceil(nodes / (2 * cpus)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.placement",
        description=__doc__.split("\n", 1)[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=1000, help="hollow nodes")
    p.add_argument("--pods", type=int, default=10_000, help="pods to place")
    p.add_argument(
        "--nodes-per-process",
        type=int,
        default=0,
        help="hollow nodes a process (0: 250, or more to keep to two processes a CPU)",
    )
    p.add_argument("--name-prefix", default="hollow", help="hollow node name prefix")
    p.add_argument("--node-cpu", default="4", help="cpu capacity of a node")
    p.add_argument("--node-memory", default="8Gi", help="memory capacity of a node")
    p.add_argument("--pod-cpu", default="100m", help="cpu request of a pod")
    p.add_argument("--pod-memory", default="64Mi", help="memory request of a pod")
    p.add_argument("--batch", type=int, default=500, help="pods per create request")
    p.add_argument("--clients", type=int, default=4, help="concurrent submitting clients")
    p.add_argument("--poll", type=float, default=2.0, help="longest pause between polls")
    p.add_argument(
        "--ramp", type=float, default=2.0, help="seconds a hollow process spreads connects"
    )
    p.add_argument(
        "--hollow-nice",
        type=int,
        default=10,
        help="nice value of the hollow processes (0: the scheduler's own priority)",
    )
    p.add_argument("--node-grace", type=float, default=20.0, help="scheduler's node grace seconds")
    p.add_argument("--api-requests", type=int, default=300, help="requests per API path (0: skip)")
    p.add_argument("--timeout", type=float, default=300.0, help="limit of each phase, seconds")
    p.add_argument(
        "--scheduler-python",
        default=sys.executable,
        metavar="PATH",
        help="interpreter of the scheduler (with corral's dependencies installed); the "
        "hollow nodes and the benchmark stay on this one",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(run(args))
    except (RuntimeError, TimeoutError) as exc:
        print(f"bench.placement: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
