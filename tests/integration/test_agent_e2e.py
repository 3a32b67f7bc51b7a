"""The real corral-agent with the real scheduler: apply, Running, logs, agent restart, delete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.native.cgroups import probe
from tests.conftest import ROOT, TOKEN, SchedulerProcess, refused_as_second, wait_for
from tests.imagebuild import DEFAULT_ENV, build_busybox_rootfs, write_oci_layout
from tests.services import AgentProcess

pytestmark = pytest.mark.root


@pytest.fixture
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox OCI image layout named busybox:latest."""
    base = tmp_path_factory.mktemp("image")
    rootfs = build_busybox_rootfs(base / "rootfs")
    return write_oci_layout(rootfs, base / "layout", ref="busybox:latest")


@pytest.fixture
def agent(
    bare_scheduler: SchedulerProcess, tmp_path: Path, image_layout: Path
) -> Iterator[AgentProcess]:
    """A real agent, its image store filled with busybox, joined and Ready."""
    state = tmp_path / "agent"
    state.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.main",
            "image",
            "import",
            str(image_layout),
            "--root",
            str(state / "images"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    proc = AgentProcess(bare_scheduler, state, "node-a")
    proc.start()
    try:
        wait_for(lambda: ready(bare_scheduler, "node-a"), timeout=30)
        yield proc
    finally:
        for pod in bare_scheduler.get("/api/v1/pods")["items"]:
            bare_scheduler.request(
                "DELETE", f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}"
            )
        wait_for(lambda: not bare_scheduler.get("/api/v1/pods")["items"], timeout=60)
        # A finished pod is gone from the API at once; its agent removes it just after.
        wait_for(lambda: not pod_dirs(proc), timeout=30)
        proc.stop()
        probe(proc.cgroup_parent).remove("")  # the agent's subtree, empty once its pods are gone


def ready(s: SchedulerProcess, node: str) -> bool:
    """The node is Ready and its agent holds a link (a restarted agent has rejoined)."""
    resp = s.request("GET", f"/api/v1/nodes/{node}")
    if resp.status != 200 or s.get("/api/v1/status")["nodes"]["connected"] < 1:
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in resp.json()["status"]["conditions"]
    )


def corral(
    s: SchedulerProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", "--server", s.url, *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", {script!r}]
    resources:
      limits: {{cpu: 500m, memory: 64Mi}}
"""


# A pod whose script keeps what it needs across runs in an emptyDir at /state (which
# outlives the container's restarts); `metadata` is more of its metadata, in flow style.
STATEFUL_POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}{metadata}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: {grace}
  volumes: [{{name: state, emptyDir: {{}}}}]
  containers:
  - name: main
    image: busybox
    volumeMounts: [{{name: state, mountPath: /state}}]
    command: ["sh", "-c", {script!r}]
"""
COUNT_RUNS = "n=$(($(cat /state/n 2>/dev/null || echo 0) + 1)); echo $n > /state/n; "


def stateful_pod(name: str, policy: str, script: str, metadata: str = "", grace: int = 30) -> str:
    return STATEFUL_POD.format(
        name=name, policy=policy, script=script, metadata=metadata, grace=grace
    )


def pod_json(s: SchedulerProcess, name: str) -> dict[str, Any]:
    return s.get(f"/api/v1/namespaces/default/pods/{name}")


def phase_is(s: SchedulerProcess, name: str, phase: str) -> bool:
    return bool(pod_json(s, name)["status"].get("phase") == phase)


def pod_dirs(agent: AgentProcess) -> list[Path]:
    """The pod directories the agent's native runtime holds."""
    pods = agent.state / "pods"
    return [p for p in pods.iterdir() if p.is_dir()] if pods.exists() else []


def log_of(s: SchedulerProcess, name: str) -> str | None:
    """The pod's log through the API, None if it cannot be had."""
    resp = s.request("GET", f"/api/v1/namespaces/default/pods/{name}/log")
    return resp.body.decode() if resp.status == 200 else None


