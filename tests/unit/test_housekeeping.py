"""Housekeeping's sweep at agent start (agent/housekeeping.py), over real directories."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from agent.housekeeping import sweep
from agent.runtime.native.cgroups import probe


def test_the_sweep_removes_only_what_is_named_as_a_pod_is(tmp_path: Path) -> None:
    """A log directory set to one that holds more than corral's (`log_dir = /var/log`):
    the sweep removes the log directories of pods no runtime knows, named by their uid,
    and nothing else there; it deleted every directory no pod knows, the admin's too."""
    logs, records = tmp_path / "logs", tmp_path / "supervisor"
    records.mkdir()
    live, stale = str(uuid.uuid4()), str(uuid.uuid4())
    for name in (live, stale, "journal", "nginx", stale.upper()):
        (logs / name).mkdir(parents=True)
        (logs / name / "keep.log").write_text("x\n")
    # The driver's parent does not exist: no cgroup to look at (the sweep needs no root).
    cgroups = probe(f"corral-housekeeping-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    swept = sweep({live}, logs, records, cgroups)

    assert swept.log_dirs == [logs / stale]
    assert sorted(p.name for p in logs.iterdir()) == sorted(
        [live, "journal", "nginx", stale.upper()]
    )
    assert (logs / "journal" / "keep.log").read_text() == "x\n"
