"""The cgroup drivers against the real kernel: limits, processes, OOM kills, pids, kill, removal.

v1 tests use the machine's v1 controllers (plus the hybrid cgroup2 at
/sys/fs/cgroup/unified); v2 tracking and killing run on a cgroup2 hierarchy, the
controller-less one on the development machines. Every test works below its own
parent ``corral-test-<uuid>``, removed afterwards even when the test fails.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.runtime.native.cgroups import (
    CgroupDriver,
    CgroupError,
    Limits,
    V1Driver,
    V2Driver,
    probe,
    read_mounts,
)
from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.root

CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED = "/sys/fs/cgroup/unified"
MI = 2**20

Spawn = Callable[..., "subprocess.Popen[str]"]


def _need(ok: bool, why: str) -> None:
    """Skip when a requirement is missing, except in CI, where these tests must run."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI=true, so root tests must run rather than skip")
    pytest.skip(why)


def _pure_v2() -> bool:
    """Whether this machine's cgroup root is cgroup2 with the controllers (no v1 to test)."""
    try:
        return isinstance(probe("corral-probe", root=CGROUP_ROOT), V2Driver)
    except CgroupError:
        return False


def _teardown(driver: CgroupDriver) -> None:
    driver.kill("")
    driver.remove("")
    assert not any(os.path.exists(p) for p in driver.paths(""))


@pytest.fixture
def v1() -> Iterator[V1Driver]:
    """A v1 driver (with the unified hierarchy when mounted) below a unique parent."""
    _need(os.geteuid() == 0, "needs root")
    if _pure_v2():
        pytest.skip("pure cgroup2 machine: no v1 controllers (the v2 tests cover it)")
    driver = V1Driver.from_mounts(read_mounts(), f"corral-test-{uuid.uuid4().hex[:8]}")
    try:
        yield driver
    finally:
        _teardown(driver)


