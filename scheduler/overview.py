"""What the status page (`/`) lists, kept as the cluster changes.

The page refreshes every 5 s in every on-call browser. Walking every pod (their counts
per namespace, which of them fail) and listing every event to show 30 held the event
loop for 45-65 ms at 10,000 pods and 5,000 events; kept here, a refresh costs what
it shows: the counts, the pods that may be failing, the newest events.
"""

from __future__ import annotations

import itertools
from collections import Counter

from common.models import Pod
from scheduler.cluster import ClusterState
from scheduler.events import EVENTS
from scheduler.store import KV, Event, Store

# A container waiting for these reasons is on its way, not failing.
NORMAL_WAITING = frozenset({"ContainerCreating", "PodInitializing"})


def may_be_failing(pod: Pod) -> bool:
    """The page may list it as failing or waiting (`scheduler.api.ui.problem`): every pod
    it lists passes, whatever the time (a restart is listed while recent)."""
    status = pod.status
    if status.phase in ("Failed", "Unknown", "Pending"):
        return True
    for cs in status.container_statuses:
        waiting, terminated = cs.state.waiting, cs.state.terminated
        if waiting is not None and waiting.reason not in NORMAL_WAITING:
            return True
        if terminated is not None and terminated.exit_code != 0:
            return True
        last = cs.last_state.terminated
        if cs.restart_count and last is not None and last.exit_code != 0:
            return True
    return False


class Overview:
    """Pods by namespace and phase, the pods that may be failing, the events by last
    write; `track` a cluster view, then `load_events`, before its watch runs."""

    def __init__(self) -> None:
        self.by_namespace: Counter[tuple[str, str]] = Counter()  # (namespace, phase) -> pods
        self.may_fail: set[str] = set()  # pod keys
        self._events: dict[str, KV] = {}  # event key -> its KV, least recently written first

    def track(self, cluster: ClusterState) -> None:
        for key, pod in cluster.pods.items():
            self.pod_changed(key, None, pod)
        cluster.pod_listeners.append(self.pod_changed)
        cluster.object_listeners.append(self.object_changed)

    async def load_events(self, store: Store) -> None:
        kvs, _ = await store.list(EVENTS)
        for kv in sorted(kvs, key=lambda kv: kv.mod_revision):
            self._events[kv.key] = kv

    def pod_changed(self, key: str, old: Pod | None, new: Pod | None) -> None:
        """A pod listener of the cluster view: runs at every pod write, kept to a few
        dictionary operations."""
        if (
            old is None
            or new is None
            or old.status.phase != new.status.phase
            or old.metadata.namespace != new.metadata.namespace
        ):  # else the common status report, which leaves the counts as they are
            self._count(old, -1)
            self._count(new, 1)
        if new is not None and may_be_failing(new):
            self.may_fail.add(key)
        else:
            self.may_fail.discard(key)

    def _count(self, pod: Pod | None, sign: int) -> None:
        if pod is None:
            return
        counts = self.by_namespace
        at = (pod.metadata.namespace or "default", pod.status.phase)
        counts[at] += sign
        if not counts[at]:
            del counts[at]  # a namespace without pods is not listed

    def object_changed(self, event: Event) -> None:
        key = event.kv.key
        if not key.startswith(EVENTS):
            return
        have = self._events.get(key)
        if have is not None and have.mod_revision >= event.revision:
            return  # loaded already (written between the view's load and this one's)
        self._events.pop(key, None)  # written again: the newest, last
        if event.type == "PUT":
            self._events[key] = event.kv

    def newest_events(self, count: int) -> list[KV]:
        """The `count` events written last, newest first."""
        return list(itertools.islice(reversed(self._events.values()), count))
