"""What the control plane's parts share: one object instead of six constructor arguments."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.cluster import ClusterState
from scheduler.config import SchedulerConfig
from scheduler.events import EventRecorder
from scheduler.metrics import SchedulerMetrics
from scheduler.recent import RecentErrors
from scheduler.store import Store


@dataclass(frozen=True, slots=True)
class Context:
    config: SchedulerConfig
    store: Store
    cluster: ClusterState
    metrics: SchedulerMetrics
    errors: RecentErrors
    events: EventRecorder
