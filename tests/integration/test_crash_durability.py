"""`kill -9` of the scheduler during a stream of creates loses nothing it acknowledged;
a second scheduler on the same state directory is refused rather than let write."""

from __future__ import annotations

import threading
import urllib.error
from pathlib import Path

from tests.conftest import ADMIN_TOKEN, TOKEN, SchedulerProcess, refused_as_second, wait_for
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


def test_a_second_scheduler_on_the_same_state_directory_is_refused(tmp_path: Path) -> None:
    """Two schedulers on one store would each number revisions from what they loaded and
    overwrite each other's writes: the second exits 1, naming the first, and the first
    goes on serving and writing."""
    s = SchedulerProcess(tmp_path / "state")
    s.start()
    try:
        assert s.proc is not None
        assert s.request("POST", "/api/v1/namespaces/default/pods", pod("before")).status == 201
        args = ["--listen", "127.0.0.1:0", "--state-dir", str(s.state_dir)]
        args += ["--join-token", TOKEN, "--admin-token", ADMIN_TOKEN]
        refused_as_second("corral-scheduler", "scheduler.main", args, s.state_dir, s.proc.pid)
        assert s.request("POST", "/api/v1/namespaces/default/pods", pod("after")).status == 201
        names = [p["metadata"]["name"] for p in s.get("/api/v1/pods")["items"]]
        assert sorted(names) == ["after", "before"]
    finally:
        s.stop()
    # Stopped, it lets go: a scheduler started again on the directory has both pods.
    s.start()
    try:
        names = [p["metadata"]["name"] for p in s.get("/api/v1/pods")["items"]]
        assert sorted(names) == ["after", "before"]
    finally:
        s.stop()
