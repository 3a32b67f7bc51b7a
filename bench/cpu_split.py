"""Where the CPU goes during one placement benchmark's placement phase; one JSON line out.

    python -m bench.cpu_split [bench.placement args]

Runs `python -m bench.placement --api-requests 0 [args]` of this tree and, from its
`placement.join` line to its `placement.throughput` line (the submit and the binds,
plus the benchmark's closing scrape and pod list), measures from /proc:

- `machine_busy_pct`: the whole machine's busy share (/proc/stat, idle and iowait as idle);
- `scheduler_s`: the scheduler process's user+system CPU, of which `loop_thread_s` is
  its main thread's (the event loop's) and `other_threads_s` the rest (the SQLite
  writer, the thread pool; threads that ended meanwhile included), with
  `other_threads`, the CPU of each other thread alive at the end, largest first;
- `loop_voluntary_switches` and `loop_involuntary_switches`: the loop thread's context
  switches (many voluntary ones would mean it waits, on the GIL or on I/O);
- `hollow_s`: the CPU of the hollow agent processes together.

The scheduler and the hollow processes are found among the benchmark's own child
processes (by their command lines, `scheduler.main --listen` and `agent.hollow`), never
among the machine's, which may hold another benchmark's. The line also carries the
benchmark's own throughput and scheduler_cpu_s (its phase is submit to last bind), and
the log that keeps its whole output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from bench._common import emit

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
JOIN, THROUGHPUT = "placement.join", "placement.throughput"


class SplitError(Exception):
    """The benchmark ended, or its processes went away, before the phase was measured."""


def stat_ticks(line: str) -> int:
    """User+system clock ticks from a /proc/PID/stat or /proc/PID/task/TID/stat line.

    The command name (second field) is in parentheses and may hold spaces or parentheses
    itself, so the fields are counted after the last ')'; utime and stime are the 14th
    and 15th fields of the line."""
    rest = line[line.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def machine_ticks(proc_stat: str) -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs from /proc/stat's `cpu` line. Idle counts
    iowait; the total is user to steal (guest time is already in user)."""
    fields = proc_stat.split("\n", 1)[0].split()
    if fields[0] != "cpu":
        raise ValueError(f"not /proc/stat's cpu line: {fields[0]!r}")
    ticks = [int(f) for f in fields[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


def context_switches(status: str) -> tuple[int, int]:
    """(voluntary, involuntary) context switches from a /proc/.../status text."""
    found: dict[str, int] = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            found[name] = int(value)
    return found["voluntary_ctxt_switches"], found["nonvoluntary_ctxt_switches"]


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    idle, total = after[0] - before[0], after[1] - before[1]
    return round(100 * (1 - idle / total), 1) if total else 0.0


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@dataclass(frozen=True)
class Sample:
    """The counters at one instant."""

    at: float  # monotonic seconds
    machine: tuple[int, int]
    scheduler: int
    threads: dict[int, int]  # tid -> ticks, the scheduler's threads then alive
    switches: tuple[int, int]  # the loop thread's
    hollow: int


def take(scheduler: int, hollow: Sequence[int]) -> Sample:
    """Read every counter; SplitError if a process measured is gone."""
    try:
        threads = {}
        for tid in os.listdir(f"/proc/{scheduler}/task"):
            try:
                threads[int(tid)] = stat_ticks(_read(f"/proc/{scheduler}/task/{tid}/stat"))
            except FileNotFoundError:
                continue  # a thread that ended between the listing and the read
        return Sample(
            at=time.monotonic(),
            machine=machine_ticks(_read("/proc/stat")),
            scheduler=stat_ticks(_read(f"/proc/{scheduler}/stat")),
            threads=threads,
            # The main thread's id is the process id.
            switches=context_switches(_read(f"/proc/{scheduler}/task/{scheduler}/status")),
            hollow=sum(stat_ticks(_read(f"/proc/{pid}/stat")) for pid in hollow),
        )
    except FileNotFoundError as exc:
        raise SplitError(f"a process measured exited during the phase: {exc.filename}") from None


def split(before: Sample, after: Sample, loop_tid: int) -> dict[str, Any]:
    """The phase's figures, in seconds, from two samples."""
    loop = after.threads[loop_tid] - before.threads[loop_tid]
    scheduler = after.scheduler - before.scheduler
    others = sorted(
        (
            ticks - before.threads.get(tid, 0)  # a thread started in the phase: all of it
            for tid, ticks in after.threads.items()
            if tid != loop_tid
        ),
        reverse=True,
    )
    return {
        "phase_s": round(after.at - before.at, 2),
        "machine_busy_pct": busy_pct(before.machine, after.machine),
        "scheduler_s": round(scheduler / TICK, 2),
        "loop_thread_s": round(loop / TICK, 2),
        "other_threads_s": round((scheduler - loop) / TICK, 2),
        "other_threads": [round(t / TICK, 2) for t in others],
        "loop_voluntary_switches": after.switches[0] - before.switches[0],
        "loop_involuntary_switches": after.switches[1] - before.switches[1],
        "hollow_s": round((after.hollow - before.hollow) / TICK, 2),
    }


def find_processes(bench_pid: int) -> tuple[int, list[int]]:
    """The scheduler's pid and the hollow processes' among the benchmark's children."""
    scheduler, hollow = None, []
    for child in psutil.Process(bench_pid).children(recursive=True):
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        if "scheduler.main" in argv and "--listen" in argv:
            scheduler = child.pid
        elif "agent.hollow" in argv:
            hollow.append(child.pid)
    if scheduler is None:
        raise SplitError("no scheduler.main process under the benchmark")
    return scheduler, hollow


def metric(line: str) -> dict[str, Any] | None:
    """A JSON metric line of bench.placement's output, or None for anything else."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "metric" in record else None


def measure(bench: subprocess.Popen[str], lines: IO[str], log: IO[str]) -> dict[str, Any]:
    """Follow the benchmark's output (copied to `log`) through its placement phase."""
    before: Sample | None = None
    scheduler = 0  # and the hollow processes, found at the join line
    hollow: list[int] = []
    for line in lines:
        log.write(line)
        record = metric(line)
        if record is None:
            continue
        if record["metric"] == JOIN:
            scheduler, hollow = find_processes(bench.pid)
            before = take(scheduler, hollow)
        elif record["metric"] == THROUGHPUT and before is not None:
            result = split(before, take(scheduler, hollow), scheduler)
            return {
                **result,
                "hollow_processes": len(hollow),
                "throughput": record["value"],
                "scheduler_cpu_s": record.get("scheduler_cpu_s"),
                "nodes": record.get("nodes"),
                "pods": record.get("pods"),
                "cpus": os.cpu_count(),
            }
    raise SplitError("the benchmark ended before its placement.throughput line")


def main(argv: Sequence[str] | None = None) -> int:
    placement_args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in placement_args or "--help" in placement_args:
        print(__doc__)
        return 0
    fd, log_path = tempfile.mkstemp(prefix="corral-cpu-split-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        bench = subprocess.Popen(
            [sys.executable, "-m", "bench.placement", "--api-requests", "0", *placement_args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert bench.stdout is not None
        try:
            result = measure(bench, bench.stdout, log)
            for line in bench.stdout:  # the rest, until it has stopped its processes
                log.write(line)
        except SplitError as exc:
            if bench.poll() is None:
                # As Ctrl-C: bench.placement stops the processes it started on the way out.
                bench.send_signal(signal.SIGINT)
            bench.wait()
            emit("cpu_split", "s", failed=str(exc), log=log_path)
            return 1
        bench.wait()
    if bench.returncode != 0:
        emit("cpu_split", "s", failed=f"exit status {bench.returncode}", log=log_path)
        return 1
    emit("cpu_split", "s", **result, log=log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
