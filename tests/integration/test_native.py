"""The native runtime for real: namespaces, cgroups, overlay roots, monitors, logs, re-adoption.

Runs busybox containers as root on this machine. Every test removes its pods and checks
that nothing of them remains (mounts, cgroups, processes, directories).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.base import RuntimeFailure
from agent.runtime.native import logs, rootfs
from agent.runtime.native.cgroups import CgroupDriver
from agent.runtime.native.images import ImageStore
from agent.runtime.native.monitor import proc_start_time
from agent.runtime.native.runtime import NativeRuntime
from common.models import Pod
from tests.conftest import wait_until
from tests.imagebuild import (
    build_busybox_rootfs,
    check_root_marker,
    symlink,
    write_oci_layout,
)
from tests.nativefixtures import busybox_store, cgroup_driver

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
SEMANTICS_ENV = ("PATH=/bin", "A=image", "B=image")


@pytest.fixture(autouse=True)
def _root_only(request: pytest.FixtureRequest) -> None:
    """Marked tests skip without root (and fail instead under CI=true)."""
    check_root_marker(request)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """An image store with busybox:latest and semantics:1 (ENTRYPOINT, CMD, Env, WorkingDir)."""
    semantics = {
        "entrypoint": ["/bin/echo", "ep"],
        "cmd": ["cmd1"],
        "env": SEMANTICS_ENV,
        "working_dir": "/tmp",
    }
    return busybox_store(tmp_path_factory.mktemp("images"), **{"semantics:1": semantics})


@pytest.fixture(scope="module")
def cgroups() -> Iterator[CgroupDriver]:
    """The machine's cgroup driver, below a parent of this test module's own."""
    with cgroup_driver(f"corral-test-{os.getpid()}") as driver:
        yield driver


Factory = Callable[..., Awaitable[NativeRuntime]]


@pytest.fixture
async def make_runtime(
    tmp_path: Path, images: ImageStore, cgroups: CgroupDriver
) -> AsyncIterator[Factory]:
    """Started NativeRuntimes on tmp_path/state; at the end every pod is removed and checked
    gone."""
    made: list[NativeRuntime] = []

    async def make(**kwargs: Any) -> NativeRuntime:
        runtime = NativeRuntime(tmp_path / "state", images, cgroups, **kwargs)
        await runtime.start()
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        try:
            pods = await runtime.recover()
            for info in pods:
                await runtime.remove_pod(info.uid)
                await assert_pod_gone(runtime, info.uid, [])
        finally:
            await runtime.close()


@pytest.fixture
async def runtime(make_runtime: Factory) -> NativeRuntime:
    """A started NativeRuntime with default settings."""
    return await make_runtime()


def make_pod(name: str, *containers: dict[str, Any], **spec: Any) -> Pod:
    """A pod with a fresh uid; restartPolicy Never unless given."""
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {"restartPolicy": "Never", "containers": list(containers), **spec},
        }
    )


def sh(name: str, script: str, **fields: Any) -> dict[str, Any]:
    """A busybox container running `sh -c script`."""
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **fields}


async def run_pod(runtime: NativeRuntime, pod: Pod) -> None:
    await runtime.create_pod(pod)
    for container in pod.spec.containers:
        await runtime.start_container(pod, container.name)


def log_text(runtime: NativeRuntime, pod: Pod, container: str) -> list[str]:
    return [line.text for line in logs.read_lines(str(runtime.log_path(uid(pod), container)))]


def uid(pod: Pod) -> str:
    assert pod.metadata.uid is not None
    return pod.metadata.uid


def pids_of(runtime: NativeRuntime, pod: Pod) -> list[int]:
    """Monitor and init pids recorded for the pod's containers."""
    pids = []
    for container in pod.spec.containers:
        cdir = runtime.container_dir(uid(pod), container.name)
        for name in ("monitor.pid", "init.pid"):
            try:
                pids.append(json.loads((cdir / name).read_text())["pid"])
            except FileNotFoundError:
                pass
    return pids


def leftovers(runtime: NativeRuntime, pod_uid: str) -> list[str]:
    """Mount points, cgroup dirs, state and log dirs of the pod that still exist."""
    found = [p for p, _ in rootfs.mountinfo() if pod_uid in p]
    found += [d for d in runtime.cgroups.paths(f"pod-{pod_uid}") if os.path.exists(d)]
    found += [str(d) for d in (runtime.pod_dir(pod_uid), runtime.log_dir / pod_uid) if d.exists()]
    return found


def pids_events(runtime: NativeRuntime, *cgroups: str) -> int:
    """Forks refused by a pids limit ("max" in pids.events), summed over `cgroups`: the
    kernel counts them in the limited cgroup or the forking one, depending on version."""
    total = 0
    for cgroup in cgroups:
        for d in runtime.cgroups.paths(cgroup):
            events = Path(d, "pids.events")
            if events.exists():
                total += int(events.read_text().split()[1])
    return total


