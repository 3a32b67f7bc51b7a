"""bench.cpu_split end to end: a real bench.placement run on a tiny cluster, measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_tiny_placement_is_split_by_process_and_thread() -> None:
    """20 nodes, 200 pods: one line, every figure present and plausible (the machine is
    shared, so no figure is compared with a fixed value), the benchmark's log kept."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.cpu_split", "--nodes", "20", "--pods", "200"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    split = json.loads(line)
    assert split["metric"] == "cpu_split" and split["pods"] == 200
    assert split["hollow_processes"] == 1 and split["throughput"] > 0
    assert 0 < split["machine_busy_pct"] <= 100
    assert split["phase_s"] > 0 and split["loop_voluntary_switches"] >= 0
    assert split["scheduler_s"] == pytest.approx(
        split["loop_thread_s"] + split["other_threads_s"], abs=0.011
    )
    assert split["other_threads"] == sorted(split["other_threads"], reverse=True)
    log = Path(split["log"]).read_text()
    assert '"placement.join"' in log and '"placement.hollow_cpu"' in log
    Path(split["log"]).unlink()
