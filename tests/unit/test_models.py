"""The wire models: validation rules, resource requests, round trips."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest
from pydantic import ValidationError

from common.manifest import causes_from_validation
from common.models import (
    Container,
    Node,
    Pod,
    PodSpec,
    PodStatus,
    ResourceRequirements,
    Status,
    check_dns_label,
    check_dns_subdomain,
    check_label_key,
    check_label_value,
    now,
)
from scheduler.objects import mutable_copy


def _pod(**spec: Any) -> dict[str, Any]:
    """A minimal valid pod in wire form, with extra spec fields."""
    body: dict[str, Any] = {"containers": [{"name": "web", "image": "nginx:1.25"}], **spec}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": body,
    }


def _errors(data: dict[str, Any], model: type[Pod] | type[Node] = Pod) -> dict[str, str]:
    """Validate and return {field path: message} of every cause."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return {c.field or "": c.message for c in causes_from_validation(info.value)}


def test_minimal_pod_defaults() -> None:
    """A minimal pod gets Kubernetes' defaults."""
    pod = Pod.model_validate(_pod())
    assert pod.spec.restart_policy == "Always"
    assert pod.spec.termination_grace_period_seconds == 30
    assert pod.status.phase == "Pending"
    assert pod.spec.containers[0].resources.requests == {}
    assert pod.key == "default/web"


def test_snake_case_names_also_accepted() -> None:
    """Python code may construct models by field name as well as by wire alias."""
    spec = PodSpec(containers=[Container(name="a", image="x")], restart_policy="Never")
    assert spec.to_dict()["restartPolicy"] == "Never"


def test_requests_sum_with_limit_as_request() -> None:
    """requests() sums containers; a limit without a request counts as the request."""
    pod = Pod.model_validate(
        _pod(
            containers=[
                {
                    "name": "a",
                    "image": "x",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                },
                {
                    "name": "b",
                    "image": "x",
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                },
                {
                    "name": "c",
                    "image": "x",
                    "resources": {
                        "requests": {"cpu": "250m"},
                        "limits": {"cpu": 2, "memory": "128M"},
                    },
                },
                {"name": "d", "image": "x"},
            ]
        )
    )
    assert pod.spec.requests() == (100 + 1000 + 250, 64 * 2**20 + 2**30 + 128_000_000)


def test_requests_follow_each_version_of_the_spec() -> None:
    """A copy of a pod with other containers (a new version) reserves what it now asks:
    nothing computed for the object it was copied from carries over."""
    pod = Pod.model_validate(
        _pod(containers=[{"name": "a", "image": "x", "resources": {"requests": {"cpu": "1"}}}])
    )
    assert pod.spec.requests() == (1000, 0)
    bigger = pod.spec.containers[0].model_copy(
        update={"resources": ResourceRequirements(requests={"cpu": "3", "memory": "1Gi"})}
    )
    spec = pod.spec.model_copy(update={"containers": [bigger]})
    assert spec.requests() == (3000, 2**30)
    changed = mutable_copy(pod)
    changed.spec.containers[0].resources.requests["cpu"] = "250m"
    assert changed.spec.requests() == (250, 0)
    assert pod.spec.requests() == (1000, 0)


def test_requests_of_empty_resources_is_zero() -> None:
    """A pod that asks for nothing reserves nothing."""
    assert Pod.model_validate(_pod()).spec.requests() == (0, 0)


def test_request_above_limit_refused() -> None:
    """As in Kubernetes, a request larger than its limit is refused."""
    errors = _errors(
        _pod(
            containers=[
                {
                    "name": "a",
                    "image": "x",
                    "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
                }
            ]
        )
    )
    assert "must be less than or equal to memory limit" in errors["spec.containers[0].resources"]
    assert ResourceRequirements(requests={"cpu": "1"}, limits={"cpu": "1000m"})


def test_request_above_limit_refused_with_other_resource_unlimited() -> None:
    """The comparison is per resource: a cpu limit bounds the cpu request even when
    memory is requested without a limit."""
    resources = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "1"}}
    errors = _errors(_pod(containers=[{"name": "a", "image": "x", "resources": resources}]))
    assert errors["spec.containers[0].resources"] == (
        "cpu request 2 must be less than or equal to cpu limit 1"
    )
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1"}}
    Pod.model_validate(_pod(containers=[{"name": "a", "image": "x", "resources": resources}]))


def test_cached_checks_refuse_a_bad_value_every_time() -> None:
    """The checks cache only what passed: a bad name or quantity is refused again."""
    for _ in range(2):
        with pytest.raises(ValueError, match="DNS-1123 label"):
            check_dns_label("Web")
        with pytest.raises(ValueError, match="label key"):
            check_label_key("-a")
        with pytest.raises(ValueError, match="label value"):
            check_label_value("-a")
        errors = _errors(
            _pod(containers=[{"name": "a", "image": "x", "resources": {"limits": {"cpu": "x"}}}])
        )
        assert "is not a quantity" in errors["spec.containers[0].resources.limits.cpu"]