def pids_peak(runtime: NativeRuntime, cgroup: str) -> int:
    """The most pids the cgroup ever held (pids.peak, Linux 6.1+; 1 if unknown)."""
    for d in runtime.cgroups.paths(cgroup):
        peak = Path(d, "pids.peak")
        if peak.exists():
            return int(peak.read_text())
    return 1


async def assert_pod_gone(runtime: NativeRuntime, pod_uid: str, pids: list[int]) -> None:
    """Nothing of the pod remains: mounts, cgroups, processes, state and log directories."""
    assert leftovers(runtime, pod_uid) == []
    # Exited monitors are re-parented to init, which reaps them a moment later.
    await wait_until(lambda: all(proc_start_time(pid) is None for pid in pids), within=5)


async def remove_and_check(runtime: NativeRuntime, pod: Pod) -> None:
    pids = pids_of(runtime, pod)
    await runtime.remove_pod(uid(pod))
    await assert_pod_gone(runtime, uid(pod), pids)


# --- isolation ---


async def test_container_is_pid1_with_own_hostname_network_and_proc(
    runtime: NativeRuntime,
) -> None:
    """PID 1 in its namespace, hostname = pod name, only `lo` (up), no host processes."""
    script = (
        "echo pid=$$; echo host=$(hostname); echo flags=$(cat /sys/class/net/lo/flags);"
        "echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ');"
        "echo procs=$(ls /proc | grep -c '^[0-9]');"
        "ls -l /proc/1/fd > /tmp/fds; echo leaked=$(grep -c -e socket -e anon_inode /tmp/fds)"
    )
    pod = make_pod("isolated", sh("c", script))
    await run_pod(runtime, pod)
    exit = await asyncio.wait_for(runtime.wait_container(uid(pod), "c"), 10)
    assert (exit.exit_code, exit.reason) == (0, "Completed")
    out = dict(line.split("=", 1) for line in log_text(runtime, pod, "c"))
    assert out["pid"] == "1"
    assert out["host"] == "isolated"
    assert out["ifaces"] == "lo"
    assert int(out["flags"], 16) & 1, "lo is not up"  # IFF_UP
    assert int(out["procs"]) <= 5  # sh, the $(...) subshell, ls, grep: none of the host
    assert out["leaked"] == "0"  # no socket or pidfd of the agent or monitor leaks in
    await remove_and_check(runtime, pod)


async def test_containers_of_a_pod_share_network_but_not_pids(runtime: NativeRuntime) -> None:
    """Two containers: same net/uts/ipc namespaces, each its own PID 1 and mount namespace."""
    script = (
        "for ns in net uts ipc pid mnt; do echo $ns=$(readlink /proc/self/ns/$ns); done;"
        "echo self=$$; exec sleep 60"
    )
    pod = make_pod("shared", sh("a", script), sh("b", script))
    await run_pod(runtime, pod)

    def seen(name: str) -> dict[str, str]:
        lines = log_text(runtime, pod, name)
        return dict(line.split("=", 1) for line in lines) if len(lines) == 6 else {}

    a = await wait_until(lambda: seen("a"), within=10)
    b = await wait_until(lambda: seen("b"), within=10)
    assert a["self"] == b["self"] == "1"
    for ns in ("net", "uts", "ipc"):
        assert a[ns] == b[ns], ns
        assert a[ns] != os.readlink(f"/proc/self/ns/{ns}"), f"{ns} is the host's"
    for ns in ("pid", "mnt"):
        assert a[ns] != b[ns], ns
    await remove_and_check(runtime, pod)


async def test_host_network_pod_shares_the_hosts_network(runtime: NativeRuntime) -> None:
    """hostNetwork: the node's network namespace (and, as in Kubernetes, its hostname),
    but an IPC namespace of the pod's own. (The init made new ones of all three before
    it knew its pod, and goes back to the node's.)"""
    script = "readlink /proc/self/ns/net; readlink /proc/self/ns/uts; readlink /proc/self/ns/ipc"
    pod = make_pod("hostnet", sh("c", script), hostNetwork=True)
    await run_pod(runtime, pod)
    await asyncio.wait_for(runtime.wait_container(uid(pod), "c"), 10)
    net, uts, ipc = log_text(runtime, pod, "c")
    assert net == os.readlink("/proc/self/ns/net")
    assert uts == os.readlink("/proc/self/ns/uts")
    assert ipc != os.readlink("/proc/self/ns/ipc")
    await remove_and_check(runtime, pod)


# --- what runs: command, args, env, workingDir ---


