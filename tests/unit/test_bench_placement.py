"""bench/placement.py's reading of the scheduler's metrics, the size of its hollow processes,
and the scheduler's interpreter."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bench.placement import (
    COMMIT_BUCKETS,
    COMMITS,
    GC_BUCKETS,
    GC_SECONDS,
    TRANSACTIONS,
    Samples,
    gc_pauses,
    interpreter,
    nodes_per_process,
    quantiles_between,
    store_commits,
)


def _scrape(sums: dict[str, float], buckets: dict[str, dict[str, float]]) -> Samples:
    return {
        GC_SECONDS: [({"generation": g}, v) for g, v in sums.items()],
        GC_BUCKETS: [
            ({"generation": g, "le": le}, n)
            for g, counts in buckets.items()
            for le, n in counts.items()
        ],
    }


def test_gc_seconds_and_longest_pause_between_two_scrapes() -> None:
    """Seconds are summed over generations; the longest pause is the smallest bound that
    holds all the new pauses of every generation, pauses before the first scrape aside."""
    before = _scrape(
        {"0": 1.0, "1": 0.5},
        {"0": {"0.05": 3, "0.1": 5, "+Inf": 5}, "1": {"0.05": 0, "0.1": 1, "+Inf": 1}},
    )
    after = _scrape(
        {"0": 2.0, "1": 0.5},
        {"0": {"0.05": 4, "0.1": 7, "+Inf": 7}, "1": {"0.05": 0, "0.1": 1, "+Inf": 1}},
    )
    assert gc_pauses(before, after) == (1.0, "0.1")
    after[GC_BUCKETS].append(({"generation": "2", "le": "+Inf"}, 1))
    assert gc_pauses(before, after) == (1.0, "+Inf")


def test_no_pause_and_no_histogram() -> None:
    scrape = _scrape({"0": 1.0}, {"0": {"0.05": 3, "+Inf": 3}})
    assert gc_pauses(scrape, scrape) == (0.0, None)
    assert gc_pauses({}, {}) == (None, None)


def _store_scrape(commits: float, transactions: float, buckets: dict[str, float]) -> Samples:
    return {
        COMMITS: [({}, commits)],
        TRANSACTIONS: [({}, transactions)],
        COMMIT_BUCKETS: [({"le": le}, n) for le, n in buckets.items()],
    }


def test_store_commits_between_two_scrapes() -> None:
    """Counts and durations are those of the commits between the scrapes: the ones before
    the first (here, all slow) do not weigh on the quantiles."""
    before = _store_scrape(10, 20, {"0.01": 0, "0.1": 0, "1.0": 10, "+Inf": 10})
    after = _store_scrape(110, 2020, {"0.01": 50, "0.1": 100, "1.0": 110, "+Inf": 110})
    figures = store_commits(before, after)
    assert figures == {
        "commits": 100,
        "transactions_per_commit": 20.0,
        "p50": 10.0,  # the 50th of 100 is the last under 0.01 s
        "p99": 98.2,  # 49 of the 50 between 0.01 and 0.1 s: interpolated
    }
    assert store_commits(after, after)["commits"] == 0
    assert quantiles_between(before, after, COMMIT_BUCKETS) == (100, 10.0, 98.2)
    assert quantiles_between({}, before, COMMIT_BUCKETS) == (10, 550.0, 991.0)
    assert quantiles_between(after, after, COMMIT_BUCKETS) == (0, None, None)  # not NaN


def test_hollow_processes_are_at_most_two_a_cpu() -> None:
    """250 nodes a process up to two processes a CPU; more nodes a process beyond."""
    assert nodes_per_process(1000, 2) == 250  # four processes
    assert nodes_per_process(100, 2) == 250  # one
    assert nodes_per_process(5000, 2) == 1250  # four, not twenty
    assert nodes_per_process(5001, 2) == 1251  # still four: the last one a node short
    assert nodes_per_process(5000, 16) == 250  # twenty processes on sixteen CPUs


def test_the_scheduler_interpreter_is_named_with_its_libpython() -> None:
    info = asyncio.run(interpreter(sys.executable))
    assert info["executable"] == sys.executable
    assert info["version"] == sys.version.split()[0]
    with open("/proc/self/maps") as maps:
        shared = any("/libpython" in line for line in maps)
    assert info["libpython"] == ("shared" if shared else "linked in")


def test_an_interpreter_without_corral_is_refused_by_name(tmp_path: Path) -> None:
    bare = tmp_path / "python"
    bare.write_text(
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'aiohttp'\" >&2\nexit 1\n"
    )
    bare.chmod(0o755)
    with pytest.raises(RuntimeError, match=f"{bare} cannot run the scheduler: .*'aiohttp'"):
        asyncio.run(interpreter(str(bare)))
    with pytest.raises(RuntimeError, match="/nonexistent/python"):
        asyncio.run(interpreter("/nonexistent/python"))
