"""Admission policy: what a valid pod spec may still not ask for, by the scheduler's options.

The models (`common/models.py`) refuse what corral does not support at all
(`securityContext`, `hostPID`, `hostIPC`, `privileged`... are unknown fields,
refused by name). This module refuses what corral supports but does not grant
by default, because it reaches out of the pod's isolation onto the node:

- `hostNetwork: true` — the pod shares the node's network namespace; only with
  `allow_host_network`.
- `hostPath` volumes — only below `allowed_host_path_prefixes` (none by
  default), written without `..`. Each agent checks its own `allowed_host_paths`
  again, against the real path after symlinks, when it mounts the volume.

Called for pods when they are created, and for the pod templates of workloads.
"""

from __future__ import annotations

import posixpath
from typing import Any

from common.models import PodSpec, StatusCause
from scheduler.api.errors import Invalid
from scheduler.config import SchedulerConfig


def _below(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    return path == prefix or path.startswith(prefix if prefix == "/" else prefix + "/")


def check_pod_spec(
    config: SchedulerConfig, spec: PodSpec, field: str = "spec"
) -> list[StatusCause]:
    """Every way `spec` exceeds what this scheduler grants, as causes with field paths."""
    causes: list[StatusCause] = []
    if spec.host_network and not config.allow_host_network:
        causes.append(
            StatusCause(
                reason="FieldValueForbidden",
                message="hostNetwork is not allowed on this cluster (scheduler option "
                "allow_host_network)",
                field=f"{field}.hostNetwork",
            )
        )
    prefixes = config.allowed_host_path_prefixes
    for index, volume in enumerate(spec.volumes):
        if volume.host_path is None:
            continue
        path = volume.host_path.path
        where = f"{field}.volumes[{index}].hostPath.path"
        if not path.startswith("/") or ".." in path.split("/"):
            problem = "must be an absolute path without '..'"
        elif not prefixes:
            problem = (
                "hostPath volumes are not allowed on this cluster (scheduler option "
                "allowed_host_path_prefixes is empty)"
            )
        elif not any(_below(posixpath.normpath(path), p) for p in prefixes):
            problem = f"{path} is not below an allowed prefix ({', '.join(prefixes)})"
        else:
            continue
        causes.append(StatusCause(reason="FieldValueForbidden", message=problem, field=where))
    return causes


def admit(config: SchedulerConfig, obj: Any, prefix: str = "") -> None:
    """Raise 422 `Invalid` naming each forbidden field of a pod, or of a workload's template."""
    spec: Any = getattr(obj, "spec", None)
    if isinstance(spec, PodSpec):  # a pod: no look for a template (pydantic's slow miss)
        causes = check_pod_spec(config, spec, f"{prefix}spec")
    elif isinstance(
        template_spec := getattr(getattr(spec, "template", None), "spec", None), PodSpec
    ):
        causes = check_pod_spec(config, template_spec, f"{prefix}spec.template.spec")
    else:
        return
    if causes:
        kind = getattr(obj, "kind", "object")
        name = obj.metadata.name
        raise Invalid(
            f'{kind} "{name}" is invalid: ' + "; ".join(f"{c.field}: {c.message}" for c in causes),
            causes=causes,
            name=name,
            kind=kind,
        )