async def test_command_args_env_and_working_dir_semantics(runtime: NativeRuntime) -> None:
    """command overrides ENTRYPOINT, args override CMD, env image-then-pod, workingDir."""
    show = "echo $0 $@ A=$A B=$B C=$C cwd=$(pwd)"
    pod = make_pod(
        "semantics",
        {"name": "defaults", "image": "semantics:1"},
        {"name": "args", "image": "semantics:1", "args": ["x", "y"]},
        {"name": "command", "image": "semantics:1", "command": ["/bin/echo", "c"]},
        {"name": "both", "image": "semantics:1", "command": ["/bin/echo"], "args": ["x"]},
        {
            "name": "env",
            "image": "semantics:1",
            "command": ["sh", "-c", show, "zero", "one"],
            "env": [{"name": "B", "value": "pod"}, {"name": "C", "value": "new"}],
        },
        {
            "name": "workdir",
            "image": "semantics:1",
            "command": ["sh", "-c", "pwd"],
            "workingDir": "/var/new/dir",
        },
    )
    await run_pod(runtime, pod)
    for container in pod.spec.containers:
        exit = await asyncio.wait_for(runtime.wait_container(uid(pod), container.name), 10)
        assert exit.exit_code == 0, (container.name, exit)
    assert log_text(runtime, pod, "defaults") == ["ep cmd1"]
    assert log_text(runtime, pod, "args") == ["ep x y"]
    assert log_text(runtime, pod, "command") == ["c"]  # the image's CMD is dropped
    assert log_text(runtime, pod, "both") == ["x"]
    assert log_text(runtime, pod, "env") == ["zero one A=image B=pod C=new cwd=/tmp"]
    assert log_text(runtime, pod, "workdir") == ["/var/new/dir"]  # created when missing
    await remove_and_check(runtime, pod)


async def test_a_command_that_cannot_run_is_a_start_error(runtime: NativeRuntime) -> None:
    """exec failure: start_container raises StartError; the exit says so too."""
    pod = make_pod("broken", {"name": "c", "image": "busybox", "command": ["/no/such/binary"]})
    await runtime.create_pod(pod)
    with pytest.raises(RuntimeFailure, match="no/such/binary") as info:
        await runtime.start_container(pod, "c")
    assert info.value.reason == "StartError"
    exit = await asyncio.wait_for(runtime.wait_container(uid(pod), "c"), 5)
    assert (exit.exit_code, exit.reason) == (128, "StartError")
    missing = make_pod("missing", {"name": "c", "image": "nowhere:1"})
    await runtime.create_pod(missing)
    with pytest.raises(RuntimeFailure) as info:
        await runtime.start_container(missing, "c")
    assert info.value.reason == "ErrImageNeverPull"
    await remove_and_check(runtime, pod)
    await remove_and_check(runtime, missing)


# --- volumes ---


async def test_volumes_empty_dir_shared_host_path_checked(
    make_runtime: Factory, tmp_path: Path
) -> None:
    """emptyDir is shared by the pod's containers; hostPath only below allowed prefixes."""
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    (allowed / "data" / "greeting").write_text("hi from the host\n")
    (allowed / "escape").symlink_to("/etc")
    runtime = await make_runtime(allowed_host_paths=[str(allowed)])
    volumes = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "host", "hostPath": {"path": str(allowed / "data")}},
    ]
    mounts = [
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "mem", "mountPath": "/mem"},
        {"name": "host", "mountPath": "/host", "readOnly": True},
    ]
    writer = sh(
        "writer",
        "echo shared > /scratch/f; echo inmem > /mem/f; cat /host/greeting;"
        "touch /host/x 2>/dev/null && echo writable || echo readonly",
        volumeMounts=mounts,
    )
    reader = sh("reader", "cat /scratch/f /mem/f", volumeMounts=mounts)
    pod = make_pod("volumes", writer, reader, volumes=volumes)
    await runtime.create_pod(pod)
    await runtime.start_container(pod, "writer")
    await asyncio.wait_for(runtime.wait_container(uid(pod), "writer"), 10)
    assert log_text(runtime, pod, "writer") == ["hi from the host", "readonly"]
    await runtime.start_container(pod, "reader")
    await asyncio.wait_for(runtime.wait_container(uid(pod), "reader"), 10)
    assert log_text(runtime, pod, "reader") == ["shared", "inmem"]

    escape = make_pod(
        "escape",
        sh("c", "true", volumeMounts=[{"name": "h", "mountPath": "/h"}]),
        volumes=[{"name": "h", "hostPath": {"path": str(allowed / "escape")}}],
    )
    await runtime.create_pod(escape)
    with pytest.raises(RuntimeFailure, match="not below an allowed prefix") as info:
        await runtime.start_container(escape, "c")
    assert info.value.reason == "CreateContainerConfigError"
    await remove_and_check(runtime, pod)
    await remove_and_check(runtime, escape)


