"""NativeRuntime: corral's own container launcher (namespaces, cgroups, overlay, monitors).

The agent-side half. It resolves what to run (image config + pod spec, the Kubernetes
way), prepares directories and cgroups, and asks the fork server (forkserver.py, through
forkclient.py) for one monitor per container (monitor.py) that starts it, logs it and
records its exit. A pod's shared namespaces are made by its first container's init and
pinned by that monitor (namespaces.py): no process of their own.
It never waits for a container itself, so containers outlive the agent; everything
it needs to find them again lives under the state directory:

    <state>/forkserver.log                the fork server's and helpers' stderr
    <state>/pods/<uid>/pod.json           the pod as create_pod saw it (for recover)
    <state>/pods/<uid>/ns/{net,ipc,uts}   bind mounts that keep the pod's namespaces,
                                          on a small tmpfs mounted on ns/
    <state>/pods/<uid>/etc/               hostname, hosts, resolv.conf for its containers
    <state>/pods/<uid>/volumes/<name>     emptyDir volumes
    <state>/pods/<uid>/containers/<name>/ monitor.pid, init.pid, started.json, exit.json,
                                          monitor.log, upper/ work/ rootfs/ (the overlay);
                                          started.json and exit.json hold the run's ids
                                          (`run`: a random id, the image's repo digest)
    <log_dir>/<uid>/<name>.log[.1 ...]    the container's output, CRI format
    <state>/trash/                        removed pods' directories, moved there by one
                                          rename each and deleted in the background
    <state>/init-layer/etc/{hostname,hosts,resolv.conf}
                                          empty files, the top (read-only) layer of every
                                          container: mount points for the pod's /etc
                                          files without a copy-up of /etc in each one

Cgroups: ``pod-<uid>`` (pids limit) and ``pod-<uid>/<container>`` (cpu, memory)
below the driver's parent. Blocking work runs in threads (asyncio.to_thread), one
hop per step where it can (each hop wakes a thread, then the loop again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.runtime.base import (
    START_ERROR,
    ContainerExit,
    ContainerInfo,
    EventCallback,
    PodInfo,
    RuntimeFailure,
    Usage,
)
from agent.runtime.native import namespaces, rootfs, syscalls
from agent.runtime.native.cgroups import AttachPrimer, CgroupDriver, CgroupError, Limits
from agent.runtime.native.forkclient import ExitWatch, ForkServerClient
from agent.runtime.native.images import Image, ImageConfig, ImageError, ImageStore
from agent.runtime.native.logs import retire
from agent.runtime.native.monitor import proc_start_time, write_json
from agent.runtime.pulls import pull_policy
from common.models import Container, Pod
from common.quantity import cpu_millis, memory_bytes

if TYPE_CHECKING:
    from agent.runtime.native.puller import ImagePuller  # aiohttp: only where pulls happen

_LOGGER = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]  # holds the `agent` package
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 60.0  # the monitor answers once the container has exec'd
KILL_WAIT = 10.0  # after SIGKILL, how long until the monitor must have recorded the exit
EXEC_ANSWER_MARGIN = 5.0  # an exec's helper kills the command at its timeout, answers soon after
MAX_EXEC_OUTPUT = 10 * 1024  # as the kubelet, which keeps 10 KiB of a probe's output
SWEEP_TIMEOUT = 600.0  # emptying the trash: a busy disk deletes slowly, nobody waits for it
SWEEP_DELAY = 1.0  # removals within this share one sweep (one helper process)
NS_KINDS = ("ipc", "uts", "net")
ETC_FILES = ("hostname", "hosts", "resolv.conf")  # the pod's, bound into each container
CONTAINER_ID_SCHEME = "corral://"  # containerID: `<runtime>://<id>`, as the kubelet has it


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _LOGGER.warning("unreadable %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _exit_from(record: dict[str, Any]) -> ContainerExit:
    code = int(record["exit_code"])
    reason = record.get("reason")
    if not reason:
        reason = "OOMKilled" if record.get("oom_killed") else "Completed" if code == 0 else "Error"
    finished = _dt(record.get("finished_at")) or datetime.now(UTC)
    return ContainerExit(
        exit_code=code,
        reason=reason,
        started_at=_dt(record.get("started_at")),
        finished_at=finished,
        signal=record.get("signal"),
        message=record.get("message"),
    )


def _digest_of(image_id: str) -> str:
    """The manifest digest of an imageID: `repo@sha256:...`, or the bare digest."""
    return image_id.rpartition("@")[2]


def _run_ids(run: object) -> tuple[str | None, str]:
    """(containerID, imageID) of a run, from its `run` record (None, "") if it has none:
    a start that failed, or records written before runs had ids."""
    if not isinstance(run, dict) or not run.get("id"):
        return None, ""
    return CONTAINER_ID_SCHEME + str(run["id"]), str(run.get("image_id") or "")


@dataclass(frozen=True, slots=True)
class ImagesInUse:
    """What image gc (agent/imagegc.py) must keep for a runtime's containers."""

    digests: frozenset[str] = frozenset()  # manifest digests of the images they run
    # Names (hex) of the layer dirs under them, as recorded at each start: kept whatever
    # happens to the image's names (`corral-agent image rm`).
    layers: frozenset[str] = frozenset()
    # Digests of containers whose layers no record names (started by an agent older than
    # the layers' record): their image's layers are known only while the store has it.
    unrecorded: frozenset[str] = frozenset()

    def __or__(self, other: ImagesInUse) -> ImagesInUse:
        return ImagesInUse(
            self.digests | other.digests,
            self.layers | other.layers,
            self.unrecorded | other.unrecorded,
        )


def _union(uses: list[ImagesInUse]) -> ImagesInUse:
    digests: set[str] = set()
    layers: set[str] = set()
    unrecorded: set[str] = set()
    for use in uses:
        digests |= use.digests
        layers |= use.layers
        unrecorded |= use.unrecorded
    return ImagesInUse(frozenset(digests), frozenset(layers), frozenset(unrecorded))