def test_quantities_normalised_to_strings() -> None:
    """Numeric quantities are kept as strings, as Kubernetes serialises them."""
    pod = Pod.model_validate(
        _pod(containers=[{"name": "a", "image": "x", "resources": {"limits": {"cpu": 0.5}}}])
    )
    assert pod.spec.containers[0].resources.limits["cpu"] == "0.5"


@pytest.mark.parametrize("value", [True, None, [1], {"a": "b"}])
def test_quantity_of_wrong_type_refused(value: object) -> None:
    """A quantity that is not a string or number is refused at its path."""
    errors = _errors(
        _pod(containers=[{"name": "a", "image": "x", "resources": {"limits": {"cpu": value}}}])
    )
    assert "strings or numbers" in errors["spec.containers[0].resources.limits.cpu"]


def test_unknown_resource_refused_at_its_key() -> None:
    """Only cpu and memory are resources; another key is named by its path."""
    errors = _errors(
        _pod(containers=[{"name": "a", "image": "x", "resources": {"limits": {"gpu": "1"}}}])
    )
    assert errors == {
        "spec.containers[0].resources.limits.gpu": "Input should be 'cpu' or 'memory'"
    }


def test_to_dict_round_trip() -> None:
    """to_dict() is camelCase, leaves out None, and validates back to an equal object."""
    pod = Pod.model_validate(
        _pod(
            restartPolicy="OnFailure",
            nodeSelector={"disk": "ssd"},
            volumes=[{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
            containers=[
                {
                    "name": "a",
                    "image": "x",
                    "env": [{"name": "A", "value": "1"}],
                    "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
                    "livenessProbe": {"httpGet": {"port": "http", "path": "/healthz"}},
                    "readinessProbe": {"tcpSocket": {"port": 80}},
                    "volumeMounts": [{"name": "scratch", "mountPath": "/tmp/s"}],
                }
            ],
        )
    )
    pod.metadata.creation_timestamp = now()
    wire = pod.to_dict()
    assert wire["spec"]["restartPolicy"] == "OnFailure"
    assert wire["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "/tmp/s"
    assert "uid" not in wire["metadata"]
    assert "restart_policy" not in wire["spec"]
    again = Pod.model_validate(wire)
    assert again == pod
    assert again.to_dict() == wire


def test_now_is_whole_seconds_utc() -> None:
    """Timestamps are UTC and truncated to seconds, as Kubernetes writes them."""
    stamp = now()
    assert stamp.tzinfo is UTC
    assert stamp.microsecond == 0


@pytest.mark.parametrize("name", ["a", "web-1", "a" * 63, "0abc"])
def test_dns_label_valid(name: str) -> None:
    """Lowercase alphanumerics and dashes up to 63 characters are labels."""
    assert check_dns_label(name) == name


@pytest.mark.parametrize("name", ["", "Web", "a_b", "-a", "a-", "a" * 64, "a.b", "a b"])
def test_dns_label_invalid(name: str) -> None:
    """Uppercase, underscores, dots, edge dashes and 64 characters are refused."""
    with pytest.raises(ValueError, match="DNS-1123 label"):
        check_dns_label(name)


@pytest.mark.parametrize("name", ["a", "web.example.com", "a-b.c", "a" * 253])
def test_dns_subdomain_valid(name: str) -> None:
    """Dotted names up to 253 characters are object names."""
    assert check_dns_subdomain(name) == name


@pytest.mark.parametrize("name", ["", "Web", "a_b", "a..b", ".a", "a" * 254, "a/b"])
def test_dns_subdomain_invalid(name: str) -> None:
    """Object names follow DNS-1123 subdomain rules."""
    with pytest.raises(ValueError, match="not a valid name"):
        check_dns_subdomain(name)


@pytest.mark.parametrize(
    "key", ["app", "App_1", "a.b-c", "example.com/app", "k8s.io/x", "a" * 63, "x/" + "a" * 63]
)
def test_label_key_valid(key: str) -> None:
    """Label keys: an optional DNS prefix and a name of at most 63 characters."""
    assert check_label_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "-a", "a-", "a b", "a" * 64, "/app", "Bad_Prefix/app", "example.com/", "a/b/c", "é"],
)
def test_label_key_invalid(key: str) -> None:
    """Empty names, bad edges, long names, empty or invalid prefixes are refused."""
    with pytest.raises(ValueError, match="label key"):
        check_label_key(key)


@pytest.mark.parametrize("value", ["", "v1", "a.b_c-d", "A" * 63])
def test_label_value_valid(value: str) -> None:
    """Label values may be empty or up to 63 name characters."""
    assert check_label_value(value) == value


@pytest.mark.parametrize("value", ["-a", "a ", "a" * 64, "a/b", "ü"])
def test_label_value_invalid(value: str) -> None:
    """Label values with bad characters or 64 characters are refused."""
    with pytest.raises(ValueError, match="label value"):
        check_label_value(value)


def test_bad_label_in_metadata_names_labels() -> None:
    """A bad label is reported at metadata.labels, with the key in the message."""
    data = _pod()
    data["metadata"]["labels"] = {"app": "web", "bad key": "x"}
    errors = _errors(data)
    assert list(errors) == ["metadata.labels"]
    assert "'bad key'" in errors["metadata.labels"]


def test_too_many_labels_refused() -> None:
    """At most 64 labels per object."""
    data = _pod()
    data["metadata"]["labels"] = {f"k{i}": "v" for i in range(65)}
    assert "at most 64 labels" in _errors(data)["metadata.labels"]


def test_non_string_label_value_refused() -> None:
    """A label value must be a string: `replicas: 3` style numbers are refused."""
    data = _pod()
    data["metadata"]["labels"] = {"tier": 3}
    assert _errors(data) == {"metadata.labels.tier": "Input should be a valid string"}


def test_bad_namespace_refused() -> None:
    """Namespaces are DNS labels: no dots, no capitals."""
    data = _pod()
    data["metadata"]["namespace"] = "Team.A"
    assert "DNS-1123 label" in _errors(data)["metadata.namespace"]


@pytest.mark.parametrize(
    ("container", "path", "message"),
    [
        ({"name": "a", "image": ""}, "spec.containers[0].image", "at least 1 character"),
        ({"name": "A", "image": "x"}, "spec.containers[0].name", "DNS-1123 label"),
        (
            {"name": "a", "image": "x", "env": [{"name": "1BAD"}]},
            "spec.containers[0].env[0].name",
            "not a valid environment variable name",
        ),
        (
            {"name": "a", "image": "x", "ports": [{"containerPort": 70000}]},
            "spec.containers[0].ports[0].containerPort",
            "less than or equal to 65535",
        ),
        (
            {"name": "a", "image": "x", "livenessProbe": {"periodSeconds": 5}},
            "spec.containers[0].livenessProbe",
            "exactly one of exec, httpGet or tcpSocket",
        ),
        (
            {"name": "a", "image": "x", "livenessProbe": {"httpGet": {"port": True}}},
            "spec.containers[0].livenessProbe.httpGet.port",
            "must be an integer or a string",
        ),
        (
            {"name": "a", "image": "x", "livenessProbe": {"tcpSocket": {"port": [80]}}},
            "spec.containers[0].livenessProbe.tcpSocket.port",
            "must be an integer or a string",
        ),
        (
            {"name": "a", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "rel"}]},
            "spec.containers[0].volumeMounts[0].mountPath",
            "absolute path",
        ),
        (
            {"name": "a", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/"}]},
            "spec.containers[0].volumeMounts[0].mountPath",
            "is the root '/', which cannot be a volume",
        ),
        (
            {"name": "a", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "//./"}]},
            "spec.containers[0].volumeMounts[0].mountPath",
            "is the root '/', which cannot be a volume",
        ),
        (
            {"name": "a", "image": "x", "imagePullPolicy": "Sometimes"},
            "spec.containers[0].imagePullPolicy",
            "'Always', 'IfNotPresent' or 'Never'",
        ),
    ],
)
def test_container_rules(container: dict[str, Any], path: str, message: str) -> None:
    """Each container rule is reported at the exact field path."""
    errors = _errors(_pod(containers=[container]))
    assert path in errors, errors
    assert message in errors[path]