@pytest.fixture
def v2() -> Iterator[V2Driver]:
    """A v2 driver on the hybrid cgroup2 mount, or on the cgroup2 root where that is all."""
    _need(os.geteuid() == 0, "needs root")
    mounts = {m.mount_point: m.fstype for m in read_mounts()}
    root = UNIFIED if mounts.get(UNIFIED) == "cgroup2" else CGROUP_ROOT
    _need(mounts.get(root) == "cgroup2", f"no cgroup2 hierarchy at {UNIFIED} or {CGROUP_ROOT}")
    driver = V2Driver(root=root, parent=f"corral-test-{uuid.uuid4().hex[:8]}")
    try:
        yield driver
    finally:
        _teardown(driver)


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start processes with pipes for stdin/stdout; any still running are killed afterwards."""
    started: list[subprocess.Popen[str]] = []

    def _spawn(*argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _go(proc: subprocess.Popen[str]) -> None:
    """Open the gate: the child waits for a line on stdin after being put in its cgroup."""
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _readline(proc: subprocess.Popen[str], timeout: float = 5.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output from {proc.args!r} within {timeout}s"
    return proc.stdout.readline().strip()


def _python(code: str) -> tuple[str, ...]:
    """argv for a Python child that waits at the gate, then runs `code`."""
    return (sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + code)


# A shell that waits at the gate, then builds a small tree: two sleeps and a subshell
# with its own sleep, all of which must die with the cgroup.
TREE = ("sh", "-c", 'read x; sleep 60 & sleep 60 & sh -c "sleep 60 & wait" & wait')


def _read(directory: str, name: str) -> str:
    return Path(directory, name).read_text().strip()


# --- v1 ---


def test_probe_returns_the_v1_driver_here() -> None:
    """On a v1 machine probe() picks v1 and also uses the hybrid unified hierarchy."""
    _need(os.geteuid() == 0, "needs root")
    if _pure_v2():
        pytest.skip("pure cgroup2 machine")
    driver = probe("corral-probe")
    assert isinstance(driver, V1Driver) and driver.version == 1
    mounts = {m.mount_point: m.fstype for m in read_mounts()}
    if mounts.get(UNIFIED) == "cgroup2":
        assert driver.unified == UNIFIED


def test_v1_nested_limits_are_written(v1: V1Driver) -> None:
    """Limits land in cpu, memory and pids files of a nested cgroup; None resets them."""
    v1.create("pod-a", Limits(cpu_limit_millis=1000))
    v1.create("pod-a/app", Limits(500, 250, 64 * MI, 10))
    v1.create("pod-a/app")  # idempotent, keeps the limits
    cpu, memory, pids = (v1._ctl(c, "pod-a/app") for c in ("cpu", "memory", "pids"))
    assert _read(cpu, "cpu.cfs_quota_us") == "50000"
    assert _read(cpu, "cpu.cfs_period_us") == "100000"
    assert _read(cpu, "cpu.shares") == "256"
    assert _read(memory, "memory.limit_in_bytes") == str(64 * MI)
    if os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes")):
        assert _read(memory, "memory.memsw.limit_in_bytes") == str(64 * MI)
    assert _read(memory, "memory.swappiness") == "0"
    assert _read(pids, "pids.max") == "10"
    assert _read(v1._ctl("cpu", "pod-a"), "cpu.cfs_quota_us") == "100000"
    assert v1.child_paths() == ["pod-a"] and v1.child_paths("pod-a") == ["pod-a/app"]

    v1.set_limits("pod-a/app", Limits(memory_limit_bytes=32 * MI))  # lower, then raise:
    v1.set_limits("pod-a/app", Limits(memory_limit_bytes=128 * MI))  # memsw order matters
    assert _read(memory, "memory.limit_in_bytes") == str(128 * MI)
    assert _read(cpu, "cpu.cfs_quota_us") == "-1"
    assert _read(cpu, "cpu.shares") == "1024"
    assert _read(pids, "pids.max") == "max"


def test_v1_procs_and_stats(v1: V1Driver, spawn: Spawn) -> None:
    """A process in a container cgroup is listed for the pod; its CPU and memory are counted."""
    v1.create("pod-a/app")
    burner = spawn(
        *_python(
            "import time\n"
            "data = b'x' * (16 * 2**20)\n"
            "start = time.process_time()\n"
            "while time.process_time() - start < 0.2: pass\n"
            "print('done', flush=True)\n"
            "sys.stdin.readline()\n"
        )
    )
    v1.add_process("pod-a/app", burner.pid)
    assert v1.procs("pod-a") == v1.procs("pod-a/app") == [burner.pid]
    _go(burner)
    assert _readline(burner) == "done"
    stats = v1.stats("pod-a")
    assert stats.cpu_usage_ns >= 150_000_000
    assert 16 * MI <= stats.memory_bytes < 512 * MI
    assert stats.pids == 1 and stats.oom_kills == 0


def test_v1_memory_hog_is_oom_killed(v1: V1Driver, spawn: Spawn) -> None:
    """Allocating 200Mi under a 32Mi limit gets SIGKILLed and counted as an OOM kill."""
    v1.create("pod-a/hog", Limits(memory_limit_bytes=32 * MI))
    hog = spawn(*_python("data = b'x' * (200 * 2**20)\nprint('survived', flush=True)"))
    v1.add_process("pod-a/hog", hog.pid)
    assert v1.oom_kills("pod-a/hog") == 0
    _go(hog)
    assert hog.wait(timeout=10) == -signal.SIGKILL
    assert v1.oom_kills("pod-a/hog") == 1
    assert v1.oom_kills("pod-a") == 1  # counted for the pod too, as on v2
    assert v1.stats("pod-a/hog").oom_kills == 1


def test_v1_pids_limit_stops_forks(v1: V1Driver, spawn: Spawn) -> None:
    """With pids.max=10 the tenth fork fails with EAGAIN; kill() then clears all of them."""
    v1.create("pod-a/forker", Limits(pids_limit=10))
    forker = spawn(
        *_python(
            "import os, time\n"
            "made, err = 0, 0\n"
            "try:\n"
            "    for _ in range(20):\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(60)\n"
            "            os._exit(0)\n"
            "        made += 1\n"
            "except OSError as exc:\n"
            "    err = exc.errno\n"
            "print(made, err, flush=True)\n"
            "sys.stdin.readline()\n"
        )
    )
    v1.add_process("pod-a/forker", forker.pid)
    _go(forker)
    assert _readline(forker) == "9 11"  # itself + 9 children = 10; errno 11 is EAGAIN
    assert len(v1.procs("pod-a")) == 10 == v1.stats("pod-a/forker").pids
    v1.kill("pod-a")
    assert v1.procs("pod-a") == []
    assert forker.wait(timeout=5) == -signal.SIGKILL


def _kill_tree_and_remove(driver: CgroupDriver, spawn: Spawn) -> None:
    """A process tree is killed by kill(); remove() refuses before and succeeds after."""
    driver.create("pod-a/app")
    driver.create("pod-a/side")
    shell, sleeper = spawn(*TREE), spawn("sleep", "60")
    driver.add_process("pod-a/app", shell.pid)
    driver.add_process("pod-a/side", sleeper.pid)
    _go(shell)
    wait_for(lambda: len(driver.procs("pod-a")) == 6, timeout=5)  # sh, 2 sleep, sh, sleep + 1

    with pytest.raises(CgroupError, match="processes"):
        driver.remove("pod-a")
    assert driver.exists("pod-a/app")

    driver.kill("pod-a", timeout=5)
    assert driver.procs("pod-a") == []
    assert shell.wait(timeout=5) == sleeper.wait(timeout=5) == -signal.SIGKILL
    driver.remove("pod-a")
    assert not driver.exists("pod-a")
    assert not any(os.path.exists(p) for p in driver.paths("pod-a") + driver.paths("pod-a/app"))
    driver.remove("pod-a")  # idempotent
    driver.kill("pod-a")
    assert driver.child_paths() == []


def _spy_freezer(driver: V1Driver | V2Driver, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the driver's freeze and thaw calls (which still do their real work)."""
    calls: list[str] = []
    freeze, thaw = driver._freeze, driver._thaw

    def _freeze(rel: str, until: float) -> bool:
        frozen = freeze(rel, until)
        calls.append(f"freeze {rel}" if frozen else f"no freezer for {rel}")
        return frozen

    def _thaw(rel: str) -> None:
        thaw(rel)
        calls.append(f"thaw {rel}")

    monkeypatch.setattr(driver, "_freeze", _freeze)
    monkeypatch.setattr(driver, "_thaw", _thaw)
    return calls


