"""Real services for tests and benchmarks, on loopback: Debian's docker-registry and dockerd.

    registry = Registry(tmp / "registry", users={"alice": "secret"})  # or no users: anonymous
    registry.start(); registry.push(layout, "busybox:latest"); ...; registry.stop()

    daemon = DockerDaemon.start_or_reuse()   # a running dockerd if there is one, else ours
    daemon.docker("ps"); daemon.stop()       # stops it only if it started it

The registry is `docker-registry` (Debian's build of distribution 2.8) with a YAML config
pointing at a temp storage dir; images go in with `skopeo copy oci:DIR docker://...`.
Basic auth uses an htpasswd file of bcrypt hashes (the only kind the registry accepts),
written by `htpasswd -B` (apache2-utils). dockerd runs with `--iptables=false
--bridge=none` and its own data-root, exec-root, pidfile and socket under a temp dir.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, TOKEN, SchedulerProcess, stop_process, wait_for
from tests.imagebuild import skip_or_fail

DEFAULT_SOCKET = "/var/run/docker.sock"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's `size=`: 64m, 64k) on `path` (made if missing) while in
    the block; lazily unmounted after, whatever is left mounted below it."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def need(*programs: str) -> None:
    """Skip (fail under CI=true) when a program the test needs is not installed."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        skip_or_fail(
            f"not installed: {', '.join(missing)} (.ci/run installs docker-registry, skopeo, "
            "apache2-utils and docker.io)"
        )


