"""Image pull benchmark: cold pull + start and warm start of one image from one local
registry, corral's native runtime against `docker pull` + `docker run`; JSON lines out.

    python -m bench.image_pull [--cold 5] [--warm 10] [--filler-mib 16]

Run as root from the repository root. The image is Debian's static busybox
(tests/imagebuild.py) plus a layer of --filler-mib MiB of incompressible bytes (so
download, hashing and unpacking weigh as they do for real images), pushed with skopeo
to Debian's docker-registry on loopback (plain HTTP, as both sides treat 127.0.0.1).
Each sample runs `sh -c 'exit 0'` to its exit; the subjects alternate, cold then warm:

- native cold: a fresh image store; ImagePuller.ensure (resolve, download the blobs
  concurrently into staging, verify, commit, unpack) then NativeRuntime create_pod ->
  start_container -> wait_container -> remove_pod, in this process (uvloop, as the
  agent; its fork server already running, as in the agent);
- native warm: the same with the image present (policy IfNotPresent: no registry call);
- docker cold: `docker rmi` (untimed), then `docker pull` + `docker run --rm --network
  none IMAGE sh -c 'exit 0'` (the CLI, as a person would; the CLI's own start is in it);
- docker warm: `docker run` alone.

Uses a dockerd that answers on the default socket, else starts a private one.
Metrics: image_pull.{cold,warm}.{native,docker} (ms), image_pull.{cold,warm}.ratio
(docker p50 / native p50: above 1 means corral is faster), image_pull.image, .machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import (
    BenchError,
    Cleanup,
    distribution,
    emit,
    machine,
    note,
    run_bench,
)
from common import eventloop

TAG = "corral-bench-pull"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.image_pull", description=__doc__)
    parser.add_argument("--cold", type=int, default=5, help="cold samples per subject")
    parser.add_argument("--warm", type=int, default=10, help="warm samples per subject")
    parser.add_argument("--filler-mib", type=int, default=16, help="size of the extra layer")
    parser.add_argument("--skip", default="", help="comma-separated: native,docker")
    return parser.parse_args(argv)


def filler_layer(mib: int) -> list[Any]:
    from tests.imagebuild import file

    rng = random.Random(1234)  # the same bytes every run: the same digests
    return [file("filler.bin", rng.randbytes(mib << 20))]


class Native:
    """corral's puller and native runtime, driven on one event loop in this process."""

    def __init__(self, work: Path, image: str, registry_host: str, cleanup: Cleanup) -> None:
        from agent.runtime.native.cgroups import probe
        from agent.runtime.native.images import ImageStore
        from agent.runtime.native.puller import ImagePuller
        from agent.runtime.native.registry import RegistryClient
        from agent.runtime.native.runtime import NativeRuntime
        from agent.runtime.pulls import RegistrySettings

        self.loop = eventloop.new_loop()  # as the agent runs
        self.work = work
        self.image = image
        self._settings = RegistrySettings(insecure=[registry_host])
        self._store_cls, self._puller_cls, self._client_cls = (
            ImageStore,
            ImagePuller,
            RegistryClient,
        )
        self.cgroups = probe(f"{TAG}-{os.getpid()}")
        self.store = ImageStore(work / "store-warm")
        self.runtime = NativeRuntime(work / "native", self.store, self.cgroups)
        self.loop.run_until_complete(self.runtime.start())
        cleanup.push("native runtime", self.close)

    def close(self) -> None:
        self.loop.run_until_complete(self.runtime.close())
        self.loop.close()
        self.cgroups.remove("")

    async def _run(self, cold: bool) -> float:
        from common.models import Pod

        started = time.perf_counter()
        if cold:
            store = self._store_cls(self.work / f"store-{uuid.uuid4().hex[:8]}")
            puller = self._puller_cls(store, self._client_cls(self._settings))
            try:
                await puller.ensure(self.image, "Always")
            finally:
                await puller.close()
            self.runtime.images = store  # start from what was just pulled
        else:
            await asyncio.to_thread(self.runtime.images.require, self.image)
        pod = Pod.model_validate(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "bench", "namespace": "default", "uid": str(uuid.uuid4())},
                "spec": {
                    "containers": [
                        {"name": "c", "image": self.image, "command": ["sh", "-c", "exit 0"]}
                    ]
                },
            }
        )
        uid = str(pod.metadata.uid)
        await self.runtime.create_pod(pod)
        await self.runtime.start_container(pod, "c")
        exit = await self.runtime.wait_container(uid, "c")
        await self.runtime.remove_pod(uid)
        elapsed = time.perf_counter() - started
        if exit.exit_code != 0:
            raise BenchError(f"native: the container exited {exit.exit_code}")
        if cold:  # keep the last cold store as the warm one; drop the others (untimed)
            previous = self.store.root
            self.store = self.runtime.images
            if previous != self.store.root:
                await asyncio.to_thread(shutil.rmtree, previous, True)
        return elapsed * 1000

    def sample(self, cold: bool) -> float:
        self.runtime.images = self.store
        return self.loop.run_until_complete(self._run(cold))


