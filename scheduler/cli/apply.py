"""`corral apply -f` for every kind corral serves, and the manifests `delete -f` reads.

apply is declarative and idempotent: each object of the files is created if
absent; if present it is compared with what the server holds (both with
defaults filled in, so spelling does not matter) and is `unchanged`, or
replaced and `configured`:

- Pods: labels and annotations only; a different spec is refused (immutable);
- Namespaces: labels and annotations;
- Deployments and Jobs: labels, annotations and spec, by the server's rules
  (a Deployment's selector and a Job's template may not change). A Deployment
  whose manifest leaves out `replicas` keeps the live count (set by `corral
  scale`), as kubectl's apply does.

Every file is read and checked before anything is sent. `--wait` then follows
each object until it is ready (see `scheduler/cli/rollout.py`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from common.manifest import ManifestError, ManifestObject, load_object, parse_documents
from common.models import DeploymentSpec, JobSpec, Node, Pod
from scheduler.cli import printers
from scheduler.cli.client import ApiError, Client
from scheduler.cli.errors import CommandError
from scheduler.cli.getting import err, out
from scheduler.cli.kinds import DEPLOYMENTS, JOBS, NAMESPACES, PODS, Resource, for_kind
from scheduler.cli.manifests import ManifestProblem, PodManifest, _expand, _read

Object = dict[str, Any]

# Kept by the server on the live object; never a difference from the manifest.
SYSTEM_ANNOTATION_PREFIXES = ("deployment.kubernetes.io/",)
SYSTEM_LABELS = ("kubernetes.io/metadata.name",)


@dataclass(frozen=True)
class Manifest:
    """One object from a file, with the namespace it goes to (None: cluster-scoped)."""

    source: str
    res: Resource
    obj: ManifestObject
    raw: Object
    namespace: str | None

    @property
    def name(self) -> str:
        return self.obj.metadata.name

    @property
    def ref(self) -> str:
        return self.res.ref(self.name)

    def body(self) -> Object:
        body = self.obj.to_dict()
        body.pop("status", None)
        if self.namespace is not None:
            body["metadata"]["namespace"] = self.namespace
        return body


def read_objects(paths: list[str], namespace: str | None) -> list[Manifest]:
    """Every object in `paths`, validated; the first problem stops everything."""
    found: list[Manifest] = []
    for path in _expand(paths):
        source = "<stdin>" if path == "-" else path
        try:
            docs = parse_documents(_read(path))
            many = len(docs) > 1
            objects = [(load_object(d, i if many else None), d) for i, d in enumerate(docs)]
        except ManifestError as exc:
            raise ManifestProblem(f"{source}: {exc}") from None
        if not objects:
            raise ManifestProblem(f"{source}: no objects found")
        for obj, raw in objects:
            if isinstance(obj, Node):
                raise ManifestProblem(
                    f"{source}: node/{obj.metadata.name}: nodes cannot be applied or deleted "
                    "from manifests; they register when their agent connects "
                    "(use `corral delete node NAME` to forget one)"
                )
            res = for_kind(obj.api_version, obj.kind)
            own = obj.metadata.namespace
            if not res.namespaced:
                found.append(Manifest(source, res, obj, raw, None))
                continue
            if own and namespace and own != namespace:
                raise ManifestProblem(
                    f"{source}: {res.ref(obj.metadata.name)} is in namespace {own!r}, "
                    f"not {namespace!r} given by --namespace"
                )
            found.append(Manifest(source, res, obj, raw, own or namespace or "default"))
    return found


# -- apply ------------------------------------------------------------------------------------


def apply(client: Client, args: argparse.Namespace) -> int:
    """`corral apply -f FILE|DIR|- [--wait]`."""
    manifests = read_objects(args.filename, args.namespace)
    failed = False
    applied: list[tuple[Manifest, Object]] = []
    fmt = getattr(args, "output", None)
    printed: list[Object] = []  # -o json|yaml: printed once at the end, as kubectl does
    for item in manifests:
        try:
            verb, obj = apply_one(client, item)
        except ApiError as error:
            from scheduler.cli.commands import api_error_text

            err(api_error_text(error))
            failed = True
            continue
        except CommandError as error:
            err(f"error: {error}")
            failed = True
            continue
        applied.append((item, obj))
        if fmt == "name":
            out(item.ref)
        elif fmt in ("json", "yaml"):
            printed.append(obj or client.get(item.res.path(item.namespace, item.name)))
        else:
            out(f"{item.ref} {verb}")
    if fmt in ("json", "yaml") and printed:
        # One document: the object, or a List of them (several JSON objects or YAML
        # mappings one after the other would not parse back).
        many = {"apiVersion": "v1", "kind": "List", "items": printed}
        out(printers.dump(printed[0] if len(printed) == 1 else many, fmt))
    if getattr(args, "wait", False) and applied:
        from scheduler.cli.rollout import wait_for

        for item, _ in applied:
            if not wait_for(client, item.res, item.namespace, item.name, args.wait_timeout):
                failed = True
    return 1 if failed else 0


def apply_one(client: Client, item: Manifest) -> tuple[str, Object]:
    """Create or update one object; (created | configured | unchanged, the object)."""
    if item.res is PODS:
        from scheduler.cli.commands import _apply_pod

        assert isinstance(item.obj, Pod)
        line = _apply_pod(client, PodManifest(item.source, item.obj, item.namespace or "default"))
        return line.rsplit(" ", 1)[-1], {}  # the pod itself is fetched only if it is printed
    path = item.res.path(item.namespace)
    try:
        return "created", client.post(path, item.body())
    except ApiError as error:
        if error.code != 409 or error.reason != "AlreadyExists":
            raise
    live: Object = client.get(item.res.path(item.namespace, item.name))
    wanted = item.body()
    if item.res in (DEPLOYMENTS, JOBS):
        live_spec = normalized_spec(item.res, live.get("spec") or {})
        if item.res is DEPLOYMENTS and "replicas" not in (item.raw.get("spec") or {}):
            wanted["spec"]["replicas"] = live_spec.get("replicas", 1)
        same_spec = live_spec == wanted["spec"]
    else:
        same_spec = True
    meta = live.setdefault("metadata", {})
    live_labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in SYSTEM_LABELS}
    want_labels = {
        k: v for k, v in wanted["metadata"].get("labels", {}).items() if k not in SYSTEM_LABELS
    }
    if (
        same_spec
        and live_labels == want_labels
        and _user_annotations(meta) == _user_annotations(wanted["metadata"])
    ):
        return "unchanged", live
    body = dict(live)
    body["metadata"] = {
        **meta,
        "labels": wanted["metadata"].get("labels", {}),
        "annotations": wanted["metadata"].get("annotations", {}),
    }
    if "spec" in wanted and item.res is not NAMESPACES:
        body["spec"] = wanted["spec"]
    body.pop("status", None)
    return "configured", client.put(item.res.path(item.namespace, item.name), body)


def normalized_spec(res: Resource, spec: Object) -> Object:
    """A spec as the model writes it (defaults filled in), to compare with a manifest's."""
    model = DeploymentSpec if res is DEPLOYMENTS else JobSpec
    try:
        return model.model_validate(spec).to_dict()
    except ValidationError:
        return spec


def _user_annotations(meta: Object) -> Object:
    return {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(SYSTEM_ANNOTATION_PREFIXES)
    }
