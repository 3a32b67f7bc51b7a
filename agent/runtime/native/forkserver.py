"""The fork server: a small, single-threaded Python that forks monitors and exec helpers.

Why: the agent is an asyncio process with threads, where fork() is unsafe and a fresh
interpreter per container (~20 ms, ~10 MB) is too slow and too big. So the agent
starts this once (`NativeRuntime.start()`)::

    sys.executable -I -S -c <bootstrap> <project root>

(-I -S: no site-packages, no environment; the bootstrap puts the project root on
sys.path, as ``-m`` alone would not find the package without site). It imports what
monitors need, freezes the GC (so children do not dirty inherited pages just by
collecting), and serves requests:

- its stdin is a unix socket to the agent; each request is one byte carrying one fd
  (SCM_RIGHTS): a fresh socket on which, once the fork server has acknowledged it
  with one byte, the agent writes one JSON line, the request, and later reads one
  JSON line, the answer;
- for each request it forks; the child calls setsid() and forks again, so the
  grandchild (the helper) is re-parented to init: it survives `kill -9` of both the
  agent and the fork server. The helper reads the request and answers it itself, so
  the fork server never blocks on a client. The agent asks for a helper ahead of its
  next request (a spare, waiting on its socket), so no request waits for a fork; a
  spare whose agent goes away reads EOF and leaves without a word;
- when the agent closes its end (or dies), the fork server exits.

Requests (``op``): ``run`` starts a container monitor (`monitor.run`; the pod's shared
namespaces are made by its first container's init, see namespaces.py), ``exec`` runs a
command inside a running container (exec probes), ``sweep`` deletes the runtime's trash
(removed pods' directories) at the lowest CPU priority, ``ping`` answers with the
helper's pid.

Keep the import list short and free of third-party packages: there is no
site-packages here, and everything imported is memory every monitor maps.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time

from agent.runtime.native import monitor, rootfs
from agent.runtime.native import syscalls as sc

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any

BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from agent.runtime.native.forkserver import main; main()"
)
READY = b"R"
SPAWNED = b"k"
PLAIN = b"r"  # the byte a request for a helper carries: a helper for any request
WARM = b"w"  # a spare: it prepares a container's init while it waits (monitor.prepare)
MAX_REQUEST = monitor.MAX_REQUEST

SPARE_NICE = 10  # how much nicer a spare is while it prepares (see _serve)
EXEC_DRAIN_SECONDS = 0.2  # after an exec'd command exits, how long stragglers may still write

# The namespaces an exec joins, in nsenter's order: mnt last, as it changes our root.
EXEC_NAMESPACES = (
    ("ipc", sc.CLONE_NEWIPC),
    ("uts", sc.CLONE_NEWUTS),
    ("net", sc.CLONE_NEWNET),
    ("pid", sc.CLONE_NEWPID),
    ("mnt", sc.CLONE_NEWNS),
)


def main() -> None:
    """Serve requests on fd 0 until the agent goes away."""
    sc.set_process_name("corral-forkserv")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C at the agent's terminal is not for us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ctrl = socket.socket(fileno=0)
    gc.freeze()  # everything imported so far stays untouched in the children
    ctrl.sendall(READY)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctrl, 64, 16)
        except InterruptedError:
            continue
        except OSError as exc:
            print(f"corral fork server: {exc}", file=sys.stderr)
            break
        if not msg and not fds:
            break  # EOF: the agent closed its end or died
        for index, fd in enumerate(fds):
            _spawn(ctrl.fileno(), fd, msg[index : index + 1] == WARM)
            # "A helper holds your socket": only now may the agent write the request, so
            # a request is never lost with a fork server that died holding its socket.
            ctrl.sendall(SPAWNED)


def _spawn(ctrl_fd: int, conn: int, warm: bool) -> None:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            # A new session, then fork again: the helper is nobody's child but init's,
            # and has no controlling terminal to be signalled through.
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _detach(ctrl_fd, conn)
            _serve(conn, warm)
        except _Unused:
            pass  # a spare helper whose agent went away
        except BaseException as exc:
            print(f"corral helper {os.getpid()}: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
        finally:
            os._exit(code)
    os.close(conn)
    os.waitpid(pid, 0)  # the middle process exits at once


def _detach(ctrl_fd: int, conn: int) -> None:
    """Drop what the helper must not hold: the agent's control socket, the cwd."""
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)  # closes the control socket if it was fd 0 (it is, as stdin)
    os.dup2(null, 1)  # stderr stays: the fork server's log
    for fd in {null, ctrl_fd} - {0, 1, 2}:
        os.close(fd)
    os.closerange(3, conn)
    os.closerange(conn + 1, 1 << 16)
    # Received fds come without O_CLOEXEC: the container must not inherit the agent's socket.
    os.set_inheritable(conn, False)
    os.chdir("/")
    os.umask(0o022)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # SIGINT and SIGHUP stay ignored


