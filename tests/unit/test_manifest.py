"""Manifests: YAML and JSON documents loaded into typed objects, errors named by field path."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from common.manifest import (
    MAX_DEPTH,
    MAX_VALUES,
    ManifestError,
    field_path,
    load_manifests,
    load_object,
    parse_documents,
)
from common.models import Node, Pod

TUTORIAL_POD = """\
# The pod from the Kubernetes tutorials, more or less.
apiVersion: v1
kind: Pod
metadata:
  name: nginx
  namespace: default
  labels:
    app: nginx
    app.kubernetes.io/part-of: shop
  annotations:
    description: "a web server"
spec:
  restartPolicy: Always
  nodeSelector:
    disktype: ssd
  containers:
  - name: nginx
    image: nginx:1.14.2
    imagePullPolicy: IfNotPresent
    command: ["nginx"]
    args: ["-g", "daemon off;"]
    env:
    - name: GREETING
      value: hello
    ports:
    - containerPort: 80
      name: http
    resources:
      requests:
        cpu: 250m
        memory: 64Mi
      limits:
        cpu: "1"
        memory: 128Mi
    livenessProbe:
      httpGet:
        path: /
        port: http
      initialDelaySeconds: 3
      periodSeconds: 3
    volumeMounts:
    - name: cache
      mountPath: /var/cache/nginx
  volumes:
  - name: cache
    emptyDir: {}
"""


def _pod_doc(**overrides: Any) -> dict[str, Any]:
    """A minimal valid pod document; keyword arguments replace top-level sections."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
    }
    doc.update(overrides)
    return doc


def _causes(doc: Any) -> dict[str, str]:
    """Load one document expecting failure; return {field path: message}."""
    with pytest.raises(ManifestError) as info:
        load_object(doc)
    return {c.field or "": c.message for c in info.value.causes}


def _error(text: str, content_type: str = "") -> ManifestError:
    """Load a manifest text expecting failure; return the error."""
    with pytest.raises(ManifestError) as info:
        load_manifests(text, content_type)
    return info.value


def test_tutorial_pod_loads() -> None:
    """The tutorial-shaped YAML pod loads with every field in place."""
    [pod] = load_manifests(TUTORIAL_POD)
    assert isinstance(pod, Pod)
    assert pod.metadata.labels["app.kubernetes.io/part-of"] == "shop"
    container = pod.spec.containers[0]
    assert container.args == ["-g", "daemon off;"]
    assert container.env[0].value == "hello"
    assert container.ports[0].container_port == 80
    assert container.liveness_probe is not None
    assert container.liveness_probe.http_get is not None
    assert container.liveness_probe.http_get.port == "http"
    assert container.volume_mounts[0].mount_path == "/var/cache/nginx"
    assert pod.spec.volumes[0].empty_dir is not None
    assert pod.spec.requests() == (250, 64 * 2**20)


def test_bytes_accepted() -> None:
    """A UTF-8 request body loads the same as text."""
    [pod] = load_manifests(TUTORIAL_POD.encode())
    assert pod.metadata.name == "nginx"


def test_non_utf8_refused() -> None:
    """A body that is not UTF-8 is refused with a message, not a traceback."""
    assert "not UTF-8" in str(_error(b"\xff\xfe kind: Pod"))  # type: ignore[arg-type]


def test_multi_document_yaml() -> None:
    """Several documents separated by `---` load in order; empty ones are skipped."""
    node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n"
    text = f"---\n{TUTORIAL_POD}---\n---\n{node}"
    objects = load_manifests(text)
    assert [type(o) for o in objects] == [Pod, Node]
    assert objects[1].metadata.name == "n1"


def test_error_in_second_document_names_it() -> None:
    """In a multi-document file, the error names the document index."""
    text = f"{TUTORIAL_POD}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: b\nspec: {{}}\n"
    err = _error(text)
    assert err.message.startswith("document 1: Pod 'b' is invalid")
    assert [(c.field, c.message) for c in err.causes] == [("spec.containers", "Required value")]


