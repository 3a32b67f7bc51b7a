"""bench.cpu_split's reading of /proc, its arithmetic, and how it finds its processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from bench import cpu_split
from bench.cpu_split import Sample
from tests.conftest import wait_for

TICK = cpu_split.TICK


def test_stat_ticks_counts_fields_after_the_command_name() -> None:
    """utime + stime, even when the command name holds spaces and parentheses."""
    tail = "S 1 1 1 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0 100 0 0"
    assert cpu_split.stat_ticks(f"42 (python3) {tail}") == 287
    assert cpu_split.stat_ticks(f"42 (a) b (c) {tail}") == 287
    with open(f"/proc/{os.getpid()}/stat") as f:
        assert cpu_split.stat_ticks(f.read()) >= 0


def test_machine_ticks_from_the_cpu_line() -> None:
    text = "cpu  100 5 20 800 30 0 4 6 0 0\ncpu0 50 2 10 400 15 0 2 3 0 0\nintr 1\n"
    assert cpu_split.machine_ticks(text) == (830, 965)
    with open("/proc/stat") as f:
        idle, total = cpu_split.machine_ticks(f.read())
    assert 0 <= idle <= total
    with pytest.raises(ValueError):
        cpu_split.machine_ticks("cpu0 1 2 3 4 5 6 7 8\n")


def test_busy_share() -> None:
    assert cpu_split.busy_pct((800, 1000), (830, 1100)) == 70.0
    assert cpu_split.busy_pct((800, 1000), (800, 1000)) == 0.0


def test_context_switches_from_status() -> None:
    status = "Name:\tpython3\nvoluntary_ctxt_switches:\t297\nnonvoluntary_ctxt_switches:\t41\n"
    assert cpu_split.context_switches(status) == (297, 41)
    with open(f"/proc/self/task/{os.getpid()}/status") as f:
        voluntary, involuntary = cpu_split.context_switches(f.read())
    assert voluntary >= 0 and involuntary >= 0


def test_the_split_between_the_loop_thread_and_the_others() -> None:
    """The other threads' share is the process's minus the loop thread's, so a thread that
    ended meanwhile still counts; a thread that started meanwhile counts from zero."""
    before = Sample(
        at=10.0,
        machine=(800, 1000),
        scheduler=100,
        threads={7: 80, 8: 10, 9: 10},
        switches=(5, 1),
        hollow=50,
    )
    after = Sample(
        at=12.5,
        machine=(830, 1100),
        scheduler=100 + 5 * TICK,
        threads={7: 80 + 3 * TICK, 8: 10 + TICK, 11: TICK // 2},
        switches=(25, 4),
        hollow=50 + 2 * TICK,
    )
    assert cpu_split.split(before, after, loop_tid=7) == {
        "phase_s": 2.5,
        "machine_busy_pct": 70.0,
        "scheduler_s": 5.0,
        "loop_thread_s": 3.0,
        "other_threads_s": 2.0,
        "other_threads": [1.0, round(TICK // 2 / TICK, 2)],
        "loop_voluntary_switches": 20,
        "loop_involuntary_switches": 3,
        "hollow_s": 2.0,
    }


def test_metric_lines() -> None:
    assert cpu_split.metric('{"metric": "placement.join", "value": 1}') == {
        "metric": "placement.join",
        "value": 1,
    }
    for line in ("bench.placement: timed out", "{oops", "[1]", '{"value": 1}'):
        assert cpu_split.metric(line) is None


# A stand-in for the benchmark: starts the command lines given as JSON, prints their pids,
# and when its stdin closes kills them, waits for them and exits. Ignoring SIGCHLD, it
# leaves no zombie: a child that dies is gone from /proc at once.
BENCH = """
import json, signal, subprocess, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
procs = [subprocess.Popen(argv) for argv in json.loads(sys.argv[1])]
print(json.dumps([p.pid for p in procs]), flush=True)
sys.stdin.read()
for p in procs:
    p.kill()  # skips one already gone (reaped), so never signals a reused pid
for p in procs:
    p.wait()
"""


@pytest.fixture
def bench() -> Iterator[tuple[int, list[psutil.Process]]]:
    """A process of its own stands in for the benchmark, so that what other tests left
    running under this test process does not count: its pid, and its children with the
    command lines of a scheduler, a hollow agent and a bystander."""
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    argvs = [
        [*sleep, "-m", "scheduler.main", "--listen", "127.0.0.1:1"],
        [*sleep, "-m", "agent.hollow", "--server", "x"],
        [*sleep, "scheduler.main"],  # no --listen: not the scheduler
    ]
    parent = subprocess.Popen(
        [sys.executable, "-c", BENCH, json.dumps(argvs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdin is not None and parent.stdout is not None
    try:
        children = [psutil.Process(pid) for pid in json.loads(parent.stdout.readline())]
        # Until a child has exec'd, its command line is still the stand-in's.
        wait_for(lambda: [child.cmdline() for child in children] == argvs)
        yield parent.pid, children
    finally:
        parent.stdin.close()  # it kills its children, waits for them and exits
        try:
            parent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def test_the_processes_are_found_among_the_children(
    bench: tuple[int, list[psutil.Process]],
) -> None:
    bench_pid, children = bench
    scheduler, hollow = cpu_split.find_processes(bench_pid)
    assert (scheduler, hollow) == (children[0].pid, [children[1].pid])
    sample = cpu_split.take(os.getpid(), hollow)  # this process stands in for the scheduler
    assert os.getpid() in sample.threads and sample.machine[1] > 0
    children[1].kill()
    children[1].wait(timeout=10)  # gone from /proc: the stand-in does not leave a zombie
    with pytest.raises(cpu_split.SplitError, match="exited during the phase"):
        cpu_split.take(os.getpid(), hollow)


def test_no_scheduler_among_the_children() -> None:
    """A process of its own stands in for the benchmark: this test process's children
    depend on what other tests left running."""
    bench = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(cpu_split.SplitError, match=r"no scheduler\.main process"):
            cpu_split.find_processes(bench.pid)
    finally:
        bench.kill()
        bench.wait()
