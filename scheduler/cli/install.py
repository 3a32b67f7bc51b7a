"""`corral install|uninstall agent|scheduler`: put a daemon on this machine as a systemd service.

    corral install scheduler [--listen 0.0.0.0:7070] [--token JOIN_TOKEN] [--set OPTION=VALUE]
    corral install agent --server https://SCHEDULER:7070 --token JOIN_TOKEN [--ca-file CA]
    corral uninstall agent|scheduler [--purge]

Install writes the unit (ExecStart pointing at this installation's binaries), the
config (kept if one exists, unless --force), the agent's join-token file, the state
directory, and for the scheduler the `corral` system user; then prints the
`systemctl` line that starts it. `--root DIR` installs into another root (an image
being built, or a scratch directory in tests); the user is only created for `/`.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scheduler.cli.errors import CommandError
from scheduler.cli.units import (
    CONFIG_DIR,
    DAEMONS,
    DEFAULT_BIN_DIR,
    UNIT_DIR,
    DaemonFiles,
    render_config,
    render_unit,
)

USER = "corral"
JOIN_TOKEN_FILE = f"{CONFIG_DIR}/join-token"
DEFAULT_LISTEN = "0.0.0.0:7070"


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def bin_dir(daemon: str) -> str:
    """Where this installation's `corral-<daemon>` is: next to the running interpreter
    (a venv, /usr/local), else on PATH (not a pyenv shim), else /usr/local/bin."""
    name = f"corral-{daemon}"
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside.parent)
    found = shutil.which(name)
    if found and "/shims/" not in found:
        return str(Path(found).parent)
    return DEFAULT_BIN_DIR


def _write(path: Path, text: str, mode: int, *, keep: bool) -> str:
    """Write `text` at `path` with `mode` (no moment with a wider mode); 'kept' if `keep`
    and the file exists."""
    if keep and path.exists():
        return "kept"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)  # os.open's mode is filtered by the umask
    os.replace(tmp, path)
    return "written"


def _unreadable_by_others(path: Path) -> Path | None:
    """The first directory on the way to `path` that other users cannot enter."""
    for part in [*reversed(path.parents), path]:
        try:
            if not part.stat().st_mode & stat.S_IXOTH:
                return part
        except OSError:
            return part
    return None


def _settings(items: list[str]) -> dict[str, Any]:
    """`--set OPTION=VALUE` pairs; VALUE is a TOML value (`true`, `3`, `["a"]`) or a string."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"--set {item!r}: expected OPTION=VALUE")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        values[name.strip().replace("-", "_")] = value
    return values


def _ensure_user(report: list[str]) -> None:
    try:
        pwd.getpwnam(USER)
        return
    except KeyError:
        pass
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            DAEMONS["scheduler"].state_dir,
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ],
        check=True,
    )
    report.append(f"  created the system user {USER}")


