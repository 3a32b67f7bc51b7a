"""The runtime interface the agent's supervisor drives, whatever runs the containers.

Who calls what:

    supervisor                                runtime
      recover() once at start  ---------->  every pod found in the state directory, with
                                            each container running (adopted) or exited
      known_pods() after it    ---------->  every uid it has anything of (housekeeping)
      create_pod(pod)          ---------->  the sandbox: pod cgroup, shared namespaces
                                            (net, ipc, uts), volume directories. Idempotent.
      ensure_image(pod, c, ev) ---------->  the container's image, pulled first if its
                                            imagePullPolicy says so (events Pulling, Pulled)
      start_container(pod, c)  ---------->  launch one container; returns once it runs,
                                            with the run's containerID and imageID
                                            (RuntimeFailure START_ERROR: its process
                                            could not be started)
      wait_container(uid, c)   ---------->  resolves with its exit, also for adopted ones
      stop_container(uid, c, grace) ----->  SIGTERM, grace, then SIGKILL of its cgroup
      exec_in_container(uid, c, argv, t) ->  run a command inside a running container
                                            (exec probes); killed after t seconds
      remove_pod(uid)          ---------->  stop everything, then delete cgroups, mounts,
                                            namespaces, directories. Idempotent.

Containers must outlive the agent process: the runtime keeps what it needs to
re-adopt them (pids, start times, exit records, each run's ids) under the state
directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from common.models import Pod


class RuntimeFailure(Exception):
    """A runtime operation failed; the message says what and why (shown to users)."""

    def __init__(self, message: str, reason: str = "RunContainerError") -> None:
        super().__init__(message)
        self.reason = reason  # Kubernetes-style reason: RunContainerError, ErrImageNeverPull...


# The container was made but its process could not start (no such executable, say):
# the supervisor takes it as an exit with code 128 under the restart policy, as the
# kubelet does; wait_container returns that exit if the runtime recorded one.
START_ERROR = "StartError"

EventCallback = Callable[[str, str, str], None]  # reason, message, "Normal" | "Warning"


@dataclass(frozen=True, slots=True)
class ContainerExit:
    exit_code: int
    reason: str  # "Completed" (exit 0), "Error", "OOMKilled"
    started_at: datetime | None
    finished_at: datetime
    signal: int | None = None
    message: str | None = None


@dataclass(slots=True)
class ContainerInfo:
    name: str
    state: Literal["running", "exited"]
    pid: int | None = None  # host pid of the container's init process
    started_at: datetime | None = None
    exit: ContainerExit | None = None
    # The run's identity as the kubelet reports it in a container status: `containerID`
    # (`<runtime>://<id>`, new for every run) and `imageID` (the image the runtime
    # resolved). Known to the runtime from its own records, so they survive the agent.
    container_id: str | None = None
    image_id: str = ""

    @classmethod
    def exited(
        cls, name: str, exit: ContainerExit, container_id: str | None, image_id: str
    ) -> ContainerInfo:
        """A run that has ended, as `exit` says, with its ids."""
        return cls(
            name=name,
            state="exited",
            started_at=exit.started_at,
            exit=exit,
            container_id=container_id,
            image_id=image_id,
        )


@dataclass(slots=True)
class PodInfo:
    uid: str
    pod: Pod
    containers: dict[str, ContainerInfo] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_usage_ns: int  # cumulative CPU time
    memory_bytes: int  # current memory use


class Runtime(Protocol):
    name: str

    async def start(self) -> None:
        """Prepare (probe cgroups, start helpers such as a fork server)."""
        ...

    async def close(self) -> None:
        """Release helpers; running containers keep running."""
        ...

    async def recover(self) -> list[PodInfo]: ...

    async def known_pods(self) -> set[str]:
        """The uids of every pod the runtime has anything of (after `recover`): a pod it
        runs, or was told to create and has not removed. The agent's housekeeping
        (agent/housekeeping.py) removes log directories and cgroups of any other uid."""
        ...

    async def create_pod(self, pod: Pod) -> None: ...

    async def ensure_image(self, pod: Pod, container: str, events: EventCallback) -> None:
        """Make the container's image runnable as its imagePullPolicy says (Kubernetes'
        default when unset: Always for `:latest` or no tag, else IfNotPresent), pulling it
        if need be; `events(reason, message, kind)` gets Pulling and Pulled (with the time
        taken). Called by the supervisor before each start_container; concurrent calls for
        one image share a pull. RuntimeFailure with reason ErrImagePull (the registry's
        message, never a credential), ErrImageNeverPull or InvalidImageName otherwise."""
        ...

    async def start_container(self, pod: Pod, container: str) -> ContainerInfo: ...

    async def wait_container(self, uid: str, container: str) -> ContainerExit: ...

    async def stop_container(
        self, uid: str, container: str, grace: float
    ) -> ContainerExit | None: ...

    async def exec_in_container(
        self,
        uid: str,
        container: str,
        argv: list[str],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[int, bytes]:
        """Run `argv` inside a running container: its namespaces (pid, mnt, net, ipc,
        uts), root and cgroups, as root. Returns (exit code, the first 10 KiB of
        stdout+stderr). Called by exec probes (agent/probes.py), concurrently.

        Raises TimeoutError once `timeout` seconds have passed (the command has then
        been killed), RuntimeFailure if the container is not running.
        """
        ...

    def netns_path(self, uid: str) -> Path | None:
        """The file naming the pod's network namespace (open it, setns), or None when
        the pod has none of its own (hostNetwork). Blocking: called in a thread by
        httpGet and tcpSocket probes, which connect from inside that namespace."""
        ...

    async def remove_pod(self, uid: str) -> None: ...

    def usage(self, uid: str) -> Usage | None:
        """Resource use of the pod (its cgroup), None if unknown."""
        ...

    def log_path(self, uid: str, container: str) -> Path:
        """The current log file of a container (older ones rotate to `.1`, `.2`, ...)."""
        ...
