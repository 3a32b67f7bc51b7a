"""`kill -9` of the scheduler during a stream of creates loses nothing it acknowledged."""

from __future__ import annotations

import threading
import urllib.error
from pathlib import Path

from tests.conftest import SchedulerProcess, wait_for
from tests.integration.test_api import pod

WRITERS = 8


def test_acknowledged_pods_survive_kill_9(tmp_path: Path) -> None:
    """Every pod answered 201 before SIGKILL is there after a restart, with the same uid."""
    sched = SchedulerProcess(tmp_path / "scheduler")
    sched.start()
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(index: int) -> None:
        n = 0
        while not stop.is_set():
            name = f"w{index}-{n}"
            n += 1
            try:
                resp = sched.request(
                    "POST", "/api/v1/namespaces/default/pods", pod(name), timeout=5
                )
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                return  # the server died under us: this write was never acknowledged
            if resp.status == 201:
                with lock:
                    acked[name] = resp.json()["metadata"]["uid"]

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= 300, timeout=30)
        sched.kill()  # SIGKILL, mid-stream
        stop.set()
        for t in threads:
            t.join(timeout=10)
        with lock:
            snapshot = dict(acked)
        sched.start()  # same port, same state directory
        stored = {
            p["metadata"]["name"]: p["metadata"]["uid"]
            for p in sched.get("/api/v1/namespaces/default/pods")["items"]
        }
        missing = sorted(set(snapshot) - set(stored))
        assert not missing, f"{len(missing)} acknowledged pods lost, e.g. {missing[:5]}"
        assert all(stored[name] == uid for name, uid in snapshot.items())
        # Still serving writes after the restart.
        assert sched.request("POST", "/api/v1/namespaces/default/pods", pod("after")).status == 201
    finally:
        stop.set()
        sched.stop()