def install(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve()
    files = DAEMONS[args.daemon]
    on_this_machine = root == Path("/")
    if on_this_machine and os.geteuid() != 0:
        raise CommandError("installing a service needs root (or use --root DIR)")
    server = getattr(args, "server", None)
    token = getattr(args, "token", None)
    report = [f"installing corral-{files.daemon} into {root}:"]

    values: dict[str, object] = {"state_dir": files.state_dir}
    mode = 0o644
    if files.daemon == "agent":
        values["server"] = server or "http://127.0.0.1:7070"
        values["join_token_file"] = JOIN_TOKEN_FILE
        if getattr(args, "ca_file", None):
            values["ca_file"] = args.ca_file
        mode = 0o600  # root's daemon; it names its credentials
    else:
        if server:
            raise CommandError("--server is for agents; the scheduler listens (--listen)")
        values["listen"] = args.listen
        if token:
            values["join_token"] = token
    values.update(_settings(args.set))
    if files.daemon == "scheduler" and (values.get("join_token") or values.get("admin_token")):
        mode = 0o640  # a secret (--token or --set): readable by the corral group, not by everyone
    try:
        files.model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CommandError(f"invalid configuration: {problems}") from None
    # Checked above, written from here on.
    binaries = bin_dir(files.daemon)
    unit_path = _under(root, f"{UNIT_DIR}/{files.unit_name}")
    _write(unit_path, render_unit(files, binaries), 0o644, keep=False)
    report.append(f"  {unit_path} (ExecStart in {binaries})")
    config_path = _under(root, files.config_path)
    outcome = _write(config_path, render_config(files, values), mode, keep=not args.force)
    if outcome == "kept":
        report.append(f"  {config_path} kept as it is (--force replaces it)")
    else:
        report.append(f"  {config_path} (mode {mode:o})")

    if files.daemon == "agent":
        token_path = _under(root, JOIN_TOKEN_FILE)
        if token:
            outcome = _write(token_path, token.strip() + "\n", 0o600, keep=not args.force)
            report.append(
                f"  {token_path} kept as it is (--force replaces it)"
                if outcome == "kept"
                else f"  {token_path} (mode 600)"
            )
        elif not token_path.exists():
            report.append(
                f"  no join token yet: write the scheduler's STATE_DIR/join-token to {token_path} "
                "(mode 600), or install again with --token"
            )

    state = _under(root, files.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    report.append(f"  {state} (state directory)")
    if files.daemon == "scheduler":
        if on_this_machine:
            _ensure_user(report)
            user = pwd.getpwnam(USER)
            os.chown(state, user.pw_uid, user.pw_gid)
            if mode == 0o640:
                os.chown(config_path, 0, user.pw_gid)
            for name in ("tls_cert", "tls_key", "tls_client_ca"):
                # The scheduler runs as corral: let its group read the TLS files (keys too).
                path = values.get(name)
                if isinstance(path, str) and Path(path).is_file():
                    os.chown(path, 0, user.pw_gid)
                    os.chmod(path, 0o640)
                    report.append(f"  {path} readable by group {USER} (mode 640)")
            hidden = _unreadable_by_others(Path(sys.executable))
            if hidden is not None:
                report.append(
                    f"  WARNING: the scheduler runs as user {USER}, which cannot enter {hidden} "
                    f"to reach {sys.executable}: install corral where every user can read it "
                    "(a venv in /opt, see README)"
                )
        else:
            report.append(f"  (the {USER} user is created only when installing into /)")
    print("\n".join(report))
    unit = files.unit_name
    print(f"\nstart it:\n  systemctl daemon-reload && systemctl enable --now {unit}")
    if files.daemon == "scheduler":
        print(
            f"then: the agents' join token is {files.state_dir}/join-token, an admin API token "
            f"{files.state_dir}/admin-token; the status page is http://HOST:PORT/?token=TOKEN"
        )
    return 0


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[4] for line in lines if len(line.split()) > 4]
    return [p for p in points if p.startswith(prefix)]


def _systemd_running(root: Path) -> bool:
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def uninstall(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve()
    files: DaemonFiles = DAEMONS[args.daemon]
    if root == Path("/") and os.geteuid() != 0:
        raise CommandError("removing a service needs root (or use --root DIR)")
    state = _under(root, files.state_dir)
    if args.purge and files.daemon == "agent":
        busy = _mounts_below(state)
        if busy:
            raise CommandError(
                f"pods still run from {state} ({len(busy)} mounts below it): drain the node "
                "(`corral drain NODE`), wait for its pods to stop, then uninstall"
            )
    if _systemd_running(root):
        subprocess.run(["systemctl", "disable", "--now", files.unit_name], check=False)
    removed = []
    paths = [
        _under(root, f"{UNIT_DIR}/{files.unit_name}"),
        _under(root, f"{UNIT_DIR}/multi-user.target.wants/{files.unit_name}"),
    ]
    if args.purge:
        paths.append(_under(root, files.config_path))
        if files.daemon == "agent":
            paths.append(_under(root, JOIN_TOKEN_FILE))
    for path in paths:
        if path.is_symlink() or path.exists():
            path.unlink()
            removed.append(str(path))
    if args.purge:
        if state.exists():
            shutil.rmtree(state)
            removed.append(f"{state}/")
        config_dir = _under(root, CONFIG_DIR)
        if config_dir.is_dir() and not any(config_dir.iterdir()):
            config_dir.rmdir()
        if files.daemon == "scheduler" and root == Path("/"):
            try:
                pwd.getpwnam(USER)
            except KeyError:
                pass
            else:
                subprocess.run(["userdel", USER], check=False)
                removed.append(f"user {USER}")
    if _systemd_running(root):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    print("removed:\n  " + "\n  ".join(removed) if removed else "nothing to remove")
    if not args.purge:
        print(f"kept the config and {state} (--purge removes them)")
    if files.daemon == "agent":
        print("pods the agent started keep running until stopped: drain the node first")
    return 0


def add_arguments(
    install_parser: argparse.ArgumentParser, uninstall_parser: argparse.ArgumentParser
) -> None:
    """The options of both commands (the CLI's --server and --token are shared)."""
    for p in (install_parser, uninstall_parser):
        p.add_argument("daemon", choices=sorted(DAEMONS), help="which daemon")
        p.add_argument("--root", default="/", metavar="DIR", help="install below DIR (default: /)")
    install_parser.add_argument(
        "--force", action="store_true", help="replace an existing config and join-token file"
    )
    install_parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="set any config option (repeatable): --set tls_cert=/etc/corral/pki/scheduler.crt",
    )
    install_parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="(scheduler) API address (default: %(default)s: agents on other machines dial it)",
    )
    uninstall_parser.add_argument(
        "--purge", action="store_true", help="also remove the config, tokens and state directory"
    )
