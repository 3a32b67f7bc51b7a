"""A/B of two checkouts: full placement benchmarks, alternated; JSON lines out.

    python -m bench.ab TREE_A TREE_B [--rounds 4] [--logs DIR] [-- bench.placement args]

Runs each tree's own `python -m bench.placement --api-requests 0 [args]` (cwd and
PYTHONPATH the tree), `--rounds` times each, in the order A B, B A, A B, ... On this
shared machine the load drifts over a sitting by more than a change's effect; strictly
alternated (A B, A B), A would always run first in its round and take one side of
that drift, while the mirrored order gives each tree the first place equally often and
cancels a steady drift over every two rounds.

One `ab.run` line a run: placement.throughput (pods/s), scheduler_cpu_s and
scheduler_gc_s (the placement phase), the machine's 1-minute load average when the run
started and when it ended, and the log that keeps the run's whole output (in `--logs`,
by default a new directory under the temporary one, named in every line). A run that
fails or prints no throughput is an `ab.run` line with `failed` and its log, and is
left out of the summary. Then one `ab.summary` line per tree: the median, min and max
of throughput and scheduler_cpu_s over its good runs. Exit status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import emit

# As every A/B so far: the API latency phase takes minutes and says nothing of placement.
DEFAULT_PLACEMENT_ARGS = ["--api-requests", "0"]
FIELDS = ("throughput", "scheduler_cpu_s")


@dataclass(frozen=True)
class Tree:
    label: str  # "A" or "B"
    path: Path


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Our arguments, and bench.placement's (everything after the first `--`)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def schedule(rounds: int) -> list[tuple[int, int]]:
    """(round, tree index) in the order run: A B, then B A, and so on."""
    order = []
    for r in range(1, rounds + 1):
        first, second = (0, 1) if r % 2 else (1, 0)
        order += [(r, first), (r, second)]
    return order


def throughput_line(output: str) -> dict[str, Any] | None:
    """bench.placement's `placement.throughput` line in a run's output, if it printed one."""
    for line in output.splitlines():
        if not line.startswith("{"):
            continue  # a diagnostic on stderr
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("metric") == "placement.throughput":
            return record
    return None


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """Median, min and max; None for no values."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_once(tree: Tree, round_: int, placement_args: list[str], logs: Path) -> dict[str, Any]:
    """One bench.placement run of `tree`, its output kept in a log; its `ab.run` fields."""
    log = logs / f"{tree.label}-{tree.path.name}.{round_}.log"
    load_start = os.getloadavg()[0]
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.placement", *DEFAULT_PLACEMENT_ARGS, *placement_args],
            cwd=tree.path,
            env={**os.environ, "PYTHONPATH": str(tree.path)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    fields: dict[str, Any] = {
        "tree": tree.label,
        "path": str(tree.path),
        "round": round_,
        "load_start": round(load_start, 2),
        "load_end": round(os.getloadavg()[0], 2),
        "log": str(log),
    }
    record = throughput_line(log.read_text(errors="replace"))
    if proc.returncode != 0:
        fields["failed"] = f"exit status {proc.returncode}"
    elif record is None:
        fields["failed"] = "no placement.throughput line"
    else:
        fields.update(
            throughput=record["value"],
            scheduler_cpu_s=record.get("scheduler_cpu_s"),
            scheduler_gc_s=record.get("scheduler_gc_s"),
        )
    return fields


def summary(tree: Tree, runs: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [r for r in runs if r["tree"] == tree.label]
    good = [r for r in mine if "failed" not in r]
    fields: dict[str, Any] = {
        "tree": tree.label,
        "path": str(tree.path),
        "runs": len(mine),
        "failed": len(mine) - len(good),
    }
    for name in FIELDS:
        fields[name] = spread([r[name] for r in good if r.get(name) is not None])
    return fields


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    ours, placement_args = split_argv(argv)
    p = argparse.ArgumentParser(
        prog="python -m bench.ab",
        description=__doc__.split("\n", 1)[0],
        epilog="Arguments after `--` go to every bench.placement run.",
    )
    p.add_argument("tree_a", type=Path, help="checkout A (its own bench.placement is run)")
    p.add_argument("tree_b", type=Path, help="checkout B")
    p.add_argument("--rounds", type=int, default=4, help="runs of each tree")
    p.add_argument("--logs", type=Path, help="directory for the runs' output (default: new)")
    args = p.parse_args(ours)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    for tree in (args.tree_a, args.tree_b):
        if not (tree / "bench" / "placement.py").is_file():
            p.error(f"{tree} has no bench/placement.py")
    return args, placement_args


def main(argv: Sequence[str] | None = None) -> int:
    args, placement_args = parse_args(sys.argv[1:] if argv is None else argv)
    trees = [Tree("A", args.tree_a.resolve()), Tree("B", args.tree_b.resolve())]
    logs = args.logs or Path(tempfile.mkdtemp(prefix="corral-ab-"))
    logs.mkdir(parents=True, exist_ok=True)
    runs = []
    for round_, index in schedule(args.rounds):
        fields = run_once(trees[index], round_, placement_args, logs)
        emit("ab.run", "pods/s", **fields)
        runs.append(fields)
    for tree in trees:
        emit("ab.summary", "pods/s", **summary(tree, runs))
    return 1 if any("failed" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
