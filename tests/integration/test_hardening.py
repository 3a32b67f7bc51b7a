"""The scheduler runs under its unit's sandbox (systemd is not PID 1 here, so it is emulated).

The unit says: a user of its own (User=corral), no capabilities, NoNewPrivileges,
ProtectSystem=strict with ReadWritePaths for the state directory, PrivateTmp,
ProtectHome. The test builds the same sandbox with util-linux: a private mount
namespace where every mount is read-only except the state directory, fresh /tmp and
/var/tmp, empty /root and /home (the interpreter and the checkout are bound back if
they live there: on a real machine corral is installed where every user can read
it), then `setpriv` to an unprivileged uid with no capabilities and no_new_privs.
The scheduler must start, say READY=1, accept a durable write, and stop cleanly.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, ROOT
from tests.imagebuild import skip_or_fail

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

UID = 64123  # no passwd entry needed: the scheduler never looks itself up
UNIT = ROOT / "systemd" / "corral-scheduler.service"


def _directives() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if not k.startswith("#")}


def _sandbox_script(state: Path, hold: Path, keep: list[str], argv: list[str]) -> str:
    q = shlex.quote
    lines = [
        "set -e",
        "mount --make-rprivate /",
        f"mount --bind {q(str(state))} {q(str(state))}",  # ReadWritePaths: its own mount
    ]
    lines += [f"mount --bind {q(p)} {q(str(hold / str(i)))}" for i, p in enumerate(keep)]
    lines += [
        # ProtectSystem=strict: every other mount read-only (not the API filesystems).
        "findmnt -rn -o TARGET | while read -r m; do",
        f'  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|{q(str(state))}) continue;; esac',
        '  mount -o remount,bind,ro "$m" 2>/dev/null || true',
        "done",
        "mount -t tmpfs -o mode=1777 tmpfs /tmp",  # PrivateTmp
        "mount -t tmpfs -o mode=1777 tmpfs /var/tmp",
        "mount -t tmpfs -o mode=755 tmpfs /root",  # ProtectHome
        "mount -t tmpfs -o mode=755 tmpfs /home",
    ]
    for i, path in enumerate(keep):
        lines += [f"mkdir -p {q(path)}", f"mount --bind {q(str(hold / str(i)))} {q(path)}"]
    lines += [
        "cd /",
        f"exec setpriv --reuid={UID} --regid={UID} --clear-groups --no-new-privs "
        "--inh-caps=-all --bounding-set=-all -- " + " ".join(q(a) for a in argv),
    ]
    return "\n".join(lines)


def _hidden_by_protect_home(path: str) -> bool:
    return path.startswith(("/root/", "/home/"))


def test_scheduler_runs_in_its_units_sandbox() -> None:
    """Unprivileged, read-only system, private /tmp, no home: it serves and persists."""
    unit = _directives()
    assert unit["User"] == "corral" and unit["NoNewPrivileges"] == "yes"
    assert unit["ProtectSystem"] == "strict" and unit["PrivateTmp"] == "yes"
    assert unit["ProtectHome"] == "yes" and unit["CapabilityBoundingSet"] == ""
    assert unit["ReadWritePaths"] == "/var/lib/corral-scheduler"
    for tool in ("unshare", "setpriv", "findmnt", "mount"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} (util-linux) is missing")

    # /run, not /tmp: the sandbox gets a fresh /tmp, as under PrivateTmp.
    state = Path(f"/run/corral-hardening-{os.getpid()}/state")
    hold = state.parent / "hold"
    keep = sorted(
        {p for p in (sys.base_prefix, sys.prefix, str(ROOT)) if _hidden_by_protect_home(p)}
    )
    state.mkdir(parents=True)
    os.chown(state, UID, UID)  # what StateDirectory= does for User=
    for i in range(len(keep)):
        (hold / str(i)).mkdir(parents=True)
    name = f"corral-hardening-{os.getpid()}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(b"\0" + name.encode())
    notify.settimeout(30)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        "env", "-i", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}", "HOME=/",
        f"NOTIFY_SOCKET=@{name}",
        sys.executable, "-m", "scheduler.main",
        "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
        "--admin-token", ADMIN_TOKEN,  # the join token is generated into the state dir
    ]  # fmt: skip
    proc = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", _sandbox_script(state, hold, keep, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        try:
            ready = notify.recv(4096).decode()
        except TimeoutError:
            proc.kill()
            pytest.fail(f"no READY=1: {proc.communicate()[1][-3000:]}")
        assert ready.startswith("READY=1")
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Uid:\t{UID}\t{UID}\t{UID}\t{UID}" in status
        assert "NoNewPrivs:\t1" in status and "CapEff:\t0000000000000000" in status

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sandboxed"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
        conn.request(
            "POST",
            "/api/v1/namespaces/default/pods",
            body=json.dumps(pod),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        assert conn.getresponse().status == 201  # durable: written into the state directory
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.communicate()[1][-3000:]
        assert {p.name for p in state.iterdir()} >= {"state.db", "join-token"}
        assert all(p.stat().st_uid == UID for p in state.iterdir())
        assert (state / "join-token").stat().st_mode & 0o777 == 0o600
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        shutil.rmtree(state.parent, ignore_errors=True)