class _Unused(Exception):
    """The agent closed a helper's socket before sending a request."""


def _read_request(conn: int, prepared: monitor.Prepared | None = None) -> dict[str, Any]:
    """The request: from the agent's socket, or as the prepared init read it from there."""
    data = prepared.readline() if prepared is not None else monitor.read_line(conn, MAX_REQUEST)
    if not data:
        raise _Unused
    if not data.endswith(b"\n"):
        raise ValueError("request too large, or cut short")
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("a request is a JSON object")
    return request


def _serve(conn: int, warm: bool = False) -> None:
    prepared: monitor.Prepared | BaseException | None = None
    if warm:
        # Before the request, so that a start finds its init forked and in its namespaces,
        # reading the request itself. A failure is the start's to report, should a start
        # be asked of us; the request is then ours to read. At a lower CPU priority: the
        # agent asks for a spare as soon as a start has its answer, when it is reporting
        # that start, and this work is for a later one.
        priority = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, min(priority + SPARE_NICE, 19))
        try:
            prepared = monitor.prepare(conn, priority)
        except Exception as exc:
            prepared = exc
        finally:
            os.setpriority(os.PRIO_PROCESS, 0, priority)
    ready = prepared if isinstance(prepared, monitor.Prepared) else None
    try:
        request = _read_request(conn, ready)
    except BaseException:
        if ready is not None:
            ready.discard()
        raise
    op = request.get("op")
    if op == "run":
        monitor.run(request, conn, prepared)  # its troubles go to monitor.log, once started
        return
    if ready is not None:
        ready.discard()  # not a start: the init prepared for one is not needed
    if op == "exec":
        try:
            answer = exec_command(request)
        except Exception as exc:
            answer = {"ok": False, "error": str(exc) or type(exc).__name__}
        monitor.reply(conn, answer)
    elif op == "sweep":
        try:
            answer = {"ok": True, "removed": empty_trash(str(request["dir"]))}
        except Exception as exc:
            answer = {"ok": False, "error": str(exc) or type(exc).__name__}
        monitor.reply(conn, answer)
    elif op == "ping":
        monitor.reply(conn, {"ok": True, "pid": os.getpid()})
    else:
        monitor.reply(conn, {"ok": False, "error": f"unknown op {op!r}"})


def empty_trash(trash: str) -> int:
    """Delete what the runtime moved to the trash, at the lowest CPU priority; return how
    many entries went. Never through a mount point: a stray mount below an entry is
    detached first, or the entry stays (and the next sweep tries again)."""
    os.nice(19)
    try:
        entries = sorted(os.listdir(trash))
    except FileNotFoundError:
        return 0
    left: list[str] = []
    if entries and rootfs.mounts_below(trash):
        rootfs.unmount_below(trash)
        left = rootfs.mounts_below(trash)
    removed = 0
    for name in entries:
        entry = os.path.join(trash, name)
        stuck = [p for p in left if p == entry or p.startswith(f"{entry}/")]
        if stuck:
            print(f"corral sweep: not deleting {entry}: mounts remain: {stuck}", file=sys.stderr)
            continue
        rootfs.remove_tree(entry)  # as deep as a container made it
        removed += 1
    return removed