def test_json_with_content_type() -> None:
    """JSON loads when the content type says so."""
    [pod] = load_manifests(json.dumps(_pod_doc()), "application/json")
    assert isinstance(pod, Pod)


def test_json_without_content_type() -> None:
    """JSON loads without a content type too, even indented with tabs (which YAML forbids)."""
    [pod] = load_manifests(json.dumps(_pod_doc(), indent="\t"))
    assert isinstance(pod, Pod)
    assert pod.spec.containers[0].image == "nginx"


def test_yaml_flow_mapping_without_content_type() -> None:
    """A `{...}` body that is YAML but not JSON still loads as YAML."""
    [pod] = load_manifests(
        "{apiVersion: v1, kind: Pod, metadata: {name: a},"
        " spec: {containers: [{name: a, image: x}]}}"
    )
    assert pod.metadata.name == "a"


def test_list_documents_flattened() -> None:
    """A `kind: List` document contributes its items (as kubectl does)."""
    doc = {"apiVersion": "v1", "kind": "List", "items": [_pod_doc(), _pod_doc()]}
    assert len(load_manifests(json.dumps(doc), "application/json")) == 2
    assert parse_documents(json.dumps(doc), "application/json", flatten=False) == [doc]


def test_list_items_must_be_a_list() -> None:
    """A List whose items is not a list is refused, not crashed on."""
    assert "items must be a list" in _error("kind: PodList\nitems: 5\n").message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [a\n", "line 5 column 1"),
        ("apiVersion: v1\nkind: Pod\n  bad: indent\n", "line 3 column 6"),
        ("a: b\n\tc: d\n", "line 2 column 1"),
    ],
)
def test_malformed_yaml_gives_position(text: str, where: str) -> None:
    """Malformed YAML is refused with the line and column of the problem."""
    message = _error(text).message
    assert message.startswith("malformed YAML at ")
    assert where in message


@pytest.mark.parametrize("content_type", ["application/json", ""])
def test_malformed_json_gives_position(content_type: str) -> None:
    """Malformed JSON is refused with its line and column, with or without a content type."""
    message = _error('{\n  "apiVersion": "v1",\n  "kind": "Pod",,\n}', content_type).message
    assert message.startswith("malformed JSON at line 3 column 17")


def test_duplicate_yaml_key_refused() -> None:
    """A key given twice is refused (Kubernetes decodes strictly), naming where."""
    message = _error("apiVersion: v1\nkind: Pod\nkind: Node\n").message
    assert message == "malformed YAML at line 3 column 1: duplicate key 'kind'"


def test_duplicate_json_key_refused() -> None:
    """JSON with a key given twice is refused too."""
    message = _error('{"kind": "Pod", "kind": "Node"}', "application/json").message
    assert message == "malformed JSON: duplicate key 'kind'"


def test_yaml_merge_keys_still_work() -> None:
    """`<<: *anchor` may override keys of the anchor; that is not a duplicate."""
    text = (
        "x-base: &base {name: a, image: old}\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"
        "spec:\n  containers:\n  - <<: *base\n    image: new\n"
    )
    docs = parse_documents(text)
    assert docs[0]["spec"]["containers"][0] == {"name": "a", "image": "new"}


