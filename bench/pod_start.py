"""Pod start benchmark: corral's native launcher against docker, runc and crun; JSON lines out.

    python -m bench.pod_start [--n 50] [--warmup 1] [--skip docker,crun] [--pods 100]

Run as root from the repository root. Every subject starts the same thing: Debian's
static busybox in the same minimal rootfs (tests/imagebuild.py), `sh -c 'exit 0'`,
with the same limits (cpu 500m, memory 64Mi, pids 1024). One sample is the whole
life of one container, launch + exit + cleanup:

- native: `NativeRuntime` in this process (uvloop, as the agent), a fresh pod each time:
  create_pod (pod directories and cgroup) -> start_container (container cgroup with
  the limits; through a waiting fork-server helper, a monitor and the init: ipc/uts/net
  namespaces made and pinned, overlay root, pivot_root, exec) -> wait_container (the
  monitor sends the exit record once exit.json is durable) -> remove_pod (cgroups and
  mounts gone, directories moved to the trash that a helper empties in the background);
- runc, crun: `<rt> --root R run --bundle B <unique id>`; the bundle is `runc spec`
  with args `sh -c 'exit 0'`, no terminal, a writable root (the rootfs directory
  itself: no overlay) and the same cpu/memory/pids limits. crun refuses hybrid cgroup
  hierarchies while an enabled controller (hugetlb here) is bound to no v1 hierarchy:
  then the benchmark mounts hugetlb at /sys/fs/cgroup/hugetlb around each crun run
  (untimed) and unmounts it after, or reports crun unavailable. Note: the kernel keeps
  hugetlb bound as a v1 hierarchy after the unmount (/proc/self/cgroup shows it) for as
  long as processes from before live, so in practice until reboot; from then on crun
  runs without the mount, and the benchmark mounts nothing;
- docker: `docker run --rm --network none --cpus 0.5 --memory 64m --pids-limit 1024
  corral-bench-busybox sh -c 'exit 0'` (the rootfs `docker import`ed). Uses a
  dockerd that already answers on the default socket, else starts a private one
  (own socket, data and exec roots, `--iptables=false --bridge=none`) and stops it.

Rounds interleave the subjects in a shuffled order; warm-up rounds are excluded.
Metrics: `pod_start.<subject>` (ms p50/p99), `pod_start.ratio.<peer>_over_native`,
`pod_start.native.<step>` (create_pod, start_container, wait_container, remove_pod)
and `pod_start.native.profile` lines (where the native time goes: a second runtime
whose fork server, monitors and inits record timestamps of each step; not part of the
timed samples).

Then the real daemons: `corral-scheduler` and `corral-agent` (its own state directory
and cgroup parent), to measure `pod_start.submit_to_running` (POST a pod, read a watch
opened on it before the POST until status.phase is Running; then DELETE and wait until
it is gone from the API and the node), `agent.rss_idle`, `agent.rss_100_pods` (RSS, PSS, USS), the
fork server's memory, and `monitor.pss` over the monitors of --pods running pods
(smaps_rollup).

Everything it starts, mounts or creates is removed at the end, also on failure or ^C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import inspect
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from agent.runtime.base import RuntimeFailure
from agent.runtime.native import forkclient as native_forkclient
from agent.runtime.native import namespaces as native_namespaces
from agent.runtime.native import rootfs as native_rootfs
from agent.runtime.native import runtime as native_runtime_module
from agent.runtime.native import syscalls as sc
from agent.runtime.native.cgroups import CgroupDriver, CgroupError, probe
from agent.runtime.native.images import ImageStore
from agent.runtime.native.monitor import proc_start_time
from agent.runtime.native.runtime import NativeRuntime
from bench._common import (
    MIB,
    BenchError,
    Cleanup,
    distribution,
    emit,
    machine,
    note,
    percentile,
    rss_pss_mib,
    run_bench,
    smaps_rollup,
    stop_process,
)
from common import eventloop
from common.models import Pod
from tests.imagebuild import BusyboxMissing, build_busybox_rootfs, dir_tar, write_oci_layout

ROOT = Path(__file__).resolve().parent.parent
TAG = f"corral-bench-{os.getpid()}"
SCRIPT = ["sh", "-c", "exit 0"]
CPU_LIMIT, MEMORY_LIMIT, PIDS_LIMIT = "500m", "64Mi", 1024
CFS_PERIOD_US, CFS_QUOTA_US, CPU_SHARES = 100_000, 50_000, 512  # 500m, as corral sets it
MEMORY_BYTES = 64 * MIB
DOCKER_IMAGE = "corral-bench-busybox"
HUGETLB = "/sys/fs/cgroup/hugetlb"
TOKEN = "corral-bench-join-token"
NODE = "bench-node"
NAMESPACE = "default"
SUBJECTS = ("native", "runc", "crun", "docker")
SKIPPABLE = (*SUBJECTS, "profile", "cluster")
NATIVE_STEPS = ("create_pod", "start_container", "wait_container", "remove_pod")
SAMPLE_ERRORS = (BenchError, RuntimeFailure, CgroupError, OSError, subprocess.SubprocessError)


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


def run_quiet(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


def tool_version(argv: list[str]) -> str | None:
    try:
        out = run_quiet(argv, 20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None


def bench_pod(name: str, command: list[str], cpu: str, memory: str) -> dict[str, Any]:
    """A one-container busybox pod manifest (restartPolicy Never, no grace period)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "pod-start"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    # The image is imported, not pulled: measure the launcher, not a pull
                    # attempt (busybox means :latest, whose default policy is Always).
                    "imagePullPolicy": "IfNotPresent",
                    "command": command,
                    "resources": {"limits": {"cpu": cpu, "memory": memory}},
                }
            ],
        },
    }


# --- native ---------------------------------------------------------------------------------


