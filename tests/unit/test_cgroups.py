"""Cgroup driver logic that needs no root: formulas, mountinfo, own_cgroup, probe, v2 formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.runtime.native.cgroups import (
    CgroupError,
    Limits,
    V1Driver,
    V2Driver,
    cfs_quota_us,
    cpu_shares,
    cpu_weight,
    own_cgroup,
    probe,
    read_mounts,
)

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

CO_MOUNTED = """\
25 22 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs ro,mode=755
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw shared:10 - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/pids rw shared:11 - cgroup cgroup rw,pids
"""


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_cpu_formulas_match_kubernetes() -> None:
    """Quota per 100 ms period, shares and weight follow the kubelet's formulas and bounds."""
    assert cfs_quota_us(500) == 50_000
    assert cfs_quota_us(2000) == 200_000
    assert cfs_quota_us(1) == 1_000  # the kernel's minimum
    assert cpu_shares(1000) == 1024
    assert cpu_shares(250) == 256
    assert cpu_shares(1) == 2
    assert cpu_shares(10**6) == 262_144
    assert cpu_weight(2) == 1
    assert cpu_weight(1024) == 39
    assert cpu_weight(262_144) == 10_000


def test_read_mounts_parses_cgroup_lines(tmp_path: Path) -> None:
    """Only cgroup and cgroup2 mounts are returned, with their controllers and escaped paths."""
    text = HYBRID + "50 31 0:40 /sub /mnt/my\\040cg rw - cgroup2 cgroup2 rw,nsdelegate\n"
    mounts = read_mounts(_file(tmp_path, "mountinfo", text))
    assert [m.mount_point for m in mounts][:2] == ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct"]
    assert "tmpfs" not in {m.fstype for m in mounts}
    assert "name=systemd" in mounts[5].options
    assert (mounts[-1].mount_point, mounts[-1].root) == ("/mnt/my cg", "/sub")


def test_own_cgroup_reads_proc_self_cgroup(tmp_path: Path) -> None:
    """own_cgroup finds v1 controllers in co-mounted lines and the cgroup2 line, without '/'."""
    cgroup = _file(
        tmp_path,
        "cgroup",
        "5:cpu,cpuacct:/system.slice/corral-agent.service\n"
        "4:memory:/system.slice/corral-agent.service\n"
        "1:name=systemd:/system.slice/corral-agent.service\n"
        "0::/system.slice/corral-agent.service\n",
    )
    mountinfo = _file(tmp_path, "mountinfo", CO_MOUNTED)
    for hierarchy in ("", "unified", "cpuacct", "memory", "name=systemd"):
        got = own_cgroup(hierarchy, proc_cgroup=cgroup, mountinfo=mountinfo)
        assert got == "system.slice/corral-agent.service"
    with pytest.raises(CgroupError, match="pids"):
        own_cgroup("pids", proc_cgroup=cgroup, mountinfo=mountinfo)


