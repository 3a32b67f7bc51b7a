"""bench.cpu_per_pod runs each path on a real control plane and reports per-item CPU."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator

import pytest

from bench import cpu_per_pod


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    """The benchmark tunes the collector as the scheduler does; not for the other tests."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.parametrize("path", ["bind", "status", "heartbeat"])
def test_each_path_runs_to_the_end_and_reports_cpu(
    path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Small counts: each path really completes (every pod bound, every report Running,
    every frame read) and prints one JSON line with positive CPU per item."""
    assert cpu_per_pod.main([path, "--count", "30"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["metric"] == f"cpu_per_pod.{path}" and result["count"] == 30
    assert result["loop_us"] > 0 and result["process_us"] >= result["loop_us"] * 0.5


def test_a_count_below_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cpu_per_pod.main(["bind", "--count", "0"])
    assert exc.value.code == 2 and "--count must be at least 1" in capsys.readouterr().err
