"""Pieces of the Docker runtime that need no daemon: the log stream decoding, the pause
image's layer, and the router that sends each pod to its runtime."""

from __future__ import annotations

import asyncio
import struct
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.base import RuntimeFailure
from agent.runtime.docker.logs import FrameReader, normalize_stamp, records, since_param
from agent.runtime.docker.pause import PauseImageError, pause_layer
from agent.runtime.router import RuntimeRouter
from common.models import Pod


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def test_frames_split_across_reads() -> None:
    """Frames arrive in any chunking; each comes out whole, with its stream."""
    data = frame(1, b"2026-11-26T01:00:00.1Z out\n") + frame(2, b"2026-11-26T01:00:01Z err\n")
    reader = FrameReader()
    got = []
    for i in range(0, len(data), 5):
        got += reader.feed(data[i : i + 5])
    assert got == [
        ("stdout", b"2026-11-26T01:00:00.1Z out\n"),
        ("stderr", b"2026-11-26T01:00:01Z err\n"),
    ]


def test_records_partial_and_resume() -> None:
    """A message without a newline is a P record; records up to `after` are skipped."""
    frames = [
        ("stdout", b"2026-11-26T01:00:00.5Z first\n"),
        ("stdout", b"2026-11-26T01:00:01.123456789Z part of a long"),
        ("stderr", b"2026-11-26T01:00:02Z last\n"),
    ]
    out = records(frames, None)
    assert out == [
        ("2026-11-26T01:00:00.500000000Z", "stdout", False, b"first"),
        ("2026-11-26T01:00:01.123456789Z", "stdout", True, b"part of a long"),
        ("2026-11-26T01:00:02.000000000Z", "stderr", False, b"last"),
    ]
    assert records(frames, "2026-11-26T01:00:01.123456789Z") == out[2:]


def test_stamps() -> None:
    assert normalize_stamp("2026-11-26T01:00:00Z") == "2026-11-26T01:00:00.000000000Z"
    assert normalize_stamp("2026-11-26T02:00:00.25+01:00") == "2026-11-26T01:00:00.250000000Z"
    assert since_param(None) == "0"
    assert since_param("1970-01-01T00:00:10.500000000Z") == "10.500000000"


def test_pause_layer(tmp_path: Path) -> None:
    """One static busybox at bin/busybox; a dynamic binary is refused with advice."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("no /bin/busybox")
    tag, layer = pause_layer(busybox)
    with tarfile.open(fileobj=BytesIO(layer)) as tar:
        assert tar.getnames() == ["bin", "bin/busybox"]
    assert len(tag) == 16
    with pytest.raises(PauseImageError, match="busybox-static"):
        pause_layer(Path("/bin/sh"))


class FakeRuntime:
    """Records calls; enough of the Runtime interface for the router."""

    def __init__(self, name: str, pods: list[Any] | None = None) -> None:
        self.name = name
        self.calls: list[tuple[str, str]] = []
        self._pods = pods or []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def recover(self) -> list[Any]:
        return self._pods

    async def create_pod(self, pod: Pod) -> None:
        self.calls.append(("create_pod", str(pod.metadata.uid)))

    async def remove_pod(self, uid: str) -> None:
        self.calls.append(("remove_pod", uid))

    def log_path(self, uid: str, container: str) -> Path:
        return Path(self.name, uid, container)


def pod(uid: str, runtime_class: str | None = None) -> Pod:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x"}]}
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return Pod.model_validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "uid": uid}, "spec": spec}
    )


async def test_router_routes_by_class_and_uid() -> None:
    """runtimeClassName picks the runtime, else the default; uids follow their pod; an
    unknown class is a CreatePodSandboxError; recovered pods route to where they were."""
    native, docker = FakeRuntime("native"), FakeRuntime("docker")
    recovered = type("Info", (), {"uid": "old"})()
    docker._pods = [recovered]
    router = RuntimeRouter({"native": native, "docker": docker}, "native")  # type: ignore[dict-item]
    await router.recover()
    await router.create_pod(pod("a"))
    await router.create_pod(pod("b", "docker"))
    assert native.calls == [("create_pod", "a")]
    assert docker.calls == [("create_pod", "b")]
    assert router.log_path("b", "c") == Path("docker", "b", "c")
    assert router.log_path("old", "c") == Path("docker", "old", "c")
    await router.remove_pod("b")
    assert docker.calls[-1] == ("remove_pod", "b")
    assert router.log_path("b", "c") == Path("native", "b", "c")  # forgotten: the default
    with pytest.raises(RuntimeFailure) as info:
        await router.create_pod(pod("c", "gvisor"))
    assert info.value.reason == "CreatePodSandboxError"
    assert "native, docker" in str(info.value) or "docker, native" in str(info.value)


async def test_draining_a_log_copy_can_be_cancelled(tmp_path: Path) -> None:
    """A container's wait that drains its log copy when the agent shuts down is cancelled,
    not left to go on as if the container had exited (the cancellation was suppressed)."""
    from agent.runtime.docker.runtime import DockerRuntime

    runtime = DockerRuntime(tmp_path, None)  # type: ignore[arg-type]
    copy = asyncio.create_task(asyncio.sleep(3600))  # a copy still catching up
    runtime._followers[("uid", "c")] = copy
    drain = asyncio.create_task(runtime._drain_logs("uid", "c"))
    await asyncio.sleep(0.01)
    drain.cancel()
    with pytest.raises(asyncio.CancelledError):
        await drain
    assert not copy.done()  # the copy is not the drain's to cancel
    copy.cancel()
