"""bench.ab: the order of runs, its arguments, reading a run's output, and the runs
themselves (of two stand-in trees whose bench.placement prints a line or fails)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import ab


def test_the_trees_take_turns_going_first() -> None:
    assert ab.schedule(3) == [(1, 0), (1, 1), (2, 1), (2, 0), (3, 0), (3, 1)]


def test_arguments_after_the_separator_go_to_bench_placement(tmp_path: Path) -> None:
    assert ab.split_argv(["a", "b", "--rounds", "2", "--", "--nodes", "5000", "--", "x"]) == (
        ["a", "b", "--rounds", "2"],
        ["--nodes", "5000", "--", "x"],
    )
    assert ab.split_argv(["a", "b"]) == (["a", "b"], [])
    for tree in ("a", "b"):
        (tmp_path / tree / "bench").mkdir(parents=True)
        (tmp_path / tree / "bench" / "placement.py").touch()
    args, rest = ab.parse_args([str(tmp_path / "a"), str(tmp_path / "b"), "--", "--pods", "9"])
    assert (args.tree_a, args.tree_b, args.rounds, rest) == (
        tmp_path / "a",
        tmp_path / "b",
        4,
        ["--pods", "9"],
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{a}", "{b}", "--rounds", "0"], "--rounds must be at least 1"),
        (["{a}", "{a}/nowhere"], "has no bench/placement.py"),
        (["{a}", "{b}", "--nodes", "5"], "unrecognized arguments: --nodes 5"),
    ],
)
def test_bad_arguments_are_refused(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for tree in ("a", "b"):
        (tmp_path / tree / "bench").mkdir(parents=True)
        (tmp_path / tree / "bench" / "placement.py").touch()
    argv = [a.format(a=tmp_path / "a", b=tmp_path / "b") for a in argv]
    with pytest.raises(SystemExit) as exc:
        ab.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_the_throughput_line_among_other_output() -> None:
    line = {"metric": "placement.throughput", "value": 1500.0, "scheduler_cpu_s": 5.1}
    output = "\n".join(
        [
            '{"metric": "placement.join", "value": 3}',
            "Traceback (most recent call last):",
            "{not json",
            json.dumps(line),
        ]
    )
    assert ab.throughput_line(output) == line
    assert ab.throughput_line('{"metric": "placement.join"}\nbench.placement: timed out') is None


def test_spread() -> None:
    assert ab.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0}
    assert ab.spread([]) is None


# A stand-in bench.placement: prints what its tree's `result` file holds and exits with
# the status in its `status` file, after checking it runs in and imports from its tree.
STAND_IN = """
import os, sys
from pathlib import Path
tree = Path(__file__).resolve().parent.parent
assert Path.cwd() == tree and os.environ["PYTHONPATH"] == str(tree)
assert sys.argv[1:] == ["--api-requests", "0", "--nodes", "7"], sys.argv
print((tree / "result").read_text(), flush=True)
sys.exit(int((tree / "status").read_text()))
"""


def _tree(path: Path, result: str, status: int) -> Path:
    (path / "bench").mkdir(parents=True)
    (path / "bench" / "__init__.py").touch()
    (path / "bench" / "placement.py").write_text(STAND_IN)
    (path / "result").write_text(result)
    (path / "status").write_text(str(status))
    return path


def test_runs_alternate_and_a_failed_run_is_reported_with_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tree A prints a throughput; tree B fails every time."""
    good = {"metric": "placement.throughput", "value": 1000.0, "scheduler_cpu_s": 4.0}
    a = _tree(tmp_path / "a", json.dumps(good), 0)
    b = _tree(tmp_path / "b", "Traceback: the scheduler exited", 1)
    logs = tmp_path / "logs"
    argv = [str(a), str(b), "--rounds", "2", "--logs", str(logs), "--", "--nodes", "7"]

    assert ab.main(argv) == 1
    runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert [(r["metric"], r["tree"], r.get("round")) for r in runs] == [
        ("ab.run", "A", 1),
        ("ab.run", "B", 1),
        ("ab.run", "B", 2),
        ("ab.run", "A", 2),
        ("ab.summary", "A", None),
        ("ab.summary", "B", None),
    ]
    first_a, first_b = runs[0], runs[1]
    assert first_a["throughput"] == 1000.0 and first_a["scheduler_cpu_s"] == 4.0
    assert "failed" not in first_a and first_a["load_start"] >= 0
    assert first_b["failed"] == "exit status 1"
    assert "the scheduler exited" in Path(first_b["log"]).read_text()
    assert Path(first_b["log"]).parent == logs
    assert runs[4]["throughput"] == {"median": 1000.0, "min": 1000.0, "max": 1000.0}
    assert runs[5] | {"path": None} == {
        "metric": "ab.summary",
        "unit": "pods/s",
        "tree": "B",
        "path": None,
        "runs": 2,
        "failed": 2,
        "throughput": None,
        "scheduler_cpu_s": None,
    }


def test_a_run_without_a_throughput_line_is_a_failure(tmp_path: Path) -> None:
    tree = ab.Tree("B", _tree(tmp_path / "b", '{"metric": "placement.join"}', 0))
    fields = ab.run_once(tree, 1, ["--nodes", "7"], tmp_path)
    assert fields["failed"] == "no placement.throughput line"
    assert fields["log"] == str(tmp_path / "B-b.1.log")
