"""`corral up`: a local cluster — a scheduler and this machine as its node — until Ctrl-C.

Both daemons run as child processes on the embedded defaults, with their state
under one directory. On Ctrl-C (or SIGTERM) the agent stops its pods and exits,
then the scheduler; nothing is left running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from scheduler.cli.errors import CommandError
from scheduler.cli.settings import config_path


def _last_line(log: Path) -> str | None:
    """The last line a daemon wrote to its log (why it stopped), if any."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _failed(what: str, log: Path) -> CommandError:
    """`corral-scheduler did not start: <its last log line> (log: PATH)`."""
    reason = _last_line(log)
    return CommandError(f"{what}: {reason} (log: {log})" if reason else f"{what}; see {log}")


def _wait_listening(
    proc: subprocess.Popen[str], name: str, log: Path, timeout: float = 30.0
) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "listening on" in line:
            return line.strip().rsplit(" ", 1)[-1]
    proc.kill()
    proc.wait()
    raise _failed(f"{name} did not start", log)


def _stop(proc: subprocess.Popen[str] | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


UP_MARK = "# written by `corral up`"


def _written_by_up(path: Path) -> bool:
    """The CLI config is one an earlier `corral up` wrote and nobody has changed since:
    its first line, `server` and `token_file`, nothing else."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    if not text.startswith(UP_MARK + "\n"):
        return False
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return set(config) == {"server", "token_file"}


def _toml_string(text: str) -> str:
    """`text` as a TOML basic string: JSON's escapes (quote, backslash, control
    characters), but not ASCII-only, whose surrogate pairs (`\\ud83d\\ude00` for a
    character past U+FFFF) TOML refuses; DEL, which TOML wants escaped, escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _point_cli_at(url: str, token_file: Path) -> str:
    """Let a plain `corral` reach this cluster: a CLI config naming the admin token file.

    A config an earlier `corral up` wrote (here or in another directory, whose cluster
    may be gone) is replaced; any other is the user's and left alone (then say how to
    use the token instead)."""
    path, _ = config_path(os.environ)
    if path.exists() and not _written_by_up(path):
        return (
            f"the admin token is in {token_file}; your CLI config {path} is left alone: "
            f"export CORRAL_SERVER={url} CORRAL_TOKEN=$(cat {token_file})"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:  # TOML is UTF-8
        f.write(
            f"{UP_MARK}\nserver = {_toml_string(url)}\n"
            f"token_file = {_toml_string(str(token_file))}\n"
        )
    os.replace(tmp, path)
    return f"the CLI is configured in {path} (admin token in {token_file})"


def up(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise CommandError(
            "corral up runs this machine as a node, which needs root "
            "(the native runtime uses namespaces, cgroups and mounts)"
        )
    state = Path(args.state_dir).resolve()
    (state / "scheduler").mkdir(parents=True, exist_ok=True)
    (state / "agent").mkdir(parents=True, exist_ok=True)
    scheduler_log = open(state / "scheduler.log", "a")
    agent_log = open(state / "agent.log", "a")
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    scheduler: subprocess.Popen[str] | None = None
    agent: subprocess.Popen[str] | None = None
    try:
        scheduler = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scheduler.main",
                "--listen",
                args.listen,
                "--state-dir",
                str(state / "scheduler"),
            ],
            stdout=subprocess.PIPE,
            stderr=scheduler_log,
            text=True,
            start_new_session=True,  # Ctrl-C reaches `corral up` only; it stops the children
        )
        url = _wait_listening(scheduler, "corral-scheduler", state / "scheduler.log")
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.main",
                "--server",
                url,
                "--join-token-file",
                str(state / "scheduler" / "join-token"),
                "--state-dir",
                str(state / "agent"),
                "--stop-pods-on-exit",
            ],
            stdout=agent_log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        print(f"corral is up: API {url}  status {url}/api/v1/status  metrics {url}/metrics")
        print(
            f"status page: {url}/ (open {url}/?token=TOKEN once; "
            f"the admin TOKEN is in {state / 'scheduler' / 'admin-token'})"
        )
        print(_point_cli_at(url, state / "scheduler" / "admin-token"))
        print(f"state and logs in {state}; Ctrl-C stops the cluster", flush=True)
        while not stop_requested:
            for proc, name in ((scheduler, "corral-scheduler"), (agent, "corral-agent")):
                if proc.poll() is not None:
                    log = state / f"{name.split('-')[1]}.log"
                    raise _failed(f"{name} exited with code {proc.returncode}", log)
            time.sleep(0.2)
        print("stopping corral: pods get their grace periods to exit...", flush=True)
        return 0
    finally:
        _stop(agent, 60.0)  # stops its pods first (their grace periods)
        _stop(scheduler, 15.0)
        scheduler_log.close()
        agent_log.close()
