"""The per-container monitor: starts the container's init, holds its stdio, records its exit.

Like containerd's shim or conmon: the agent does not wait for containers itself,
or an agent restart would orphan their exit statuses. The fork server forks one
monitor per container (already detached: double fork and setsid, so it is the child
of neither the agent nor the fork server). A spare helper, waiting for its request,
already does the first part, `prepare()`, ahead of time (the same steps run at request
time in a helper that had none prepared):

    unshare(CLONE_NEWPID)                   our next child is PID 1 of a new namespace
    fork --------------------------------> init (child)
                                              PR_SET_PDEATHSIG: dies with the monitor
                                              unshare(ipc, uts, net), `lo` up: the
                                              namespaces a pod's first container makes
      <------------------------------------   "w": warm, waiting for the request
                                              reads the agent's request (a spare's init;
      <------------------------------------   else we pass it on), hands it on, and says
                                              which of the pod's namespaces nobody pinned:
      pins those (namespaces.py)              it keeps those, joins the pinned ones (back
                                              to the host's for hostNetwork), hostname
      write monitor.pid, init.pid, open log   opens its cgroup.procs files,
      sync pipe: "go"  -------------------->  rootfs.enter(): mount ns, overlay, pivot_root
                                              waits for "go" (the records exist), moves
                                              itself into its cgroups (slow: the rest of
                                              an RCU grace period), drops to the image's
                                              user, chdir, execve
      error pipe EOF (exec succeeded)  <----  (the pipe is O_CLOEXEC; a failure writes why)
      answer the agent, write started.json (with the run's ids the agent chose)
      copy stdout/stderr to the log file (CRI format, rotated by size)
      waitpid -> exit.json (temp file, fsync, rename): code, signal, times, OOM kill
      the same record to the agent, if the one that started us still listens
    exit

Nothing of the container is known before the request, and the init prepared ahead
touches nothing of the host's mount table: the mount namespace is made, and every
path resolved, at request time, so a container sees the host's mounts as they are when
it starts (a spare may wait for hours).

Everything the monitor needs is imported by the fork server before it forks, and
this module imports only small stdlib modules, so that a monitor costs little memory.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time

from agent.runtime.native import logs, namespaces, rootfs
from agent.runtime.native import syscalls as sc

MAX_REQUEST = 16 * 1024 * 1024  # a request is one JSON line
DRAIN_SECONDS = 2.0  # after the init exits, how long stray writers may keep the pipes open
STDIO_CHUNK = 65536

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing into every monitor
if TYPE_CHECKING:
    from typing import Any


def proc_start_time(pid: int | str) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot): with the pid it
    names one process, even after the pid is reused. None if there is no such process
    or it is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


def write_json(path: str, data: dict[str, Any], *, durable: bool = False) -> None:
    """Replace `path` atomically: write a temporary file, rename it over the old one.

    `durable` also fsyncs the file (exit.json); pid files describe processes a reboot
    ends anyway.
    """
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(data).encode())
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    # No fsync of the directory: after a machine crash the containers are gone too, and
    # the agent reports a missing record as "monitor lost"; what matters is that a
    # reader never sees a half-written file.
    os.rename(tmp, path)


def oom_kills(cgroup_dirs: list[str], files: list[str] | None = None) -> int:
    """OOM kills counted in the container's cgroup: v2 memory.events, v1 memory.oom_control;
    `files`: those files, as the agent's cgroup driver names them (no search)."""
    if files is not None:
        return sum(_oom_kill_count(path) for path in files)
    total = 0
    for d in cgroup_dirs:
        for name in ("memory.events", "memory.oom_control"):
            try:
                with open(os.path.join(d, name)) as f:
                    for line in f:
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            total += int(value)
                break
            except OSError:
                continue
    return total