async def test_an_image_link_into_the_parked_host_root_reaches_nothing_there(
    make_runtime: Factory, images: ImageStore, tmp_path: Path
) -> None:
    """While the volumes were bound the host's tree was parked at /dev/.oldroot: an
    image's `data -> /dev/.oldroot/HOST/PATH` made the init create the volume's
    directories on the host (found by an audit; so did `etc -> ...` with the /etc
    files). The target is resolved inside the container and such a link refused (and
    since the volumes are moved to their targets only after the host's tree is
    detached, it would lead nowhere anyway); the host is untouched."""
    probe = tmp_path / "probe"
    probe.mkdir()
    tree = build_busybox_rootfs(tmp_path / "rootfs")
    link = [symlink("data", f"{rootfs.OLD_ROOT}{probe}")]
    images.import_path(
        write_oci_layout(tree, tmp_path / "linked", ref="linked:1", extra_layers=[link])
    )
    runtime = await make_runtime()
    mounts = [{"name": "v", "mountPath": "/data/made/by/image"}]
    pod = make_pod(
        "linked",
        sh("c", "true", image="linked:1", volumeMounts=mounts),
        volumes=[{"name": "v", "emptyDir": {}}],
    )
    await runtime.create_pod(pod)
    match = re.escape(f"mount target /data/made/by/image resolves into {rootfs.OLD_ROOT}")
    with pytest.raises(RuntimeFailure, match=match) as info:
        await runtime.start_container(pod, "c")
    assert info.value.reason == "StartError"
    assert list(probe.iterdir()) == []
    await remove_and_check(runtime, pod)


def enter_in_child(
    tmp_path: Path,
    lower: Path,
    mounts: list[dict[str, Any]],
    then: Callable[[], dict[str, Any]],
    race: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`rootfs.enter` run for real in a forked child (its own mount namespace, gone when it
    exits) on an overlay over `lower`; what `then()` reports from inside the new root, or
    {"error": ...} if `enter` failed. `race(target)`, if given, runs in the child right
    after each volume target's name check (`in_root`) and before anything is made for
    it: the winning interleaving of a racing container, made deterministic."""
    for d in ("upper", "work", "root"):
        (tmp_path / d).mkdir(parents=True)
    spec = {
        "rootfs": {
            "lower": [str(lower)],
            "upper": str(tmp_path / "upper"),
            "work": str(tmp_path / "work"),
            "target": str(tmp_path / "root"),
        },
        "mounts": mounts,
    }
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read)
            if race is not None:
                check = rootfs.in_root
                targets = {str(m["target"]) for m in mounts}

                def raced(path: str, root: str = "/") -> str:
                    resolved = check(path, root)
                    if path in targets:
                        race(path)
                    return resolved

                rootfs.in_root = raced
            try:
                rootfs.enter(spec)
                found = then()
            except Exception as exc:
                found = {"error": str(exc)}
            os.write(write, json.dumps(found).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    result: dict[str, Any] = json.loads(out)
    return result


def test_a_volume_target_swapped_for_a_link_to_the_host_after_its_check_reaches_nothing(
    tmp_path: Path, busybox_rootfs: Path
) -> None:
    """runc's CVE-2021-30465 race, its winning interleaving: a running container of the
    pod, sharing an emptyDir mounted at /shared, swaps the directory /shared/sub for a
    link `sub -> /dev/.oldroot/HOST/PATH` between the check of the target
    /shared/sub/made/here by name and the mkdir. The init made made/here on the host,
    through the host's tree parked at /dev/.oldroot. Now that tree is detached before
    any target is resolved: the link leads nowhere in the container (the mkdir fails,
    so the start does), and the host is untouched."""
    probe = tmp_path / "probe"  # HOST/PATH
    probe.mkdir()
    shared = tmp_path / "emptydir"
    (shared / "sub").mkdir(parents=True)
    volume = tmp_path / "volume"
    volume.mkdir()
    mounts = [
        {"source": str(shared), "target": "/shared"},
        {"source": str(volume), "target": "/shared/sub/made/here"},
    ]

    def swap(target: str) -> None:
        if target == "/shared/sub/made/here":
            # What the racing container could reach through the link at this moment.
            with open("/reachable", "w") as f:  # in the container's upper dir
                f.write(str(os.path.isdir(f"{rootfs.OLD_ROOT}{probe}")))
            os.rename("/shared/sub", "/shared/was-sub")
            os.symlink(f"{rootfs.OLD_ROOT}{probe}", "/shared/sub")

    def report() -> dict[str, Any]:
        return {"entered": True}

    result = enter_in_child(tmp_path / "c", busybox_rootfs, mounts, report, race=swap)
    assert list(probe.iterdir()) == []  # nothing made on the host
    assert (tmp_path / "c/upper/reachable").read_text() == "False"
    assert result == {"error": "[Errno 2] No such file or directory: '/shared/sub/made'"}
    assert (shared / "sub").is_symlink() and (shared / "was-sub").is_dir()


def test_staged_volumes_land_on_their_targets_and_leave_no_staging_behind(
    tmp_path: Path, busybox_rootfs: Path
) -> None:
    """Volumes are bound on /dev/.mounts/<i> of the container's /dev tmpfs before the
    host's tree is detached, then moved to their targets: in order (a volume below
    another lands in it), read-only where asked, a file on a file, one even over /dev
    (which covers the staging directory: the later moves go through descriptors), and
    neither the staging directory nor /dev/.oldroot is left in the container's /dev."""
    (tmp_path / "outer").mkdir()
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "greeting").write_text("inner\n")
    (tmp_path / "devvol").mkdir()
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    mounts: list[dict[str, Any]] = [
        {"source": str(tmp_path / "outer"), "target": "/data"},
        {"source": str(tmp_path / "inner"), "target": "/data/in/ner", "readonly": True},
        {"source": str(tmp_path / "devvol"), "target": "/dev"},
        {"source": str(tmp_path / "hosts"), "target": "/etc/hosts"},
    ]

    def report() -> dict[str, Any]:
        try:
            with open("/data/in/ner/x", "w"):
                pass
            inner_writable = True
        except OSError:
            inner_writable = False
        with open("/data/in/ner/greeting") as f, open("/etc/hosts") as hosts:
            return {
                "greeting": f.read(),
                "hosts": hosts.read(),
                "inner_writable": inner_writable,
                "dev": sorted(os.listdir("/dev")),
            }

    result = enter_in_child(tmp_path / "c", busybox_rootfs, mounts, report)
    assert result == {
        "greeting": "inner\n",
        "hosts": "127.0.0.1 localhost\n",
        "inner_writable": False,
        "dev": [],  # the volume's (empty) content
    }
    assert sorted(os.listdir(tmp_path / "outer")) == ["in"]  # made in the outer volume
    assert os.listdir(tmp_path / "devvol") == []