def barrier(s: SchedulerProcess, name: str) -> None:
    """Run one more pod to Running: the agent has then applied every desired change
    made before it (desired frames are applied in order)."""
    manifest = POD.format(name=name, policy="Always", script="sleep 300")
    assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0
    wait_for(partial(phase_is, s, name, "Running"), 30)


def container_pid(agent: AgentProcess, name: str) -> int:
    uid = agent.scheduler.get(f"/api/v1/namespaces/default/pods/{name}")["metadata"]["uid"]
    pid_file = next((agent.state / "pods" / uid).rglob("init.pid"))
    return int(json.loads(pid_file.read_text())["pid"])


def test_apply_run_logs_and_delete(agent: AgentProcess) -> None:
    """corral apply -f reaches Running; corral logs shows the output; delete cleans up."""
    s = agent.scheduler
    manifest = POD.format(name="hello", policy="Always", script="echo hello from corral; sleep 300")
    result = corral(s, "apply", "-f", "-", stdin=manifest)
    assert result.returncode == 0, result.stderr
    running = wait_for(
        lambda: (p := pod_json(s, "hello"))["status"]["phase"] == "Running" and p, 30
    )
    assert running["spec"]["nodeName"] == "node-a"
    wait_for(lambda: "hello from corral" in corral(s, "logs", "hello").stdout, timeout=15)
    uid = running["metadata"]["uid"]
    pid = container_pid(agent, "hello")
    assert os.path.exists(f"/proc/{pid}")
    assert corral(s, "delete", "pod", "hello").returncode == 0
    wait_for(lambda: s.request("GET", "/api/v1/namespaces/default/pods/hello").status == 404, 30)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert uid not in mounts
    assert not (agent.state / "pods" / uid).exists()