def _oom_kill_count(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0  # gone with its cgroup: nothing counted there any more
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    for line in data.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"oom_kill":
            return int(value)
    return 0


def reply(conn: int, message: dict[str, Any]) -> None:
    """Answer the agent's request (it may have gone away: then nobody is listening)."""
    try:
        os.write(conn, json.dumps(message).encode() + b"\n")
    except OSError:
        pass


def _exit_record(
    spec: dict[str, Any], code: int, sig: int | None, started: float | None, **extra: object
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "exit_code": code,
        "signal": sig,
        "started_at": started,
        "finished_at": time.time(),
        "oom_killed": False,
    }
    record.update(extra)
    return record


def read_line(fd: int, limit: int) -> bytes:
    """One line from `fd`, newline included; b"" if it ends before the first byte. For a
    socket on which the other end sends one line and then waits (no over-read)."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            if not data:
                return b""
            raise EOFError("the request ends early")
        data += chunk
        if len(data) > limit:
            raise ValueError("request too large")
    return bytes(data)


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written (a pipe takes 64 KiB at a time)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Prepared:
    """A container init forked ahead of its request (`prepare`), in its own PID, ipc, uts
    and net namespaces, and our ends of its pipes. On `up` the init tells us, a line
    each: the request it read (when it read the agent's socket itself), then which of
    the pod's namespaces it keeps. Plain pipes and bytes: every object a monitor touches
    is a page copied from the fork server."""

    def __init__(self, pid: int, up: int, out_r: int, err_r: int, go_w: int, fail_r: int) -> None:
        self.pid = pid
        self.up = up
        self._buf = b""
        self.out_r = out_r
        self.err_r = err_r
        self.go_w = go_w
        self.fail_r = fail_r

    def readline(self, limit: int = MAX_REQUEST) -> bytes:
        """The init's next line, newline included; b"" if it closed its end first."""
        while b"\n" not in self._buf:
            chunk = os.read(self.up, 65536)
            if not chunk:
                return b""
            self._buf += chunk
            if len(self._buf) > limit:
                raise ValueError("request too large")
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def discard(self) -> None:
        """Kill the waiting init and close our ends (the helper got another request)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        for fd in (self.up, self.out_r, self.err_r, self.go_w, self.fail_r):
            os.close(fd)


def prepare(conn: int, priority: int | None = None, spec: dict[str, Any] | None = None) -> Prepared:
    """Fork the container's init and let it make its namespaces; return once it waits for
    its request. A spare helper calls this before its request arrives (the init then reads
    it from the agent's socket `conn` itself, and hands it on to us), so that a start
    waits neither for the fork (a copy of a Python process, 1.5-2.5 ms here), nor for new
    namespaces (a network namespace alone takes about 1 ms), nor for this process to pass
    the request on. `priority`: the nice value the init takes back once its request is
    there (a spare prepares at a lower one). `spec`: the request, when it came first (a
    helper that was no spare): the init has it as it is, nobody passes it on. Raises
    with a message if the init could not get that far (it is reaped then)."""
    # A new PID namespace applies to our children only: the next fork is its PID 1,
    # and when that PID 1 exits the kernel kills everything else in the namespace.
    sc.unshare(sc.CLONE_NEWPID)
    up_r, up_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    go_r, go_w = os.pipe()
    fail_r, fail_w = os.pipe()  # O_CLOEXEC (as all os.pipe fds): EOF means exec worked
    pid = os.fork()
    if pid == 0:
        for fd in (up_r, out_r, err_r, go_w, fail_r):
            os.close(fd)
        _init(up_w, conn, priority, spec, out_w, err_w, go_r, fail_w)  # never returns
    for fd in (up_w, out_w, err_w, go_r, fail_w):
        os.close(fd)
    prepared = Prepared(pid, up_r, out_r, err_r, go_w, fail_r)
    if os.read(up_r, 1) != b"w":
        failure = _read_to_end(fail_r)
        prepared.discard()
        raise RuntimeError(failure.decode("utf-8", "replace") or "the init died unprepared")
    return prepared


def run(spec: dict[str, Any], conn: int, prepared: Prepared | BaseException | None = None) -> None:
    """Monitor one container (see the module docstring); returns when it has exited.

    Runs in a detached process forked by the fork server; `conn` is the socket on
    which the agent waits for "started" (or why not), and later for the exit record.
    `prepared`: the init `prepare()` made ahead (or why it could not); None: make it now.
    """
    cdir = str(spec["dir"])
    sc.set_process_name("corral-monitor")
    # The monitor must outlive pressure the container causes: make the OOM killer
    # prefer anything else (the init sets its own score to 0, whenever it was forked).
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-999")
    except OSError:
        pass
    try:
        if isinstance(prepared, BaseException):
            raise prepared
        if prepared is None:  # no spare: the init is forked now, with its request
            prepared = prepare(conn, spec=spec)
        pid, writer, pipes = _start(spec, conn, prepared)
    except Exception as exc:  # the container never ran: say why, here and to the agent
        message = str(exc) or type(exc).__name__
        record = _exit_record(spec, 128, None, None, reason="StartError", message=message)
        write_json(f"{cdir}/exit.json", record, durable=True)
        reply(conn, {"ok": False, "error": message})
        return
    started = time.time()
    reply(conn, {"ok": True, "monitor_pid": os.getpid(), "init_pid": pid, "started_at": started})
    # After the answer: only a re-adopting agent reads it, for the start time and the
    # run's ids (the agent's `run`, kept with the records of a run that started).
    run_ids = spec.get("run")
    write_json(f"{cdir}/started.json", {"init_pid": pid, "started_at": started, "run": run_ids})
    status = _pump(pid, writer, pipes)
    writer.close()
    if os.WIFSIGNALED(status):
        sig: int | None = os.WTERMSIG(status)
        code = 128 + os.WTERMSIG(status)  # as docker and the kubelet report it
    else:
        sig, code = None, os.WEXITSTATUS(status)
    cgroups = [str(d) for d in spec.get("cgroups") or []]
    files = spec.get("oom_files")
    oom = oom_kills(cgroups, files) > int(spec.get("oom_before") or 0)
    record = _exit_record(spec, code, sig, started, oom_killed=oom, run=run_ids)
    write_json(f"{cdir}/exit.json", record, durable=True)
    # Durable first, then told: the agent that started us (if it still listens) needs no
    # pidfd and no read of exit.json; any other agent finds the file.
    reply(conn, {"exit": record})
    os.close(conn)


def open_cgroups(cgroup_dirs: list[str]) -> list[int]:
    """The `cgroup.procs` files of the container's cgroups (one dir per hierarchy), opened
    for the init while the host's tree is still its root."""
    fds: list[int] = []
    try:
        for d in cgroup_dirs:
            fds.append(os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def attach_self(procs: list[int]) -> None:
    """Move the caller into the cgroups whose `cgroup.procs` files `procs` are, and close
    them. The first write may wait for the rest of an RCU grace period (see _init)."""
    for fd in procs:
        try:
            os.write(fd, b"0")  # "0": the writer itself, whatever its pid in its namespace
        finally:
            os.close(fd)


def _read_to_end(fd: int) -> bytes:
    """What the init wrote on its failure pipe, to EOF (it has exited or exec'd)."""
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data


def _start(
    spec: dict[str, Any], conn: int, prepared: Prepared
) -> tuple[int, logs.LogWriter, dict[int, str]]:
    """Pin the pod's namespaces the prepared init made, write the records, let the init go
    on (it moves itself into its cgroups); return once it has exec'd. Raises with a
    message on any failure (the init is reaped then)."""
    cdir = str(spec["dir"])
    pid = prepared.pid
    sandbox = spec.get("sandbox")
    writer = None
    try:
        # Which of the pod's namespaces nobody had pinned: those the init keeps (it made
        # them ahead), and we pin; it joins the others. The init looks, and says.
        line = prepared.readline()
        if not line:
            raise RuntimeError("the container's init died before its namespaces were set")
        create = [str(kind) for kind in json.loads(line)]
        os.close(prepared.up)
        if sandbox and create:
            # In the host's mount namespace, from the init's /proc entry: the init is in
            # its new namespaces since prepare(), and builds its root meanwhile.
            namespaces.pin(pid, sandbox, create)
        # Our own troubles' log next to the container's records (until now they went to
        # the fork server's), the records the agent re-adopts us by, and the log (what the
        # container writes before we read it waits in the pipes).
        err = os.open(f"{cdir}/monitor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(err, 2)
        os.close(err)
        write_json(f"{cdir}/monitor.pid", {"pid": os.getpid(), "start": proc_start_time("self")})
        write_json(f"{cdir}/init.pid", {"pid": pid, "start": proc_start_time(pid)})
        log = spec["log"]
        writer = logs.LogWriter(str(log["path"]), int(log["max_bytes"]), int(log["max_files"]))
        # The records are there: the init may go on to its cgroups and its command. It
        # is still building its root, usually, so the go waits for it, not it for us.
        os.write(prepared.go_w, b"g")
    except BaseException as exc:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if writer is not None:
            writer.close()
        # The init may have failed first and gone (building its root, or looking up the
        # pod's namespaces): then pinning them failed (no /proc/PID/ns/... any more) or
        # its line never came, and its own message, waiting in the pipe, says why. The
        # pipe is at its end: the init, its only writer, is reaped.
        failure = _read_to_end(prepared.fail_r)
        if failure and isinstance(exc, Exception):
            raise RuntimeError(failure.decode("utf-8", "replace")) from None
        raise
    finally:
        os.close(prepared.go_w)
    failure = _read_to_end(prepared.fail_r)
    os.close(prepared.fail_r)
    if failure:
        os.waitpid(pid, 0)
        writer.close()
        raise RuntimeError(failure.decode("utf-8", "replace"))
    return pid, writer, {prepared.out_r: "stdout", prepared.err_r: "stderr"}


def _receive_spec(conn: int, up: int) -> tuple[dict[str, Any], list[str]]:
    """In a spare's init: read the request from the agent's socket `conn`, hand it on to
    the monitor, and return the launch spec and the namespace kinds it keeps (`_keep`).
    A request that is not a start ends the init."""
    data = read_line(conn, MAX_REQUEST)
    write_all(up, data)  # first: the monitor serves whatever it is
    if not data:
        os._exit(0)  # the spare was let go, or the monitor discards us
    spec = json.loads(data)
    if not isinstance(spec, dict) or spec.get("op") != "run":
        os._exit(0)  # not a start: the monitor serves it, and reaps us
    return spec, _keep(spec, up)


def _keep(spec: dict[str, Any], up: int) -> list[str]:
    """In the init: the kinds of the pod's namespaces nobody pinned yet (looked up here,
    still in the host's mount namespace), which it keeps; told to the monitor on `up`."""
    sandbox = spec.get("sandbox")
    create = namespaces.missing(sandbox) if sandbox else []
    write_all(up, json.dumps(create).encode() + b"\n")
    os.close(up)
    return create


def _init(
    up: int,
    conn: int,
    priority: int | None,
    given: dict[str, Any] | None,
    out_w: int,
    err_w: int,
    go_r: int,
    fail_w: int,
) -> None:
    """The container's init: PID 1 in its PID namespace; ends in execve or _exit."""
    try:
        # If the monitor dies, nobody would read our output or record our exit:
        # die with it, so the agent sees "monitor lost" and restarts us cleanly.
        sc.set_pdeathsig(signal.SIGKILL)
        # The monitor's signal dispositions (Python ignores SIGPIPE and SIGXFSZ) would
        # survive exec: give the container the defaults.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("0")  # undo the monitor's protection
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (null, out_w, err_w):
            os.close(fd)
        # New ipc, uts and net namespaces before we know the pod (namespaces.py): a pod's
        # first container keeps them, later ones and hostNetwork pods leave them again.
        host = namespaces.make()
        os.write(up, b"w")
        if given is not None:
            spec, create = given, _keep(given, up)
        else:
            spec, create = _receive_spec(conn, up)
        os.close(conn)  # the agent's socket is the monitor's
        if priority is not None:
            os.setpriority(os.PRIO_PROCESS, 0, priority)  # a start now, not a spare's work
        namespaces.enter(spec.get("sandbox"), create, host)
        procs = open_cgroups([str(d) for d in spec.get("cgroups") or []])
        rootfs.enter(spec)
        uid, gid, groups = rootfs.resolve_user(spec.get("user"))
        cwd = str(spec.get("cwd") or "/")
        try:
            os.chdir(cwd)
        except FileNotFoundError:
            os.makedirs(cwd, 0o755)  # as docker and containerd do for a missing WORKDIR
            os.chdir(cwd)
        # Nothing runs before the monitor has written the records the agent finds the
        # container by (a failed monitor kills us instead).
        if os.read(go_r, 1) != b"g":
            os._exit(1)
        os.close(go_r)
        # Into the container's cgroups before the command runs, so that its limits hold
        # from its first instruction. We move ourselves, last: the first write to a
        # cgroup.procs after a quiet spell waits for an RCU grace period (the kernel's
        # cgroup_threadgroup_rwsem, 10-13 ms here under load), which the agent's
        # prime_attach began when the cgroups were made, so what is left of it passes
        # while we build the root, and the exec follows the move with no process between.
        attach_self(procs)
        if (uid, gid) != (0, 0) or groups:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
        argv = [str(a) for a in spec["argv"]]
        env = dict(str(e).split("=", 1) for e in spec["env"])
        exec_in_path(argv, env)
    except BaseException as exc:
        message = str(exc) or type(exc).__name__
        try:
            os.write(fail_w, message.encode()[:4000])
        finally:
            os._exit(127)


def exec_in_path(argv: list[str], env: dict[str, str]) -> None:
    """execve, searching the PATH of the container's environment (not ours) as execvp
    does. Not os.execvpe: it imports `warnings` on the way, and after pivot_root there
    is no standard library to import from."""
    if "/" in argv[0]:
        candidates = [argv[0]]
    else:
        path = env.get("PATH") or "/usr/local/bin:/usr/bin:/bin"
        candidates = [os.path.join(d or ".", argv[0]) for d in path.split(":")]
    denied: OSError | None = None
    for candidate in candidates:
        try:
            os.execve(candidate, argv, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as exc:
            denied = exc  # keep looking, as execvp does, but report this if nothing runs
        except OSError as exc:
            raise RuntimeError(f"exec {argv[0]!r}: {exc.strerror}") from None
    if denied is not None:
        raise RuntimeError(f"exec {argv[0]!r}: {denied.strerror}")
    where = "" if "/" in argv[0] else " in $PATH"
    raise RuntimeError(f"exec {argv[0]!r}: executable file not found{where}")


def _pump(pid: int, writer: logs.LogWriter, pipes: dict[int, str]) -> int:
    """Copy the init's output to the log until it has exited; return its wait status."""
    poller = select.poll()
    for fd in pipes:
        poller.register(fd, select.POLLIN)
    # A pidfd becomes readable when the process exits: one poll() covers both.
    pidfd = os.pidfd_open(pid)
    poller.register(pidfd, select.POLLIN)
    status: int | None = None
    deadline = 0.0
    while pipes or status is None:
        timeout = None
        if status is not None:
            # When PID 1 exits the kernel kills the rest of its namespace, so the pipes
            # close right away; do not wait forever on a writer that leaked out.
            timeout = max(0.0, deadline - time.monotonic()) * 1000
        events = poller.poll(timeout)
        if not events and status is not None:
            break
        for fd, _mask in events:
            if fd == pidfd:
                _, status = os.waitpid(pid, 0)
                poller.unregister(pidfd)
                os.close(pidfd)
                deadline = time.monotonic() + DRAIN_SECONDS
                continue
            data = os.read(fd, STDIO_CHUNK)
            if data:
                writer.write(pipes[fd], data)
            else:
                writer.flush(pipes[fd])
                poller.unregister(fd)
                os.close(fd)
                del pipes[fd]
    assert status is not None
    return status