def test_a_target_through_a_link_to_the_staging_directory_is_refused(tmp_path: Path) -> None:
    """An image's `data -> /dev/.mounts` with a volume at /data: the volume was moved onto
    the staging directory, and the clean-up after the moves then unlinked the volume's
    files named 0, 1, 2... (on the host, for a hostPath). Refused by name now, and the
    clean-up never looks into a mount."""
    image = tmp_path / "image"
    image.mkdir()
    os.symlink(rootfs.STAGING, image / "data")
    volume = tmp_path / "volume"
    volume.mkdir()
    for name in ("0", "1", "2", "keep"):
        (volume / name).write_text(name)
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    mounts = [
        {"source": str(volume), "target": "/data"},
        {"source": str(tmp_path / "hosts"), "target": "/etc/hosts"},
        {"source": str(tmp_path / "hosts"), "target": "/etc/resolv.conf"},
    ]
    result = enter_in_child(tmp_path / "c", image, mounts, lambda: {"entered": True})
    assert result == {
        "error": f"mount target /data resolves into {rootfs.STAGING}, where corral stages volumes"
    }
    assert sorted(os.listdir(volume)) == ["0", "1", "2", "keep"]


def test_the_staging_directory_is_removed_from_the_containers_dev(
    tmp_path: Path, busybox_rootfs: Path
) -> None:
    """With nothing over /dev, the container's /dev is the devices, links and mounts made
    for it: no staging directory, no parked host root."""
    (tmp_path / "v").mkdir()
    mounts = [{"source": str(tmp_path / "v"), "target": "/dev/shm/v"}]

    def report() -> dict[str, Any]:
        return {"dev": sorted(os.listdir("/dev")), "shm": os.listdir("/dev/shm")}

    result = enter_in_child(tmp_path / "c", busybox_rootfs, mounts, report)
    devices = [name for name, _, _ in rootfs.DEVICES] + [name for name, _ in rootfs.DEV_LINKS]
    assert result == {"dev": sorted([*devices, "pts", "shm", "mqueue"]), "shm": ["v"]}


