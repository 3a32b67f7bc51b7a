"""bench.request_churn against the real scheduler, briefly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_a_short_run_reports_the_schedulers_memory() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.request_churn", "--requests", "200", "--warm-up", "50"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    result = json.loads(line)
    assert result["metric"] == "request_churn.rss" and result["requests"] == 200
    assert 20 < result["before"] <= result["after"] + 5  # MiB: a live scheduler's
    assert result["requests_per_s"] > 0


@pytest.mark.parametrize("argv", [["--requests", "0"], ["--warm-up", "-1"], ["--path", "relative"]])
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    from bench.request_churn import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
