"""The native runtime's pure parts: command/env/limits resolution, host paths, overlay data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.runtime.native import rootfs
from agent.runtime.native.cgroups import Limits
from agent.runtime.native.images import ImageConfig
from agent.runtime.native.runtime import (
    PROJECT_ROOT,
    command_line,
    environment,
    limits_of,
    pod_hostname,
)
from common.models import Container, Pod

IMAGE = ImageConfig(
    entrypoint=["/ep"], cmd=["cmd1", "cmd2"], env=["PATH=/img", "A=image", "B=image"]
)


def _c(**fields: object) -> Container:
    return Container.model_validate({"name": "c", "image": "busybox", **fields})


@pytest.mark.parametrize(
    ("fields", "argv"),
    [
        ({}, ["/ep", "cmd1", "cmd2"]),
        ({"args": ["a"]}, ["/ep", "a"]),
        ({"command": ["/bin/x"]}, ["/bin/x"]),  # command drops the image's CMD too
        ({"command": ["/bin/x"], "args": ["a"]}, ["/bin/x", "a"]),
        ({"command": [], "args": ["a"]}, ["/ep", "a"]),  # empty command counts as unset
    ],
)
def test_command_line_follows_kubernetes(fields: dict[str, object], argv: list[str]) -> None:
    """command overrides ENTRYPOINT, args override CMD, command alone ignores CMD."""
    assert command_line(_c(**fields), IMAGE) == argv


def test_command_line_without_entrypoint_runs_cmd() -> None:
    """No ENTRYPOINT: CMD (or args) is the whole command."""
    config = ImageConfig(cmd=["sh"])
    assert command_line(_c(), config) == ["sh"]
    assert command_line(_c(args=["echo", "hi"]), config) == ["echo", "hi"]
    assert command_line(_c(), ImageConfig()) == []


def test_environment_image_then_container_later_wins() -> None:
    """Image Env first, container env overrides; PATH and HOSTNAME have defaults."""
    env = environment(
        _c(env=[{"name": "B", "value": "pod"}, {"name": "C", "value": "c"}]), IMAGE, "h"
    )
    assert env == ["PATH=/img", "HOSTNAME=h", "A=image", "B=pod", "C=c"]
    assert environment(_c(), ImageConfig(), "h")[0].startswith("PATH=/usr/local/sbin:")


def test_limits_from_resources() -> None:
    """cpu limit -> quota, cpu request (default: the limit) -> shares, memory limit."""
    limited = _c(resources={"limits": {"cpu": "500m", "memory": "32Mi"}})
    assert limits_of(limited) == Limits(500, 500, 32 * 1024 * 1024)
    requested = _c(resources={"requests": {"cpu": "0.25"}})
    assert limits_of(requested) == Limits(None, 250, None)
    assert limits_of(_c()) == Limits()


def test_pod_hostname_is_cut_to_63() -> None:
    """Hostnames have at most 63 characters; a trailing '-' or '.' is dropped."""
    pod = Pod.model_validate(
        {"metadata": {"name": "a" * 62 + "-b" * 5}, "spec": {"containers": [_c().to_dict()]}}
    )
    assert pod_hostname(pod) == "a" * 62


def test_check_host_path(tmp_path: Path) -> None:
    """Allowed prefixes only; '..' refused; symlinks judged by where they resolve."""
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    (allowed / "escape").symlink_to("/etc")
    (allowed / "inside").symlink_to(allowed / "data")
    prefixes = [str(allowed)]
    assert rootfs.check_host_path(str(allowed / "data"), prefixes) == str(allowed / "data")
    assert rootfs.check_host_path(str(allowed / "inside"), prefixes) == str(allowed / "data")
    with pytest.raises(rootfs.SetupError, match="not below an allowed prefix"):
        rootfs.check_host_path(str(allowed / "escape"), prefixes)
    with pytest.raises(rootfs.SetupError, match=r"without '\.\.'"):
        rootfs.check_host_path(f"{allowed}/data/../../etc", prefixes)
    with pytest.raises(rootfs.SetupError, match="absolute"):
        rootfs.check_host_path("etc", prefixes)
    with pytest.raises(rootfs.SetupError, match="not below"):
        rootfs.check_host_path(str(tmp_path / "allowedx"), prefixes)  # a prefix, not a parent
    with pytest.raises(rootfs.SetupError, match="no host paths are allowed"):
        rootfs.check_host_path(str(allowed / "data"), [])


def test_overlay_options_escape_and_shorten(tmp_path: Path) -> None:
    """':' and ',' are escaped; data too long for one page uses short layer symlinks."""
    data = rootfs.overlay_options(["/l/a:b", "/l/c,d"], "/u", "/w")
    assert data == "lowerdir=/l/a\\:b:/l/c\\,d,upperdir=/u,workdir=/w"
    lower = [f"/var/lib/corral/images/layers/{i:064d}/rootfs" for i in range(120)]
    cdir = tmp_path / "containers" / "c"
    cdir.mkdir(parents=True)
    cwd = os.getcwd()
    try:
        data = rootfs.overlay_options(lower, f"{cdir}/upper", f"{cdir}/work")
        assert os.getcwd() == str(cdir)
    finally:
        os.chdir(cwd)
    assert len(data) < 4000
    assert data.startswith("lowerdir=l/0:l/1:") and data.endswith(",upperdir=upper,workdir=work")
    assert os.readlink(cdir / "l" / "119") == lower[119]


def test_mountinfo_parsing_unescapes(tmp_path: Path) -> None:
    """Mount points with spaces come back unescaped."""
    info = tmp_path / "mountinfo"
    info.write_text(
        "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n"
        "37 35 0:4 net:[4026532179] /run/x/ns/net rw - nsfs nsfs rw\n"
    )
    assert rootfs.mountinfo(str(info)) == [("/mnt/with space", "ext3"), ("/run/x/ns/net", "nsfs")]


def test_forkserver_imports_no_third_party_packages() -> None:
    """The fork server runs without site-packages: its imports must be stdlib and ours only,
    and small (every monitor maps them)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import agent.runtime.native.forkserver;"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(PROJECT_ROOT)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert "agent.runtime.native.monitor" in out
    for heavy in ("pydantic", "asyncio", "typing", "dataclasses", "subprocess", "common"):
        assert heavy not in out, f"the fork server imports {heavy}"