async def test_a_container_that_made_a_very_deep_tree_starts_again(runtime: NativeRuntime) -> None:
    """A container's upper dir is removed at its restart: one 1,500 directories deep
    (`mkdir d; cd d`, deeper than Python's recursion and past PATH_MAX) made
    shutil.rmtree raise RecursionError, so the container could never start again, and
    the trash sweep stopped at it for good."""
    # Once (a marker in an emptyDir, which outlives the restart): the second run leaves
    # no deep tree behind for the pod's removal and pytest's own clean-up of tmp_path.
    deep = "[ -e /v/made ] && exit 0; touch /v/made; i=0; while [ $i -lt 1500 ]; do "
    deep += "mkdir d && cd d || exit 2; i=$((i+1)); done; exit 1"
    pod = make_pod(
        "deep",
        sh("c", deep, volumeMounts=[{"name": "v", "mountPath": "/v"}]),
        volumes=[{"name": "v", "emptyDir": {}}],
    )
    await runtime.create_pod(pod)
    await runtime.start_container(pod, "c")
    exited = await asyncio.wait_for(runtime.wait_container(uid(pod), "c"), 30)
    assert exited.exit_code == 1  # the tree was made
    await runtime.start_container(pod, "c")  # its upper dir removed first
    again = await asyncio.wait_for(runtime.wait_container(uid(pod), "c"), 30)
    assert again.exit_code == 0
    await remove_and_check(runtime, pod)


# --- limits ---


async def test_memory_hog_is_oom_killed(runtime: NativeRuntime) -> None:
    """A container over its 32Mi memory limit is killed and reported as OOMKilled."""
    hog = sh(
        "hog", "a=0123456789; while :; do a=$a$a; done", resources={"limits": {"memory": "32Mi"}}
    )
    pod = make_pod("oom", hog)
    await run_pod(runtime, pod)
    exit = await asyncio.wait_for(runtime.wait_container(uid(pod), "hog"), 20)
    assert exit.reason == "OOMKilled", exit
    assert (exit.exit_code, exit.signal) == (137, 9)
    await remove_and_check(runtime, pod)


async def test_fork_bomb_is_held_by_the_pids_limit(make_runtime: Factory) -> None:
    """Spawning past the pod's pids limit fails; a fork bomb stays under it and is stopped."""
    runtime = await make_runtime(pids_limit=40)
    spawner = sh("spawner", "i=0; while [ $i -lt 100 ]; do sleep 60 & i=$((i+1)); done; echo $i")
    pod = make_pod("bomb", spawner, sh("bomb", "b(){ b|b& }; b; wait"))
    cgroup = f"pod-{uid(pod)}"
    await runtime.create_pod(pod)
    await runtime.start_container(pod, "spawner")
    exit = await asyncio.wait_for(runtime.wait_container(uid(pod), "spawner"), 10)
    assert exit.exit_code != 0  # the shell gave up when fork failed...
    assert any("can't fork" in line for line in log_text(runtime, pod, "spawner"))
    assert "100" not in log_text(runtime, pod, "spawner")  # ...before its 100th sleep
    assert pids_events(runtime, cgroup, f"{cgroup}/spawner") > 0  # refused by the limit
    await wait_until(  # died with PID 1
        lambda: runtime.cgroups.procs(f"{cgroup}/spawner") == [], within=10
    )

    await runtime.start_container(pod, "bomb")
    try:  # the bomb may burn out against the limit, or keep pushing: then we stop it
        await asyncio.wait_for(runtime.wait_container(uid(pod), "bomb"), 3)
    except TimeoutError:
        started = time.monotonic()
        stopped = await runtime.stop_container(uid(pod), "bomb", 0)
        assert stopped is not None and stopped.exit_code == 137
        assert time.monotonic() - started < 5
    assert runtime.cgroups.procs(cgroup) == []
    assert 0 < pids_peak(runtime, cgroup) <= 40
    await remove_and_check(runtime, pod)


async def test_cpu_limit_holds_a_burner_to_half_a_core(runtime: NativeRuntime) -> None:
    """A busy loop under a 500m limit gets about half a core (CFS quota)."""
    pod = make_pod("cpu", sh("burn", "while :; do :; done", resources={"limits": {"cpu": "500m"}}))
    await run_pod(runtime, pod)
    cgroup = f"pod-{uid(pod)}/burn"
    await wait_until(lambda: runtime.cgroups.stats(cgroup).cpu_usage_ns > 50_000_000, within=10)
    before, t0 = runtime.cgroups.stats(cgroup).cpu_usage_ns, time.monotonic()
    await asyncio.sleep(2.0)  # the measurement window, not a wait for a condition
    after, t1 = runtime.cgroups.stats(cgroup).cpu_usage_ns, time.monotonic()
    cores = (after - before) / 1e9 / (t1 - t0)
    print(f"\ncpu burner under a 500m limit used {cores:.2f} cores")
    assert 0.3 <= cores <= 0.7
    await remove_and_check(runtime, pod)


# --- logs ---


