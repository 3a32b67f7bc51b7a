"""DockerRuntime: the Runtime interface (agent/runtime/base.py) on a Docker daemon (aiodocker).

A pod is an infra container plus one Docker container per container run:

    corral-<uid>.pod      `busybox sleep` (pause.py): owns the pod's network namespace
                          (loopback only, or the host's for hostNetwork), its shareable IPC
                          namespace and its hostname
    corral-<uid>-<name>   network and IPC `container:<infra id>`; restart policy `no`,
                          since corral's supervisor applies the pod's restartPolicy; a
                          fresh container for each run, as in Kubernetes

Labels find them again after an agent restart (`corral.pod.uid`, `corral.container.name`,
and `corral.agent`, the owning agent, so agents sharing one dockerd never adopt each
other's); an exit that happened while no agent ran is read from the container's state.

    <state>/docker/pods/<uid>/pod.json        the pod as create_pod saw it (for recover)
    <state>/docker/pods/<uid>/volumes/<name>  emptyDir volumes (bind-mounted)
    <state>/docker/pods/<uid>/oom-<name>      the id of the container run an OOM kill hit
    <log_dir>/<uid>/<name>.log                CRI-format logs, copied from Docker (logs.py)

Semantics follow the native runtime: command/args against the image's entrypoint/cmd
the Kubernetes way, env, workingDir, emptyDir and hostPath volumes (with the same
allowed-prefix check), grace-period stop (`docker stop -t`), OOMKilled, and the same
cgroups and limits where dockerd uses the cgroupfs driver (docker/cgroups.py). With the
systemd driver Docker applies the limits itself (pids then per container, not per pod).

Probes: exec probes run through `docker exec`; Docker cannot kill an exec, so at its
timeout the command is killed by its host pid. httpGet and tcpSocket probes connect from
the infra container's network namespace, /proc/<pid>/ns/net.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiodocker
import aiohttp

from agent.runtime.base import (
    START_ERROR,
    ContainerExit,
    ContainerInfo,
    EventCallback,
    PodInfo,
    RuntimeFailure,
    Usage,
)
from agent.runtime.docker import cgroups as dcg
from agent.runtime.docker import logs as dlogs
from agent.runtime.docker.pause import PAUSE_COMMAND, PAUSE_REPO, PauseImageError, pause_layer
from agent.runtime.native import rootfs, syscalls
from agent.runtime.native.cgroups import CgroupDriver, CgroupError, Limits, cpu_shares
from agent.runtime.native.oci import ERR_IMAGE_NEVER_PULL
from agent.runtime.native.runtime import host_path_source, limits_of, pod_hostname
from agent.runtime.pulls import (
    ERR_IMAGE_PULL,
    RegistrySettings,
    pull_policy,
    redact,
    registry_host,
    shared_pull,
)
from common.models import Container, Pod
from common.quantity import memory_bytes

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

LABEL_UID = "corral.pod.uid"
LABEL_CONTAINER = "corral.container.name"
LABEL_OWNER = "corral.agent"
LABEL_ROLE = "corral.role"  # "infra" or "app"
LABEL_POD = "corral.pod.name"  # namespace/name, for people reading `docker ps`
MAX_EXEC_OUTPUT = 10 * 1024
LOG_DRAIN = 5.0  # after an exit, how long the log copy may take to catch up
STOP_MARGIN = 30.0  # beyond the grace period, for dockerd to answer a stop
WAIT_RETRY = 1.0
CONNECT_TIMEOUT = 10.0  # after a lost connection to dockerd, before waiting again
# A container status's ids as cri-dockerd reports them: containerID `docker://<id>`, and
# imageID `docker-pullable://<repo>@<digest>` for an image from a registry (it has a repo
# digest), else `docker://sha256:<image id>`.
DOCKER_SCHEME = "docker://"
PULLABLE_SCHEME = "docker-pullable://"
# Words in dockerd's pull errors that mean "no answer from the registry" (not a refusal).
_UNREACHABLE = ("no such host", "connection refused", "i/o timeout", "dial tcp", "network is")


def _dt(text: str | None) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, `Z`); its zero time means unset."""
    if not text or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac or '0')[:6].ljust(6, '0')}+00:00")