def _forbid_slow_kill(driver: V1Driver | V2Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the freeze-and-kill-by-pid fallback fail the test, to prove cgroup.kill sufficed."""
    driver.create("pod-a")
    _need(driver._kill_file("pod-a") is not None, "no cgroup.kill (Linux < 5.14?)")

    def _slow(rel: str, deadline: float) -> None:
        raise AssertionError(f"fallback used for {rel}: cgroup.kill missed a process")

    monkeypatch.setattr(driver, "_kill_frozen", _slow)


def test_v1_kill_tree_and_remove(
    v1: V1Driver, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill() through the hybrid cgroup.kill empties every hierarchy; remove() leaves nothing."""
    _need(v1.unified is not None, f"no cgroup2 hierarchy at {UNIFIED}")
    _forbid_slow_kill(v1, monkeypatch)
    _kill_tree_and_remove(v1, spawn)


def test_v1_kill_with_the_freezer_only(
    v1: V1Driver, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a cgroup2 hierarchy, kill() freezes, SIGKILLs every pid and thaws."""
    mounts = dict(v1.mounts)
    _need("freezer" in mounts, "the v1 freezer is not mounted")
    freezer_only = V1Driver(mounts, v1.parent)  # same cgroups, no unified hierarchy
    calls = _spy_freezer(freezer_only, monkeypatch)
    _kill_tree_and_remove(freezer_only, spawn)
    assert calls[:2] == ["freeze pod-a", "thaw pod-a"]


# --- v2 (the controller-less hierarchy on v1 machines) ---


def test_v2_tracks_kills_and_removes(
    v2: V2Driver, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes in nested cgroup2 groups are listed, killed via cgroup.kill, then removed."""
    _forbid_slow_kill(v2, monkeypatch)
    _kill_tree_and_remove(v2, spawn)


def test_v2_kill_falls_back_to_freezing(
    v2: V2Driver, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On kernels without cgroup.kill the driver freezes, kills by pid and thaws."""
    monkeypatch.setattr(v2, "_kill_file", lambda rel: None)
    calls = _spy_freezer(v2, monkeypatch)
    _kill_tree_and_remove(v2, spawn)
    assert calls[:2] == ["freeze pod-a", "thaw pod-a"]


def test_v2_add_process_zero_moves_the_caller(v2: V2Driver, spawn: Spawn) -> None:
    """add_process(path, 0) moves the calling process itself."""
    v2.create("pod-a/app")
    child = spawn(
        *_python(
            "from agent.runtime.native.cgroups import V2Driver\n"
            f"V2Driver(root={v2.root!r}, parent={v2.parent!r}).add_process('pod-a/app', 0)\n"
            "print('moved', flush=True)\n"
            "sys.stdin.readline()\n"
        )
    )
    _go(child)
    assert _readline(child) == "moved"
    assert v2.procs("pod-a") == [child.pid]
    stats = v2.stats("pod-a")
    assert stats.pids == 1 and stats.cpu_usage_ns > 0


def test_v2_refuses_limits_without_controllers(v2: V2Driver) -> None:
    """set_limits names the controller the hierarchy lacks instead of ignoring the limit."""
    v2.create("pod-a")
    available = _read(v2.paths("pod-a")[0], "cgroup.controllers").split()
    if {"cpu", "memory", "pids"} <= set(available):
        pytest.skip("this cgroup2 hierarchy has the controllers")
    for limits, name in (
        (Limits(memory_limit_bytes=32 * MI), "memory"),
        (Limits(cpu_limit_millis=500), "cpu"),
        (Limits(pids_limit=10), "pids"),
    ):
        if name not in available:
            with pytest.raises(CgroupError, match=f"the {name} controller"):
                v2.set_limits("pod-a", limits)
            with pytest.raises(CgroupError, match=f"the {name} controller"):
                v2.create("pod-b", limits)
    v2.set_limits("pod-a", Limits())  # no limit asked for, nothing to refuse


def test_v2_limits_are_written_where_controllers_exist(v2: V2Driver) -> None:
    """On a cgroup2 root with cpu, memory and pids the limit files read back as written."""
    available = set(_read(v2.root, "cgroup.controllers").split())
    if not {"cpu", "memory", "pids"} <= available:
        pytest.skip("this cgroup2 hierarchy has no cpu/memory/pids controllers")
    v2.create("pod-a/app", Limits(500, 250, 64 * MI, 10))
    d = v2.paths("pod-a/app")[0]
    assert _read(d, "cpu.max") == "50000 100000"
    assert _read(d, "cpu.weight") == "10"
    assert _read(d, "memory.max") == str(64 * MI)
    assert _read(d, "pids.max") == "10"
    if os.path.exists(os.path.join(d, "memory.swap.max")):
        assert _read(d, "memory.swap.max") == "0"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_prime_attach_leaves_the_caller_where_it_is(
    version: str, request: pytest.FixtureRequest
) -> None:
    """The priming write is a move of the caller into its own cgroup: nothing changes."""
    driver: CgroupDriver = request.getfixturevalue(version)
    before = Path("/proc/self/cgroup").read_text()
    driver.prime_attach()
    assert Path("/proc/self/cgroup").read_text() == before
    procs = driver._own_procs  # type: ignore[attr-defined]
    assert procs is not None and str(os.getpid()) in Path(procs).read_text().split()


def test_prime_attach_never_raises(v1: V1Driver) -> None:
    """It is an optimization: a cgroup it cannot write to is no error."""
    v1._own_procs = "/sys/fs/cgroup/pids/corral-no-such-cgroup/cgroup.procs"
    v1.prime_attach()