async def test_logs_have_timestamps_and_rotate(make_runtime: Factory) -> None:
    """stdout and stderr in CRI format; files rotate at the size limit, keeping max files."""
    runtime = await make_runtime(log_max_bytes=4096, log_max_files=3)
    script = "i=0; while [ $i -lt 300 ]; do echo out-$i; i=$((i+1)); done; echo err >&2"
    pod = make_pod("logs", sh("c", script))
    await run_pod(runtime, pod)
    await asyncio.wait_for(runtime.wait_container(uid(pod), "c"), 10)
    path = runtime.log_path(uid(pod), "c")
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["c.log", "c.log.1", "c.log.2"]
    assert all((path.parent / n).stat().st_size <= 4096 for n in names)
    lines = logs.read_lines(str(path))
    assert lines[-1].stream == "stderr" and lines[-1].text == "err"
    numbers = [int(line.text[4:]) for line in lines[:-1]]
    assert numbers == list(range(numbers[0], 300)) and numbers[0] > 0  # oldest dropped
    first = path.read_text().splitlines()[0]
    stamp, stream, tag, _ = first.split(" ", 3)
    assert (stream, tag) == ("stdout", "F")
    assert stamp.endswith("Z") and len(stamp.split(".")[1]) == 10  # 9 digits + Z
    await remove_and_check(runtime, pod)


# --- stopping ---


async def test_graceful_stop_and_kill_after_grace(runtime: NativeRuntime) -> None:
    """A TERM-trapping container exits with its code in ~1 s; one ignoring TERM is killed."""
    polite = sh("polite", "trap 'sleep 1; exit 3' TERM; echo ready; while :; do sleep 0.1; done")
    stubborn = sh("stubborn", "trap '' TERM; echo ready; while :; do sleep 0.1; done")
    pod = make_pod("stop", polite, stubborn)
    await run_pod(runtime, pod)
    await wait_until(lambda: log_text(runtime, pod, "polite") == ["ready"], within=10)
    await wait_until(lambda: log_text(runtime, pod, "stubborn") == ["ready"], within=10)

    started = time.monotonic()
    exit = await runtime.stop_container(uid(pod), "polite", 10)
    took = time.monotonic() - started
    assert exit is not None and (exit.exit_code, exit.reason) == (3, "Error")
    assert 0.9 <= took < 3, took

    started = time.monotonic()
    exit = await runtime.stop_container(uid(pod), "stubborn", 1)
    took = time.monotonic() - started
    assert exit is not None and (exit.exit_code, exit.signal) == (137, 9)
    assert 1.0 <= took < 3, took
    # Stopping again reports the same exit.
    again = await runtime.stop_container(uid(pod), "stubborn", 1)
    assert again is not None and again.exit_code == 137
    await remove_and_check(runtime, pod)


# --- surviving the agent ---

CHILD = """
import asyncio, json, sys
from pathlib import Path
from agent.runtime.native.cgroups import probe
from agent.runtime.native.images import ImageStore
from agent.runtime.native.runtime import NativeRuntime
from common.models import Pod

state, images, parent, mode = sys.argv[1:5]

async def main():
    runtime = NativeRuntime(Path(state), ImageStore(images), probe(parent))
    await runtime.start()
    if mode == "start":
        for doc in json.loads(sys.stdin.readline()):
            pod = Pod.model_validate(doc)
            await runtime.create_pod(pod)
            for c in pod.spec.containers:
                await runtime.start_container(pod, c.name)
        print(json.dumps({"forkserver": runtime.forkserver_pid}), flush=True)
        sys.stdin.readline()  # wait here to be killed
    else:
        out = {}
        for info in await runtime.recover():
            for name, c in info.containers.items():
                out[f"{info.uid}/{name}"] = {
                    "state": c.state, "pid": c.pid,
                    "exit_code": c.exit.exit_code if c.exit else None,
                }
        print(json.dumps(out), flush=True)
        await runtime.close()

asyncio.run(main())
"""