class DockerRuntime:
    """The Runtime (agent/runtime/base.py) on Docker containers."""

    name = "docker"

    def __init__(
        self,
        state_dir: Path,
        cgroups: CgroupDriver,
        *,
        docker_host: str = "unix:///var/run/docker.sock",
        log_dir: Path | None = None,
        log_max_bytes: int = 10 * 1024 * 1024,
        log_max_files: int = 3,
        pids_limit: int = 1024,
        allowed_host_paths: list[str] | None = None,
        pause_image: str | None = None,
        registries: RegistrySettings | None = None,
        owner: str = "corral",
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.pods_dir = self.state_dir / "pods"
        self.cgroups = cgroups
        self.docker_host = docker_host
        self.log_dir = Path(log_dir).resolve() if log_dir else self.state_dir / "logs"
        self.log_max_bytes = log_max_bytes
        self.log_max_files = log_max_files
        self.pids_limit = pids_limit
        self.allowed_host_paths = list(allowed_host_paths or [])
        self.registries = registries or RegistrySettings()
        self.owner = owner
        self._pause_image = pause_image
        self._pause_ready = False
        self._docker: aiodocker.Docker | None = None
        self._nested = False  # our cgroups as Docker's CgroupParent (cgroupfs driver)
        self._locks: dict[str, asyncio.Lock] = {}
        self._connect_lock = asyncio.Lock()
        self._followers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._oom_watches: dict[tuple[str, str], dcg.OomWatch] = {}
        self._infra_pid: dict[str, int] = {}
        self._pulls: dict[str, asyncio.Future[None]] = {}

    # --- names and paths ---

    def pod_dir(self, uid: str) -> Path:
        if not uid or "/" in uid or uid in (".", ".."):
            raise RuntimeFailure(f"invalid pod uid {uid!r}")
        return self.pods_dir / uid

    def log_path(self, uid: str, container: str) -> Path:
        return self.log_dir / uid / f"{container}.log"

    @staticmethod
    def infra_name(uid: str) -> str:
        return f"corral-{uid}.pod"  # a '.' no DNS-label container name can have

    @staticmethod
    def container_name(uid: str, container: str) -> str:
        return f"corral-{uid}-{container}"

    @staticmethod
    def pod_cgroup(uid: str) -> str:
        return f"pod-{uid}"

    def netns_path(self, uid: str) -> Path | None:
        """The infra container's network namespace (blocking: a stat)."""
        pid = self._infra_pid.get(uid)
        if pid is None:
            return None
        path = Path(f"/proc/{pid}/ns/net")
        return path if path.exists() else None

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    # --- the daemon ---

    async def start(self) -> None:
        await asyncio.to_thread(self.pods_dir.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self.log_dir.mkdir, parents=True, exist_ok=True)
        try:
            await self._client()
        except RuntimeFailure as exc:
            # Not fatal: native pods still run, and docker pods fail with this message
            # until dockerd answers.
            _LOGGER.info("docker runtime not ready: %s", exc)

    async def close(self) -> None:
        for task in self._followers.values():
            task.cancel()
        await asyncio.gather(*self._followers.values(), return_exceptions=True)
        self._followers.clear()
        for watch in self._oom_watches.values():
            watch.close()
        self._oom_watches.clear()
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def _client(self) -> aiodocker.Docker:
        if self._docker is not None:
            return self._docker
        async with self._connect_lock:
            if self._docker is not None:
                return self._docker
            docker = aiodocker.Docker(url=self.docker_host)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):  # a hung dockerd must not hang us
                    info = await docker.system.info()
            except (aiodocker.DockerError, OSError, TimeoutError) as exc:
                await docker.close()
                message = getattr(exc, "message", None) or str(exc) or "no answer"
                raise RuntimeFailure(
                    f"the Docker daemon at {self.docker_host} is not reachable: {message}"
                ) from None
            self._nested = info.get("CgroupDriver") == "cgroupfs"
            _LOGGER.info(
                "docker %s at %s (cgroup driver %s%s)",
                info.get("ServerVersion"),
                self.docker_host,
                info.get("CgroupDriver"),
                ", pods in corral's cgroups" if self._nested else "",
            )
            self._docker = docker
            return docker

    async def _inspect(self, name: str) -> dict[str, Any] | None:
        docker = await self._client()
        try:
            return await docker.containers.container(name).show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise RuntimeFailure(f"docker inspect {name}: {exc.message}") from None

    async def _list(self, uid: str | None = None) -> list[dict[str, Any]]:
        docker = await self._client()
        labels = [f"{LABEL_OWNER}={self.owner}"] + ([f"{LABEL_UID}={uid}"] if uid else [])
        filters = json.dumps({"label": labels})
        containers = await docker.containers.list(all=True, filters=filters)
        return [c._container for c in containers]

    def _labels(self, pod: Pod, role: str, container: str | None = None) -> dict[str, str]:
        labels = {
            LABEL_UID: str(pod.metadata.uid),
            LABEL_OWNER: self.owner,
            LABEL_ROLE: role,
            LABEL_POD: f"{pod.metadata.namespace or 'default'}/{pod.metadata.name}",
        }
        if container is not None:
            labels[LABEL_CONTAINER] = container
        return labels

    # --- images ---

    async def _ensure_pause(self) -> str:
        if self._pause_image is not None and self._pause_ready:
            return self._pause_image
        docker = await self._client()
        if self._pause_image is not None:  # the operator's: must be here (or pullable)
            await self._ensure_docker_image(self._pause_image, "IfNotPresent", None)
            self._pause_ready = True
            return self._pause_image
        try:
            tag, layer = await asyncio.to_thread(pause_layer)
        except PauseImageError as exc:
            raise RuntimeFailure(str(exc), "CreatePodSandboxError") from None
        image = f"{PAUSE_REPO}:{tag}"
        try:
            await docker.images.inspect(image)
        except aiodocker.DockerError:
            _LOGGER.info("building the pause image %s from the node's busybox", image)
            params = {"fromSrc": "-", "repo": PAUSE_REPO, "tag": tag}
            async with docker._query(
                "images/create",
                "POST",
                params=params,
                data=layer,
                headers={"Content-Type": "application/x-tar"},
            ) as resp:
                answer = await resp.read()
            if b'"error"' in answer:
                raise RuntimeFailure(
                    f"cannot import the pause image: {answer[-300:].decode(errors='replace')}",
                    "CreatePodSandboxError",
                ) from None
        self._pause_image, self._pause_ready = image, True
        return image

    async def ensure_image(self, pod: Pod, container: str, events: EventCallback) -> None:
        """Make the image present in dockerd per the container's imagePullPolicy."""
        spec = self._spec(pod, container)
        policy = pull_policy(spec.image, spec.image_pull_policy)
        await self._ensure_docker_image(spec.image, policy, events)

    async def _ensure_docker_image(
        self, image: str, policy: str, events: EventCallback | None
    ) -> None:
        def emit(reason: str, message: str, kind: str = "Normal") -> None:
            if events is not None:
                events(reason, message, kind)

        docker = await self._client()
        try:
            await docker.images.inspect(image)
            present = True
        except aiodocker.DockerError:
            present = False
        if policy == "Never" or (present and policy == "IfNotPresent"):
            if not present:
                raise RuntimeFailure(
                    f'image "{image}" is not present in dockerd and its pull policy is Never',
                    ERR_IMAGE_NEVER_PULL,
                )
            emit("Pulled", f'Container image "{image}" already present on machine')
            return
        emit("Pulling", f'Pulling image "{image}"')
        started = time.monotonic()
        try:
            await self._pull(image)
        except RuntimeFailure as exc:
            if present and any(word in str(exc) for word in _UNREACHABLE):
                emit("RegistryUnreachable", f"{exc}; using the image already present", "Warning")
                return
            raise
        emit("Pulled", f'Successfully pulled image "{image}" in {time.monotonic() - started:.3f}s')

    async def _pull(self, image: str) -> None:
        """`docker pull` with the registry's credentials; one pull per image at a time."""
        await shared_pull(self._pulls, image, lambda: self._pull_now(image))

    async def _pull_now(self, image: str) -> None:
        docker = await self._client()
        host = registry_host(image)
        creds = await asyncio.to_thread(self.registries.credentials, host)
        secrets = creds.secrets() if creds else []
        headers = {}
        if creds is not None:
            auth = {"username": creds.username, "password": creds.password, "serveraddress": host}
            encoded = base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()
            headers["X-Registry-Auth"] = encoded
        error = None
        try:
            async with docker._query(
                "images/create",
                "POST",
                params={"fromImage": image},  # may carry a tag or digest
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as resp:
                async for line in resp.content:  # one JSON progress object a line
                    with contextlib.suppress(ValueError):
                        item = json.loads(line)
                        if isinstance(item, dict) and item.get("error"):
                            error = str(item["error"])
        except aiodocker.DockerError as exc:
            error = str(exc.message)
        if error is not None:
            raise RuntimeFailure(
                f'failed to pull image "{image}": {redact(error, secrets)}', ERR_IMAGE_PULL
            )

    # --- pods ---

    def _spec(self, pod: Pod, container: str) -> Container:
        spec = next((c for c in pod.spec.containers if c.name == container), None)
        if spec is None:
            raise RuntimeFailure(f"pod {pod.key} has no container {container!r}")
        return spec

    async def create_pod(self, pod: Pod) -> None:
        await _uncancelled(self._create_pod(pod))  # its infra container: as a start's

    async def _create_pod(self, pod: Pod) -> None:
        uid = pod.metadata.uid
        if not uid:
            raise RuntimeFailure("the pod has no uid")
        async with self._lock(uid):
            await asyncio.to_thread(self._prepare_pod, pod)
            infra = await self._inspect(self.infra_name(uid))
            if infra is not None and infra["State"]["Running"]:
                self._infra_pid[uid] = int(infra["State"]["Pid"])
                return
            docker = await self._client()
            if infra is None:
                config: dict[str, Any] = {
                    "Image": await self._ensure_pause(),
                    "Cmd": PAUSE_COMMAND,
                    "Entrypoint": [],
                    "Hostname": pod_hostname(pod) if not pod.spec.host_network else "",
                    "Labels": self._labels(pod, "infra"),
                    "HostConfig": {
                        "NetworkMode": "host" if pod.spec.host_network else "none",
                        "IpcMode": "shareable",
                        "RestartPolicy": {"Name": "no"},
                        **self._cgroup_config(uid, None),
                    },
                }
                try:
                    await docker.containers.create(config, name=self.infra_name(uid))
                except aiodocker.DockerError as exc:
                    raise RuntimeFailure(
                        f"cannot create the pod's infra container: {exc.message}",
                        "CreatePodSandboxError",
                    ) from None
            try:
                await docker.containers.container(self.infra_name(uid)).start()
            except aiodocker.DockerError as exc:
                raise RuntimeFailure(
                    f"cannot start the pod's infra container: {exc.message}",
                    "CreatePodSandboxError",
                ) from None
            infra = await self._inspect(self.infra_name(uid))
            if infra is None or not infra["State"]["Running"]:
                raise RuntimeFailure("the pod's infra container exited", "CreatePodSandboxError")
            self._infra_pid[uid] = int(infra["State"]["Pid"])

    def _prepare_pod(self, pod: Pod) -> None:
        """pod.json, volume directories, the pod cgroup (blocking, idempotent)."""
        uid = str(pod.metadata.uid)
        pdir = self.pod_dir(uid)
        (pdir / "volumes").mkdir(parents=True, exist_ok=True)
        (self.log_dir / uid).mkdir(parents=True, exist_ok=True)
        tmp = pdir / "pod.json.tmp"
        tmp.write_text(json.dumps(pod.to_dict()))
        os.replace(tmp, pdir / "pod.json")
        for volume in pod.spec.volumes:
            if volume.empty_dir is None:
                continue
            vdir = pdir / "volumes" / volume.name
            vdir.mkdir(mode=0o777, exist_ok=True)
            os.chmod(vdir, 0o777)  # as Kubernetes makes emptyDirs: any user may write
            if volume.empty_dir.medium == "Memory" and not _is_mount(vdir):
                size = volume.empty_dir.size_limit
                opts = "mode=1777" + (f",size={memory_bytes(size)}" if size else "")
                syscalls.mount("tmpfs", str(vdir), "tmpfs", syscalls.MS_NOSUID, opts)
        if self._nested:
            try:
                self.cgroups.create(self.pod_cgroup(uid), Limits(pids_limit=self.pids_limit))
            except CgroupError as exc:
                raise RuntimeFailure(f"pod {uid}: {exc}", "CreatePodSandboxError") from None

    def _cgroup_config(self, uid: str, container: Container | None) -> dict[str, Any]:
        """HostConfig resource fields: our cgroup as parent, or Docker's own limits."""
        if self._nested:
            rel = self.pod_cgroup(uid) + (f"/{container.name}" if container else "")
            return {"CgroupParent": dcg.docker_parent(self.cgroups, rel)}
        if container is None:
            return {}
        limits = limits_of(container)
        config: dict[str, Any] = {"PidsLimit": self.pids_limit}
        if limits.memory_limit_bytes is not None:
            config["Memory"] = limits.memory_limit_bytes
            config["MemorySwap"] = limits.memory_limit_bytes  # no swap, as the kubelet
        if limits.cpu_limit_millis is not None:
            config["NanoCpus"] = limits.cpu_limit_millis * 1_000_000
        if limits.cpu_request_millis is not None:
            config["CpuShares"] = cpu_shares(limits.cpu_request_millis)
        return config

    # --- containers ---

    async def start_container(self, pod: Pod, container: str) -> ContainerInfo:
        return await _uncancelled(self._start_container(pod, container))

    async def _start_container(self, pod: Pod, container: str) -> ContainerInfo:
        uid = str(pod.metadata.uid)
        spec = self._spec(pod, container)
        name = self.container_name(uid, container)
        async with self._lock(uid):
            existing = await self._inspect(name)
            if existing is not None and existing["State"]["Running"]:
                # Already started (a lost answer, or found after dockerd was back): the
                # same container, its log copy and OOM watch kept going or resumed.
                if (uid, container) not in self._oom_watches:
                    self._watch_oom(uid, container, existing["Id"])
                self._follow(uid, container, existing["Id"])
                return self._info(container, existing, await self._image_id(existing))
            infra = await self._inspect(self.infra_name(uid))
            if infra is None or not infra["State"]["Running"]:
                raise RuntimeFailure(f"pod {uid} has no running sandbox: create_pod first")
            docker = await self._client()
            if existing is not None:  # the previous run: its exit has been consumed
                await self._forget_run(uid, container)
                with contextlib.suppress(aiodocker.DockerError):
                    await docker.containers.container(existing["Id"]).delete(force=True)
            await asyncio.to_thread(self._prepare_container, uid, spec)
            config = await asyncio.to_thread(self._container_config, pod, spec, infra["Id"])
            try:
                created = await docker.containers.create(config, name=name)
            except aiodocker.DockerError as exc:
                raise RuntimeFailure(
                    f"cannot create container {container}: {exc.message}", "CreateContainerError"
                ) from None
            self._watch_oom(uid, container, created.id)
            try:
                await created.start()
            except aiodocker.DockerError as exc:
                self._forget_watch(uid, container)
                with contextlib.suppress(aiodocker.DockerError):
                    await created.delete(force=True)
                raise RuntimeFailure(
                    f"cannot start container {container}: {exc.message}", START_ERROR
                ) from None
            state = await self._inspect(created.id)
            if state is None:
                raise RuntimeFailure(f"container {container} vanished right after its start")
            self._follow(uid, container, created.id)
            return self._info(container, state, await self._image_id(state))

    def _prepare_container(self, uid: str, spec: Container) -> None:
        """A fresh container cgroup with the container's limits (blocking)."""
        if not self._nested:
            return
        rel = f"{self.pod_cgroup(uid)}/{spec.name}"
        try:
            if not self.cgroups.exists(self.pod_cgroup(uid)):
                self.cgroups.create(self.pod_cgroup(uid), Limits(pids_limit=self.pids_limit))
            if self.cgroups.exists(rel):
                dcg.remove_everywhere(self.cgroups, rel)  # its counters belong to the last run
            self.cgroups.create(rel, limits_of(spec))
        except CgroupError as exc:
            raise RuntimeFailure(f"container {spec.name}: {exc}") from None
        with contextlib.suppress(FileNotFoundError):
            (self.pod_dir(uid) / f"oom-{spec.name}").unlink()

    def _container_config(self, pod: Pod, spec: Container, infra_id: str) -> dict[str, Any]:
        """The create body: Kubernetes' command/args rule against the image's (blocking)."""
        uid = str(pod.metadata.uid)
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{v.name}={v.value}" for v in spec.env],
            "Labels": self._labels(pod, "app", spec.name),
            "Tty": False,
            "OpenStdin": False,
            "HostConfig": {
                "NetworkMode": f"container:{infra_id}",
                "IpcMode": f"container:{infra_id}",
                "RestartPolicy": {"Name": "no"},  # corral's supervisor restarts, by policy
                "Mounts": self._mounts(pod, spec),
                "LogConfig": {
                    "Type": "json-file",
                    "Config": {"max-size": str(self.log_max_bytes), "max-file": "2"},
                },
                **self._cgroup_config(uid, spec),
            },
        }
        # `command` replaces ENTRYPOINT and drops CMD; `args` replace CMD. Docker itself
        # ignores the image's CMD once an Entrypoint is given, which is the same rule.
        if spec.command:
            config["Entrypoint"] = list(spec.command)
            config["Cmd"] = list(spec.args or [])
        elif spec.args:
            config["Cmd"] = list(spec.args)
        if spec.working_dir:
            config["WorkingDir"] = spec.working_dir
        return config

    def _mounts(self, pod: Pod, spec: Container) -> list[dict[str, Any]]:
        pdir = self.pod_dir(str(pod.metadata.uid))
        volumes = {v.name: v for v in pod.spec.volumes}
        mounts = []
        for vm in spec.volume_mounts:
            volume = volumes[vm.name]
            if volume.empty_dir is not None:
                source = str(pdir / "volumes" / volume.name)
            else:
                assert volume.host_path is not None
                source = host_path_source(
                    spec.name, volume.name, volume.host_path, self.allowed_host_paths
                )
            mounts.append(
                {
                    "Type": "bind",
                    "Source": source,
                    "Target": vm.mount_path,
                    "ReadOnly": vm.read_only,
                    "BindOptions": {"Propagation": "rprivate"},
                }
            )
        return mounts

    def _info(self, container: str, state: dict[str, Any], image_id: str) -> ContainerInfo:
        """The run an inspect describes; `image_id` from _image_id."""
        s = state["State"]
        container_id = DOCKER_SCHEME + state["Id"]
        if s.get("Running"):
            return ContainerInfo(
                name=container,
                state="running",
                pid=int(s.get("Pid") or 0) or None,
                started_at=_dt(s.get("StartedAt")),
                container_id=container_id,
                image_id=image_id,
            )
        exit = self._exit(container, state)
        return ContainerInfo.exited(container, exit, container_id, image_id)

    async def _image_id(self, state: dict[str, Any]) -> str:
        """The imageID of the container an inspect describes, as cri-dockerd has it: its
        image's first repo digest, else the image's id (see DOCKER_SCHEME). Asked of
        dockerd each time: a later pull by digest gives an image a repo digest."""
        image = str(state.get("Image") or "")  # `sha256:<image id>`
        try:
            found = await (await self._client()).images.inspect(image)
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError, RuntimeFailure):
            # Not found (removed since), or dockerd out of reach for a moment: the image's
            # id is what is left. A started container's supervision must not end on it.
            found = {}
        digests = found.get("RepoDigests") or []
        return PULLABLE_SCHEME + digests[0] if digests else DOCKER_SCHEME + image

    def _exit(self, container: str, state: dict[str, Any]) -> ContainerExit:
        s = state["State"]
        code = int(s.get("ExitCode") or 0)
        uid = state["Config"]["Labels"].get(LABEL_UID, "")
        oom = bool(s.get("OOMKilled")) or self._oom_recorded(uid, container, state["Id"])
        reason = "OOMKilled" if oom else "Completed" if code == 0 else "Error"
        return ContainerExit(
            exit_code=code,
            reason=reason,
            started_at=_dt(s.get("StartedAt")),
            finished_at=_dt(s.get("FinishedAt")) or datetime.now(UTC),
            signal=signal.SIGKILL.value if oom else None,
            message=s.get("Error") or None,
        )

    # --- OOM kills (docker/cgroups.py) ---

    def _oom_recorded(self, uid: str, container: str, container_id: str) -> bool:
        """Blocking, but small: a file read and, on v2, one cgroup file."""
        if not uid or not self._nested:
            return False
        try:
            if (self.pod_dir(uid) / f"oom-{container}").read_text().strip() == container_id:
                return True
        except OSError:
            pass
        # v2 counts kills in every ancestor; v1 only in Docker's own cgroup, while it exists.
        with contextlib.suppress(CgroupError, OSError):
            return self.cgroups.oom_kills(f"{self.pod_cgroup(uid)}/{container}") > 0
        return False

    def _watch_oom(self, uid: str, container: str, container_id: str) -> None:
        if not self._nested or self.cgroups.version != 1:
            return
        self._forget_watch(uid, container)
        directory = dcg.memory_dir(self.cgroups, f"{self.pod_cgroup(uid)}/{container}")
        if directory is None:
            return
        marker = self.pod_dir(uid) / f"oom-{container}"

        def on_oom() -> None:
            _LOGGER.info("pod %s container %s: OOM kill in its cgroup", uid, container)
            with contextlib.suppress(OSError):
                marker.write_text(container_id)  # tiny; the exit may be read after a restart

        try:
            self._oom_watches[(uid, container)] = dcg.OomWatch(directory, on_oom)
        except OSError as exc:
            _LOGGER.warning("pod %s container %s: no OOM notifications: %s", uid, container, exc)

    def _forget_watch(self, uid: str, container: str) -> None:
        watch = self._oom_watches.pop((uid, container), None)
        if watch is not None:
            watch.close()

    # --- logs ---

    def _follow(self, uid: str, container: str, container_id: str) -> None:
        key = (uid, container)
        old = self._followers.get(key)
        if old is not None and not old.done():
            return
        path = str(self.log_path(uid, container))

        async def run() -> None:
            try:
                docker = await self._client()
                await dlogs.follow(
                    docker, container_id, path, self.log_max_bytes, self.log_max_files
                )
            except (RuntimeFailure, OSError, aiodocker.DockerError) as exc:
                _LOGGER.warning("logs of %s/%s: %s", uid, container, exc)

        self._followers[key] = asyncio.create_task(run(), name=f"docker-logs-{uid}-{container}")

    async def _drain_logs(self, uid: str, container: str) -> None:
        task = self._followers.get((uid, container))
        if task is not None:
            # wait, not wait_for(shield()) under suppress(CancelledError): that took the
            # caller's own cancellation (agent shutdown) for the copy's, and went on.
            await asyncio.wait({task}, timeout=LOG_DRAIN)

    async def _forget_run(self, uid: str, container: str) -> None:
        """Before a run's container goes: its log copy finished, its OOM watch closed."""
        await self._drain_logs(uid, container)
        task = self._followers.pop((uid, container), None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._forget_watch(uid, container)

    # --- waiting, stopping, exec ---

    async def wait_container(self, uid: str, container: str) -> ContainerExit:
        """The run's exit. Rides out a dockerd restart (the wait is asked again); a
        container removed behind corral's back ends as exit 137 "removed outside corral"."""
        name = self.container_name(uid, container)
        state = await self._inspect(name)
        if state is None:
            raise RuntimeFailure(f"pod {uid} has no started container {container!r}")
        container_id = state["Id"]
        while state is not None and state["State"]["Running"]:
            try:
                docker = await self._client()
                await docker.containers.container(container_id).wait(timeout=None)
                state = await self._inspect(container_id)
            except (aiodocker.DockerError, aiohttp.ClientError, RuntimeFailure) as exc:
                if isinstance(exc, aiodocker.DockerError) and exc.status == 404:
                    state = None
                    break
                _LOGGER.warning("waiting for %s: %s; asking again", name, exc)
                await asyncio.sleep(WAIT_RETRY)
                with contextlib.suppress(RuntimeFailure):
                    state = await self._inspect(container_id)
        await self._drain_logs(uid, container)
        if state is None:
            return ContainerExit(
                exit_code=137,
                reason="Error",
                started_at=None,
                finished_at=datetime.now(UTC),
                message="the container was removed outside corral",
            )
        return await asyncio.to_thread(self._exit, container, state)

    async def stop_container(self, uid: str, container: str, grace: float) -> ContainerExit | None:
        state = await self._inspect(self.container_name(uid, container))
        if state is None:
            return None  # never started
        if state["State"]["Running"]:
            handle = (await self._client()).containers.container(state["Id"])
            try:
                if grace > 0:
                    # SIGTERM (or the image's StopSignal), `t` seconds, then SIGKILL.
                    timeout = grace + STOP_MARGIN
                    async with asyncio.timeout(timeout):
                        await handle.stop(t=math.ceil(grace), timeout=None)
                else:
                    await handle.kill(signal="SIGKILL")
            except aiodocker.DockerError as exc:
                if exc.status not in (304, 404, 409):  # already stopped, gone, not running
                    raise RuntimeFailure(f"stopping {container}: {exc.message}") from None
            except TimeoutError:
                raise RuntimeFailure(
                    f"container {container} of pod {uid} did not stop within {grace + STOP_MARGIN}s"
                ) from None
        return await self.wait_container(uid, container)

    async def exec_in_container(
        self,
        uid: str,
        container: str,
        argv: list[str],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[int, bytes]:
        """`docker exec` (as the image's user); past `timeout` the command is killed by its
        host pid (Docker offers no other way) and TimeoutError raised."""
        state = await self._inspect(self.container_name(uid, container))
        if state is None or not state["State"]["Running"]:
            raise RuntimeFailure(f"container {container} of pod {uid} is not running")
        handle = (await self._client()).containers.container(state["Id"])
        try:
            execution = await handle.exec([str(a) for a in argv], stdout=True, stderr=True)
        except aiodocker.DockerError as exc:
            raise RuntimeFailure(
                f"cannot exec in container {container}: {exc.message}", "ExecError"
            ) from None
        output = bytearray()
        try:
            async with asyncio.timeout(timeout):
                async with execution.start(detach=False) as stream:
                    while (message := await stream.read_out()) is not None:
                        if len(output) < MAX_EXEC_OUTPUT:
                            output += message.data[: MAX_EXEC_OUTPUT - len(output)]
        except TimeoutError:
            with contextlib.suppress(aiodocker.DockerError, ProcessLookupError, ValueError):
                pid = int((await execution.inspect()).get("Pid") or 0)
                if pid > 0:
                    os.kill(pid, signal.SIGKILL)
            raise TimeoutError(f"command timed out after {timeout:g}s") from None
        except aiodocker.DockerError as exc:
            raise RuntimeFailure(
                f"exec in container {container}: {exc.message}", "ExecError"
            ) from None
        for _ in range(50):  # the stream ends a moment before dockerd records the exit code
            result = await execution.inspect()
            if not result.get("Running"):
                return int(result.get("ExitCode") or 0), bytes(output)
            await asyncio.sleep(0.01)
        return int(result.get("ExitCode") or 0), bytes(output)

    # --- removal ---

    async def remove_pod(self, uid: str) -> None:
        async with self._lock(uid):
            found = await self._list(uid)
            docker = await self._client()
            # The pod's containers first, then the infra container whose namespaces they use.
            found.sort(key=lambda c: c.get("Labels", {}).get(LABEL_ROLE) == "infra")
            for item in found:
                try:
                    await docker.containers.container(item["Id"]).delete(force=True)
                except aiodocker.DockerError as exc:
                    if exc.status != 404:
                        raise RuntimeFailure(
                            f"pod {uid}: removing {item['Id'][:12]}: {exc.message}"
                        ) from None
            # The log copies end with their containers; their files go with the pod.
            tasks = [self._followers.pop(k) for k in list(self._followers) if k[0] == uid]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for key in [k for k in self._oom_watches if k[0] == uid]:
                self._forget_watch(*key)
            self._infra_pid.pop(uid, None)
            await asyncio.to_thread(self._teardown, uid)
        self._locks.pop(uid, None)

    def _teardown(self, uid: str) -> None:
        """Unmount memory emptyDirs, remove directories and cgroups (blocking)."""
        pdir = self.pod_dir(uid)
        rootfs.unmount_below(str(pdir))
        left = rootfs.mounts_below(str(pdir))
        if left:  # never rm -rf through a mount point
            raise RuntimeFailure(f"pod {uid}: mounts remain after unmounting: {left}")
        rootfs.remove_tree(pdir)  # its emptyDirs as deep as the containers made them
        rootfs.remove_tree(self.log_dir / uid)
        if self._nested:
            dcg.remove_everywhere(self.cgroups, self.pod_cgroup(uid))

    # --- re-adoption ---

    async def recover(self) -> list[PodInfo]:
        try:
            found = await self._list()
        except RuntimeFailure as exc:
            # Pods it runs are found again once dockerd answers (create_pod and
            # start_container take over what exists under their names).
            _LOGGER.info("docker pods not recovered: %s", exc)
            return []
        by_uid: dict[str, list[dict[str, Any]]] = {}
        for item in found:
            by_uid.setdefault(item.get("Labels", {}).get(LABEL_UID, ""), []).append(item)
        dirs = await asyncio.to_thread(self._pod_dirs)
        pods = []
        for uid in sorted(set(by_uid) | set(dirs)):
            if not uid:
                continue
            pod = await asyncio.to_thread(self._saved_pod, uid)
            if pod is None:
                _LOGGER.warning("docker pod %s: no pod.json; removing its containers", uid)
                with contextlib.suppress(RuntimeFailure):
                    await self.remove_pod(uid)
                continue
            info = PodInfo(uid=uid, pod=pod)
            for item in by_uid.get(uid, []):
                labels = item.get("Labels", {})
                state = await self._inspect(item["Id"])
                if state is None:
                    continue
                if labels.get(LABEL_ROLE) == "infra":
                    if state["State"]["Running"]:
                        self._infra_pid[uid] = int(state["State"]["Pid"])
                    continue
                container = labels.get(LABEL_CONTAINER, "")
                if not container:
                    continue
                image_id = await self._image_id(state)
                info.containers[container] = await asyncio.to_thread(
                    self._info, container, state, image_id
                )
                if state["State"]["Running"]:
                    self._watch_oom(uid, container, state["Id"])
                # Running or not: copy what it wrote while no agent did.
                self._follow(uid, container, state["Id"])
            pods.append(info)
        return pods

    async def known_pods(self) -> set[str]:
        """Every pod with a directory (made before its log directory, its cgroup and its
        containers, removed after them), and every uid its labelled containers name,
        when dockerd answers."""
        known = set(await asyncio.to_thread(self._pod_dirs))
        try:
            found = await self._list()
        except (RuntimeFailure, aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            _LOGGER.debug("docker pods known by their directories alone: %s", exc)
            return known
        return known | {c.get("Labels", {}).get(LABEL_UID) or "" for c in found} - {""}

    def _pod_dirs(self) -> list[str]:
        try:
            return sorted(p.name for p in self.pods_dir.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def _saved_pod(self, uid: str) -> Pod | None:
        try:
            return Pod.model_validate(json.loads((self.pod_dir(uid) / "pod.json").read_text()))
        except (OSError, ValueError):
            return None

    # --- metrics ---

    def usage(self, uid: str) -> Usage | None:
        if not self._nested:
            return None  # Docker's stats API is too slow to ask every heartbeat
        try:
            stats = self.cgroups.stats(self.pod_cgroup(uid))
        except (CgroupError, OSError):
            return None
        return Usage(cpu_usage_ns=stats.cpu_usage_ns, memory_bytes=stats.memory_bytes)


def _is_mount(path: Path) -> bool:
    return any(point == str(path) for point, _ in rootfs.mountinfo())


async def _uncancelled(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even if the caller is cancelled, then let the cancel through.

    A create or start cancelled while its request is with dockerd still happens there,
    and the pod's lock went with the cancel: a `remove_pod` that came for the lock next
    listed the pod's containers before dockerd had made the new one, which stayed for good
    (a pod deleted while its container was being restarted). Finished under the lock, the
    container is there for `remove_pod` to find."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():  # a second cancel waits too
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(task)
        if not task.cancelled():
            task.exception()  # the caller is told of the cancel, not of what the work came to
        raise
