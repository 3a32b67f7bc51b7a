"""`corral install scheduler` into `/` for real: the `corral` system user, ownerships, purge.

It runs in a private mount namespace with a copy-on-write /etc (an overlay) and empty
/var/lib and /var/log, so useradd and the files it writes touch nothing outside the test.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


def test_install_into_root_creates_the_user(tmp_path: Path) -> None:
    """The user exists, owns the state directory and can read the config holding the
    join token (0640, group corral); uninstall --purge removes all of it again."""
    corral = f"{shlex.quote(sys.executable)} -m scheduler.cli.main"
    t = shlex.quote(str(tmp_path))
    script = f"""
set -e
mkdir -p {t}/upper {t}/work {t}/varlib {t}/varlog
mount --make-rprivate /
mount -t overlay overlay -o lowerdir=/etc,upperdir={t}/upper,workdir={t}/work /etc
mount --bind {t}/varlib /var/lib
mount --bind {t}/varlog /var/log
{corral} install scheduler --token jt-root
echo "user=$(id -u corral) group=$(id -g corral) shell=$(getent passwd corral | cut -d: -f7)"
echo "state=$(stat -c '%U:%G %a' /var/lib/corral-scheduler)"
echo "config=$(stat -c '%U:%G %a' /etc/corral/scheduler.toml)"
{corral} uninstall scheduler --purge
if id corral 2>/dev/null; then echo "user still there"; fi
test ! -e /etc/corral && test ! -e /var/lib/corral-scheduler && echo purged
"""
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "created the system user corral" in out
    assert "shell=/usr/sbin/nologin" in out
    assert "state=corral:corral 700" in out
    assert "config=root:corral 640" in out
    assert "enable --now corral-scheduler.service" in out
    assert "user still there" not in out and "purged" in out
    # Nothing reached the real system.
    with pytest.raises(KeyError):
        pwd.getpwnam("corral")
    assert not os.path.exists("/etc/corral/scheduler.toml")
    assert not os.path.exists("/etc/systemd/system/corral-scheduler.service")
