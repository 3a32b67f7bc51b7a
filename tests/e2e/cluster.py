"""Several corral nodes on one machine: a bridge, a network namespace per agent, real processes.

    root namespace                         netns corral-e2e-<pid>-<n>-node-a
    ┌────────────────────────────┐          ┌──────────────────────────────────┐
    │ corral-scheduler           │          │ corral-agent --node-name node-a  │
    │  listens on 10.251.K.1:P   │          │  fork server, monitors           │
    │ bridge <tag>-br 10.251.K.1 │──veth────│ <tag>-n0  10.251.K.11/24, lo up  │
    │   port <tag>-h0 ───────────┘          └──────────────────────────────────┘
    │   port <tag>-h1 ──── ... node-b (10.251.K.12), node-c (10.251.K.13)
    └────────────────────────────

Each agent has its own state directory, image store and cgroup parent
(`corral-e2e-<pid>-<n>-<node>`), so every node is a separate machine as far as
corral can tell. A partition is the host end of a node's veth taken down; a
machine death is `kill_agent(node, with_pods=True)`: SIGKILL of the agent, of every
process in its network namespace (the fork server), of its container monitors, and
of its cgroup subtree (the containers), in that order, so nothing records an exit.

Agents are started with `nsenter --net=/run/netns/NS`, not `ip netns exec`: the
latter also enters a new mount namespace with a fresh /sys, which hides the cgroup
hierarchies under /sys/fs/cgroup from the agent.

The API and the agent link are plain HTTP on the bridge's private address, allowed
explicitly (`allow_insecure_http` on both sides, set through the environment).
Traffic only ever goes to addresses created here (the bridge's /24 inside
10.251.0.0/16, the first one free on this machine, 10.251.0.0/24 normally).
No pytest in here: `bench/recovery.py` uses the same topology.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agent.runtime.native.cgroups import CgroupError, probe
from agent.runtime.native.monitor import proc_start_time
from agent.runtime.native.rootfs import unmount_below
from tests.conftest import ROOT, TOKEN, SchedulerProcess, stop_process

_LOGGER = logging.getLogger(__name__)

NODE_NAMES = ("node-a", "node-b", "node-c")
NETNS_DIR = Path("/run/netns")
INSECURE_SCHEDULER = "CORRAL_SCHEDULER_ALLOW_INSECURE_HTTP"
INSECURE_AGENT = "CORRAL_AGENT_ALLOW_INSECURE_HTTP"
_instances = itertools.count()


class ClusterError(RuntimeError):
    """The topology could not be built (a command failed, a process did not come up)."""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command (ip, nsenter...); raise ClusterError with its stderr if it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy and return it; ClusterError after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the system converges; a read may fail meanwhile
            last_exc = exc
        time.sleep(interval)
    raise ClusterError(f"condition not met within {timeout}s (last error: {last_exc!r})")


def free_subnet() -> str:
    """The first 10.251.K (K = 0..255) with no address on this machine: '10.251.K'."""
    used = sh("ip", "-4", "-o", "addr", "show").stdout
    for k in range(256):
        if f" 10.251.{k}." not in used:
            return f"10.251.{k}"
    raise ClusterError("no free /24 in 10.251.0.0/16")


@dataclass(frozen=True, slots=True)
class LiveContainer:
    """A container whose init process is alive, as read from an agent's state directory."""

    node: str
    uid: str
    pod: str  # the pod's name (namespace default)
    container: str
    pid: int
    start: int | None  # the process's start time (clock ticks since boot): pid + start = it

    def alive(self) -> bool:
        """Still this process, and not a zombie."""
        now = proc_start_time(self.pid)
        return now is not None and (self.start is None or now == self.start)