def exec_command(request: dict[str, Any]) -> dict[str, Any]:
    """Run a command inside a running container, as `nsenter` plus a cgroup join would.

    `request`: {"pid", "start"} of the container's init, "cgroups" (its cgroup dirs),
    "argv", "timeout" (seconds; then the command and what it started are killed),
    "max_output" (bytes of stdout+stderr kept; the rest is read and dropped).
    Answers {"ok": True, "exit_code", "output" (hex), "timed_out"}. The command runs as
    root, with the environment, root, working directory and namespaces (pid, mnt, net,
    ipc, uts) of the init, and in its cgroups; this helper joins the namespaces but
    not the cgroups, so only the command is charged to (and killed with) the container.
    """
    pid = int(request["pid"])
    # Everything from the host first: after setns(mnt) and chroot its paths are gone.
    ns_fds = [
        (os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC), flag)
        for kind, flag in EXEC_NAMESPACES
    ]
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    cwd = os.open(f"/proc/{pid}/cwd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read()
    procs = [
        os.open(os.path.join(str(d), "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        for d in request.get("cgroups") or []
    ]
    host_proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # Checked after opening: what we opened belongs to the container's init, not to a
    # process that was given its pid since.
    if monitor.proc_start_time(pid) != request.get("start"):
        raise ProcessLookupError("the container is not running")
    for fd, flag in ns_fds:
        sc.setns(fd, flag)
        os.close(fd)
    # The container's root and working directory (setns(mnt) alone would give us the
    # namespace's root mount, not a root the container may have changed since).
    os.fchdir(root)
    os.chroot(".")
    try:
        os.fchdir(cwd)
    except OSError:
        os.chdir("/")
    os.close(root)
    os.close(cwd)
    env: dict[str, str] = {}
    for item in environ.split(b"\0"):
        key, sep, value = item.decode("utf-8", "surrogateescape").partition("=")
        if sep:
            env[key] = value
    argv = [str(a) for a in request["argv"]]
    out_r, out_w = os.pipe()
    # setns(pid) applies to our children only: this child is a process of the container.
    child = os.fork()
    if child == 0:
        _exec_child(argv, env, out_w, procs)  # never returns
    os.close(out_w)
    for fd in procs:
        os.close(fd)
    status, output, timed_out = _collect(
        child, out_r, host_proc, float(request["timeout"]), int(request["max_output"])
    )
    if os.WIFSIGNALED(status):
        code = 128 + os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
    return {"ok": True, "exit_code": code, "output": output.hex(), "timed_out": timed_out}


def _exec_child(argv: list[str], env: dict[str, str], out_w: int, procs: list[int]) -> None:
    """The exec'd command's process: into the container's cgroups, own process group."""
    try:
        sc.set_pdeathsig(signal.SIGKILL)  # a helper killed on its way must not leak it
        for fd in procs:
            os.write(fd, b"0")  # "0": the writer itself (our pid differs in each namespace)
            os.close(fd)
        os.setsid()  # a process group of its own: a timeout kills the whole group
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.close(out_w)
        monitor.exec_in_path(argv, env)
    except BaseException as exc:
        try:
            os.write(2, f"{exc}\n".encode())
        finally:
            os._exit(127)


def _collect(
    pid: int, out_r: int, host_proc: int, timeout: float, max_output: int
) -> tuple[int, bytes, bool]:
    """Read the command's output until it exits or `timeout` passes (then kill it); return
    its wait status, the first `max_output` bytes of output, and whether it timed out."""
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    pidfd = os.pidfd_open(pid)
    poller.register(pidfd, select.POLLIN)
    output = bytearray()
    status: int | None = None
    timed_out = False
    pipe_open = True
    stop_at = time.monotonic() + timeout
    while pipe_open or status is None:
        left = stop_at - time.monotonic()
        if left <= 0:
            if status is None:
                _kill_tree(pid, host_proc)
                timed_out = True
                status = os.waitpid(pid, 0)[1]
            break  # or: exited, but something it started still holds the pipe
        for fd, _mask in poller.poll(left * 1000):
            if fd == pidfd:
                status = os.waitpid(pid, 0)[1]
                poller.unregister(pidfd)
                stop_at = time.monotonic() + EXEC_DRAIN_SECONDS
                continue
            data = os.read(out_r, 65536)
            if not data:
                poller.unregister(out_r)
                pipe_open = False
            elif len(output) < max_output:
                output += data[: max_output - len(output)]
    os.close(pidfd)
    os.close(out_r)
    os.close(host_proc)
    assert status is not None
    return status, bytes(output), timed_out


def _kill_tree(pid: int, host_proc: int) -> None:
    """SIGKILL a timed-out command: its process group and every process still below it
    (also those that made a group of their own). Orphans it left to the container's
    init are beyond reach, as with the kubelet."""
    _signal_group(pid, signal.SIGSTOP)  # no more forks while we look
    victims = [pid]
    index = 0
    while index < len(victims):
        victims += _children(victims[index], host_proc)
        index += 1
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _signal_group(pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _children(pid: int, host_proc: int) -> list[int]:
    """The children of `pid` (all its threads'), by the host's /proc opened as `host_proc`."""
    try:
        tasks = os.open(f"{pid}/task", os.O_RDONLY | os.O_DIRECTORY, dir_fd=host_proc)
    except OSError:
        return []
    found = []
    try:
        for tid in os.listdir(tasks):
            try:
                fd = os.open(f"{tid}/children", os.O_RDONLY, dir_fd=tasks)
            except OSError:
                continue
            try:
                found += [int(p) for p in os.read(fd, 1 << 16).split()]
            finally:
                os.close(fd)
    finally:
        os.close(tasks)
    return found


if __name__ == "__main__":
    main()