def test_pods_survive_agent_kill_9(agent: AgentProcess) -> None:
    """kill -9 of the agent restarts nothing; a pod that ended meanwhile reports its exit."""
    s = agent.scheduler
    corral(
        s, "apply", "-f", "-", stdin=POD.format(name="steady", policy="Always", script="sleep 300")
    )
    corral(
        s,
        "apply",
        "-f",
        "-",
        stdin=POD.format(name="ender", policy="Never", script="sleep 3; exit 7"),
    )
    for name in ("steady", "ender"):
        wait_for(partial(phase_is, s, name, "Running"), 30)
    before = container_pid(agent, "steady")
    agent.kill()
    wait_for(lambda: not ready(s, "node-a"), timeout=10)  # the scheduler saw it go
    # "ender" exits 7 about 3 s after it started, while no agent runs.
    wait_for(lambda: not os.path.exists(f"/proc/{container_pid(agent, 'ender')}"), timeout=15)
    agent.start()
    wait_for(lambda: ready(s, "node-a"), timeout=30)
    assert container_pid(agent, "steady") == before
    assert os.path.exists(f"/proc/{before}")
    ended = wait_for(lambda: (p := pod_json(s, "ender"))["status"]["phase"] == "Failed" and p, 30)
    state = ended["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 7
    steady = pod_json(s, "steady")
    assert steady["status"]["phase"] == "Running"
    assert steady["status"]["containerStatuses"][0]["restartCount"] == 0


def test_crash_is_restarted_with_count(agent: AgentProcess) -> None:
    """A crashing container is restarted by policy; restartCount and lastState are kept."""
    s = agent.scheduler
    corral(
        s,
        "apply",
        "-f",
        "-",
        stdin=POD.format(name="crasher", policy="OnFailure", script="sleep 0.3; exit 3"),
    )

    def restarted() -> dict[str, Any] | None:
        status = pod_json(s, "crasher")["status"]
        statuses = status.get("containerStatuses") or []
        if statuses and statuses[0]["restartCount"] >= 2:
            return statuses[0]
        return None

    cs = wait_for(restarted, timeout=30)
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    described = wait_for(
        lambda: (out := corral(s, "describe", "pod", "crasher").stdout) and "BackOff" in out and out
    )
    assert "Started" in described and "Scheduled" in described


def test_sigterm_exits_zero_and_leaves_pods(agent: AgentProcess) -> None:
    """SIGTERM stops the agent with exit 0; its pods keep running for the next agent."""
    s = agent.scheduler
    corral(
        s, "apply", "-f", "-", stdin=POD.format(name="keep", policy="Always", script="sleep 300")
    )
    wait_for(lambda: pod_json(s, "keep")["status"]["phase"] == "Running", 30)
    pid = container_pid(agent, "keep")
    assert agent.stop() == 0
    wait_for(lambda: not ready(s, "node-a"), timeout=10)
    assert os.path.exists(f"/proc/{pid}")
    agent.start()
    wait_for(lambda: ready(s, "node-a"), timeout=30)
    assert container_pid(agent, "keep") == pid


def test_a_stopped_agent_removes_its_cgroup_parent_once_no_pod_is_left(
    agent: AgentProcess,
) -> None:
    """An agent stopped with a pod running keeps the pods' cgroup parent (the pod runs
    on in it); one that stops its pods on exit (`corral up`'s) removes it, in every
    hierarchy. It was left behind, empty, for good."""
    s = agent.scheduler
    parent = probe(agent.cgroup_parent)
    manifest = POD.format(name="keep", policy="Always", script="sleep 300")
    assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0
    wait_for(partial(phase_is, s, "keep", "Running"), 30)
    pid = container_pid(agent, "keep")
    assert agent.stop() == 0
    assert os.path.exists(f"/proc/{pid}")
    assert all(os.path.isdir(d) for d in parent.paths("")), parent.paths("")
    agent.config["stop_pods_on_exit"] = True
    agent.start()
    wait_for(lambda: ready(s, "node-a"), timeout=30)
    assert agent.stop() == 0
    assert not os.path.exists(f"/proc/{pid}")
    assert not any(os.path.exists(d) for d in parent.paths("")), parent.paths("")
    assert "removed the pods' cgroup parent" in agent.log()
    agent.config["stop_pods_on_exit"] = False
    agent.start()  # for the fixture's clean-up
    wait_for(lambda: ready(s, "node-a"), timeout=30)


def test_a_second_agent_on_the_same_state_directory_is_refused(agent: AgentProcess) -> None:
    """One agent a state directory: a second would adopt the same pods and fight over
    them. It exits 1 naming the first, which goes on running its pod."""
    s = agent.scheduler
    corral(
        s, "apply", "-f", "-", stdin=POD.format(name="mine", policy="Always", script="sleep 300")
    )
    wait_for(lambda: pod_json(s, "mine")["status"]["phase"] == "Running", 30)
    pid = container_pid(agent, "mine")
    assert agent.proc is not None
    args = ["--config", str(agent.config_path), "--server", s.url, "--join-token", TOKEN]
    args += ["--node-name", "node-b", "--state-dir", str(agent.state)]
    args += ["--cgroup-parent", f"{agent.cgroup_parent}-b"]
    refused_as_second("corral-agent", "agent.main", args, agent.state, agent.proc.pid)
    assert ready(s, "node-a") and container_pid(agent, "mine") == pid
    assert [n["metadata"]["name"] for n in s.get("/api/v1/nodes")["items"]] == ["node-a"]


def test_logs_previous_run(agent: AgentProcess) -> None:
    """`corral logs --previous` shows the run before the current one; the current log is fresh."""
    s = agent.scheduler
    manifest = stateful_pod(
        "runs",
        "Always",
        "if [ -f /state/ran ]; then echo second run; exec sleep 300; fi; "
        "touch /state/ran; echo first run; exit 1",
        grace=1,  # sleep as PID 1 ignores SIGTERM: the teardown's delete waited out 30 s
    )
    assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0
    wait_for(lambda: "second run" in corral(s, "logs", "runs").stdout, timeout=30)
    assert corral(s, "logs", "runs").stdout == "second run\n"  # the current run only
    previous = corral(s, "logs", "runs", "--previous")
    assert previous.returncode == 0, previous.stderr
    assert previous.stdout == "first run\n"


def test_restart_count_survives_an_agent_restart_during_backoff(agent: AgentProcess) -> None:
    """An exit counted before the agent restarted is not counted again by the next agent."""
    s = agent.scheduler
    manifest = stateful_pod(
        "backoff",
        "Always",
        COUNT_RUNS + "if [ $n -ge 3 ]; then exec sleep 300; fi; exit 1",
        metadata=', annotations: {corral.dev/restart-backoff-initial: "60"}',
        grace=1,
    )
    assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0

    def waiting() -> bool:
        cs = (pod_json(s, "backoff")["status"].get("containerStatuses") or [{}])[0]
        reason = (cs.get("state") or {}).get("waiting", {}).get("reason")
        return cs.get("restartCount") == 2 and reason == "CrashLoopBackOff"

    wait_for(waiting, timeout=30)  # two exits counted; the third run waits out 60 s
    assert agent.stop() == 0
    agent.start()
    wait_for(lambda: ready(s, "node-a"), timeout=30)

    def running() -> dict[str, Any] | None:
        cs = (pod_json(s, "backoff")["status"].get("containerStatuses") or [{}])[0]
        return cs if (cs.get("state") or {}).get("running") else None

    cs = wait_for(running, timeout=30)
    assert cs["restartCount"] == 2
    assert cs["lastState"]["terminated"]["exitCode"] == 1


def test_a_command_that_cannot_start_follows_the_restart_policy(agent: AgentProcess) -> None:
    """A start error is an exit (128, StartError): Never fails the pod, as in Kubernetes."""
    s = agent.scheduler
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: typo}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: busybox, command: ["/no/such/binary"]}
"""
    assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0
    ended = wait_for(lambda: (p := pod_json(s, "typo"))["status"]["phase"] == "Failed" and p, 30)
    cs = ended["status"]["containerStatuses"][0]
    assert cs["state"]["terminated"]["exitCode"] == 128
    assert cs["state"]["terminated"]["reason"] == "StartError"
    assert "no/such/binary" in cs["state"]["terminated"]["message"]
    assert cs["restartCount"] == 0


def test_followed_log_ends_when_the_container_has_ended(agent: AgentProcess) -> None:
    """`corral logs -f` of a container that has exited for good returns, as kubectl's,
    while the pod (another container) still runs."""
    s = agent.scheduler
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 1
  containers:
  - {name: once, image: busybox, command: ["sh", "-c", "echo one; sleep 2; echo two"]}
  - {name: stays, image: busybox, command: ["sleep", "300"]}
"""
    assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0
    wait_for(lambda: "one" in corral(s, "logs", "pair", "-c", "once").stdout, timeout=30)
    command = [sys.executable, "-m", "scheduler.cli.main", "--server", s.url]
    for _ in range(2):  # followed while it runs, then once it has ended
        followed = subprocess.run(
            [*command, "logs", "-f", "pair", "-c", "once"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert (followed.returncode, followed.stdout) == (0, "one\ntwo\n"), followed
    assert phase_is(s, "pair", "Running")


def test_apply_wait_fails_for_a_pod_that_ended(agent: AgentProcess) -> None:
    """`apply --wait` of a Never pod that has ended: Failed fails naming the exit code;
    Succeeded fails too, a pod that has run to completion never being ready (`kubectl
    wait --for=condition=Ready` would wait out its timeout). It said "succeeded", exit 0."""
    s = agent.scheduler
    cases = [
        ("three", "exit 3", "Failed", "failed: container main exited with code 3 (Error)"),
        (
            "zero",
            "exit 0",
            "Succeeded",
            "has run to completion (Succeeded) and will never be ready",
        ),
    ]
    for name, script, phase, verdict in cases:
        manifest = POD.format(name=name, policy="Never", script=script)
        assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0
        wait_for(partial(phase_is, s, name, phase), 30)
        applied = corral(s, "apply", "-f", "-", "--wait", "--wait-timeout", "60", stdin=manifest)
        assert applied.returncode == 1, applied
        assert applied.stdout.splitlines() == [
            f"pod/{name} unchanged",
            f"error: pod/{name} {verdict}",
        ]


def test_followed_log_of_a_lost_node_fails(agent: AgentProcess) -> None:
    """`corral logs -f` whose node goes away mid-stream exits 1 saying so, as kubectl
    does when a followed stream breaks; it exited 0, as if the container had ended."""
    s = agent.scheduler
    script = "echo first; while :; do sleep 0.2; done"
    assert (
        corral(
            s, "apply", "-f", "-", stdin=POD.format(name="talk", policy="Always", script=script)
        ).returncode
        == 0
    )
    wait_for(partial(phase_is, s, "talk", "Running"), 30)
    command = [sys.executable, "-m", "scheduler.cli.main", "--server", s.url, "logs", "-f", "talk"]
    follower = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first\n"  # the stream is up
        agent.kill()  # the link drops; the pod runs on
        _, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        agent.start()  # for the fixture's clean-up
    assert follower.returncode == 1, err
    assert err == "error: the log stream of pod talk ended early: node node-a disconnected\n"
    wait_for(lambda: ready(s, "node-a"), timeout=30)


def test_finished_pods_keep_their_logs_until_deleted(agent: AgentProcess) -> None:
    """A Never pod that exits 0 (Succeeded) or 1 (Failed) keeps its log on its node, as
    the kubelet keeps a terminated pod's; deleting the pod removes it from the node."""
    s = agent.scheduler
    for name, code, phase in (("done-ok", 0, "Succeeded"), ("done-bad", 1, "Failed")):
        script = f"echo {name} ran; exit {code}"
        manifest = POD.format(name=name, policy="Never", script=script)
        assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0
        wait_for(partial(phase_is, s, name, phase), 30)
    barrier(s, "later")  # were the finished pods dropped from the node, it is done by now
    uids = {}
    for name in ("done-ok", "done-bad"):
        assert log_of(s, name) == f"{name} ran\n"
        uids[name] = pod_json(s, name)["metadata"]["uid"]
        assert (agent.state / "pods" / uids[name]).is_dir()
    logs = corral(s, "logs", "done-bad")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "done-bad ran\n"
    assert corral(s, "delete", "pod", "done-ok").returncode == 0
    wait_for(lambda: not (agent.state / "pods" / uids["done-ok"]).exists(), timeout=30)
    assert s.request("GET", "/api/v1/namespaces/default/pods/done-ok").status == 404
    assert log_of(s, "done-bad") == "done-bad ran\n"  # the other one stays


def test_a_jobs_completed_pod_keeps_its_log(agent: AgentProcess) -> None:
    """`corral logs` of a Job's completed pod works; deleting the Job removes the pod
    from its node."""
    s = agent.scheduler
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {"name": "main", "image": "busybox", "command": ["echo", "job done"]}
                    ],
                }
            }
        },
    }
    resp = s.request("POST", "/apis/batch/v1/namespaces/default/jobs", job)
    assert resp.status == 201, resp.body

    def complete() -> bool:
        got = s.get("/apis/batch/v1/namespaces/default/jobs/once")
        return any(c["type"] == "Complete" for c in got["status"].get("conditions", []))

    wait_for(complete, timeout=30)
    listed = s.get("/api/v1/namespaces/default/pods?labelSelector=job-name%3Donce")["items"]
    assert [p["status"]["phase"] for p in listed] == ["Succeeded"]
    name, uid = listed[0]["metadata"]["name"], listed[0]["metadata"]["uid"]
    barrier(s, "later")
    logs = corral(s, "logs", name)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "job done\n"
    resp = s.request("DELETE", "/apis/batch/v1/namespaces/default/jobs/once")
    assert resp.status == 200, resp.body
    wait_for(
        lambda: not s.get("/api/v1/namespaces/default/pods?labelSelector=job-name%3Donce")["items"],
        30,
    )
    wait_for(lambda: not (agent.state / "pods" / uid).exists(), timeout=30)