def test_alias_bomb_refused() -> None:
    """Nested YAML aliases that would expand to billions of values are refused quickly."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    message = _error("\n".join(lines)).message
    assert message == f"manifest is too large: more than {MAX_VALUES} values"


def test_shared_aliases_within_limit_load() -> None:
    """Ordinary anchors and aliases are fine."""
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: &l {app: a}, annotations: *l}\n"
        "spec: {containers: [{name: a, image: x}]}\n"
    )
    [pod] = load_manifests(text)
    assert pod.metadata.annotations == {"app": "a"}


def test_recursive_alias_refused() -> None:
    """A YAML alias inside its own anchor is refused, not recursed into."""
    assert "refers to itself" in _error("a: &a [1, *a]\n").message


@pytest.mark.parametrize("depth", [5_000, 200_000])
def test_deep_json_nesting_refused(depth: int) -> None:
    """Pathologically deep JSON is refused with a clear error instead of overflowing the
    stack. How deep `json` parses is the interpreter's: 3.11 and 3.12 stop at the Python
    recursion limit (about 1,000), 3.13 at its C stack limit (tens of thousands). A
    document it does parse is no Pod, and is refused naming the field."""
    deep = "[" * depth + "]" * depth
    text = f'{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "x", "labels": {deep}}}}}'
    error = _error(text, "application/json")
    if depth > 100_000 or sys.version_info < (3, 13):
        assert str(error) == "manifest is nested too deeply"
    else:
        assert str(error).startswith("Pod 'x' is invalid\n  metadata.labels: ")


def test_deep_yaml_nesting_refused() -> None:
    """YAML nested past MAX_DEPTH is refused early, naming where."""
    flow = _error("a: " + "[" * (MAX_DEPTH + 50)).message
    assert flow == f"malformed YAML at line 1 column {MAX_DEPTH + 3}: nested deeper than 100 levels"
    block = "a:\n" + "".join(" " * i + "-\n" for i in range(1, MAX_DEPTH + 5))
    assert "nested deeper than 100 levels" in _error(block).message


def test_nesting_within_limit_loads() -> None:
    """Nesting below the limit is fine (free-form fields may be a few levels deep)."""
    assert parse_documents("a: " + "[" * 50 + "]" * 50) == [{"a": _nested(49)}]


def _nested(depth: int) -> list[Any]:
    """[[...[]...]] with `depth` levels inside the outermost list."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("doc", ["just a string", 42, [1, 2]])
def test_non_object_document_refused(doc: Any) -> None:
    """A document that is not a mapping is refused by type."""
    with pytest.raises(ManifestError, match="expected an object"):
        load_object(doc)


def test_unknown_field_refused_by_path() -> None:
    """A field corral does not support is refused by its exact path, not dropped."""
    doc = _pod_doc()
    doc["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    assert _causes(doc) == {"spec.containers[0].securityContext": "not supported"}


def test_unknown_top_level_field_refused() -> None:
    """Unknown fields at the top and in metadata are refused too."""
    assert _causes(_pod_doc(extra=1)) == {"extra": "not supported"}
    doc = _pod_doc()
    doc["metadata"]["clusterName"] = "c1"
    assert _causes(doc) == {"metadata.clusterName": "not supported"}


def test_finalizers_are_taken_on_pods_only() -> None:
    """A pod's finalizers are qualified names; any other kind refuses finalizers (corral
    honours them on pods only) rather than delete it while they are there."""
    doc = _pod_doc()
    doc["metadata"]["finalizers"] = ["example.com/hold"]
    assert load_object(doc).metadata.finalizers == ["example.com/hold"]
    doc["metadata"]["finalizers"] = ["not a name"]
    assert list(_causes(doc)) == ["metadata.finalizers[0]"]
    doc["metadata"]["finalizers"] = ["hold"]
    assert "must be fully qualified" in _causes(doc)["metadata.finalizers[0]"]
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "finalizers": ["example.com/hold"]},
        "spec": {"template": {"spec": {**_pod_doc()["spec"], "restartPolicy": "Never"}}},
    }
    assert _causes(job) == {
        "metadata": "finalizers: only foregroundDeletion and orphan are supported on this "
        "kind (any finalizer on pods)"
    }
    for own in (["foregroundDeletion"], ["orphan"]):  # Kubernetes' own: taken
        job["metadata"]["finalizers"] = own
        assert load_object(job).metadata.finalizers == own
    job["metadata"]["finalizers"] = ["example.com/hold"]
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "finalizers": ["x/y"]}}
    assert _causes(node) == {
        "metadata": "finalizers are honoured on pods only; not supported on this kind"
    }
    # A template's are its pods' (copied to each, as in Kubernetes): taken.
    del job["metadata"]["finalizers"]
    job["spec"]["template"]["metadata"] = {"finalizers": ["example.com/hold"]}
    template = load_object(job).spec.template  # type: ignore[union-attr]
    assert template.metadata.finalizers == ["example.com/hold"]


