"""The agent's runtimes from its config: native and docker, behind one RuntimeRouter."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.config import AgentConfig
from agent.runtime.docker.runtime import DockerRuntime
from agent.runtime.native.cgroups import CgroupDriver
from agent.runtime.native.images import ImageStore
from agent.runtime.native.puller import ImagePuller
from agent.runtime.native.registry import RegistryClient
from agent.runtime.native.runtime import NativeRuntime
from agent.runtime.pulls import settings_from
from agent.runtime.router import RuntimeRouter


def log_dir_of(config: AgentConfig, state: Path) -> Path:
    """The containers' log directory, which both runtimes share."""
    return Path(config.log_dir) if config.log_dir else state / "logs"


def build_runtime(config: AgentConfig, state: Path, cgroups: CgroupDriver) -> RuntimeRouter:
    """Both runtimes, sharing the log directory, limits and registry settings; pods go to
    `runtimeClassName`, else `config.runtime`. Call `start()` on the result."""
    log_dir = log_dir_of(config, state)
    registries = settings_from(config)
    images = ImageStore(state / "images", max_layer_bytes=config.max_layer_bytes)
    puller = ImagePuller(images, RegistryClient(registries))
    native = NativeRuntime(
        state,
        images,
        cgroups,
        log_dir=log_dir,
        log_max_bytes=config.log_max_bytes,
        log_max_files=config.log_max_files,
        pids_limit=config.pids_limit,
        allowed_host_paths=config.allowed_host_paths,
        puller=puller,
    )
    # Which agent owns a Docker container: the node and its state directory, so two
    # agents sharing one dockerd (tests, benchmarks) never adopt each other's pods.
    where = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12]
    docker = DockerRuntime(
        state / "docker",
        cgroups,
        docker_host=config.docker_host,
        log_dir=log_dir,
        log_max_bytes=config.log_max_bytes,
        log_max_files=config.log_max_files,
        pids_limit=config.pids_limit,
        allowed_host_paths=config.allowed_host_paths,
        pause_image=config.docker_pause_image,
        registries=registries,
        owner=f"{config.node_name}.{where}",
    )
    router = RuntimeRouter({"native": native, "docker": docker}, config.runtime)
    router.on_close.append(puller.close)
    return router