def test_own_cgroup_strips_a_bind_mounted_subtree(tmp_path: Path) -> None:
    """Inside a container whose cgroupfs shows only its subtree, the path is below the mount."""
    cgroup = _file(tmp_path, "cgroup", "0::/docker/abc/agent\n")
    mountinfo = _file(
        tmp_path, "mountinfo", "30 20 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    )
    assert own_cgroup(proc_cgroup=cgroup, mountinfo=mountinfo) == "agent"


def test_probe_picks_v1_with_the_unified_hierarchy(tmp_path: Path) -> None:
    """Hybrid mounts give the v1 driver, tracking through the controller-less cgroup2."""
    driver = probe("corral", mountinfo=_file(tmp_path, "mountinfo", HYBRID))
    assert isinstance(driver, V1Driver) and driver.version == 1
    assert driver.unified == "/sys/fs/cgroup/unified"
    assert driver.paths("pod-a") == [
        f"/sys/fs/cgroup/{h}/corral/pod-a"
        for h in ("cpu", "cpuacct", "memory", "pids", "freezer", "unified")
    ]


def test_probe_handles_co_mounted_cpu_cpuacct(tmp_path: Path) -> None:
    """cpu and cpuacct in one hierarchy make one directory per cgroup, not two."""
    driver = probe("corral", mountinfo=_file(tmp_path, "mountinfo", CO_MOUNTED))
    assert isinstance(driver, V1Driver) and driver.unified is None
    assert driver.mounts["cpu"] == driver.mounts["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert len(driver.paths("p")) == 3


def _fake_v2_root(tmp_path: Path, controllers: str) -> Path:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    return root


def test_probe_picks_v2_when_the_controllers_are_there(tmp_path: Path) -> None:
    """A cgroup2 root offering cpu, memory and pids gives the v2 driver."""
    root = _fake_v2_root(tmp_path, "cpuset cpu io memory pids")
    mountinfo = _file(tmp_path, "mountinfo", f"30 20 0:26 / {root} rw - cgroup2 cgroup2 rw\n")
    driver = probe("corral", root=str(root), mountinfo=mountinfo)
    assert isinstance(driver, V2Driver) and driver.version == 2
    assert driver.paths("") == [f"{root}/corral"]


def test_probe_names_what_is_missing(tmp_path: Path) -> None:
    """Neither a usable cgroup2 nor v1: the error names the missing controllers of both."""
    root = _fake_v2_root(tmp_path, "cpu io")
    mountinfo = _file(tmp_path, "mountinfo", f"30 20 0:26 / {root} rw - cgroup2 cgroup2 rw\n")
    with pytest.raises(CgroupError, match=r"memory, pids controller.*cpu, cpuacct, memory, pids"):
        probe("corral", root=str(root), mountinfo=mountinfo)


def test_paths_must_stay_below_the_parent() -> None:
    """Absolute paths, '..' and an empty parent are refused before touching the filesystem."""
    driver = V2Driver(root="/nonexistent", parent="/corral/")
    assert driver.parent == "corral"
    for bad in ("/etc", "pod/../..", "./x"):
        with pytest.raises(CgroupError):
            driver.paths(bad)
    with pytest.raises(CgroupError, match="parent"):
        V2Driver(root="/nonexistent", parent="/")
    with pytest.raises(CgroupError, match="cpuacct, pids"):
        V1Driver({"cpu": "/a", "memory": "/b"})


def test_v2_limit_files_on_a_fake_tree(tmp_path: Path) -> None:
    """The v2 driver enables controllers down the tree and writes the kernel's formats.

    cgroupfs is faked with plain files (the real v2 controllers are not available on
    the v1 development machines; tests/integration covers them where they are).
    """
    root = _fake_v2_root(tmp_path, "cpu memory pids")
    (root / "cgroup.subtree_control").write_text("\n")
    for sub in ("corral", "corral/pod"):
        (root / sub).mkdir()
        (root / sub / "cgroup.controllers").write_text("cpu memory pids\n")
        (root / sub / "cgroup.subtree_control").write_text("cpu memory pids\n")
    pod = root / "corral" / "pod"
    (pod / "memory.swap.max").write_text("max\n")
    driver = V2Driver(root=str(root), parent="corral")

    driver.create("pod", Limits(500, 250, 64 * 2**20, 10))
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    files = ("cpu.max", "cpu.weight", "memory.max", "memory.swap.max", "pids.max")
    assert [(pod / f).read_text() for f in files] == ["50000 100000", "10", "67108864", "0", "10"]

    driver.set_limits("pod", Limits())  # None resets to the kernel defaults
    assert [(pod / f).read_text() for f in files] == ["max 100000", "100", "max", "max", "max"]

    (pod / "cgroup.controllers").write_text("cpu\n")
    with pytest.raises(CgroupError, match="memory, pids controller"):
        driver.set_limits("pod", Limits(cpu_limit_millis=100, memory_limit_bytes=1, pids_limit=1))
    assert (pod / "cpu.max").read_text() == "max 100000"  # refused before writing anything
    with pytest.raises(CgroupError, match="must be positive"):
        driver.set_limits("pod", Limits(cpu_limit_millis=0))
