"""`corral up` as a person runs it: it starts, serves a busybox pod, and on SIGINT or SIGTERM
exits 0 leaving no process behind.

`corral up` runs below a tiny wrapper that is a child subreaper
(PR_SET_CHILD_SUBREAPER): every process that ever descended from `corral up` (the
daemons, the fork server, the double-forked monitors, the pods) is re-parented to it
when orphaned, so after `corral up` exits the wrapper's remaining children are
exactly what was left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import ROOT, wait_for
from tests.imagebuild import build_busybox_rootfs, write_oci_layout

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

WRAPPER = r"""
import ctypes, json, os, subprocess, sys, time
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
up = subprocess.Popen(sys.argv[1:])
print("pid", up.pid, flush=True)
code = up.wait()

def children():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(f"{pid} {cmd.strip()}")
    return found

deadline = time.monotonic() + 5  # orphans get a moment to finish exiting
while True:
    while True:  # reap what exited
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    left = children()
    if not left or time.monotonic() > deadline:
        break
    time.sleep(0.1)
print("result", json.dumps({"code": code, "left": left}), flush=True)
for line in left:
    os.kill(int(line.split()[0]), 9)
"""

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; echo up and running; while :; do sleep 0.2; done"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_until(stream: IO[str], prefix: str, seen: list[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r}; output: {''.join(seen)}")


@pytest.fixture(scope="module")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox OCI layout named busybox:latest."""
    base = tmp_path_factory.mktemp("up-image")
    return write_oci_layout(build_busybox_rootfs(base / "rootfs"), base / "layout")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_corral_up_serves_and_stops_cleanly(
    sig: signal.Signals, tmp_path: Path, image_layout: Path
) -> None:
    """Up: API and status page answer, a busybox pod reaches Running; then the signal:
    exit 0, the pod and every helper gone."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["HOME"] = str(home)
    port = free_port()
    cli = [sys.executable, "-m", "scheduler.cli.main"]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *cli, "up", "--listen", f"127.0.0.1:{port}"],
        cwd=work,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    up_pid = 0
    try:
        up_pid = int(read_until(proc.stdout, "pid ", seen).split()[1])
        read_until(proc.stdout, "corral is up", seen)
        status_line = read_until(proc.stdout, "status page:", seen)
        assert f"http://127.0.0.1:{port}/" in status_line
        state = work / ".corral"
        subprocess.run(
            [sys.executable, "-m", "agent.main", "image", "import", str(image_layout),
             "--root", str(state / "agent" / "images")],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip

        def corral(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            """The CLI as the user runs it: configured by `corral up` in $HOME."""
            return subprocess.run(
                [*cli, *args], input=stdin, cwd=ROOT, env=env, capture_output=True, text=True
            )

        assert (home / ".config" / "corral" / "config.toml").exists()
        applied = corral("apply", "-f", "-", stdin=POD)
        assert applied.returncode == 0, applied.stderr

        def running() -> dict[str, Any] | None:
            out = corral("get", "pod", "hello", "-o", "json")
            pod = json.loads(out.stdout) if out.returncode == 0 else {}
            return pod if pod.get("status", {}).get("phase") == "Running" else None

        pod = wait_for(running, timeout=60)
        wait_for(lambda: "up and running" in corral("logs", "hello").stdout, timeout=15)
        pid_file = next((state / "agent" / "pods" / pod["metadata"]["uid"]).rglob("init.pid"))
        container = int(json.loads(pid_file.read_text())["pid"])
        assert os.path.exists(f"/proc/{container}")
        token = (state / "scheduler" / "admin-token").read_text().strip()
        page = subprocess.run(
            ["curl", "-sf", "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
        )
        assert page.returncode == 0, page.stderr
        problems = page.stdout.split("Failing and pending pods")[1].split("Recent events")[0]
        assert 'badge ok">Ready' in page.stdout and "default/hello" not in problems

        os.kill(up_pid, sig)
        result = json.loads(read_until(proc.stdout, "result ", seen).split(" ", 1)[1])
        assert proc.wait(timeout=30) == 0
        assert result == {"code": 0, "left": []}, "".join(seen)
        assert not os.path.exists(f"/proc/{container}")
        mounts = Path("/proc/self/mountinfo").read_text()
        assert str(state) not in mounts  # the pod's namespaces and root are unmounted
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.poll() is None:  # a failed test: stop `corral up` (and its pods) for real
            if up_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(up_pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