def test_missing_image() -> None:
    """A container without an image: `spec.containers[0].image: Required value`."""
    doc = _pod_doc()
    del doc["spec"]["containers"][0]["image"]
    with pytest.raises(ManifestError) as info:
        load_object(doc)
    [cause] = info.value.causes
    assert (cause.field, cause.reason, cause.message) == (
        "spec.containers[0].image",
        "FieldValueRequired",
        "Required value",
    )
    assert "spec.containers[0].image: Required value" in str(info.value)
    assert info.value.message == "Pod 'web' is invalid"


@pytest.mark.parametrize("name", ["Web", "a" * 254, "web_1", "-web", "", "web!"])
def test_invalid_names_refused(name: str) -> None:
    """Names with uppercase, underscores, bad edges or too long are refused at metadata.name."""
    causes = _causes(_pod_doc(metadata={"name": name}))
    assert list(causes) == ["metadata.name"]
    assert "is not a valid name" in causes["metadata.name"]


def test_missing_name_refused() -> None:
    """Every object needs a name."""
    assert _causes(_pod_doc(metadata={})) == {"metadata.name": "Required value"}


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        ({"Bad Key": "v"}, "label key 'Bad Key'"),
        ({"app": "has space"}, "label value 'has space'"),
        ({"app": "x" * 64}, "label value"),
        ({"/app": "v"}, "prefix must be a DNS subdomain"),
    ],
)
def test_bad_labels_refused_at_metadata_labels(labels: dict[str, str], fragment: str) -> None:
    """A bad label key or value is reported at the clean path `metadata.labels`."""
    causes = _causes(_pod_doc(metadata={"name": "a", "labels": labels}))
    assert list(causes) == ["metadata.labels"]
    assert fragment in causes["metadata.labels"]


def test_bad_quantity_path_is_clean() -> None:
    """A bad quantity is reported at `spec.containers[0].resources.limits.memory`."""
    doc = _pod_doc()
    doc["spec"]["containers"][0]["resources"] = {"limits": {"memory": "5 Gi"}}
    causes = _causes(doc)
    assert list(causes) == ["spec.containers[0].resources.limits.memory"]
    assert causes["spec.containers[0].resources.limits.memory"].startswith("'5 Gi' is not a")


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"containers": "nginx"}, "spec.containers", "Input should be a valid list"),
        (
            {"containers": [{"name": "a", "image": "x"}], "terminationGracePeriodSeconds": "x"},
            "spec.terminationGracePeriodSeconds",
            "Input should be a valid integer",
        ),
        (
            {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": "eighty"}]}]},
            "spec.containers[0].ports[0].containerPort",
            "Input should be a valid integer",
        ),
        (
            {"containers": [{"name": "a", "image": 1.25}]},
            "spec.containers[0].image",
            "Input should be a valid string",
        ),
        (
            {"containers": [{"name": "a", "image": "x"}], "hostNetwork": "maybe"},
            "spec.hostNetwork",
            "Input should be a valid boolean",
        ),
        (
            {"containers": [{"name": "a", "image": "x"}], "restartPolicy": "Sometimes"},
            "spec.restartPolicy",
            "Input should be 'Always', 'OnFailure' or 'Never'",
        ),
    ],
)
def test_wrong_types_name_the_path(spec: dict[str, Any], path: str, message: str) -> None:
    """A value of the wrong type is reported at its path."""
    causes = _causes(_pod_doc(spec=spec))
    assert path in causes, causes
    assert causes[path].startswith(message)