def _use_of(run: object) -> ImagesInUse:
    """What a run's record (`run` of started.json or exit.json) says it stands on."""
    _, image_id = _run_ids(run)
    if not image_id:
        return ImagesInUse()
    digest = frozenset({_digest_of(image_id)})
    layers = run.get("layers") if isinstance(run, dict) else None
    if not isinstance(layers, list):
        return ImagesInUse(digest, unrecorded=digest)
    return ImagesInUse(digest, frozenset(str(layer) for layer in layers))


def _pidfd(record: dict[str, Any] | None) -> int | None:
    """A pidfd for the process a pid file names, if it still runs (same start time).
    OSError if that cannot be told: out of descriptors (EMFILE) read as "not running"
    had a healthy container's monitor taken for lost, and the container killed."""
    if not record or not record.get("pid"):
        return None
    try:
        fd = os.pidfd_open(int(record["pid"]))
    except ProcessLookupError:
        return None
    # Check the start time after opening: from now on the fd names this very process,
    # so a pid reused since the file was written cannot slip through.
    if record.get("start") is None or proc_start_time(int(record["pid"])) != record["start"]:
        os.close(fd)
        return None
    return fd


def _alive(record: dict[str, Any] | None) -> bool:
    fd = _pidfd(record)
    if fd is None:
        return False
    os.close(fd)
    return True


def _signal(record: dict[str, Any] | None, sig: int) -> bool:
    """Signal the process a pid file names, if it is still that process."""
    fd = _pidfd(record)
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def command_line(container: Container, config: ImageConfig) -> list[str]:
    """Kubernetes' rule: `command` replaces ENTRYPOINT, `args` replace CMD, and a
    `command` without `args` drops the image's CMD."""
    if container.command:
        return [*container.command, *(container.args or [])]
    return [*(config.entrypoint or []), *(container.args or config.cmd or [])]