class Registry:
    """Debian's docker-registry on 127.0.0.1:<free port>, storage in `base`."""

    def __init__(
        self, base: Path, users: dict[str, str] | None = None, *, tls: bool = False
    ) -> None:
        self.base = base
        self.users = users or {}
        self.tls = tls  # HTTPS with a self-signed certificate for 127.0.0.1 (`ca_file`)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.base / "cert.pem"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.base / "storage"

    def start(self) -> None:
        need("docker-registry")
        self.base.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        auth = ""
        if self.users:
            need("htpasswd")
            htpasswd = self.base / "htpasswd"
            lines = []
            for user, password in self.users.items():
                done = subprocess.run(
                    ["htpasswd", "-nbB", user, password], check=True, capture_output=True
                )
                lines.append(done.stdout.decode().strip())
            htpasswd.write_text("\n".join(lines) + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: corral-test\n    path: {htpasswd}\n"
        tls_block = ""
        if self.tls:
            key = self.base / "key.pem"
            self_signed(self.ca_file, key)
            tls_block = f"  tls:\n    certificate: {self.ca_file}\n    key: {key}\n"
        for _attempt in range(5):  # a free port may be taken between the probe and the bind
            self.port = free_port()
            config = self.base / "config.yml"
            config.write_text(
                "version: 0.1\n"
                "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
                "  delete:\n    enabled: true\n"
                f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: corral-test-secret\n"
                + tls_block
                + auth
            )
            log = open(self.base / "registry.log", "ab")
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(config)], stdout=log, stderr=log
            )
            log.close()
            try:
                wait_for(self._answers, timeout=10)
                return
            except AssertionError:
                self.stop()
        raise RuntimeError(f"docker-registry did not start: {self.log()}")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("docker-registry exited")
        scheme = "https" if self.tls else "http"
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else None
        try:
            with urllib.request.urlopen(f"{scheme}://{self.host}/v2/", timeout=1, context=context):
                return True
        except urllib.error.HTTPError as err:
            return err.code == 401  # up, and asking for credentials
        except OSError:
            return False

    def log(self) -> str:
        try:
            return (self.base / "registry.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc, 10)

    def push(self, layout: Path, name: str, *, fmt: str | None = None, all: bool = False) -> str:
        """`skopeo copy oci:LAYOUT docker://HOST/NAME`; returns the pushed reference.

        `fmt="v2s2"` converts to Docker schema 2 (manifest lists for indexes).
        """
        need("skopeo")
        ref = f"{self.host}/{name}"
        cmd = ["skopeo", "copy", "--dest-tls-verify=false", "--quiet"]
        if self.users:
            user, password = next(iter(self.users.items()))
            cmd.append(f"--dest-creds={user}:{password}")
        if fmt:
            cmd.append(f"--format={fmt}")
        if all:
            cmd.append("--all")
        cmd += [f"oci:{layout}", f"docker://{ref}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"skopeo copy failed: {done.stderr}")
        return ref

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob (to corrupt it on purpose)."""
        hex_ = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def self_signed(cert: Path, key: Path) -> None:
    """A self-signed certificate for 127.0.0.1 (its own CA), PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral test registry")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class DockerDaemon:
    """A dockerd to talk to: the machine's if one answers, else one of our own."""

    def __init__(self, host: str, base: Path | None = None) -> None:
        self.host = host  # unix:///...
        self.base = base  # our own daemon's directory; None when reusing one
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> str:
        return self.host.removeprefix("unix://")

    @staticmethod
    def _ping(path: str) -> bool:
        if not os.path.exists(path):
            return False
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(path)
                sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b" 200 " in sock.recv(64)
        except OSError:
            return False

    @classmethod
    def start_or_reuse(cls) -> DockerDaemon:
        if cls._ping(DEFAULT_SOCKET):
            return cls(f"unix://{DEFAULT_SOCKET}")
        need("dockerd", "docker")
        # Short path: containerd's sockets live below the exec-root (108-byte limit).
        base = Path(tempfile.mkdtemp(prefix="corral-dockerd-", dir="/tmp"))
        daemon = cls(f"unix://{base}/docker.sock", base)
        log = open(base / "dockerd.log", "ab")
        daemon.proc = subprocess.Popen(
            [
                "dockerd",
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                f"--data-root={base}/data",
                f"--exec-root={base}/exec",
                f"--pidfile={base}/docker.pid",
                f"--host={daemon.host}",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,  # a ^C to pytest is not for dockerd
        )
        log.close()
        try:
            wait_for(lambda: cls._ping(daemon.socket_path) or daemon._died(), timeout=60)
        except AssertionError:
            daemon.stop()
            raise
        if daemon._died():
            tail = (base / "dockerd.log").read_text()[-2000:]
            daemon.stop()
            raise RuntimeError(f"dockerd did not start: {tail}")
        return daemon

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def docker(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        done = subprocess.run(
            ["docker", "-H", self.host, *args], input=input, capture_output=True, timeout=120
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.decode()}")
        return done.stdout.decode()

    def import_rootfs(self, rootfs: Path, name: str, cmd: str = '["sh"]') -> None:
        """`docker import` of a root filesystem directory, with a CMD."""
        with tempfile.TemporaryFile() as tar_file:
            with tarfile.open(fileobj=tar_file, mode="w") as tar:
                for child in sorted(os.listdir(rootfs)):
                    tar.add(rootfs / child, arcname=child)
            tar_file.seek(0)
            self.docker("import", "--change", f"CMD {cmd}", "-", name, input=tar_file.read())

    def stop(self) -> None:
        """Stop our own daemon (never one we reused) and remove its directory."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                ids = self.docker("ps", "-aq", check=False).split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.base is not None:
            _unmount_below(self.base)
            shutil.rmtree(self.base, ignore_errors=True)


def _unmount_below(base: Path) -> None:
    """dockerd leaves overlay and netns mounts if it dies hard; never rm -rf through them."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(str(base) + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


class AgentProcess:
    """`corral-agent` with a TOML config file of its own (registries, docker, ...)."""

    def __init__(
        self,
        scheduler: SchedulerProcess,
        state: Path,
        node: str,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.scheduler, self.state, self.node = scheduler, state, node
        self.cgroup_parent = f"corral-test-{os.getpid()}-{node}"
        self.config_path = state / "agent.toml"
        self.config = config or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(to_toml(self.config))
        log = open(self.state / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.main",
                "--config",
                str(self.config_path),
                "--server",
                self.scheduler.url,
                "--join-token",
                TOKEN,
                "--node-name",
                self.node,
                "--state-dir",
                str(self.state),
                "--cgroup-parent",
                self.cgroup_parent,
                "--log-level",
                "debug",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def log(self) -> str:
        return (self.state / "agent.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash would: the agent's pods keep running."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        code = stop_process(self.proc, 30)
        assert code is not None
        return code


def to_toml(values: dict[str, Any], prefix: str = "") -> str:
    """Enough TOML for agent configs: scalars, lists of strings, nested tables."""
    lines, tables = [], []
    for key, value in values.items():
        if isinstance(value, dict):
            name = f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)
            tables.append(f"[{name}]\n" + to_toml(value, name))
        else:
            lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
    return "\n".join(lines) + "\n" + "\n".join(tables)
