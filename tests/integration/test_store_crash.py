"""The store's durability promise: a write acknowledged before a SIGKILL is there after it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from scheduler.store import SqliteStore

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0

# Eight concurrent writers, so acknowledged writes come from shared group commits.
# Each key is printed (and flushed) only after its put has returned.
WRITER = """
import asyncio, sys
from scheduler.store import SqliteStore

async def main(path: str) -> None:
    store = await SqliteStore.open(path)

    async def writer(name: int) -> None:
        for i in range(10**9):
            key = f"/crash/{name}/{i:09d}"
            await store.put(key, key.encode())
            sys.stdout.write(key + "\\n")
            sys.stdout.flush()

    await asyncio.gather(*(writer(n) for n in range(8)))

asyncio.run(main(sys.argv[1]))
"""


async def _run_and_kill(db_path: Path, acks_wanted: int) -> list[str]:
    """Start the writer, read `acks_wanted` acknowledgements, SIGKILL it, return every ack."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        str(db_path),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acks: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(acks) < acks_wanted:
                line = await proc.stdout.readline()
                if not line:
                    error = (await proc.stderr.read()).decode()
                    pytest.fail(f"writer exited early ({await proc.wait()}):\n{error}")
                acks.append(line.decode())
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
    # Lines already in the pipe were acknowledged before the kill; count them too.
    # A line cut off by the kill has no newline and proves nothing.
    rest = await asyncio.wait_for(proc.stdout.read(), TIMEOUT)
    acks.extend(rest.decode().splitlines(keepends=True))
    assert await asyncio.wait_for(proc.wait(), TIMEOUT) == -signal.SIGKILL
    return [ack.rstrip("\n") for ack in acks if ack.endswith("\n")]


@pytest.mark.parametrize("acks_wanted", [200, 500])
async def test_acknowledged_writes_survive_sigkill(tmp_path: Path, acks_wanted: int) -> None:
    """Every key the child saw acknowledged before SIGKILL is in the reopened database."""
    db_path = tmp_path / "crash.db"
    acked = await _run_and_kill(db_path, acks_wanted)
    assert len(acked) >= acks_wanted

    store = await SqliteStore.open(db_path)
    try:
        items, revision = await store.list("/crash/")
        stored = {kv.key: kv for kv in items}
        missing = [key for key in acked if key not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        assert all(stored[key].value == key.encode() for key in acked)
        # Nothing else is half there: every stored row is whole and the revision covers it.
        assert all(kv.value == kv.key.encode() for kv in items)
        assert revision == len(items) == max(kv.mod_revision for kv in items)
        # The store keeps working after the crash, from the next revision.
        assert (await store.put("/after", b"x")).mod_revision == revision + 1
    finally:
        await store.close()