def test_a_finished_pod_is_not_started_again_by_a_new_agent(agent: AgentProcess) -> None:
    """After an agent restart a finished pod stays finished (its container is not run
    again) and its log is still readable."""
    s = agent.scheduler
    manifest = stateful_pod("counted", "Never", COUNT_RUNS + "echo run $n")
    assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0
    wait_for(partial(phase_is, s, "counted", "Succeeded"), 30)
    uid = pod_json(s, "counted")["metadata"]["uid"]
    exit_record = next((agent.state / "pods" / uid).rglob("exit.json"))
    ended = exit_record.read_text()
    assert agent.stop() == 0
    agent.start()
    wait_for(lambda: ready(s, "node-a"), timeout=30)
    barrier(s, "later")  # the new agent has adopted, been welcomed and applied since
    assert exit_record.read_text() == ended  # not run again: its exit record is the same
    assert log_of(s, "counted") == "run 1\n"
    pod = pod_json(s, "counted")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert corral(s, "delete", "pod", "counted").returncode == 0
    wait_for(lambda: not (agent.state / "pods" / uid).exists(), timeout=30)


def test_a_pods_new_image_restarts_its_container_with_it(
    agent: AgentProcess, tmp_path: Path
) -> None:
    """A pod update that changes a container's image (the strategic merge patch `kubectl
    set image pod/...` sends) reaches the agent, which restarts that container with the
    new image, as the kubelet does: the status names the new image, restartCount 1 and
    the killed run in lastState; the process is a new one, with the new image's config
    (IMAGE=v2), and the Killing event says why."""
    s = agent.scheduler
    layout = tmp_path / "v2"
    rootfs = build_busybox_rootfs(tmp_path / "rootfs")
    write_oci_layout(rootfs, layout, ref="busybox:v2", env=[*DEFAULT_ENV, "IMAGE=v2"])
    importing = [sys.executable, "-m", "agent.main", "image", "import", str(layout)]
    subprocess.run(
        [*importing, "--root", str(agent.state / "images")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    script = COUNT_RUNS + 'echo "run $n of ${IMAGE:-v1}"; exec sleep 300'
    manifest = stateful_pod("reimaged", "Always", script, grace=2)
    assert corral(s, "apply", "-f", "-", stdin=manifest).returncode == 0
    wait_for(partial(phase_is, s, "reimaged", "Running"), 30)
    wait_for(lambda: log_of(s, "reimaged") == "run 1 of v1\n", timeout=15)
    before = container_pid(agent, "reimaged")
    first = pod_json(s, "reimaged")["status"]["containerStatuses"][0]

    patch = {"spec": {"containers": [{"name": "main", "image": "busybox:v2"}]}}
    path = "/api/v1/namespaces/default/pods/reimaged"
    resp = s.request("PATCH", path, patch, content_type="application/strategic-merge-patch+json")
    assert resp.status == 200, resp.body

    def restarted() -> dict[str, Any] | None:
        statuses = pod_json(s, "reimaged")["status"].get("containerStatuses") or [{}]
        cs = statuses[0]
        running = "running" in (cs.get("state") or {}) and cs.get("restartCount") == 1
        return cs if running and cs.get("image") == "busybox:v2" else None

    cs = wait_for(restarted, timeout=30)
    assert cs["imageID"] != first["imageID"] and cs["containerID"] != first["containerID"]
    assert cs["lastState"]["terminated"]["containerID"] == first["containerID"]
    wait_for(lambda: log_of(s, "reimaged") == "run 2 of v2\n", timeout=15)
    assert not os.path.exists(f"/proc/{before}")
    assert container_pid(agent, "reimaged") != before
    described = wait_for(
        lambda: (
            (out := corral(s, "describe", "pod", "reimaged").stdout)
            and "definition changed" in out
            and out
        ),
        timeout=15,
    )
    assert "Container main definition changed, will be restarted" in described