def _child(runtime: NativeRuntime, images: ImageStore, mode: str) -> subprocess.Popen[str]:
    args = [str(runtime.state_dir), str(images.root), runtime.cgroups.parent, mode]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def test_containers_survive_kill_9_of_the_runtime(
    runtime: NativeRuntime, images: ImageStore
) -> None:
    """kill -9 of the process running the runtime (and of its fork server) kills no
    container; a new runtime re-adopts the running one and learns the exit of the other."""
    sleeper = make_pod("sleeper", {"name": "c", "image": "busybox", "command": ["sleep", "600"]})
    short = make_pod("short", sh("c", "sleep 2; exit 7"))
    first = _child(runtime, images, "start")
    assert first.stdin is not None and first.stdout is not None
    first.stdin.write(json.dumps([sleeper.to_dict(), short.to_dict()]) + "\n")
    first.stdin.flush()
    ready = json.loads(await asyncio.wait_for(asyncio.to_thread(first.stdout.readline), 30))
    init = json.loads((runtime.container_dir(uid(sleeper), "c") / "init.pid").read_text())
    first.kill()
    first.wait()
    with_server = ready["forkserver"]
    await wait_until(lambda: proc_start_time(with_server) is None, within=5)  # it left on EOF
    assert proc_start_time(init["pid"]) == init["start"], "the container died with the runtime"
    # The short one exits while no runtime runs; its monitor records the exit.
    exit_file = runtime.container_dir(uid(short), "c") / "exit.json"
    await wait_until(exit_file.exists, within=10)

    second = _child(runtime, images, "recover")
    out, _ = await asyncio.to_thread(second.communicate, "", 30)
    found = json.loads(out)
    assert found[f"{uid(sleeper)}/c"] == {"state": "running", "pid": init["pid"], "exit_code": None}
    assert found[f"{uid(short)}/c"] == {"state": "exited", "pid": None, "exit_code": 7}

    # This process's runtime adopts them too: it can wait for and stop the sleeper.
    infos = {info.uid: info for info in await runtime.recover()}
    assert infos[uid(sleeper)].containers["c"].state == "running"
    waiter = asyncio.create_task(runtime.wait_container(uid(sleeper), "c"))
    exit = await runtime.stop_container(uid(sleeper), "c", 0.5)
    assert exit is not None and exit.exit_code == 137
    assert (await asyncio.wait_for(waiter, 5)).exit_code == 137
    await remove_and_check(runtime, sleeper)
    await remove_and_check(runtime, short)


async def test_a_dead_fork_server_is_restarted(runtime: NativeRuntime) -> None:
    """kill -9 of the fork server: running monitors carry on, the next start forks a new one."""
    pod = make_pod("phoenix", sh("a", "exec sleep 60"), sh("b", "echo again"))
    await runtime.create_pod(pod)
    await runtime.start_container(pod, "a")
    old = runtime.forkserver_pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    await runtime.start_container(pod, "b")
    assert runtime.forkserver_pid not in (None, old)
    exit = await asyncio.wait_for(runtime.wait_container(uid(pod), "b"), 10)
    assert exit.exit_code == 0 and log_text(runtime, pod, "b") == ["again"]
    infos = {info.uid: info for info in await runtime.recover()}
    assert infos[uid(pod)].containers["a"].state == "running"
    await remove_and_check(runtime, pod)


async def test_monitor_killed_reports_monitor_lost(runtime: NativeRuntime) -> None:
    """A monitor that dies takes its container with it; the exit is 137 "monitor lost"."""
    pod = make_pod("orphan", {"name": "c", "image": "busybox", "command": ["sleep", "600"]})
    await run_pod(runtime, pod)
    cdir = runtime.container_dir(uid(pod), "c")
    monitor = json.loads((cdir / "monitor.pid").read_text())
    init = json.loads((cdir / "init.pid").read_text())
    os.kill(monitor["pid"], signal.SIGKILL)
    exit = await asyncio.wait_for(runtime.wait_container(uid(pod), "c"), 5)
    assert (exit.exit_code, exit.reason, exit.message) == (137, "Error", "monitor lost")
    await wait_until(lambda: proc_start_time(init["pid"]) is None, within=5)  # PDEATHSIG
    await remove_and_check(runtime, pod)


# --- measurements (printed, not asserted) ---


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


async def test_measure_start_latency_and_monitor_pss(runtime: NativeRuntime) -> None:
    """Prints the end-to-end latency of a `sh -c 'exit 0'` container and monitors' PSS."""
    latencies = []
    for i in range(10):
        pod = make_pod(f"quick-{i}", sh("c", "exit 0"))
        started = time.monotonic()
        await run_pod(runtime, pod)
        exit = await runtime.wait_container(uid(pod), "c")
        latencies.append((time.monotonic() - started) * 1000)
        assert exit.exit_code == 0
        await runtime.remove_pod(uid(pod))
    sleepers = [make_pod(f"idle-{i}", sh("c", "exec sleep 60")) for i in range(5)]
    for pod in sleepers:
        await run_pod(runtime, pod)
    monitors = [
        json.loads((runtime.container_dir(uid(p), "c") / "monitor.pid").read_text())["pid"]
        for p in sleepers
    ]
    pss = [_pss_kb(pid) for pid in monitors]
    print(
        f"\nstart latency (create_pod + start + exit of sh -c 'exit 0'): "
        f"p50 {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms; "
        f"monitor PSS with {len(monitors)} monitors: {statistics.median(pss)} kB "
        f"(fork server {_pss_kb(runtime.forkserver_pid or 0)} kB)"
    )
    for pod in sleepers:
        await remove_and_check(runtime, pod)