class Docker:
    """The docker CLI against a dockerd (the machine's, or a private one)."""

    def __init__(self, image: str, cleanup: Cleanup) -> None:
        from tests.services import DockerDaemon

        self.daemon = DockerDaemon.start_or_reuse()
        cleanup.push("dockerd", self.daemon.stop)
        self.image = image
        self.version = self.daemon.docker("version", "--format", "{{.Server.Version}}").strip()
        cleanup.push("docker image", self.remove_image)

    def remove_image(self) -> None:
        self.daemon.docker("rmi", "-f", self.image, check=False)

    def _cli(self, *args: str) -> None:
        done = subprocess.run(
            ["docker", "-H", self.daemon.host, *args], capture_output=True, timeout=300
        )
        if done.returncode != 0:
            raise BenchError(f"docker {args[0]}: {done.stderr.decode().strip()}")

    def sample(self, cold: bool) -> float:
        if cold:
            self.remove_image()  # untimed
        started = time.perf_counter()
        if cold:
            self._cli("pull", "--quiet", self.image)
        self._cli("run", "--rm", "--network", "none", self.image, "sh", "-c", "exit 0")
        return (time.perf_counter() - started) * 1000


def run(args: argparse.Namespace, cleanup: Cleanup) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: namespaces, cgroups and mounts need it")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers
    from agent.runtime.native import rootfs as native_rootfs
    from tests.imagebuild import build_busybox_rootfs, write_oci_layout
    from tests.services import Registry

    skip = {s for s in args.skip.split(",") if s}
    work = Path(tempfile.mkdtemp(prefix=f"{TAG}-", dir="/var/tmp"))

    def remove_work() -> None:
        native_rootfs.unmount_below(str(work))
        shutil.rmtree(work, ignore_errors=True)

    cleanup.push("work directory", remove_work)
    rootfs = build_busybox_rootfs(work / "rootfs")
    layout = write_oci_layout(rootfs, work / "layout", extra_layers=[filler_layer(args.filler_mib)])
    registry = Registry(work / "registry")
    registry.start()
    cleanup.push("registry", registry.stop)
    image = registry.push(layout, "bench/busybox:1")
    blobs = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
    note(f"registry at {registry.host}, image {image}")
    subjects: dict[str, Any] = {}
    if "native" not in skip:
        subjects["native"] = Native(work, image, registry.host, cleanup)
    if "docker" not in skip:
        try:
            subjects["docker"] = Docker(image, cleanup)
        except (RuntimeError, OSError, BenchError) as exc:
            emit("image_pull.cold.docker", "ms", unavailable=str(exc))
    emit(
        "image_pull.machine",
        **machine(),
        dockerd=subjects["docker"].version if "docker" in subjects else None,
        registry="docker-registry (distribution 2.8), loopback, plain HTTP",
    )
    emit("image_pull.image", "bytes", value=blobs, layers=2, filler_mib=args.filler_mib)
    results: dict[str, dict[str, dict[str, Any]]] = {"cold": {}, "warm": {}}
    for phase, n in (("cold", args.cold), ("warm", args.warm)):
        samples: dict[str, list[float]] = {name: [] for name in subjects}
        for i in range(n + 1):  # the first round warms caches and is dropped
            order = list(subjects)
            random.shuffle(order)
            for name in order:
                value = subjects[name].sample(phase == "cold")
                if i:
                    samples[name].append(value)
        for name, values in samples.items():
            results[phase][name] = distribution(values)
            emit(f"image_pull.{phase}.{name}", "ms", **results[phase][name])
        if {"native", "docker"} <= set(results[phase]):
            native, docker = results[phase]["native"], results[phase]["docker"]
            emit(
                f"image_pull.{phase}.ratio",
                "x",
                value=round(docker["p50"] / native["p50"], 2),
                p99=round(docker["p99"] / native["p99"], 2),
                meaning="docker / native; above 1: corral is faster",
            )


def main(argv: list[str] | None = None) -> int:
    return run_bench(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