class BridgeScheduler(SchedulerProcess):
    """The real scheduler, listening on the bridge's address at a fixed port.

    SchedulerProcess passes `--listen 127.0.0.1:...` first; our `--listen`, later on
    the command line, wins. The port is fixed so a restarted scheduler is found again.
    """

    def __init__(self, state_dir: Path, address: str, extra_args: Sequence[str]) -> None:
        with socket.socket() as sock:
            sock.bind((address, 0))
            port = sock.getsockname()[1]
        super().__init__(state_dir, ["--listen", f"{address}:{port}", *extra_args])

    def start(self) -> None:
        # Plain HTTP on a private bridge address must be allowed explicitly. Through the
        # environment, which a scheduler without the option ignores (a flag it would refuse).
        saved = os.environ.get(INSECURE_SCHEDULER)
        os.environ[INSECURE_SCHEDULER] = "true"
        try:
            super().start()
        finally:
            if saved is None:
                del os.environ[INSECURE_SCHEDULER]
            else:
                os.environ[INSECURE_SCHEDULER] = saved


class Node:
    """One agent's machine: its namespace, link, state directory, cgroup parent, process."""

    def __init__(self, cluster: Cluster, index: int, name: str) -> None:
        self.name = name
        self.index = index
        self.netns = f"corral-e2e-{os.getpid()}-{cluster.instance}-{name}"
        self.host_if = f"{cluster.tag}-h{index}"
        self.ns_if = f"{cluster.tag}-n{index}"
        self.state = cluster.base / name
        self.cgroup_parent = self.netns
        self.proc: subprocess.Popen[bytes] | None = None
        self._cluster = cluster

    def start(self) -> None:
        """Start corral-agent inside the node's network namespace."""
        self.state.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env[INSECURE_AGENT] = "true"  # http:// to the bridge address (see BridgeScheduler)
        with open(self.state / "agent.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net={NETNS_DIR / self.netns}",
                    "--",
                    sys.executable,  # never PATH's python3 (a pyenv shim, another version)
                    "-m",
                    "agent.main",
                    "--server",
                    self._cluster.scheduler.url,
                    "--join-token",
                    TOKEN,
                    "--node-name",
                    self.name,
                    "--state-dir",
                    str(self.state),
                    "--cgroup-parent",
                    self.cgroup_parent,
                    "--log-level",
                    "debug",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def address(self) -> str:
        return f"{self._cluster.subnet}.{11 + self.index}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the agent (pods keep running), SIGKILL if it lingers."""
        stop_process(self.proc, 15)

    def containers(self) -> list[LiveContainer]:
        """Containers whose init is alive, from `pods/<uid>/containers/<name>/init.pid`."""
        found = []
        for pid_file in self.state.glob("pods/*/containers/*/init.pid"):
            cdir = pid_file.parent
            try:
                record = json.loads(pid_file.read_text())
                pod = json.loads((cdir.parent.parent / "pod.json").read_text())
            except (OSError, ValueError):
                continue  # written or removed right now
            pid, start = int(record["pid"]), record.get("start")
            now = proc_start_time(pid)
            if now is None or (start is not None and now != start):
                continue  # exited (maybe its pid is someone else's now)
            uid, name = cdir.parent.parent.name, pod["metadata"]["name"]
            found.append(LiveContainer(self.name, uid, name, cdir.name, pid, start))
        return found

    def kill(self, *, with_pods: bool = True) -> None:
        """SIGKILL the agent; with its pods: everything of this machine, as if it died.

        Order matters: the agent first (it would restart what dies), then the fork
        server and helpers (every process in the node's network namespace), then the
        monitors (so none records an exit), then the cgroup subtree (the containers,
        which also get SIGKILL from their monitor's death).
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not with_pods:
            return
        netns_pids = sh("ip", "netns", "pids", self.netns, check=False).stdout.split()
        for pid in netns_pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for pid_file in self.state.glob("pods/*/containers/*/monitor.pid"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                record = json.loads(pid_file.read_text())
                if proc_start_time(record["pid"]) == record.get("start"):
                    os.kill(int(record["pid"]), signal.SIGKILL)
        driver = probe(self.cgroup_parent)
        if driver.exists(""):
            driver.kill("", timeout=10)

    def partition(self) -> None:
        sh("ip", "link", "set", self.host_if, "down")

    def heal(self) -> None:
        sh("ip", "link", "set", self.host_if, "up")


class Cluster:
    """A scheduler and real agents on a bridge, one network namespace per agent.

    `start(layout)` builds it (the image layout is imported into every node's store),
    `close()` removes everything it made, whatever state it is in; it may be called
    more than once.
    """

    def __init__(
        self,
        base: Path,
        *,
        node_names: Sequence[str] = NODE_NAMES,
        scheduler_args: Sequence[str] = (),
    ) -> None:
        self.base = base
        self.instance = next(_instances)
        # Interface names are at most 15 bytes: "ce" + pid and instance in hex + "-br".
        self.tag = f"ce{os.getpid():x}{self.instance:x}"
        self.bridge = f"{self.tag}-br"
        self.subnet = ""
        self.scheduler_args = list(scheduler_args)
        self.nodes = {name: Node(self, i, name) for i, name in enumerate(node_names)}
        self._scheduler: BridgeScheduler | None = None
        self._made_bridge = False
        self._made_netns: list[Node] = []

    @property
    def scheduler(self) -> BridgeScheduler:
        assert self._scheduler is not None, "start() the cluster first"
        return self._scheduler

    # -- building -----------------------------------------------------------

    def start(self, image_layout: Path, *, ready_timeout: float = 60.0) -> None:
        if shutil.which("nsenter") is None:
            raise ClusterError("nsenter (util-linux) is needed to start agents in a netns")
        self.base.mkdir(parents=True, exist_ok=True)
        self._network()
        imports = self._import(image_layout)  # meanwhile, the scheduler starts
        self._scheduler = BridgeScheduler(
            self.base / "scheduler", f"{self.subnet}.1", self.scheduler_args
        )
        try:
            self._scheduler.start()
        finally:
            for proc in imports:
                out, _ = proc.communicate(timeout=120)
                if proc.returncode != 0:
                    raise ClusterError(f"image import failed: {out.decode(errors='replace')}")
        for node in self.nodes.values():
            node.start()
        try:
            poll(lambda: all(self.ready(n) for n in self.nodes), ready_timeout, 0.1)
        except ClusterError:
            raise ClusterError(f"agents not Ready: {self.describe()}") from None

    def _network(self) -> None:
        self.subnet = free_subnet()
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._made_bridge = True
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for node in self.nodes.values():
            sh("ip", "netns", "add", node.netns)
            self._made_netns.append(node)
            sh(
                "ip", "link", "add", node.host_if, "type", "veth",
                "peer", "name", node.ns_if, "netns", node.netns,
            )  # fmt: skip
            sh("ip", "link", "set", node.host_if, "master", self.bridge)
            sh("ip", "link", "set", node.host_if, "up")
            sh("ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev", node.ns_if)
            sh("ip", "-n", node.netns, "link", "set", node.ns_if, "up")
            sh("ip", "-n", node.netns, "link", "set", "lo", "up")

    def _import(self, layout: Path) -> list[subprocess.Popen[bytes]]:
        """Start `corral-agent image import` into every node's store, in parallel."""
        procs = []
        for node in self.nodes.values():
            node.state.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "agent.main", "image", "import", str(layout)]
            cmd += ["--root", str(node.state / "images")]
            procs.append(
                subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            )
        return procs

    # -- tearing down -------------------------------------------------------

    def close(self) -> None:
        """Stop every process and remove every mount, cgroup, namespace and link made here."""
        errors: list[str] = []

        def attempt(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as exc:
                errors.append(f"{what}: {exc}")

        if self._scheduler is not None:
            attempt("stop scheduler", self._scheduler.stop)
        for node in self.nodes.values():
            attempt(f"kill {node.name}", node.kill)
        attempt("unmount", lambda: unmount_below(str(self.base)))
        for node in self.nodes.values():
            attempt(f"cgroup {node.cgroup_parent}", partial(_remove_cgroup, node))
        for node in self._made_netns:
            attempt(f"netns {node.netns}", partial(sh, "ip", "netns", "del", node.netns))
            sh("ip", "link", "del", node.host_if, check=False)  # gone with the netns, normally
        self._made_netns.clear()
        if self._made_bridge:
            attempt("bridge", lambda: sh("ip", "link", "del", self.bridge))
            self._made_bridge = False
        if errors:
            raise ClusterError("cleanup incomplete: " + "; ".join(errors))

    # -- what happens to machines -----------------------------------------------

    def partition(self, node: str) -> None:
        """Take the node's link down (its host end): it and the scheduler lose each other."""
        self.nodes[node].partition()

    def heal(self, node: str) -> None:
        self.nodes[node].heal()

    def kill_agent(self, node: str, *, with_pods: bool = True) -> None:
        """kill -9 the node's agent; with its pods, as if the machine died (Node.kill)."""
        self.nodes[node].kill(with_pods=with_pods)

    # -- the API --------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self.scheduler.get(path)

    def pods(self) -> dict[str, dict[str, Any]]:
        """Pods of namespace default by name."""
        items = self.get("/api/v1/namespaces/default/pods")["items"]
        return {p["metadata"]["name"]: p for p in items}

    def pod(self, name: str) -> dict[str, Any] | None:
        resp = self.scheduler.request("GET", f"/api/v1/namespaces/default/pods/{name}")
        return resp.json() if resp.status == 200 else None

    def create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        resp = self.scheduler.request("POST", "/api/v1/namespaces/default/pods", manifest)
        if resp.status != 201:
            raise ClusterError(f"create pod: {resp.status} {resp.body[:500]!r}")
        return resp.json()

    def ready(self, node: str) -> bool:
        resp = self.scheduler.request("GET", f"/api/v1/nodes/{node}", timeout=5)
        if resp.status != 200:
            return False
        conditions = resp.json()["status"]["conditions"]
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def running(self, names: Iterable[str]) -> dict[str, dict[str, Any]] | None:
        """The pods by name if every one is Running (status from its agent), else None."""
        pods = self.pods()
        wanted = {n: pods.get(n) for n in names}
        if all(p is not None and p["status"].get("phase") == "Running" for p in wanted.values()):
            return wanted  # type: ignore[return-value]
        return None

    # -- observation of the machines -----------------------------------------

    def containers(self) -> list[LiveContainer]:
        return [c for node in self.nodes.values() for c in node.containers()]

    def describe(self) -> str:
        """A short account of the cluster for assertion messages."""
        parts = []
        with contextlib.suppress(Exception):
            for p in self.pods().values():
                states = [
                    f"{k}:{v.get('reason', '')}"
                    for s in p["status"].get("containerStatuses") or []
                    for k, v in s.get("state", {}).items()
                ]
                parts.append(
                    f"{p['metadata']['name']}({p['metadata']['uid'][:8]}) "
                    f"{p['status'].get('phase')} {','.join(states)} on {p['spec'].get('nodeName')}"
                )
        for node in self.nodes.values():
            parts.append(f"{node.name}: agent {'up' if node.alive else 'down'}")
        return "; ".join(parts)


def _remove_cgroup(node: Node) -> None:
    driver = probe(node.cgroup_parent)
    if driver.exists(""):
        try:
            driver.kill("", timeout=10)
        except CgroupError as exc:
            _LOGGER.warning("%s", exc)
        driver.remove("")


def pod_manifest(
    name: str,
    script: str = "sleep 3600",
    *,
    policy: str = "Always",
    grace: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """A busybox pod running `sh -c script` (100m CPU, 32Mi)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": grace,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}},
                }
            ],
            **spec,
        },
    }