class NativeSubject:
    """NativeRuntime in this process, on its own state directory and cgroup parent."""

    def __init__(self, work: Path, layout: Path, cleanup: Cleanup, label: str = "native") -> None:
        self.name = label
        self.state = work / f"{label}-state"
        self.images = ImageStore(work / f"{label}-images")
        self.images.import_path(layout)
        self.cgroups: CgroupDriver = probe(f"{TAG}-{label}")
        self.runtime = NativeRuntime(self.state, self.images, self.cgroups)
        self.loop = eventloop.new_loop()
        self.steps: dict[str, list[float]] = {step: [] for step in NATIVE_STEPS}
        self.deferred: list[float] = []  # ms to delete a removed pod's files, untimed
        self._count = 0
        cleanup.push(f"{label} runtime", self.close)
        self.loop.run_until_complete(self.runtime.start())

    def sample(self) -> float:
        """One pod from create_pod to remove_pod done, in ms."""
        self._count += 1
        pod = Pod.model_validate(
            {
                **bench_pod(f"bench-{self._count}", SCRIPT, CPU_LIMIT, MEMORY_LIMIT),
                "metadata": {
                    "name": f"bench-{self._count}",
                    "namespace": NAMESPACE,
                    "uid": str(uuid.uuid4()),
                },
            }
        )
        return self.loop.run_until_complete(self._cycle(pod))

    async def _cycle(self, pod: Pod) -> float:
        rt, uid = self.runtime, str(pod.metadata.uid)
        t0 = time.perf_counter()
        await rt.create_pod(pod)
        t1 = time.perf_counter()
        await rt.start_container(pod, "main")
        t2 = time.perf_counter()
        exit = await rt.wait_container(uid, "main")
        t3 = time.perf_counter()
        await self.exited(pod)
        t3b = time.perf_counter()
        await rt.remove_pod(uid)
        t4 = time.perf_counter()
        # The runtime deletes a removed pod's files in the background, later: do it now,
        # untimed, so that the work does not land on the next sample (another subject's).
        await rt.empty_trash()
        self.deferred.append((time.perf_counter() - t4) * 1000)
        if exit.exit_code != 0:
            raise BenchError(f"native: sh exited {exit.exit_code} ({exit.reason}: {exit.message})")
        for step, ms in zip(NATIVE_STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3b), strict=True):
            self.steps[step].append(ms * 1000)
        return (t3 - t0 + t4 - t3b) * 1000

    async def exited(self, pod: Pod) -> None:
        """Between wait_container and remove_pod, untimed (the profiler reads records)."""

    def forget_steps(self) -> None:
        for values in self.steps.values():
            values.clear()
        self.deferred.clear()

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self._remove_all())
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.runtime.close())
            pid = self.runtime.forkserver_pid
            if pid is not None and proc_start_time(pid) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            if self.cgroups.exists(""):
                self.cgroups.kill("")
                self.cgroups.remove("")
            native_rootfs.unmount_below(str(self.state))
            self.loop.close()

    async def _remove_all(self) -> None:
        for info in await self.runtime.recover():
            await self.runtime.remove_pod(info.uid)


# --- where the native time goes -------------------------------------------------------------