def test_port_int_or_string() -> None:
    """Probe ports are a number or a named port, kept as given."""
    pod = Pod.model_validate(
        _pod(
            containers=[
                {
                    "name": "a",
                    "image": "x",
                    "livenessProbe": {"httpGet": {"port": "http"}},
                    "readinessProbe": {"tcpSocket": {"port": 8080}},
                }
            ]
        )
    )
    container = pod.spec.containers[0]
    assert container.liveness_probe and container.liveness_probe.http_get
    assert container.liveness_probe.http_get.port == "http"
    assert container.readiness_probe and container.readiness_probe.tcp_socket
    assert container.readiness_probe.tcp_socket.port == 8080


def test_duplicate_container_names_refused() -> None:
    """Container names are unique within a pod; the duplicate is named."""
    errors = _errors(_pod(containers=[{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]))
    assert "duplicate name 'a'" in errors["spec.containers"]


def test_duplicate_volume_names_refused() -> None:
    """Volume names are unique within a pod."""
    vol = {"name": "v", "emptyDir": {}}
    assert "duplicate name 'v'" in _errors(_pod(volumes=[vol, vol]))["spec.volumes"]


def test_mount_of_unknown_volume_refused() -> None:
    """A container may only mount a volume the pod declares."""
    errors = _errors(
        _pod(
            containers=[
                {"name": "a", "image": "x", "volumeMounts": [{"name": "nope", "mountPath": "/d"}]}
            ]
        )
    )
    assert "mounts unknown volume 'nope'" in errors["spec"]


def test_volume_needs_one_source() -> None:
    """A volume has exactly one of emptyDir and hostPath."""
    both = {"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}
    assert "exactly one of" in _errors(_pod(volumes=[both]))["spec.volumes[0]"]
    assert "exactly one of" in _errors(_pod(volumes=[{"name": "v"}]))["spec.volumes[0]"]


def test_containers_bounds() -> None:
    """A pod has at least one and at most 32 containers."""
    assert "at least 1 item" in _errors(_pod(containers=[]))["spec.containers"]
    many = [{"name": f"c{i}", "image": "x"} for i in range(33)]
    assert "at most 32 items" in _errors(_pod(containers=many))["spec.containers"]


def test_node_ready_condition() -> None:
    """Node.ready reads the Ready condition."""
    node = Node.model_validate({"metadata": {"name": "n1"}})
    assert not node.ready
    assert node.condition("Ready") is None
    node = Node.model_validate(
        {
            "metadata": {"name": "n1"},
            "status": {
                "capacity": {"cpu": "4", "memory": "8Gi"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    assert node.ready
    assert node.condition("Ready") is not None


def test_node_capacity_quantities_checked() -> None:
    """Node capacity values are quantities, checked like a pod's."""
    errors = _errors({"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "lots"}}}, Node)
    assert "is not a quantity" in errors["status.capacity.cpu"]


def test_status_shape() -> None:
    """The error Status serialises in the Kubernetes shape."""
    wire = Status(message="nope", reason="NotFound", code=404).to_dict()
    assert wire == {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": "nope",
        "reason": "NotFound",
        "code": 404,
    }


def test_times_are_kept_in_utc() -> None:
    """Every time in an object is in UTC once validated, as kube-apiserver keeps it: one
    sent without an offset is UTC, as Kubernetes reads it; one with an offset is the same
    instant, written back in UTC."""
    status = PodStatus.model_validate_json(
        b'{"startTime": "2024-05-01T12:00:00", "conditions": [{"type": "Ready", '
        b'"status": "True", "lastTransitionTime": "2024-05-01T14:00:00+02:00"}]}'
    )
    assert status.start_time is not None and status.start_time.tzinfo is UTC
    assert status.start_time == status.conditions[0].last_transition_time
    assert status.to_json().startswith(b'{"phase":"Pending","conditions":[')
    assert b'"startTime":"2024-05-01T12:00:00Z"' in status.to_json()
    assert b'"lastTransitionTime":"2024-05-01T12:00:00Z"' in status.to_json()


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_time_with_no_instant_in_utc_is_refused(stamp: str) -> None:
    """Year 1 at +14:00 is before the first time Python's datetime can hold in UTC: it was
    kept as sent, and any conversion to UTC later raised OverflowError."""
    doc = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}
    with pytest.raises(ValidationError, match="out of range once in UTC"):
        PodStatus.model_validate(doc)
    assert PodStatus.model_validate({"startTime": stamp[:19]}).start_time  # the same, in UTC


@pytest.mark.parametrize(
    ("container_status", "where"),
    [
        ({"restartCount": 2**31}, "containerStatuses.0.restartCount"),
        ({"restartCount": -1}, "containerStatuses.0.restartCount"),
        ({"state": {"terminated": {"exitCode": 2**31}}}, "containerStatuses.0.state.terminated"),
        (
            {"lastState": {"terminated": {"exitCode": 0, "signal": -(2**31) - 1}}},
            "containerStatuses.0.lastState.terminated.signal",
        ),
    ],
)
def test_a_container_status_s_integers_are_kubernetes_int32(
    container_status: dict[str, Any], where: str
) -> None:
    """restartCount, exitCode and signal are int32 in Kubernetes: a node's report past them
    was stored and listed, and no Kubernetes client could read the pod list again."""
    with pytest.raises(ValidationError, match=where.replace(".", r"\.")):
        PodStatus.model_validate({"containerStatuses": [{"name": "c", **container_status}]})


def test_a_container_status_takes_the_whole_int32_range() -> None:
    terminated = {"exitCode": -(2**31), "signal": 2**31 - 1}
    status = PodStatus.model_validate(
        {
            "containerStatuses": [
                {"name": "c", "restartCount": 2**31 - 1, "state": {"terminated": terminated}}
            ]
        }
    )
    state = status.container_statuses[0].state.terminated
    assert state is not None and (state.exit_code, state.signal) == (-(2**31), 2**31 - 1)