def test_duplicate_container_names_refused() -> None:
    """Two containers with one name are refused at spec.containers, naming the duplicate."""
    doc = _pod_doc(spec={"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]})
    assert "duplicate name 'a'" in _causes(doc)["spec.containers"]


@pytest.mark.parametrize(
    ("doc", "message", "field"),
    [
        (_pod_doc(kind="Deployment"), "v1/Deployment is not supported", "kind"),
        (_pod_doc(apiVersion="v2"), "v2/Pod is not supported", "kind"),
        (_pod_doc(apiVersion="apps/v1"), "apps/v1/Pod is not supported", "kind"),
        ({"kind": "Pod"}, "missing apiVersion", "apiVersion"),
        ({"apiVersion": "v1"}, "missing kind", "kind"),
        (_pod_doc(kind=["Pod"]), "kind must be a string", "kind"),
        (_pod_doc(apiVersion=1), "apiVersion must be a string", "apiVersion"),
    ],
)
def test_unknown_or_bad_kind_refused(doc: dict[str, Any], message: str, field: str) -> None:
    """Unknown or malformed apiVersion/kind are refused by name, never crashed on."""
    with pytest.raises(ManifestError) as info:
        load_object(doc)
    assert message in info.value.message
    assert field in [c.field for c in info.value.causes]


def test_supported_kinds_listed() -> None:
    """The refusal of an unknown kind lists what is supported."""
    with pytest.raises(ManifestError, match=r"supported: v1/Pod, v1/Node"):
        load_object(_pod_doc(kind="Service"))


def test_non_string_kind_in_yaml_list_check() -> None:
    """A non-string kind in YAML is refused cleanly (it once crashed the List check)."""
    assert "kind must be a string" in _error("apiVersion: v1\nkind: 5\n").message
    assert "missing kind" in _error("apiVersion: v1\nkind:\n").message


def test_metadata_not_a_mapping() -> None:
    """metadata of the wrong type is reported, not crashed on."""
    with pytest.raises(ManifestError) as info:
        load_object(_pod_doc(metadata="web"))
    assert info.value.message == "Pod is invalid"
    assert info.value.causes[0].field == "metadata"


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("spec", "containers", 0, "image"), "spec.containers[0].image"),
        (
            ("metadata", "labels", "function-after[_check_labels(), dict[str,str]]"),
            "metadata.labels",
        ),
        (
            ("spec", "containers", 0, "livenessProbe", "httpGet", "port", "int"),
            "spec.containers[0].livenessProbe.httpGet.port",
        ),
        (("spec", "x", "list[str]", 2), "spec.x[2]"),
        (("limits", "gpu", "[key]"), "limits.gpu"),
        ((0, "name"), "[0].name"),
        ((), ""),
    ],
)
def test_field_path(loc: tuple[int | str, ...], path: str) -> None:
    """pydantic's loc becomes a Kubernetes field path without schema tags."""
    assert field_path(loc) == path


def test_field_path_prefix() -> None:
    """A prefix is prepended, for errors inside a nested document."""
    assert field_path(("image",), "spec.containers[1]") == "spec.containers[1].image"
    assert field_path((0,), "items") == "items[0]"


def test_manifest_error_str_lists_causes() -> None:
    """str(ManifestError) shows the message then one line per cause."""
    doc = _pod_doc(spec={"containers": [{"name": "A"}]})
    with pytest.raises(ManifestError) as info:
        load_object(doc)
    lines = str(info.value).splitlines()
    assert lines[0] == "Pod 'web' is invalid"
    assert "  spec.containers[0].name: 'A' is not a valid DNS-1123 label" in lines[1]
    assert lines[2] == "  spec.containers[0].image: Required value"
