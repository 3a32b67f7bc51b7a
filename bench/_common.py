"""Helpers shared by the benchmarks in bench/: JSON-lines output, percentiles, the machine,
process memory, and a cleanup stack that runs even on failure or Ctrl-C.

Every benchmark prints one JSON object a line, one metric a line (see DESIGN.md,
"Benchmarks"); progress and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

MIB = 1024 * 1024


class BenchError(Exception):
    """The benchmark cannot go on (or one subject cannot); the message says why."""


def emit(metric: str, unit: str | None = None, **fields: Any) -> None:
    """One metric line on stdout: {"metric": ..., "unit": ..., **fields}."""
    line: dict[str, Any] = {"metric": metric}
    if unit is not None:
        line["unit"] = unit
    line.update(fields)
    print(json.dumps(line), flush=True)


def note(message: str) -> None:
    """Progress for the person watching (stderr, so stdout stays JSON lines)."""
    print(f"# {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (p99 of 50 samples is the max)."""
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def distribution(values: Sequence[float], digits: int = 2) -> dict[str, Any]:
    """p50, p99, mean, min, max and n of `values`, rounded."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "p50": round(percentile(ordered, 0.50), digits),
        "p99": round(percentile(ordered, 0.99), digits),
        "mean": round(sum(ordered) / len(ordered), digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
    }


# --- the machine --------------------------------------------------------------------------


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of this mount namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(" "), right.split(" ")
            if len(fields) >= 5 and len(rest) >= 3:
                out.append((fields[4], rest[0], rest[2].strip()))
    return out


def cgroup_mode() -> str:
    """ "v2", "hybrid (...)" or "v1 (...)": how cgroups are mounted below /sys/fs/cgroup."""
    mounts = _mounts()
    by_point = {point: fstype for point, fstype, _ in mounts}
    if by_point.get("/sys/fs/cgroup") == "cgroup2":
        return "v2"
    v1 = sorted(
        os.path.basename(point)
        for point, fstype, _ in mounts
        if fstype == "cgroup" and point.startswith("/sys/fs/cgroup/")
    )
    unified = [p for p, t, _ in mounts if t == "cgroup2" and p.startswith("/sys/fs/cgroup/")]
    if unified:
        try:
            controllers = Path(unified[0], "cgroup.controllers").read_text().split()
        except OSError:
            controllers = []
        what = ", ".join(controllers) if controllers else "no controllers"
        return f"hybrid: v1 {','.join(v1)}; cgroup2 at {unified[0]} ({what})"
    return f"v1: {','.join(v1)}"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_total / (1 << 30), 1),
        "kernel": platform.release(),
        "cgroup": cgroup_mode(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


# --- process memory -----------------------------------------------------------------------


def smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup as {field: kB} (Rss, Pss, Shared_Clean, ...); {} if gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return out
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


def rss_pss_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MiB, from smaps_rollup."""
    rollup = smaps_rollup(pid)
    return round(rollup.get("Rss", 0) / 1024, 1), round(rollup.get("Pss", 0) / 1024, 1)


# --- cleanup ------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Cleanup:
    """A stack of undo steps, run last-in first-out by `run()`; each step's failure is
    reported and the others still run. Register a step right after what it undoes."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, label: str, step: Callable[[], None]) -> None:
        self._steps.append((label, step))

    def run(self) -> None:
        while self._steps:
            label, step = self._steps.pop()
            try:
                step()
            except BaseException as exc:  # keep going: the next step may still be needed
                note(f"cleanup: {label}: {type(exc).__name__}: {exc}")
                if not isinstance(exc, Exception):
                    traceback.print_exc()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt like ^C does, so `finally` blocks run; while the
    block's own cleanup runs (after it), both signals are ignored."""

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ignore_interrupts() -> None:
    """From now on ^C and SIGTERM are ignored (call before running cleanup)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run_bench(run: Callable[[argparse.Namespace, Cleanup], None], args: argparse.Namespace) -> int:
    """Run a benchmark's `run(args, cleanup)` with ^C and SIGTERM turned into a clean stop:
    the cleanup steps always run. Exit code 0, 1 (a BenchError) or 130 (interrupted)."""
    cleanup = Cleanup()
    code = 0
    with interruptible():
        try:
            run(args, cleanup)
        except KeyboardInterrupt:
            note("interrupted; cleaning up")
            code = 130
        except BenchError as exc:
            note(f"error: {exc}")
            code = 1
        finally:
            ignore_interrupts()
            cleanup.run()
    return code