def _fork_server_profiler() -> None:
    """Runs first in a profiling fork server (`python -I -S`: stdlib only): wraps the steps
    of helpers, monitors and container inits to record (step, start, end) with
    CLOCK_MONOTONIC, the clock of every process, and writes them next to the records in
    the container dir: prof.monitor.json and prof.init.json (the init writes through a
    descriptor opened before pivot_root)."""
    import json
    import os
    import sys
    import time

    from agent.runtime.native import forkserver, logs, monitor, namespaces, rootfs
    from agent.runtime.native import syscalls as sc

    events: list[tuple[str, float, float]] = []
    role = ["helper"]
    init_fd = [-1]
    init_cpu = [0.0]  # the init's CPU time when its request came (it may be forked ahead)
    clock = time.monotonic
    ns_names = {
        sc.CLONE_NEWNS: "mnt",
        sc.CLONE_NEWPID: "pid",
        sc.CLONE_NEWNET: "net",
        sc.CLONE_NEWIPC: "ipc",
        sc.CLONE_NEWUTS: "uts",
    }

    def mark(name: str, start: float, end: float | None = None) -> None:
        events.append((f"{role[0]}: {name}", start, clock() if end is None else end))

    def ahead() -> None:
        # What a spare did before its request is not on the start's path: "background"
        # keeps it out of the timeline's origin.
        events[:] = [(f"background: ahead: {label}", a, b) for label, a, b in events]

    def dump_to(fd: int) -> None:
        os.write(fd, json.dumps(events).encode())

    def dump(path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            dump_to(fd)
        finally:
            os.close(fd)

    def timed(owner: Any, attr: str, label: Any) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # renamed since: that step goes unmeasured
            print(f"profiler: no {owner.__name__}.{attr}", file=sys.stderr)
            return

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                mark(label(*args) if callable(label) else label, start)

        setattr(owner, attr, wrapper)

    def mount_label(
        source: Any, target: Any, fstype: Any = None, flags: int = 0, data: Any = None
    ) -> str:
        if flags & sc.MS_REMOUNT:
            return "mount remount"
        if flags & sc.MS_BIND:
            return "mount bind"
        return f"mount {fstype}" if fstype else "mount propagation"

    def unshare_label(flags: int) -> str:
        kinds = [name for flag, name in ns_names.items() if flags & flag]
        return f"unshare({','.join(kinds)})"

    timed(sc, "mount", mount_label)
    timed(sc, "unshare", unshare_label)
    timed(sc, "setns", "setns")
    timed(sc, "pivot_root", "pivot_root")
    timed(sc, "umount2", "umount2 old root")
    timed(rootfs, "_mount_dev", "/dev (tmpfs, mknod, devpts, shm, mqueue)")
    timed(rootfs, "resolve_user", "resolve_user")
    timed(namespaces, "loopback_up", "lo up")
    timed(namespaces, "enter", "namespaces: join or make (all of it)")
    timed(namespaces, "pin", "pin the new namespaces")
    timed(logs, "LogWriter", "open log")
    timed(monitor, "write_json", lambda path, *_: f"write {os.path.basename(path)}")
    timed(monitor, "reply", "reply to agent")
    original_reply = monitor.reply

    def reply(conn: int, message: dict[str, Any]) -> None:
        if role[0] == "monitor" and "init_pid" in message:  # the answer to "run"
            now = clock()
            mark("CPU time used until the answer (user + system)", now - time.process_time(), now)
        original_reply(conn, message)

    monitor.reply = reply
    timed(monitor, "_pump", "pump (container runs, exits)")
    timed(monitor, "oom_kills", "read oom counters")

    original_read_request = forkserver._read_request

    def read_request(conn: int, prepared: Any = None) -> dict[str, Any]:
        # A spare helper waits for its request for as long as it takes: only its arrival
        # counts (a point in time), as the start of this helper's record.
        request = original_read_request(conn, prepared)
        ahead()
        role[0] = "helper"
        now = clock()
        mark("request received", now, now)
        return request

    forkserver._read_request = read_request

    timed(monitor, "attach_self", "move itself into its cgroups (all hierarchies)")
    original_run = monitor.run

    def run(spec: dict[str, Any], conn: int, prepared: Any = None) -> None:
        role[0] = "monitor"
        try:
            original_run(spec, conn, prepared)
        finally:
            mark("exit", clock())
            dump(os.path.join(spec["dir"], "prof.monitor.json"))

    monitor.run = run

    original_pdeathsig = sc.set_pdeathsig

    def set_pdeathsig(sig: int) -> None:  # the first thing a container init does
        events.clear()  # a copy of the monitor's record: the init keeps its own
        role[0] = "init"
        start = clock()
        original_pdeathsig(sig)
        mark("start (pdeathsig)", start)

    sc.set_pdeathsig = set_pdeathsig
    timed(monitor, "prepare", "prepare: fork the init, which makes its namespaces")
    original_receive_spec = getattr(monitor, "_receive_spec", None)

    def receive_spec(conn: int, up: int) -> Any:  # a spare's init gets its request
        assert original_receive_spec is not None
        received = original_receive_spec(conn, up)
        ahead()
        now = clock()
        mark("request received", now, now)
        init_cpu[0] = time.process_time()
        return received

    if original_receive_spec is not None:
        monitor._receive_spec = receive_spec

    original_enter = rootfs.enter

    def enter(spec: dict[str, Any]) -> None:
        path = os.path.join(spec["dir"], "prof.init.json")
        init_fd[0] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        start = clock()
        try:
            original_enter(spec)
        finally:
            mark("rootfs.enter (all of it)", start)

    rootfs.enter = enter

    def on_exec(original: Any) -> Any:
        def exec_(argv: list[str], env: dict[str, str]) -> None:
            now = clock()
            mark("execve", now, now)
            # The CPU the init used since its fork, drawn as a span that ends here.
            used = time.process_time() - init_cpu[0]
            mark("CPU time used from its request until exec (user + system)", now - used, now)
            if init_fd[0] >= 0:
                dump_to(init_fd[0])  # O_CLOEXEC: closed by the exec itself
            original(argv, env)

        return exec_

    for name in ("exec_in_path", "_exec"):  # the init's last call, by either name
        if hasattr(monitor, name):
            setattr(monitor, name, on_exec(getattr(monitor, name)))
            break
    else:
        print("profiler: no exec function in monitor", file=sys.stderr)


class Recorder:
    """(step, start, end) of the agent-side steps, CLOCK_MONOTONIC (as in the children)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, float]] = []
        self._undo: list[Callable[[], None]] = []

    def _mark(self, label: str, start: float) -> None:
        self.events.append((f"agent: {label}", start, time.monotonic()))

    def wrap(self, owner: Any, attr: str, label: str | Callable[..., str]) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # renamed since: that step goes unmeasured
            note(f"profile: {type(owner).__name__}.{attr} not found; not measured")
            return
        is_async = inspect.iscoroutinefunction(original)

        def name(args: tuple[Any, ...]) -> str:
            return label(*args) if callable(label) else label

        if is_async:

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.monotonic()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self._mark(name(args), start)

            setattr(owner, attr, async_wrapper)
        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.monotonic()
                try:
                    return original(*args, **kwargs)
                finally:
                    self._mark(name(args), start)

            setattr(owner, attr, wrapper)
        if inspect.ismodule(owner):  # instances die with the runtime; modules stay
            self._undo.append(lambda: setattr(owner, attr, original))

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


def _rmtree_label(path: Any, *_: Any) -> str:
    name = Path(path).name
    return f"rmtree {name}" if name in ("upper", "work", "empty") else "background: rmtree"


class ProfiledNative(NativeSubject):
    """A second NativeRuntime whose fork server runs `_fork_server_profiler` first and whose
    agent-side steps are wrapped: one timeline per pod, from create_pod's start."""

    def __init__(self, work: Path, layout: Path, cleanup: Cleanup) -> None:
        self.recorder = Recorder()
        cleanup.push("profiling wrappers", self.recorder.undo)
        source = textwrap.dedent(inspect.getsource(_fork_server_profiler))
        bootstrap = (
            "from __future__ import annotations\n"
            "import sys\nsys.path.insert(0, sys.argv[1])\n"
            f"{source}\n"
            "try:\n"
            f"    {_fork_server_profiler.__name__}()\n"
            "except Exception as exc:  # a profile without details beats no fork server\n"
            "    print(f'profiler not installed: {exc!r}', file=sys.stderr)\n"
            "from agent.runtime.native.forkserver import main\nmain()\n"
        )
        saved = native_forkclient.BOOTSTRAP
        native_forkclient.BOOTSTRAP = bootstrap
        try:
            super().__init__(work, layout, cleanup, label="native-profile")
        finally:
            native_forkclient.BOOTSTRAP = saved
        rt, rec = self.runtime, self.recorder
        rec.wrap(rt, "create_pod", "create_pod (all of it)")
        rec.wrap(rt, "start_container", "start_container (all of it)")
        rec.wrap(rt, "wait_container", "wait_container (all of it)")
        rec.wrap(rt, "remove_pod", "remove_pod (all of it)")
        rec.wrap(rt, "_prepare_pod", "prepare pod: dirs, pod.json, /etc files")
        rec.wrap(rt, "_make_cgroups", "make the pod's and its containers' cgroups")
        rec.wrap(rt.cgroups, "prime_attach", "prime the cgroup attach (a thread)")
        if getattr(rt, "_primer", None) is not None:
            rec.wrap(rt._primer, "prime", "prime the cgroup attach (set off)")
        rec.wrap(rt, "_prepare_start", "prepare start, one thread call (all of it)")
        rec.wrap(rt, "_prepare_container", "prepare container: dirs, cgroup + limits")
        rec.wrap(rt, "_container_info", "read container records")
        rec.wrap(rt, "_exit_or_monitor", "read exit.json, monitor.pid")
        rec.wrap(rt, "_exit_or_lost", "read exit.json")
        rec.wrap(rt, "_teardown", "teardown, one thread call (all of it)")
        rec.wrap(rt, "_wait_gone", "teardown: wait for monitor gone")
        rec.wrap(rt, "_trash", "teardown: move a directory to the trash")
        rec.wrap(rt, "_sweep_loop", "background: empty the trash (a helper process)")
        rec.wrap(rt.images, "require", "image lookup")
        rec.wrap(rt.images, "layer_dirs", "image layer dirs")
        rec.wrap(rt.cgroups, "create", "cgroup create (+limits)")
        rec.wrap(rt.cgroups, "kill", "cgroup kill")
        rec.wrap(rt.cgroups, "remove", "cgroup remove")
        forkserver = rt._forkserver
        rec.wrap(forkserver, "_helper", "take a helper (the spare, else connect)")
        rec.wrap(forkserver, "_fill", "background: ask the fork server for the next spare")
        rec.wrap(forkserver, "run", "fork server request run (until the monitor answers)")
        rec.wrap(native_namespaces, "unpin", "teardown: unpin namespaces (one umount)")
        rec.wrap(native_rootfs, "mountinfo", "read /proc/self/mountinfo")
        rec.wrap(native_runtime_module.shutil, "rmtree", _rmtree_label)
        self.timelines: list[list[tuple[str, float, float]]] = []
        self._children: list[tuple[str, float, float]] = []

    async def exited(self, pod: Pod) -> None:
        uid = str(pod.metadata.uid)
        cdir = self.runtime.container_dir(uid, "main")
        # The monitor writes its record after it has told us the exit: wait until it is gone.
        with contextlib.suppress(OSError, ValueError):
            NativeRuntime._wait_gone(json.loads((cdir / "monitor.pid").read_bytes()))
        files = (cdir / "prof.monitor.json", cdir / "prof.init.json")
        self._children = []
        for path in files:
            with contextlib.suppress(FileNotFoundError, ValueError):
                self._children += [
                    (str(a), float(b), float(c)) for a, b, c in json.loads(path.read_bytes())
                ]

    def sample(self) -> float:
        self.recorder.events.clear()
        ms = super().sample()
        self.timelines.append(self.recorder.events + self._children)
        return ms

    def report(self, skip: int) -> None:
        """One `pod_start.native.profile` line per step: when it starts (p50 offset from
        create_pod's start) and how long it takes (p50/p99 of its summed durations)."""
        offsets: dict[str, list[float]] = {}
        durations: dict[str, list[float]] = {}
        for events in self.timelines[skip:]:
            # From create_pod's start: background work of the previous pod may end here.
            t0 = min(start for label, start, _ in events if "background:" not in label)
            first: dict[str, float] = {}
            total: dict[str, float] = {}
            for label, start, end in events:
                first[label] = min(first.get(label, start), start)
                total[label] = total.get(label, 0.0) + end - start
            for label in first:
                offsets.setdefault(label, []).append((first[label] - t0) * 1000)
                durations.setdefault(label, []).append(total[label] * 1000)
        rows = []
        for label in offsets:
            at = percentile(sorted(offsets[label]), 0.5)
            rows.append((at, label, distribution(durations[label], 3)))
        rows.sort()
        note("native profile (p50 start offset / p50 duration, ms):")
        for at, label, dist in rows:
            note(f"  {at:8.2f}  {dist['p50']:8.3f}  {label}")
            emit(
                "pod_start.native.profile",
                "ms",
                step=label,
                at_p50=round(at, 3),
                p50=dist["p50"],
                p99=dist["p99"],
                n=dist["n"],
            )


# --- runc and crun --------------------------------------------------------------------------


def _is_mount_point(path: str) -> bool:
    return any(point == path for point, _ in native_rootfs.mountinfo())


class HugetlbMount:
    """hugetlb as a v1 hierarchy at /sys/fs/cgroup/hugetlb while crun runs (crun refuses
    hybrid hierarchies otherwise); never touches a mount that was there already."""

    def __init__(self) -> None:
        self.mounted = False
        self.created = False

    def mount(self) -> None:
        if self.mounted or _is_mount_point(HUGETLB):
            return
        if not os.path.isdir(HUGETLB):
            os.mkdir(HUGETLB)
            self.created = True
        sc.mount("cgroup", HUGETLB, "cgroup", 0, "hugetlb")
        self.mounted = True

    def unmount(self) -> None:
        if self.mounted:
            sc.umount2(HUGETLB)
            self.mounted = False
        if self.created:
            os.rmdir(HUGETLB)
            self.created = False


def write_bundle(binary: str, bundle: Path, rootfs: Path) -> None:
    """`runc spec`, then: sh -c 'exit 0', no terminal, writable root, corral's limits."""
    bundle.mkdir(parents=True)
    out = run_quiet([binary, "spec", "--bundle", str(bundle)])
    if out.returncode != 0:
        raise BenchError(f"{binary} spec: {out.stderr.strip()}")
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    config["process"]["args"] = SCRIPT
    config["process"]["terminal"] = False
    config["root"] = {"path": str(rootfs), "readonly": False}
    config["hostname"] = "bench"
    resources = config["linux"].setdefault("resources", {})
    resources["cpu"] = {"quota": CFS_QUOTA_US, "period": CFS_PERIOD_US, "shares": CPU_SHARES}
    resources["memory"] = {"limit": MEMORY_BYTES}
    resources["pids"] = {"limit": PIDS_LIMIT}
    path.write_text(json.dumps(config, indent=1))


class OciSubject:
    """`runc run` or `crun run` of one bundle, a unique container id each time."""

    def __init__(self, name: str, binary: str, bundle: Path, state_root: Path) -> None:
        self.name, self.binary, self.bundle, self.state_root = name, binary, bundle, state_root
        self.hugetlb: HugetlbMount | None = None
        self._count = 0

    @property
    def notes(self) -> dict[str, Any]:
        """Printed on the result line: whether each run had hugetlb mounted for it."""
        return {"hugetlb_mounted_per_run": self.hugetlb is not None} if self.name == "crun" else {}

    def _run(self) -> tuple[float, subprocess.CompletedProcess[bytes]]:
        self._count += 1
        cid = f"{TAG}-{self.name}-{self._count}"
        argv = [self.binary, "--root", str(self.state_root), "run", "--bundle", str(self.bundle)]
        if self.hugetlb is not None:
            self.hugetlb.mount()
        try:
            start = time.perf_counter()
            proc = subprocess.run(
                [*argv, cid],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=60,
            )
            elapsed = time.perf_counter() - start
        finally:
            if self.hugetlb is not None:
                self.hugetlb.unmount()
        return elapsed, proc

    def check(self) -> str | None:
        """None if a run works (mounting hugetlb for crun if that is what it takes)."""
        _, proc = self._run()
        if proc.returncode == 0:
            return None
        error = proc.stderr.decode(errors="replace").strip()
        if self.name != "crun":
            return error
        self.hugetlb = HugetlbMount()
        _, proc = self._run()
        if proc.returncode == 0:
            note(f"crun: {error!r} without hugetlb; mounting it at {HUGETLB} for each run")
            return None
        self.hugetlb = None
        again = proc.stderr.decode(errors="replace").strip()
        return f"{error} (and with hugetlb mounted at {HUGETLB}: {again})"

    def sample(self) -> float:
        elapsed, proc = self._run()
        if proc.returncode != 0:
            error = proc.stderr.decode(errors="replace").strip()
            raise BenchError(f"{self.name} run exited {proc.returncode}: {error}")
        return elapsed * 1000

    def close(self) -> None:
        if self.hugetlb is not None:
            self.hugetlb.unmount()
        if not self.state_root.is_dir():
            return
        for entry in self.state_root.iterdir():
            run_quiet(
                [self.binary, "--root", str(self.state_root), "delete", "--force", entry.name]
            )


# --- docker ---------------------------------------------------------------------------------


class DockerSubject:
    """`docker run --rm --network none ...` against the running dockerd or a private one."""

    name = "docker"

    def __init__(self, work: Path, rootfs: Path, cleanup: Cleanup) -> None:
        # Debian's client matches Debian's dockerd; another one may come first in PATH.
        cli = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else None
        cli = cli or shutil.which("docker")
        if cli is None:
            raise BenchError("no docker client (apt-get install docker.io)")
        self.cli = cli
        self.host: list[str] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self.dir = work / "docker"
        if self._server_version() is None:
            self._start_daemon(cleanup)
        else:
            note("docker: using the dockerd that answers on the default socket")
        self.version = self._server_version()
        tarball = work / "busybox-rootfs.tar"
        tarball.write_bytes(dir_tar(rootfs))
        self._docker("import", str(tarball), DOCKER_IMAGE)
        cleanup.push("docker image", self._remove_image)

    def _remove_image(self) -> None:
        self._docker("rmi", "-f", DOCKER_IMAGE, check=False)

    def _docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = run_quiet([self.cli, *self.host, *args], 120)
        if check and out.returncode != 0:
            raise BenchError(f"docker {' '.join(args[:2])}: {out.stderr.strip()}")
        return out

    def _server_version(self) -> str | None:
        try:
            out = self._docker("version", "--format", "{{.Server.Version}}", check=False)
        except subprocess.TimeoutExpired:
            return None
        if out.returncode != 0:
            return None
        return out.stdout.strip() or None

    def _start_daemon(self, cleanup: Cleanup) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise BenchError("no dockerd running and none installed (apt-get install docker.io)")
        self.dir.mkdir()
        sock = self.dir / "docker.sock"
        log = open(self.dir / "dockerd.log", "wb")
        self.daemon = subprocess.Popen(
            [
                dockerd,
                "--host",
                f"unix://{sock}",
                "--data-root",
                str(self.dir / "data"),
                "--exec-root",
                str(self.dir / "exec"),
                "--pidfile",
                str(self.dir / "dockerd.pid"),
                "--containerd-namespace",
                TAG,
                "--containerd-plugins-namespace",
                f"{TAG}-plugins",
                "--iptables=false",
                "--bridge=none",
                "--log-level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        cleanup.push("dockerd", self._stop_daemon)
        self.host = ["-H", f"unix://{sock}"]
        deadline = time.monotonic() + 60
        while self._server_version() is None:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                tail = (self.dir / "dockerd.log").read_text(errors="replace")[-2000:]
                raise BenchError(f"dockerd did not start:\n{tail}")
            time.sleep(0.2)
        note(f"docker: started a private dockerd (pid {self.daemon.pid}) on {sock}")

    def _stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        native_rootfs.unmount_below(str(self.dir))

    def sample(self) -> float:
        argv = [self.cli, *self.host, "run", "--rm", "--network", "none"]
        argv += ["--cpus", "0.5", "--memory", "64m", "--pids-limit", str(PIDS_LIMIT)]
        start = time.perf_counter()
        proc = subprocess.run(
            [*argv, DOCKER_IMAGE, *SCRIPT],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            error = proc.stderr.decode(errors="replace").strip()
            raise BenchError(f"docker run exited {proc.returncode}: {error}")
        return elapsed * 1000


# --- the real scheduler and agent ----------------------------------------------------------


class Http:
    """One keep-alive HTTP/1.1 connection to the scheduler (polls cost little)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self.auth)
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                if attempt:
                    raise
                continue
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


class PodWatch:
    """A watch on one pod (`?watch=true`, by name), open before the pod exists: when
    its change reaches the API, the line is here, with no poll interval to wait for
    and no polls loading the scheduler (as a Kubernetes client would wait)."""

    def __init__(self, http_: Http, path: str, name: str, timeout: float) -> None:
        self.conn = http.client.HTTPConnection(http_.host, http_.port, timeout=timeout)
        query = urllib.parse.urlencode({"watch": "true", "fieldSelector": f"metadata.name={name}"})
        self.conn.request("GET", f"{path}?{query}", headers=http_.auth)
        # The scheduler registers the watch before it answers: nothing after this is missed.
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise BenchError(f"watch pod {name}: {self.resp.status} {self.resp.read()[:300]!r}")

    def until_phase(self, phase: str) -> None:
        """Return once the pod is in `phase`; raise if it ends in another one."""
        while line := self.resp.readline():
            event = json.loads(line)
            pod = event.get("object") or {}
            current = (pod.get("status") or {}).get("phase")
            if event.get("type") in ("ADDED", "MODIFIED") and current == phase:
                return
            if event.get("type") == "DELETED" or current in ("Succeeded", "Failed"):
                raise BenchError(f"pod is {event.get('type')} {current}, not {phase}: {pod}")
        raise BenchError(f"the watch ended before the pod was {phase}")

    def close(self) -> None:
        self.conn.close()


class Cluster:
    """`corral-scheduler` and one `corral-agent` (real processes), a pod API client."""

    def __init__(self, work: Path, layout: Path, cleanup: Cleanup) -> None:
        self.dir = work / "cluster"
        self.agent_state = self.dir / "agent"
        self.agent_state.mkdir(parents=True)
        self.cgroup_parent = f"{TAG}-agent"
        self.env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1"}
        log = open(self.dir / "scheduler.log", "ab")
        self.scheduler: subprocess.Popen[str] = subprocess.Popen(
            [
                *(sys.executable, "-m", "scheduler.main", "--listen", "127.0.0.1:0"),
                *("--state-dir", str(self.dir / "scheduler"), "--join-token", TOKEN),
            ],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        cleanup.push("scheduler", lambda: stop_process(self.scheduler, 15))
        assert self.scheduler.stdout is not None
        line = self.scheduler.stdout.readline()  # "corral-scheduler listening on http://H:P"
        if "listening on" not in line:
            raise BenchError(f"the scheduler did not start: {line!r}; see {self.dir}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        # A scheduler with API authentication writes an admin token on its first start.
        token_file = self.dir / "scheduler" / "admin-token"
        token = token_file.read_text().strip() if token_file.exists() else None
        self.http = Http(self.url, token)
        cleanup.push("api client", self.http.close)
        self._until(lambda: self.http.call("GET", "/readyz")[0] == 200, 20, "scheduler ready")
        imported = run_quiet(
            [
                *(sys.executable, "-m", "agent.main", "image", "import", str(layout)),
                *("--root", str(self.agent_state / "images")),
            ],
            120,
        )
        if imported.returncode != 0:
            raise BenchError(f"corral-agent image import: {imported.stderr.strip()}")
        log = open(self.dir / "agent.log", "ab")
        self.agent: subprocess.Popen[bytes] = subprocess.Popen(
            [
                *(sys.executable, "-m", "agent.main", "--server", self.url, "--join-token", TOKEN),
                *("--node-name", NODE, "--state-dir", str(self.agent_state)),
                *("--cgroup-parent", self.cgroup_parent, "--log-level", "info"),
                "--stop-pods-on-exit",
            ],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        cleanup.push("agent", self._stop_agent)
        self._until(self._node_ready, 60, "node Ready")

    def _until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                value = predicate()
                if value:
                    return value
            for name in ("scheduler", "agent"):
                proc = getattr(self, name, None)
                if proc is not None and proc.poll() is not None:
                    raise BenchError(f"the {name} exited ({proc.returncode}){self._logs()}")
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout}s waiting for {what}{self._logs()}")
            time.sleep(0.05)

    def _logs(self, lines: int = 15) -> str:
        """The last lines of both daemons' logs, for an error message (the work directory
        is removed at the end unless --keep)."""
        out = []
        for name in ("scheduler", "agent"):
            with contextlib.suppress(OSError):
                text = (self.dir / f"{name}.log").read_text(errors="replace")
                tail = "\n".join(f"  {line}" for line in text.splitlines()[-lines:])
                out.append(f"\n{name}.log (last {lines} lines):\n{tail}")
        return "".join(out)

    def _node_ready(self) -> bool:
        status, body = self.http.call("GET", f"/api/v1/nodes/{NODE}")
        if status != 200:
            return False
        conditions = body["status"]["conditions"]
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _stop_agent(self) -> None:
        stop_process(self.agent, 60)  # --stop-pods-on-exit: it stops what still runs
        for record in self.agent_state.glob("pods/*/containers/*/monitor.pid"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                mon = json.loads(record.read_text())
                if proc_start_time(mon["pid"]) == mon["start"]:
                    os.kill(mon["pid"], 9)
        cgroups = probe(self.cgroup_parent)
        if cgroups.exists(""):
            cgroups.kill("")
            cgroups.remove("")
        native_rootfs.unmount_below(str(self.agent_state))

    # the processes' memory

    def forkserver_pid(self) -> int | None:
        for child in psutil.Process(self.agent.pid).children():
            with contextlib.suppress(psutil.Error):
                if any("forkserver" in part for part in child.cmdline()):
                    return int(child.pid)
        return None

    def monitor_pids(self) -> list[int]:
        pids = []
        for record in self.agent_state.glob("pods/*/containers/*/monitor.pid"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                mon = json.loads(record.read_text())
                if proc_start_time(mon["pid"]) == mon["start"]:
                    pids.append(int(mon["pid"]))
        return pids

    def memory(self) -> dict[str, float]:
        rss, pss = rss_pss_mib(self.agent.pid)
        # USS (private pages) too: PSS moves with how many other processes share the
        # interpreter's file pages (±2 MiB here from run to run), USS does not.
        rollup = smaps_rollup(self.agent.pid)
        uss = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
        out = {"agent_rss": rss, "agent_pss": pss, "agent_uss": round(uss / 1024, 1)}
        fs = self.forkserver_pid()
        if fs is not None:
            out["forkserver_rss"], out["forkserver_pss"] = rss_pss_mib(fs)
        return out

    # pods

    def _pod_path(self, name: str = "") -> str:
        return f"/api/v1/namespaces/{NAMESPACE}/pods" + (f"/{name}" if name else "")

    def scheduling_latency(self) -> tuple[float, float]:
        """(sum in s, count) of the scheduler's pending-to-bound histogram; (0, 0) if none."""
        status, text = self.http.call("GET", "/metrics")
        values = {"sum": 0.0, "count": 0.0}
        if status == 200 and isinstance(text, str):
            for line in text.splitlines():
                for key in values:
                    if line.startswith(f"corral_scheduling_latency_seconds_{key} "):
                        values[key] = float(line.split()[1])
        return values["sum"], values["count"]

    def submit_to_running(self, n: int, warmup: int) -> None:
        """POST one pod, watch it until Running, DELETE it, wait until it is gone; n+warmup
        times."""
        to_running: list[float] = []
        acks: list[float] = []
        gone: list[float] = []
        bound_sum = bound_count = 0.0
        for i in range(warmup + n):
            if i == warmup:
                bound_sum, bound_count = self.scheduling_latency()
            name = f"start-{i:04d}"
            manifest = bench_pod(name, ["sleep", "3600"], CPU_LIMIT, MEMORY_LIMIT)
            watch = PodWatch(self.http, self._pod_path(), name, timeout=30)
            try:
                t0 = time.perf_counter()
                status, body = self.http.call("POST", self._pod_path(), manifest)
                t_ack = time.perf_counter()
                if status != 201:
                    raise BenchError(f"POST pod: {status} {body}")
                uid = body["metadata"]["uid"]
                watch.until_phase("Running")
                t_seen = time.perf_counter()
            finally:
                watch.close()
            t_del = time.perf_counter()
            status, body = self.http.call("DELETE", self._pod_path(name))
            if status not in (200, 202):
                raise BenchError(f"DELETE pod: {status} {body}")
            while self.http.call("GET", self._pod_path(name))[0] != 404:
                if time.perf_counter() > t_del + 30:
                    raise BenchError(f"pod {name} still in the API 30 s after DELETE")
                time.sleep(0.005)
            t_gone = time.perf_counter()
            pod_dir = self.agent_state / "pods" / uid
            self._until(lambda: not pod_dir.exists(), 30, "pod gone from the node")  # noqa: B023
            if i >= warmup:
                to_running.append((t_seen - t0) * 1000)
                acks.append((t_ack - t0) * 1000)
                gone.append((t_gone - t_del) * 1000)
        emit("pod_start.submit_to_running", "ms", **distribution(to_running), observed="watch")
        after_sum, after_count = self.scheduling_latency()
        if after_count > bound_count:
            mean = (after_sum - bound_sum) / (after_count - bound_count) * 1000
            emit(
                "pod_start.submit_to_running.pending_to_bound",
                "ms",
                mean=round(mean, 2),
                n=int(after_count - bound_count),
                source="corral_scheduling_latency_seconds",
            )
        emit("pod_start.submit_to_running.create_ack", "ms", **distribution(acks))
        emit("pod_delete.delete_to_gone", "ms", **distribution(gone), poll_ms=5)

    def hundred_pods(self, pods: int) -> None:
        """`pods` sleeping pods at once; memory of the agent, fork server and monitors."""
        items = [bench_pod(f"rss-{i:04d}", ["sleep", "3600"], "10m", "16Mi") for i in range(pods)]
        for item in items:
            item["metadata"]["labels"] = {"bench": "rss"}
        t0 = time.perf_counter()
        status, body = self.http.call(
            "POST", self._pod_path(), {"apiVersion": "v1", "kind": "PodList", "items": items}
        )
        if status != 201:
            raise BenchError(f"POST {pods} pods: {status} {body}")
        selector = self._pod_path() + "?labelSelector=bench%3Drss"

        def running() -> bool:
            listed = self.http.call("GET", selector)[1]["items"]
            return sum((p.get("status") or {}).get("phase") == "Running" for p in listed) == pods

        self._until(running, 60 + pods, f"{pods} pods Running")
        emit(
            "pod_start.batch_to_running",
            "s",
            value=round(time.perf_counter() - t0, 2),
            pods=pods,
            poll_ms=50,
        )
        time.sleep(3)  # let start-up garbage settle
        mem = self.memory()
        emit(
            "agent.rss_100_pods" if pods == 100 else f"agent.rss_{pods}_pods",
            "MiB",
            value=mem["agent_rss"],
            pss=mem["agent_pss"],
            uss=mem["agent_uss"],
            pods=pods,
        )
        if "forkserver_rss" in mem:
            emit(
                "forkserver.memory_with_pods",
                "MiB",
                rss=mem["forkserver_rss"],
                pss=mem["forkserver_pss"],
                pods=pods,
            )
        monitors = self.monitor_pids()
        pss = [smaps_rollup(pid).get("Pss", 0) for pid in monitors]
        rss = [smaps_rollup(pid).get("Rss", 0) for pid in monitors]
        ordered = sorted(pss)
        emit(
            "monitor.pss",
            "KiB",
            p50=percentile(ordered, 0.5),
            max=ordered[-1] if ordered else None,
            n=len(ordered),
            rss_p50=percentile(sorted(rss), 0.5),
            total_pss_mib=round(sum(pss) / 1024, 1),
        )
        for item in items:
            self.http.call("DELETE", self._pod_path(item["metadata"]["name"]))

        def all_gone() -> bool:
            listed = self.http.call("GET", selector)[1]["items"]
            return not listed and not any((self.agent_state / "pods").iterdir())

        self._until(all_gone, 60 + pods, f"{pods} pods gone")


# --- the run --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pod_start", description=__doc__)
    parser.add_argument("--n", type=int, default=50, help="measured samples per subject")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up samples, not counted")
    parser.add_argument("--skip", action="append", default=[], help=f"any of {SKIPPABLE}")
    parser.add_argument("--pods", type=int, default=100, help="pods for the memory figures")
    parser.add_argument("--profile-n", type=int, default=20, help="profiled native pods")
    parser.add_argument("--seed", type=int, default=1, help="seed of the round order")
    parser.add_argument(
        "--gap-ms", type=float, default=0.0, help="pause before each sample (untimed)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.skip = {s.strip() for item in args.skip for s in item.split(",") if s.strip()}
    unknown = args.skip - set(SKIPPABLE)
    if unknown:
        parser.error(f"--skip: unknown {sorted(unknown)}; choose from {SKIPPABLE}")
    if args.n < 1 or args.warmup < 0:
        parser.error("--n must be at least 1 and --warmup at least 0")
    return args


def make_subjects(
    args: argparse.Namespace, work: Path, rootfs: Path, layout: Path, cleanup: Cleanup
) -> tuple[list[Any], dict[str, str]]:
    subjects: list[Any] = []
    unavailable: dict[str, str] = {}
    if "native" not in args.skip:
        try:
            subjects.append(NativeSubject(work, layout, cleanup))
        except SAMPLE_ERRORS as exc:
            unavailable["native"] = f"{type(exc).__name__}: {exc}"
    for name in ("runc", "crun"):
        if name in args.skip:
            continue
        binary = shutil.which(name)
        if binary is None:
            unavailable[name] = f"{name} not installed (apt-get install {name})"
            continue
        try:
            bundle = work / f"{name}-bundle"
            write_bundle(binary, bundle, rootfs)
            subject = OciSubject(name, binary, bundle, work / f"{name}-state")
            cleanup.push(f"{name} leftovers", subject.close)
            reason = subject.check()
        except SAMPLE_ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            subjects.append(subject)
        else:
            unavailable[name] = reason
    if "docker" not in args.skip:
        try:
            subjects.append(DockerSubject(work, rootfs, cleanup))
        except SAMPLE_ERRORS as exc:
            unavailable["docker"] = f"{type(exc).__name__}: {exc}"
    return subjects, unavailable


def compare(args: argparse.Namespace, subjects: list[Any], unavailable: dict[str, str]) -> None:
    """Interleaved rounds, one sample of each subject per round in a shuffled order."""
    rng = random.Random(args.seed)
    samples: dict[str, list[float]] = {s.name: [] for s in subjects}
    rounds = args.warmup + args.n
    started = time.monotonic()
    for r in range(rounds):
        order = list(subjects)
        rng.shuffle(order)
        for subject in order:
            if subject.name in unavailable:
                continue
            time.sleep(args.gap_ms / 1000)  # let the previous run's after-effects settle
            try:
                ms = subject.sample()
            except SAMPLE_ERRORS as exc:
                unavailable[subject.name] = f"failed in round {r}: {type(exc).__name__}: {exc}"
                note(f"{subject.name}: {unavailable[subject.name]}")
                continue
            if r >= args.warmup:
                samples[subject.name].append(ms)
        if r == args.warmup - 1:
            for subject in subjects:
                if isinstance(subject, NativeSubject):
                    subject.forget_steps()
        if (r + 1) % 10 == 0 or r + 1 == rounds:
            note(f"round {r + 1}/{rounds} ({time.monotonic() - started:.0f} s)")
    results: dict[str, dict[str, Any]] = {}
    notes = {s.name: getattr(s, "notes", {}) for s in subjects}
    for name in SUBJECTS:
        if name in unavailable:
            emit(f"pod_start.{name}", "ms", unavailable=unavailable[name])
        elif samples.get(name):
            results[name] = distribution(samples[name])
            emit(f"pod_start.{name}", "ms", **results[name], **notes.get(name, {}))
    native = results.get("native")
    for peer in ("docker", "runc", "crun"):
        if native and peer in results:
            emit(
                f"pod_start.ratio.{peer}_over_native",
                "x",
                value=round(results[peer]["p50"] / native["p50"], 2),
                p99=round(results[peer]["p99"] / native["p99"], 2),
            )
    for subject in subjects:
        if isinstance(subject, NativeSubject) and subject.name not in unavailable:
            for step, values in subject.steps.items():
                emit(f"pod_start.native.{step}", "ms", **distribution(values))
            emit(
                "pod_start.native.deferred_delete",
                "ms",
                **distribution(subject.deferred),
                note="after remove_pod, untimed: the trash sweep (a helper process)",
            )


def hugetlb_bound() -> bool:
    """Whether hugetlb is a v1 hierarchy in the kernel (mounted now or ever since boot:
    unmounting does not unbind it while processes from before live)."""
    with open("/proc/self/cgroup") as f:
        return any(line.split(":")[1] == "hugetlb" for line in f if line.count(":") >= 2)


def run(args: argparse.Namespace, cleanup: Cleanup) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: namespaces, cgroups and mounts need it")
    started = time.monotonic()
    hugetlb_before = hugetlb_bound()
    work = Path(tempfile.mkdtemp(prefix=f"{TAG}-", dir="/var/tmp"))

    def remove_work() -> None:
        native_rootfs.unmount_below(str(work))
        if args.keep:
            note(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    cleanup.push("work directory", remove_work)
    note(f"work directory {work}")
    try:
        rootfs = build_busybox_rootfs(work / "rootfs")
    except BusyboxMissing as exc:
        raise BenchError(str(exc)) from None
    layout = write_oci_layout(rootfs, work / "layout", ref="busybox:latest")

    subjects, unavailable = make_subjects(args, work, rootfs, layout, cleanup)
    docker = next((s for s in subjects if isinstance(s, DockerSubject)), None)
    emit(
        "pod_start.machine",
        **machine(),
        event_loop=loop_name(),
        runc=tool_version(["runc", "--version"]),
        crun=tool_version(["crun", "--version"]),
        hugetlb_v1_bound_at_start=hugetlb_before,
        dockerd=docker.version if docker else None,
        docker_cli=tool_version([docker.cli, "--version"]) if docker else None,
        n=args.n,
        warmup=args.warmup,
    )
    compare(args, subjects, unavailable)

    if "profile" not in args.skip and "native" not in args.skip and args.profile_n > 0:
        try:
            profiled = ProfiledNative(work, layout, cleanup)
            for _ in range(2 + args.profile_n):
                profiled.sample()
            profiled.report(skip=2)
        except SAMPLE_ERRORS as exc:
            emit("pod_start.native.profile", "ms", unavailable=f"{type(exc).__name__}: {exc}")

    if "cluster" not in args.skip:
        note("starting corral-scheduler and corral-agent")
        cluster = Cluster(work, layout, cleanup)
        time.sleep(2)  # idle: connected, heartbeating, no pods
        idle = cluster.memory()
        cluster.submit_to_running(args.n, args.warmup)
        time.sleep(2)
        after = cluster.memory()
        emit(
            "agent.rss_idle",
            "MiB",
            value=idle["agent_rss"],
            pss=idle["agent_pss"],
            uss=idle["agent_uss"],
            after_start_runs=after["agent_rss"],
        )
        if "forkserver_rss" in idle:
            emit(
                "forkserver.memory_idle",
                "MiB",
                rss=idle["forkserver_rss"],
                pss=idle["forkserver_pss"],
            )
        cluster.hundred_pods(args.pods)
    emit(
        "pod_start.done",
        "s",
        value=round(time.monotonic() - started, 1),
        loadavg=[round(x, 2) for x in os.getloadavg()],
    )


def main(argv: list[str] | None = None) -> int:
    return run_bench(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
