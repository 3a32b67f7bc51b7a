"""What a pod may not ask for, and how big things may be: each refusal is a 422 naming the field.

Privileged features corral does not implement are unknown fields, refused by
name; hostNetwork and hostPath are refused unless the scheduler's options grant
them; sizes follow common/limits.py; list pages follow scheduler/api/paging.py.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.limits import MAX_LIST_LIMIT
from tests.conftest import SchedulerProcess
from tests.integration.test_api import pod

PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    """A scheduler on the defaults: no hostNetwork, no hostPath."""
    sched = SchedulerProcess(tmp_path_factory.mktemp("strict"))
    sched.start()
    yield sched
    sched.stop()


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    """A scheduler that grants hostNetwork and hostPath below /srv/data."""
    sched = SchedulerProcess(
        tmp_path_factory.mktemp("lenient"),
        ["--allow-host-network", "--allowed-host-path-prefixes", "/srv/data,/var/log/apps/"],
    )
    sched.start()
    yield sched
    sched.stop()


def causes(body: dict[str, Any]) -> list[str]:
    return [c.get("field", "") for c in (body.get("details") or {}).get("causes", [])]


def container(p: dict[str, Any]) -> dict[str, Any]:
    return p["spec"]["containers"][0]


def host_path(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(p: dict[str, Any]) -> None:
        p["spec"]["volumes"] = [{"name": "h", "hostPath": {"path": path}}]
        container(p)["volumeMounts"] = [{"name": "h", "mountPath": "/mnt"}]

    return mutate


REFUSED: list[tuple[str, Callable[[dict[str, Any]], Any], str, str]] = [
    # Privileged features corral does not grant: unknown fields, refused by name.
    ("hostPID", lambda p: p["spec"].update(hostPID=True), "spec.hostPID", "not supported"),
    ("hostIPC", lambda p: p["spec"].update(hostIPC=True), "spec.hostIPC", "not supported"),
    ("hostUsers", lambda p: p["spec"].update(hostUsers=False), "spec.hostUsers", ""),
    (
        "shareProcessNamespace",
        lambda p: p["spec"].update(shareProcessNamespace=True),
        "spec.shareProcessNamespace",
        "",
    ),
    (
        "pod securityContext",
        lambda p: p["spec"].update(securityContext={"runAsUser": 0}),
        "spec.securityContext",
        "not supported",
    ),
    (
        "privileged container",
        lambda p: container(p).update(securityContext={"privileged": True}),
        "spec.containers[0].securityContext",
        "not supported",
    ),
    (
        "capabilities",
        lambda p: container(p).update(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}),
        "spec.containers[0].securityContext",
        "",
    ),
    (
        "privileged at the container",
        lambda p: container(p).update(privileged=True),
        "spec.containers[0].privileged",
        "",
    ),
    (
        "initContainers",
        lambda p: p["spec"].update(initContainers=[copy.deepcopy(container(p))]),
        "spec.initContainers",
        "",
    ),
    # Granted only by the scheduler's options.
    (
        "hostNetwork",
        lambda p: p["spec"].update(hostNetwork=True),
        "spec.hostNetwork",
        "allow_host_network",
    ),
    ("hostPath", host_path("/etc"), "spec.volumes[0].hostPath.path", "allowed_host_path"),
    ("hostPath ..", host_path("/srv/data/../../etc"), "spec.volumes[0].hostPath.path", "'..'"),
    ("relative hostPath", host_path("etc"), "spec.volumes[0].hostPath.path", "absolute"),
    # Sizes.
    (
        "33 containers",
        lambda p: p["spec"].update(
            containers=[{**container(p), "name": f"c{i}"} for i in range(33)]
        ),
        "spec.containers",
        "32",
    ),
    (
        "env bytes",
        lambda p: container(p).update(
            env=[{"name": f"V{i}", "value": "x" * 60_000} for i in range(5)]
        ),
        "spec.containers[0].env",
        "262144",
    ),
    (
        "one env var",
        lambda p: container(p).update(env=[{"name": "BIG", "value": "x" * 140_000}]),
        "spec.containers[0].env",
        "execve",
    ),
    (
        "annotation bytes",
        lambda p: p["metadata"].update(annotations={f"k{i}": "y" * 100_000 for i in range(3)}),
        "metadata.annotations",
        "256 KiB",
    ),
    (
        "annotation key",
        lambda p: p["metadata"].update(annotations={"not a key": "v"}),
        "metadata.annotations",
        "label key",
    ),
    ("label value", lambda p: p["metadata"].update(labels={"a": "b c"}), "metadata.labels", ""),
    ("name", lambda p: p["metadata"].update(name="-bad"), "metadata.name", "not a valid"),
]


@pytest.mark.parametrize(
    ("mutate", "field", "needle"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused_by_name(
    strict: SchedulerProcess,
    mutate: Callable[[dict[str, Any]], Any],
    field: str,
    needle: str,
) -> None:
    """422 naming the field; nothing is stored."""
    body = pod("refused")
    mutate(body)
    resp = strict.request("POST", PODS, body)
    assert resp.status == 422, resp.body[:500]
    status = resp.json()
    assert status["reason"] == "Invalid"
    assert field in causes(status), (field, status)
    assert needle in json.dumps(status), status
    assert strict.request("GET", f"{PODS}/refused").status == 404


def test_batch_refusal_names_the_item(strict: SchedulerProcess) -> None:
    """In a PodList, the forbidden field is named with its item; nothing is created."""
    bad = pod("b")
    bad["spec"]["hostNetwork"] = True
    body = {"apiVersion": "v1", "kind": "PodList", "items": [pod("a"), bad]}
    resp = strict.request("POST", PODS, body)
    assert resp.status == 422
    assert "items[1].spec.hostNetwork" in causes(resp.json())
    assert strict.request("GET", f"{PODS}/a").status == 404


def test_options_grant_host_network_and_paths(lenient: SchedulerProcess) -> None:
    """allow_host_network and allowed_host_path_prefixes admit exactly what they name."""
    net = pod("net")
    net["spec"]["hostNetwork"] = True
    assert lenient.request("POST", PODS, net).status == 201
    for name, path, code in (
        ("inside", "/srv/data/app", 201),
        ("prefix", "/srv/data", 201),
        ("trailing", "/var/log/apps/web", 201),
        ("sibling", "/srv/database", 422),
        ("escape", "/srv/data/../secrets", 422),
        ("elsewhere", "/etc", 422),
    ):
        body = pod(name)
        host_path(path)(body)
        resp = lenient.request("POST", PODS, body)
        assert resp.status == code, (path, resp.body)


def test_list_pages(strict: SchedulerProcess) -> None:
    """limit and continue walk a list once; bad values are 400."""
    for i in range(5):
        assert strict.request("POST", PODS, pod(f"page-{i}")).status == 201
    seen: list[str] = []
    token = None
    for _ in range(10):
        query = "?limit=2&labelSelector=app%3Dpage" + (f"&continue={token}" if token else "")
        page = strict.get(PODS + query)
        seen += [p["metadata"]["name"] for p in page["items"]]
        assert len(page["items"]) <= 2
        token = page["metadata"].get("continue")
        if not token:
            break
    assert seen == [f"page-{i}" for i in range(5)]
    for query in ("limit=0", f"limit={MAX_LIST_LIMIT + 1}", "limit=x", "continue=bm9wZQ"):
        resp = strict.request("GET", f"{PODS}?{query}")
        assert resp.status == 400, (query, resp.body)
        assert resp.json()["reason"] == "BadRequest"


def test_scheduler_refuses_bad_prefix_option(tmp_path: Path) -> None:
    """A relative or '..' prefix in allowed_host_path_prefixes stops the scheduler at start."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    for value in ("srv", "/srv/../etc"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scheduler.main",
                "--state-dir",
                str(tmp_path),
                "--allowed-host-path-prefixes",
                value,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, result.stderr
        assert "allowed_host_path_prefixes" in result.stderr


def test_workload_templates_are_admitted_too(strict: SchedulerProcess) -> None:
    """A Deployment or Job cannot smuggle what a pod may not have in its template."""
    template = pod("tmpl")
    template["spec"]["hostNetwork"] = True
    host_path("/")(template)
    for path, body in (
        (
            "/apis/apps/v1/namespaces/default/deployments",
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
             "spec": {"selector": {"matchLabels": {"app": "tmpl"}},
                      "template": {"metadata": {"labels": {"app": "tmpl"}},
                                   "spec": template["spec"]}}},
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
             "spec": {"template": {"spec": {**template["spec"], "restartPolicy": "Never"}}}},
        ),
    ):  # fmt: skip
        resp = strict.request("POST", path, body)
        assert resp.status == 422, resp.body
        fields = causes(resp.json())
        assert "spec.template.spec.hostNetwork" in fields, fields
        assert "spec.template.spec.volumes[0].hostPath.path" in fields, fields