def environment(container: Container, config: ImageConfig, hostname: str) -> list[str]:
    """Image env, then the container's (later wins), with PATH and HOSTNAME defaults."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    for item in config.env:
        key, _, value = item.partition("=")
        env[key] = value
    for var in container.env:
        env[var.name] = var.value
    return [f"{k}={v}" for k, v in env.items()]


def limits_of(container: Container) -> Limits:
    """cpu limit -> CFS quota, cpu request (default: the limit) -> shares, memory limit."""
    res = container.resources
    cpu_limit = res.limits.get("cpu")
    cpu_request = res.requests.get("cpu", cpu_limit)
    memory = res.limits.get("memory")
    return Limits(
        cpu_limit_millis=cpu_millis(cpu_limit) if cpu_limit is not None else None,
        cpu_request_millis=cpu_millis(cpu_request) if cpu_request is not None else None,
        memory_limit_bytes=memory_bytes(memory) if memory is not None else None,
    )


def pod_hostname(pod: Pod) -> str:
    """The pod name, cut to the 63 characters a hostname may have."""
    return pod.metadata.name[:63].rstrip("-.") or "pod"


def host_path_source(container: str, volume: str, source: Any, allowed: list[str]) -> str:
    """A hostPath volume's real path, checked against the allowed prefixes and its type
    (created for the `...OrCreate` types); shared by the native and Docker runtimes."""
    try:
        real = rootfs.check_host_path(source.path, allowed)
    except rootfs.SetupError as exc:
        raise RuntimeFailure(
            f"container {container}, volume {volume}: {exc}", "CreateContainerConfigError"
        ) from None
    kind = source.type or ""
    exists = os.path.exists(real)
    if kind == "DirectoryOrCreate" and not exists:
        os.makedirs(real, 0o755, exist_ok=True)
    elif kind == "FileOrCreate" and not exists:
        os.close(os.open(real, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    elif not exists:
        raise RuntimeFailure(
            f"container {container}, volume {volume}: hostPath {source.path} does not exist",
            "CreateContainerConfigError",
        )
    wanted = {"Directory": os.path.isdir, "File": os.path.isfile}.get(kind)
    if wanted is not None and not wanted(real):
        raise RuntimeFailure(
            f"container {container}, volume {volume}: hostPath {source.path} is not a "
            f"{kind.lower()}",
            "CreateContainerConfigError",
        )
    return real


class NativeRuntime:
    """The Runtime (agent/runtime/base.py) on Linux namespaces, cgroups and overlayfs."""

    name = "native"

    def __init__(
        self,
        state_dir: Path,
        images: ImageStore,
        cgroups: CgroupDriver,
        *,
        log_dir: Path | None = None,
        log_max_bytes: int = 10 * 1024 * 1024,
        log_max_files: int = 3,
        pids_limit: int = 1024,
        allowed_host_paths: list[str] | None = None,
        puller: ImagePuller | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.images = images
        self.puller = puller  # None: images come only from `corral-agent image import`
        self.cgroups = cgroups
        self.log_dir = Path(log_dir).resolve() if log_dir else self.state_dir / "logs"
        self.log_max_bytes = log_max_bytes
        self.log_max_files = log_max_files
        self.pids_limit = pids_limit
        self.allowed_host_paths = list(allowed_host_paths or [])
        self.pods_dir = self.state_dir / "pods"
        self.trash_dir = self.state_dir / "trash"
        self.init_layer = self.state_dir / "init-layer"
        self._init_layer_fits: dict[tuple[str, ...], bool] = {}  # per image (layer list)
        self._forkserver = ForkServerClient(self.state_dir / "forkserver.log")
        self._locks: dict[str, asyncio.Lock] = {}
        self._prepared: set[str] = set()  # pods create_pod has prepared in this process
        # Primes the cgroup attach from a thread of its own, as soon as whichever thread
        # has made a start's cgroups asks (cgroups.py: AttachPrimer); made by start().
        self._primer: AttachPrimer | None = None
        # Containers whose cgroup create_pod made, with their limits, and nothing has
        # used yet: their first start need not make it, nor read its OOM counter (0).
        self._fresh_cgroups: set[tuple[str, str]] = set()
        # create_pod's file writing, which goes on after it returns (see create_pod).
        self._pod_files: dict[str, asyncio.Future[None]] = {}
        # Images create_pod found in the store for its containers, for ensure_image.
        self._images_seen: dict[tuple[str, str], Image] = {}
        self._watches: dict[tuple[str, str], ExitWatch] = {}  # containers started here
        self._sweeping: asyncio.Task[None] | None = None
        self._sweep_again = False
        self._sweep_waiting = False  # the sweep task waits for more removals to gather
        # Image gc (agent/imagegc.py) removes an image holding `image_lock`, once it has
        # made sure nothing uses it (`images_in_use`): a start takes its image's layers and
        # records the image here under the same lock, for as long as its pod is here (a
        # container's own records name its image only once it has run).
        self.image_lock = threading.Lock()
        # (uid, container) -> its image's digest and layer dirs
        self._image_of: dict[tuple[str, str], ImagesInUse] = {}
        self._image_of_lock = threading.Lock()  # for the dict alone: held for moments

    # --- paths ---

    def pod_dir(self, uid: str) -> Path:
        if not uid or "/" in uid or uid in (".", ".."):
            raise RuntimeFailure(f"invalid pod uid {uid!r}")
        return self.pods_dir / uid

    def container_dir(self, uid: str, container: str) -> Path:
        return self.pod_dir(uid) / "containers" / container

    def log_path(self, uid: str, container: str) -> Path:
        return self.log_dir / uid / f"{container}.log"

    def netns_path(self, uid: str) -> Path | None:
        """The bind mount that holds the pod's network namespace; None if it has none
        (hostNetwork pods use the node's). Blocking (a stat): call it in a thread."""
        path = self.pod_dir(uid) / "ns" / "net"
        return path if path.exists() else None

    @staticmethod
    def pod_cgroup(uid: str) -> str:
        return f"pod-{uid}"

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    # --- lifecycle ---

    async def start(self) -> None:
        def prepare() -> None:
            for d in (self.state_dir, self.pods_dir, self.log_dir, self.trash_dir):
                d.mkdir(parents=True, exist_ok=True)
            os.chmod(self.state_dir, 0o700)
            (self.init_layer / "etc").mkdir(mode=0o755, parents=True, exist_ok=True)
            for name in ETC_FILES:
                path = self.init_layer / "etc" / name
                if not path.exists():
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            self._forkserver.start()
            if self._primer is None:
                try:
                    self._primer = AttachPrimer(self.cgroups)
                except (OSError, CgroupError) as exc:  # starts only lose the head start
                    _LOGGER.warning("cannot prime cgroup attaches: %s", exc)

        await asyncio.to_thread(prepare)
        self._sweep(delay=0.0)  # whatever a previous agent left in the trash

    async def close(self) -> None:
        primer, self._primer = self._primer, None
        if primer is not None:
            await asyncio.to_thread(primer.close)  # a prime under way ends within ~15 ms
        for watch in self._watches.values():
            watch.close()  # the monitors carry on; they record their exits in exit.json
        self._watches.clear()
        if self._sweeping is not None:
            if self._sweep_waiting:
                self._sweeping.cancel()  # the next start() empties the trash
            await asyncio.wait({self._sweeping})
        await self._forkserver.aclose()

    @property
    def forkserver_pid(self) -> int | None:
        return self._forkserver.pid

    # --- pods ---

    async def create_pod(self, pod: Pod) -> None:
        uid = pod.metadata.uid
        if not uid:
            raise RuntimeFailure("the pod has no uid")
        if uid in self._prepared:
            return  # the supervisor asks again before every start: once is enough
        async with self._lock(uid):
            if uid not in self._prepared:
                # One thread job, answering twice: once the cgroups and the pod's directories
                # exist (what the start's own preparation needs), and once the rest of the
                # files are written (pod.json, /etc files, volumes), which the start awaits
                # only before it asks for the container (_files_written): meanwhile the
                # supervisor looks up the image and the start prepares the container.
                loop = asyncio.get_running_loop()
                made: asyncio.Future[list[str]] = loop.create_future()
                files = loop.run_in_executor(None, self._create_pod, pod, loop, made)
                either: set[asyncio.Future[Any]] = {made, files}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not made.done() or made.exception() is not None:
                    await files  # failed before it could answer: raises why
                    raise RuntimeFailure(f"pod {uid}: its sandbox was not made")  # (unreachable)
                fresh = made.result()
                self._pod_files[uid] = files
                self._fresh_cgroups.update((uid, name) for name in fresh)
                self._prepared.add(uid)

    def _create_pod(
        self, pod: Pod, loop: asyncio.AbstractEventLoop, made: asyncio.Future[list[str]]
    ) -> None:
        """create_pod's blocking part, in one thread hop: the cgroups first, with the cgroup
        attach primed as soon as their directories exist (the grace period it waits for
        is the longest step of a start, and it can begin no earlier: creating a cgroup
        must not wait behind it), then the files. `made` gets the containers whose
        cgroups it made (_make_cgroups) once the pod's directories exist too."""

        def answer(result: list[str] | BaseException) -> None:
            if made.done():
                return
            if isinstance(result, BaseException):
                made.set_exception(result)
            else:
                made.set_result(result)

        try:
            fresh = self._make_cgroups(pod)  # primes the attach once the directories exist
            self._pod_dirs(str(pod.metadata.uid))
            self._look_up_images(pod)
        except BaseException as exc:
            loop.call_soon_threadsafe(answer, exc)
            raise
        loop.call_soon_threadsafe(answer, fresh)
        self._prepare_pod(pod)

    def _look_up_images(self, pod: Pod) -> None:
        """Look up the containers' images in the store now, on create_pod's thread, so that
        ensure_image need not hop to a thread of its own to know they are here (blocking).
        Only with a puller, and not for the policy Always, which asks the registry anyway;
        an image not found, or a name that does not parse, is left to ensure_image."""
        if self.puller is None:
            return
        uid = str(pod.metadata.uid)
        for container in pod.spec.containers:
            if pull_policy(container.image, container.image_pull_policy) == "Always":
                continue
            try:
                image = self.images.get(container.image)
            except ImageError:
                continue
            if image is not None:
                self._images_seen[(uid, container.name)] = image

    async def _files_written(self, uid: str) -> None:
        """Wait until create_pod has written the pod's files (raises if it could not)."""
        files = self._pod_files.get(uid)
        if files is None:
            return
        try:
            await asyncio.shield(files)  # a cancelled start must not cancel the files
        except Exception:
            if self._pod_files.get(uid) is files:
                # As if create_pod had failed: the supervisor's next call does it again.
                del self._pod_files[uid]
                self._prepared.discard(uid)
            raise

    def _prime_attach(self) -> None:
        """Prime the kernel's cgroup attach lock on the primer thread, now, so that the
        grace period the container's init would wait for when it is moved into its cgroups
        passes while the fork server and the init do their work (cgroups.py:
        prime_attach). Called once the container's cgroups exist: while the prime waits it
        holds the kernel's cgroup_mutex, which creating a cgroup needs too. Skipped while
        one is under way. Any thread may call it."""
        primer = self._primer
        if primer is not None:
            primer.prime()

    def _namespaces(self, pod: Pod) -> list[str]:
        # hostNetwork pods share the node's network and, as in Kubernetes, its hostname.
        if pod.spec.host_network:
            return ["ipc"]
        return list(NS_KINDS)

    def _make_cgroups(self, pod: Pod) -> list[str]:
        """The pod's cgroup, and those of its containers that have none yet, with their
        limits; return the names of the containers whose cgroup this made (blocking,
        idempotent). The directories come first and the cgroup attach is primed right
        after them (_prime_attach): the limits need not wait for it, the directories
        would. A container whose limits the driver refuses is left to its start, which
        reports that as the start's failure, as it always has."""
        uid = str(pod.metadata.uid)
        pod_cgroup = self.pod_cgroup(uid)
        pod_fresh = self.cgroups.make(pod_cgroup)
        made = []
        for container in pod.spec.containers:
            path = f"{pod_cgroup}/{container.name}"
            if not self.cgroups.exists(path):  # else a recovered pod's: its start checks it
                self.cgroups.make(path)
                made.append(container)
        self._prime_attach()
        self.cgroups.set_limits(pod_cgroup, Limits(pids_limit=self.pids_limit), fresh=pod_fresh)
        fresh = []
        for container in made:
            path = f"{pod_cgroup}/{container.name}"
            try:
                self.cgroups.set_limits(path, limits_of(container), fresh=True)
            except CgroupError as exc:
                _LOGGER.debug("pod %s: limits of %s left to the start: %s", uid, path, exc)
                continue
            fresh.append(container.name)
        return fresh

    def _pod_dirs(self, uid: str) -> None:
        """The pod's directories and its log directory (blocking, idempotent)."""
        pdir = self.pod_dir(uid)
        for d in ("ns", "etc", "volumes", "containers"):
            (pdir / d).mkdir(parents=True, exist_ok=True)
        (self.log_dir / uid).mkdir(parents=True, exist_ok=True)

    def _prepare_pod(self, pod: Pod) -> None:
        """Directories, pod.json, /etc files, volumes (blocking, idempotent).

        The cgroups come from _make_cgroups, the namespaces with the first container
        (namespaces.py).
        """
        uid = str(pod.metadata.uid)
        pdir = self.pod_dir(uid)
        self._pod_dirs(uid)
        write_json(str(pdir / "pod.json"), pod.to_dict())
        hostname = pod_hostname(pod)
        etc = pdir / "etc"
        (etc / "hostname").write_text(hostname + "\n")
        if pod.spec.host_network:
            shutil.copyfile("/etc/hosts", etc / "hosts")
        else:
            (etc / "hosts").write_text(
                f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            )
        try:
            shutil.copyfile("/etc/resolv.conf", etc / "resolv.conf")
        except OSError:
            (etc / "resolv.conf").write_text("")
        for volume in pod.spec.volumes:
            if volume.empty_dir is not None:
                vdir = pdir / "volumes" / volume.name
                vdir.mkdir(mode=0o777, exist_ok=True)
                os.chmod(vdir, 0o777)  # as Kubernetes makes emptyDirs: any user may write
                if volume.empty_dir.medium == "Memory" and not self._is_mount(vdir):
                    size = volume.empty_dir.size_limit
                    opts = "mode=1777" + (f",size={memory_bytes(size)}" if size else "")
                    syscalls.mount("tmpfs", str(vdir), "tmpfs", syscalls.MS_NOSUID, opts)

    @staticmethod
    def _is_mount(path: Path) -> bool:
        """Whether something is mounted on `path`: its st_dev differs from its parent's
        (a tmpfs here), which costs two stats instead of a read of mountinfo."""
        try:
            return os.stat(path).st_dev != os.stat(path.parent).st_dev
        except FileNotFoundError:
            return False

    # --- containers ---

    async def ensure_image(self, pod: Pod, container: str, events: EventCallback) -> None:
        """The container's image in the store, pulled per its imagePullPolicy (puller.py).
        Without a puller, the store must already have it (ErrImageNeverPull)."""
        spec_c = next((c for c in pod.spec.containers if c.name == container), None)
        if spec_c is None:
            raise RuntimeFailure(f"pod {pod.key} has no container {container!r}")
        if self.puller is None:
            # Nothing to pull: start_container looks the image up anyway (ErrImageNeverPull
            # if it is missing), in the thread hop it makes for its files; no second hop.
            return
        policy = pull_policy(spec_c.image, spec_c.image_pull_policy)
        # create_pod looked it up (policies other than Always), on its thread: no hop here.
        local = self._images_seen.pop((str(pod.metadata.uid), container), None)
        await self.puller.ensure(spec_c.image, policy, events, local=local)

    async def start_container(self, pod: Pod, container: str) -> ContainerInfo:
        uid = str(pod.metadata.uid)
        spec_c = next((c for c in pod.spec.containers if c.name == container), None)
        if spec_c is None:
            raise RuntimeFailure(f"pod {pod.key} has no container {container!r}")
        # The pod's lock: remove_pod must not tear down a sandbox a start is using.
        async with self._lock(uid):
            fresh = (uid, container) in self._fresh_cgroups
            self._fresh_cgroups.discard((uid, container))
            prepared = await asyncio.to_thread(self._prepare_start, pod, spec_c, fresh)
            if isinstance(prepared, ContainerInfo):
                return prepared  # already started (idempotent, e.g. after a lost answer)
            # Usually skipped: create_pod's prime still waits. After a long pull it has
            # long passed, and this one takes its place.
            self._prime_attach()
            try:
                await self._files_written(uid)  # the init binds the /etc files and volumes
            except (OSError, ValueError) as exc:
                raise RuntimeFailure(f"pod {uid}: cannot write its files: {exc}") from exc
            old = self._watches.pop((uid, container), None)
            if old is not None:
                old.close()
            answer, watch = await self._forkserver.run(prepared, START_TIMEOUT)
            if watch is not None:
                self._watches[(uid, container)] = watch
        if not answer.get("ok"):  # the monitor recorded the exit: 128, StartError
            raise RuntimeFailure(
                f"cannot start container {container}: {answer.get('error')}", START_ERROR
            )
        container_id, image_id = _run_ids(prepared.get("run"))
        return ContainerInfo(
            name=container,
            state="running",
            pid=int(answer["init_pid"]),
            started_at=_dt(answer.get("started_at")),
            container_id=container_id,
            image_id=image_id,
        )

    def _prepare_start(
        self, pod: Pod, container: Container, fresh_cgroup: bool = False
    ) -> ContainerInfo | dict[str, Any]:
        """All of a start's file work in one thread hop: the container's info if it runs
        already, else the monitor's launch spec (image, fresh overlay dirs, cgroup)."""
        running = self._container_info(str(pod.metadata.uid), container.name, False)
        if running is not None and running.state == "running":
            return running
        with self.image_lock:  # not while image gc removes an image
            image = self.images.require(container.image)
            layers = self.images.layer_dirs(image)
            names = [layer.parent.name for layer in layers]  # layers/<hex>/rootfs
            use = ImagesInUse(frozenset({image.digest}), frozenset(names))
            with self._image_of_lock:
                self._image_of[(str(pod.metadata.uid), container.name)] = use
        spec = self._prepare_container(pod, container, image.config, layers, fresh_cgroup)
        # The run's ids, new for every start (as a CRI runtime's container ids are), and
        # the layers it stands on, for image gc to keep whatever becomes of the image's
        # names. The monitor keeps them in its records (started.json, exit.json), which a
        # later agent reads anyway: no file (no write) of their own.
        spec["run"] = {"id": os.urandom(32).hex(), "image_id": image.repo_digest, "layers": names}
        return spec

    def _prepare_container(
        self,
        pod: Pod,
        container: Container,
        config: ImageConfig,
        layers: list[Path],
        fresh_cgroup: bool = False,
    ) -> dict[str, Any]:
        """Fresh overlay dirs, the container cgroup (unless `fresh_cgroup`: create_pod made
        it, and nothing ran in it), and the monitor's launch spec (blocking)."""
        uid = str(pod.metadata.uid)
        pdir = self.pod_dir(uid)
        cdir = self.container_dir(uid, container.name)
        if not pdir.is_dir():
            self._prepared.discard(uid)  # removed behind our back: the next create_pod redoes it
            raise RuntimeFailure(f"pod {uid} has no sandbox: create_pod first")
        argv = command_line(container, config)
        if not argv:
            raise RuntimeFailure(
                f"container {container.name}: no command (neither the pod nor the image gives one)",
                "CreateContainerConfigError",
            )
        mounts = self._mounts(pod, container)
        if (cdir / "exit.json").exists():  # a restart: the last run's log becomes "previous"
            retire(str(self.log_path(uid, container.name)), self.log_max_files)
        # A restarted container starts from the image again, as in Kubernetes.
        for name in ("upper", "work", "empty"):
            rootfs.remove_tree(cdir / name)  # as deep as the container made it
        for name in ("monitor.pid", "init.pid", "started.json", "exit.json"):
            with contextlib.suppress(FileNotFoundError):
                (cdir / name).unlink()
        for name in ("upper", "work", "rootfs"):
            (cdir / name).mkdir(parents=True, exist_ok=True)
        if not layers:  # an image with no layers: overlayfs still needs a lower dir
            (cdir / "empty").mkdir()
            layers = [cdir / "empty"]
        if self._fits_init_layer(layers):
            layers = [self.init_layer, *layers]
        cgroup = f"{self.pod_cgroup(uid)}/{container.name}"
        try:
            if fresh_cgroup and self.cgroups.exists(cgroup):
                oom_before = 0  # made with its limits by create_pod; nothing has run in it
            else:
                if not self.cgroups.exists(self.pod_cgroup(uid)):  # gone since create_pod
                    self.cgroups.create(self.pod_cgroup(uid), Limits(pids_limit=self.pids_limit))
                self.cgroups.create(cgroup, limits_of(container))
                # Before the container runs (a restart reuses the cgroup): only an increase
                # of the OOM kill counter means it was OOM-killed.
                oom_before = self.cgroups.oom_kills(cgroup)
        except CgroupError as exc:
            raise RuntimeFailure(f"container {container.name}: {exc}") from exc
        # Joined if pinned, else made by this container's init (namespaces.py).
        sandbox = {
            "dir": str(pdir / "ns"),
            "kinds": self._namespaces(pod),
            "hostname": pod_hostname(pod),
        }
        return {
            "op": "run",
            "name": f"{uid}/{container.name}",
            "dir": str(cdir),
            "argv": argv,
            "env": environment(container, config, pod_hostname(pod)),
            "cwd": container.working_dir or config.working_dir or "/",
            "user": config.user or None,
            "rootfs": {
                "lower": [str(p) for p in layers],
                "upper": str(cdir / "upper"),
                "work": str(cdir / "work"),
                "target": str(cdir / "rootfs"),
            },
            "mounts": mounts,
            "sandbox": sandbox,
            "cgroups": self.cgroups.paths(cgroup),
            "oom_files": self.cgroups.oom_files(cgroup),
            "oom_before": oom_before,
            "log": {
                "path": str(self.log_path(uid, container.name)),
                "max_bytes": self.log_max_bytes,
                "max_files": self.log_max_files,
            },
        }

    def _fits_init_layer(self, layers: list[Path]) -> bool:
        """Whether the image's /etc is a directory (or missing), so that the init layer's
        /etc merges with it, as docker's "-init" layer does. An image whose /etc is a
        symlink keeps it: the init makes the mount points in the upper dir instead.
        Cached per image (blocking)."""
        key = tuple(str(p) for p in layers)
        fits = self._init_layer_fits.get(key)
        if fits is None:
            fits = True
            for layer in layers:  # the top layer first
                try:
                    mode = os.lstat(layer / "etc").st_mode
                except FileNotFoundError:
                    continue
                fits = stat.S_ISDIR(mode) or stat.S_ISCHR(mode)  # a directory, or whiteout
                break
            self._init_layer_fits[key] = fits
        return fits

    def _mounts(self, pod: Pod, container: Container) -> list[dict[str, Any]]:
        """Bind mounts for the launch spec: volumes, then /etc files the pod does not cover."""
        pdir = self.pod_dir(str(pod.metadata.uid))
        volumes = {v.name: v for v in pod.spec.volumes}
        mounts: list[dict[str, Any]] = []
        for vm in container.volume_mounts:
            volume = volumes[vm.name]
            entry: dict[str, Any] = {"target": vm.mount_path, "readonly": vm.read_only}
            if volume.empty_dir is not None:
                entry["source"] = str(pdir / "volumes" / volume.name)
            else:
                assert volume.host_path is not None
                entry["source"] = host_path_source(
                    container.name, volume.name, volume.host_path, self.allowed_host_paths
                )
                entry["within"] = [os.path.realpath(p) for p in self.allowed_host_paths]
            mounts.append(entry)
        targets = {vm.mount_path.rstrip("/") for vm in container.volume_mounts}
        for name in ETC_FILES:
            if f"/etc/{name}" not in targets and "/etc" not in targets:
                mounts.append({"source": str(pdir / "etc" / name), "target": f"/etc/{name}"})
        return mounts

    async def wait_container(self, uid: str, container: str) -> ContainerExit:
        watch = self._watches.get((uid, container))
        if watch is not None:
            # Started here: its monitor sends the exit record once exit.json is durable.
            # (Shielded: a waiter that gives up must not end the watch for the others.)
            record = await asyncio.shield(watch.future)
            if record is not None:
                return _exit_from(record)
        cdir = self.container_dir(uid, container)
        record, started, pidfd = await asyncio.to_thread(self._exit_or_monitor, cdir)
        if record is not None:
            return _exit_from(record)
        if not started:
            raise RuntimeFailure(f"pod {uid} has no started container {container!r}")
        if pidfd is not None:
            # A pidfd becomes readable when the process exits: no polling, no SIGCHLD,
            # and it works for monitors that are not our children (re-adopted ones).
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        return await asyncio.to_thread(self._exit_or_lost, uid, container)

    @staticmethod
    def _exit_or_monitor(cdir: Path) -> tuple[dict[str, Any] | None, bool, int | None]:
        """(exit record, started, pidfd of its live monitor), read in one thread hop."""
        record = _read_json(cdir / "exit.json")
        if record is not None:
            return record, True, None
        mon = _read_json(cdir / "monitor.pid")
        return None, mon is not None, _pidfd(mon)

    def _recorded_exit(self, uid: str, container: str) -> ContainerExit | None:
        """The exit its monitor sent us, if we started it and it has exited (no I/O)."""
        watch = self._watches.get((uid, container))
        if watch is None or not watch.future.done():
            return None
        record = watch.future.result()
        return _exit_from(record) if record is not None else None

    def _exit_or_lost(self, uid: str, container: str) -> ContainerExit:
        """The recorded exit, or (the monitor died without one) a 137 "monitor lost" that
        is recorded too, after killing whatever the container left running (blocking)."""
        return _exit_from(self._exit_record_or_lost(uid, container))

    def _exit_record_or_lost(self, uid: str, container: str) -> dict[str, Any]:
        """_exit_or_lost's record (blocking)."""
        cdir = self.container_dir(uid, container)
        record = _read_json(cdir / "exit.json")
        if record is not None:
            return record
        started = _read_json(cdir / "started.json") or {}
        with contextlib.suppress(CgroupError):
            path = f"{self.pod_cgroup(uid)}/{container}"
            if self.cgroups.exists(path):
                self.cgroups.kill(path)
        record = {
            "exit_code": 137,
            "signal": None,
            "started_at": started.get("started_at"),
            "finished_at": datetime.now(UTC).timestamp(),
            "oom_killed": False,
            "reason": "Error",
            "message": "monitor lost",
            "run": started.get("run"),
        }
        if cdir.is_dir():
            write_json(str(cdir / "exit.json"), record, durable=True)
        return record

    async def stop_container(self, uid: str, container: str, grace: float) -> ContainerExit | None:
        exited = self._recorded_exit(uid, container)
        if exited is not None:
            return exited
        cdir = self.container_dir(uid, container)
        record = await asyncio.to_thread(_read_json, cdir / "exit.json")
        if record is not None:
            return _exit_from(record)
        if not await asyncio.to_thread((cdir / "monitor.pid").exists):
            return None  # never started
        init = await asyncio.to_thread(_read_json, cdir / "init.pid")
        if grace > 0 and await asyncio.to_thread(_signal, init, signal.SIGTERM):
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self.wait_container(uid, container), grace)
        # Grace is over: SIGKILL the whole cgroup (the init may have forked helpers; PID 1
        # dying takes its namespace with it, but the cgroup catches anything in flight).
        await asyncio.to_thread(_signal, init, signal.SIGKILL)
        path = f"{self.pod_cgroup(uid)}/{container}"
        with contextlib.suppress(CgroupError):
            await asyncio.to_thread(self.cgroups.kill, path)
        try:
            return await asyncio.wait_for(self.wait_container(uid, container), KILL_WAIT)
        except TimeoutError:
            raise RuntimeFailure(
                f"container {container} of pod {uid} did not stop within {KILL_WAIT}s of SIGKILL"
            ) from None

    async def exec_in_container(
        self,
        uid: str,
        container: str,
        argv: list[str],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[int, bytes]:
        """Run `argv` in a running container (its namespaces, root, cgroups, environment;
        as root); return its exit code and first 10 KiB of output (stdout and stderr).

        The fork server's helper does the work (`forkserver.exec_command`): the agent
        has threads, so it forks nothing itself. Past `timeout` the command and what it
        started are killed and TimeoutError is raised; RuntimeFailure if the container
        does not run.
        """
        cdir = self.container_dir(uid, container)
        init = await asyncio.to_thread(_read_json, cdir / "init.pid")
        if init is None or not init.get("pid"):
            raise RuntimeFailure(f"container {container} of pod {uid} is not running")
        request = {
            "op": "exec",
            "pid": int(init["pid"]),
            "start": init.get("start"),
            "cgroups": self.cgroups.paths(f"{self.pod_cgroup(uid)}/{container}"),
            "argv": [str(a) for a in argv],
            "timeout": timeout,
            "max_output": MAX_EXEC_OUTPUT,
        }
        try:
            answer = await self._forkserver.request(request, timeout + EXEC_ANSWER_MARGIN)
        except TimeoutError:
            raise TimeoutError(f"command timed out after {timeout:g}s") from None
        if not answer.get("ok"):
            raise RuntimeFailure(
                f"cannot exec in container {container}: {answer.get('error')}", "ExecError"
            )
        if answer.get("timed_out"):
            raise TimeoutError(f"command timed out after {timeout:g}s")
        return int(answer["exit_code"]), bytes.fromhex(str(answer.get("output") or ""))

    async def remove_pod(self, uid: str) -> None:
        pdir = self.pod_dir(uid)
        async with self._lock(uid):
            self._prepared.discard(uid)
            self._fresh_cgroups -= {k for k in self._fresh_cgroups if k[0] == uid}
            for key in [k for k in self._images_seen if k[0] == uid]:
                del self._images_seen[key]
            files = self._pod_files.pop(uid, None)
            if files is not None:
                # Never move the pod's directory away while create_pod still writes in it.
                await asyncio.wait({files})
                if not files.cancelled() and files.exception() is not None:
                    _LOGGER.debug("pod %s: its files were not written: %s", uid, files.exception())
            exited = {c for u, c in self._watches if u == uid and self._recorded_exit(u, c)}
            # One thread hop when every container has exited (the common case): the
            # teardown itself says which ones still need stopping first.
            names = await asyncio.to_thread(self._teardown, uid, exited)
            if names:
                results = await asyncio.gather(
                    *(self.stop_container(uid, name, 0) for name in names),
                    return_exceptions=True,
                )
                for name, result in zip(names, results, strict=True):
                    if isinstance(result, BaseException):
                        _LOGGER.warning("pod %s: stopping %s: %s", uid, name, result)
                await asyncio.to_thread(self._teardown, uid)
            for key in [k for k in self._watches if k[0] == uid]:
                self._watches.pop(key).close()
            with self._image_of_lock:  # its containers are gone: their images are free
                for key in [k for k in self._image_of if k[0] == uid]:
                    del self._image_of[key]
        self._locks.pop(uid, None)
        self._sweep()
        _LOGGER.debug("pod %s removed (%s)", uid, pdir)

    def _container_names(self, uid: str) -> list[str]:
        try:
            return sorted(p.name for p in (self.pod_dir(uid) / "containers").iterdir())
        except FileNotFoundError:
            return []

    def _teardown(self, uid: str, exited: set[str] | None = None) -> list[str]:
        """Kill what is left, then remove mounts and cgroups, and move the directories to
        the trash (blocking). With `exited` (containers known to have exited), first
        return the containers that may still run, if any, and do nothing else."""
        pdir = self.pod_dir(uid)
        names = self._container_names(uid)
        if exited is not None:
            running = [n for n in names if n not in exited and self._may_run(uid, n)]
            if running:
                return running
        cgroup = self.pod_cgroup(uid)
        # When every container's monitor has told us its exit, the cgroups are empty: a
        # PID 1 takes its namespace's processes with it. Then removing them (rmdir refuses
        # a cgroup that still holds a process) stands in for the kill, which walks every
        # hierarchy to make sure; anything else, or a refusal, gets the kill first.
        quiet = exited is not None and all(name in exited for name in names)
        if not quiet:
            try:
                self.cgroups.kill(cgroup)  # idempotent: a cgroup that is gone is empty
            except CgroupError as exc:
                raise RuntimeFailure(f"pod {uid}: {exc}") from exc
        # Monitors record the exit and leave right after their init; none may still be
        # writing into the directories we are about to move.
        for name in names:
            self._wait_gone(_read_json(pdir / "containers" / name / "monitor.pid"))
        # Our mounts, by name (the namespace pins, memory emptyDirs): what is not mounted
        # fails at once, so no mountinfo read. The sweep checks the trash for strays
        # before it deletes anything.
        namespaces.unpin(str(pdir / "ns"))
        with contextlib.suppress(FileNotFoundError):
            for volume in os.listdir(pdir / "volumes"):
                rootfs.detach(str(pdir / "volumes" / volume))
        try:
            try:
                self.cgroups.remove(cgroup)  # idempotent too
            except CgroupError:
                if not quiet:
                    raise
                self.cgroups.kill(cgroup)
                self.cgroups.remove(cgroup)
        except CgroupError as exc:
            raise RuntimeFailure(f"pod {uid}: {exc}") from exc
        self._trash(pdir, uid)
        self._trash(self.log_dir / uid, f"{uid}.logs")
        if pdir.exists():
            raise RuntimeFailure(f"pod {uid}: cannot remove {pdir}")
        return []

    def _may_run(self, uid: str, container: str) -> bool:
        """Started, and no exit recorded yet (blocking)."""
        cdir = self.container_dir(uid, container)
        return not (cdir / "exit.json").exists() and (cdir / "monitor.pid").exists()

    def _trash(self, path: Path, name: str) -> None:
        """Move a directory to the trash (one rename: deleting a pod's files takes 5-60 ms
        on a busy disk), or delete it here if it cannot be moved (blocking)."""
        if not os.path.lexists(path):
            return
        try:
            os.rename(path, self.trash_dir / f"{name}.{os.urandom(4).hex()}")
        except OSError as exc:  # another filesystem, say; then the slow way
            _LOGGER.debug("cannot move %s to the trash (%s); deleting it now", path, exc)
            rootfs.remove_tree(path)

    def _sweep(self, delay: float = SWEEP_DELAY) -> None:
        """Empty the trash off every caller's path, `delay` seconds from now so that the
        removals of a burst share one sweep, one sweep at a time (and one more if asked
        while it runs). A helper of the fork server does it, at the lowest CPU priority:
        deleting a pod's files is mostly Python and journal waits, which in the agent
        would take the GIL from the event loop, and the CPU from pods starting."""
        if self._sweeping is not None and not self._sweeping.done():
            self._sweep_again = True
            return
        self._sweep_waiting = True  # (until the task has slept: it may not have run yet)
        self._sweeping = asyncio.create_task(self._sweep_loop(delay), name="native-trash")

    async def empty_trash(self) -> None:
        """Empty the trash now and return once it is empty (the sweep otherwise waits a
        moment for removals to gather): for benchmarks and tests that must not leave
        deferred work behind them."""
        if self._sweeping is not None and not self._sweeping.done():
            if not self._sweep_waiting:
                await asyncio.wait({self._sweeping})  # a sweep runs: let it end first
            else:
                self._sweeping.cancel()
                await asyncio.wait({self._sweeping})
        self._sweep(delay=0.0)
        assert self._sweeping is not None
        await asyncio.wait({self._sweeping})

    async def _sweep_loop(self, delay: float = SWEEP_DELAY) -> None:
        request = {"op": "sweep", "dir": str(self.trash_dir)}
        while True:
            self._sweep_waiting = True
            try:
                await asyncio.sleep(delay)  # let the removals of a burst gather
            finally:
                self._sweep_waiting = False
            self._sweep_again = False
            try:
                answer = await self._forkserver.request(request, SWEEP_TIMEOUT, spare=False)
                if not answer.get("ok"):
                    _LOGGER.warning("cannot empty %s: %s", self.trash_dir, answer.get("error"))
            except (RuntimeFailure, OSError, TimeoutError) as exc:
                _LOGGER.warning("cannot empty %s: %s", self.trash_dir, exc)
            if not self._sweep_again:
                return
            delay = SWEEP_DELAY

    @staticmethod
    def _wait_gone(record: dict[str, Any] | None, timeout: float = 5.0) -> None:
        import select

        fd = _pidfd(record)
        if fd is None:
            return
        try:
            if not select.select([fd], [], [], timeout)[0]:
                _LOGGER.warning("monitor %s did not exit; killing it", record)
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                select.select([fd], [], [], timeout)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)

    def images_started(self) -> ImagesInUse:
        """The images (and their layers) this agent took for the starts of the pods it
        still has (no I/O). Image gc reads it under `image_lock`, which a start takes
        its image under: it cannot miss a start."""
        with self._image_of_lock:
            uses = list(self._image_of.values())
        return _union(uses)

    def images_in_use(self) -> ImagesInUse:
        """`images_started`, and what the containers on disk were last started from as
        their records say (blocking: reads every container's records), a pod being
        torn down's too. The records on disk change only by starts, which
        `images_started` has from before their records exist: image gc reads this once a
        pass, and only `images_started` again before each removal."""
        uses = [self.images_started()]
        try:
            pod_dirs = list(self.pods_dir.iterdir())
        except FileNotFoundError:
            return uses[0]
        for pdir in pod_dirs:
            for cdir in (pdir / "containers").glob("*"):
                for name in ("started.json", "exit.json"):
                    record = _read_json(cdir / name)
                    uses.append(_use_of(record.get("run") if record else None))
        return _union(uses)

    # --- re-adoption ---

    async def recover(self) -> list[PodInfo]:
        found = await asyncio.to_thread(self._recover)
        self._sweep()  # leftovers of pods that never had a pod.json
        return found

    async def known_pods(self) -> set[str]:
        """Every pod with a directory: create_pod makes it right after the pod's cgroups
        and before its log directory, and a removal moves it away only after both
        (after `recover`, which removes those without a pod.json)."""
        return set(await asyncio.to_thread(self._pod_uids))

    def _pod_uids(self) -> list[str]:
        try:
            return [p.name for p in self.pods_dir.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []

    def _recover(self) -> list[PodInfo]:
        found = []
        try:
            pod_dirs = sorted(p for p in self.pods_dir.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []
        for pdir in pod_dirs:
            uid = pdir.name
            record = _read_json(pdir / "pod.json")
            try:
                pod = Pod.model_validate(record) if record is not None else None
            except ValueError as exc:
                _LOGGER.warning("pod %s: unreadable pod.json: %s", uid, exc)
                pod = None
            if pod is None:
                # create_pod died before it saved the pod: nothing of it ever ran.
                _LOGGER.warning("pod %s: no pod.json; removing its leftovers", uid)
                try:
                    self._teardown(uid)
                except RuntimeFailure as exc:
                    _LOGGER.warning("pod %s: %s", uid, exc)
                continue
            info = PodInfo(uid=uid, pod=pod)
            for name in self._container_names(uid):
                container = self._container_info(uid, name, True)
                if container is not None:
                    info.containers[name] = container
            found.append(info)
        return found

    def _container_info(self, uid: str, name: str, settle: bool) -> ContainerInfo | None:
        """What the records say of one container; None if it never started (blocking).

        `settle`: if the monitor died without recording an exit, record "monitor lost".
        """
        cdir = self.container_dir(uid, name)
        record = _read_json(cdir / "exit.json")
        if record is None:
            mon = _read_json(cdir / "monitor.pid")
            if mon is None:
                return None
            if _alive(mon):
                init = _read_json(cdir / "init.pid") or {}
                started = _read_json(cdir / "started.json") or {}
                container_id, image_id = _run_ids(started.get("run"))
                return ContainerInfo(
                    name=name,
                    state="running",
                    pid=init.get("pid"),
                    started_at=_dt(started.get("started_at")),
                    container_id=container_id,
                    image_id=image_id,
                )
            if not settle:
                return None
            record = self._exit_record_or_lost(uid, name)
        exit = _exit_from(record)
        container_id, image_id = _run_ids(record.get("run"))
        return ContainerInfo.exited(name, exit, container_id, image_id)

    # --- metrics ---

    def usage(self, uid: str) -> Usage | None:
        try:
            stats = self.cgroups.stats(self.pod_cgroup(uid))
        except (CgroupError, OSError):
            return None
        return Usage(cpu_usage_ns=stats.cpu_usage_ns, memory_bytes=stats.memory_bytes)
