"""Reading `-f` manifests for `apply` and `delete`, all checked locally before any request.

Imports pydantic (through `common.manifest`), so only the commands that read
manifests import this module.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from common.manifest import ManifestError, load_manifests
from common.models import DEFAULT_DNS_POLICY, Pod, PodSpec
from scheduler.cli.errors import CommandError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestProblem(CommandError):
    """A manifest that cannot be used; the message names the file and the field path."""


@dataclass(frozen=True)
class PodManifest:
    """One pod from a manifest, with the namespace it will be sent to."""

    source: str
    pod: Pod
    namespace: str

    @property
    def name(self) -> str:
        return self.pod.metadata.name

    def body(self) -> dict[str, Any]:
        """The request body for a create: the manifest without status, namespace filled in."""
        body = self.pod.to_dict()
        body.pop("status", None)
        body["metadata"]["namespace"] = self.namespace
        return body


def _expand(paths: Iterable[str]) -> list[str]:
    """Files named on the command line; a directory stands for its manifests, sorted."""
    files: list[str] = []
    for path in paths:
        if path != "-" and Path(path).is_dir():
            found = sorted(
                str(p)
                for p in Path(path).iterdir()
                if p.suffix in MANIFEST_SUFFIXES and p.is_file()
            )
            if not found:
                raise ManifestProblem(f"{path}: no .yaml, .yml or .json files in this directory")
            files += found
        else:
            files.append(path)
    return files


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise ManifestProblem(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestProblem(f"{path}: cannot read: {exc}") from None


def read_pods(paths: Sequence[str], namespace: str | None) -> list[PodManifest]:
    """Every pod in `paths`, validated; the first problem stops everything.

    `namespace` is the `-n` flag: it fills in pods that name none, and a pod that
    names a different one is refused rather than sent somewhere unexpected.
    """
    pods: list[PodManifest] = []
    for path in _expand(paths):
        source = "<stdin>" if path == "-" else path
        try:
            objects = load_manifests(_read(path))
        except ManifestError as exc:
            raise ManifestProblem(f"{source}: {exc}") from None
        if not objects:
            raise ManifestProblem(f"{source}: no objects found")
        for obj in objects:
            if not isinstance(obj, Pod):
                raise ManifestProblem(
                    f"{source}: node/{obj.metadata.name}: nodes cannot be applied or deleted "
                    "from manifests; they register when their agent connects "
                    "(use `corral delete node NAME` to forget one)"
                )
            own = obj.metadata.namespace
            if own and namespace and own != namespace:
                raise ManifestProblem(
                    f"{source}: pod/{obj.metadata.name} is in namespace {own!r}, "
                    f"not {namespace!r} given by --namespace"
                )
            pods.append(PodManifest(source, obj, own or namespace or "default"))
    return pods


def normalized_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as the model writes it (defaults filled, quantities as strings), to compare.
    `dnsPolicy` too, which the server fills in on create (as kube-apiserver does) and a
    manifest, or a server before that default, may leave out."""
    try:
        normal = PodSpec.model_validate(spec).to_dict()
    except ValidationError:
        return spec
    normal.setdefault("dnsPolicy", DEFAULT_DNS_POLICY)
    return normal


def spec_changes(wanted: dict[str, Any], existing: dict[str, Any]) -> list[str]:
    """Field paths (`spec.containers[0].image`) where the manifest differs from the server.

    A `nodeName` the scheduler bound is not a change unless the manifest names a node.
    """
    current = normalized_spec(existing)
    if "nodeName" not in wanted:
        current.pop("nodeName", None)
    return _diff(normalized_spec(wanted), current, "spec")


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += _diff(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [path]
