"""systemd units, example configs and `corral install|uninstall` into a scratch root."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.config import AgentConfig
from common.config import DaemonConfig, load_config
from scheduler.cli import units
from scheduler.cli.install import bin_dir
from scheduler.cli.main import run
from scheduler.config import SchedulerConfig
from tests.conftest import ROOT
from tests.imagebuild import skip_or_fail

SYSTEMD = ROOT / "systemd"
REGENERATE = "regenerate with `python -m scheduler.cli.units systemd/`"


def analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        skip_or_fail("systemd-analyze is missing (apt-get install systemd; .ci/run does)")
    return binary


@pytest.mark.parametrize("files", units.DAEMONS.values(), ids=list(units.DAEMONS))
def test_systemd_dir_matches_the_package(files: units.DaemonFiles) -> None:
    """systemd/ holds exactly what `corral install` writes (units, example configs)."""
    unit = (SYSTEMD / files.unit_name).read_text()
    assert unit == units.render_unit(files), f"{files.unit_name} drifted: {REGENERATE}"
    example = (SYSTEMD / f"{files.daemon}.toml").read_text()
    assert example == units.render_config(files), f"{files.daemon}.toml drifted: {REGENERATE}"


@pytest.mark.parametrize(
    ("name", "model"), [("agent.toml", AgentConfig), ("scheduler.toml", SchedulerConfig)]
)
def test_example_config_lists_every_option_at_its_default(
    name: str, model: type[DaemonConfig]
) -> None:
    """Every field is there, documented and commented out; uncommented, the values are the
    model's defaults (or valid examples where the default is unset or computed)."""
    text = (SYSTEMD / name).read_text()
    assigned = re.findall(r"^# ([a-z_]+) = (.*)$", text, re.MULTILINE)
    assert [key for key, _ in assigned] == list(model.model_fields)
    values = tomllib.loads("\n".join(f"{k} = {v}" for k, v in assigned))
    config = model.model_validate(values)
    for key, field in model.model_fields.items():
        if field.default_factory is None and field.get_default() is not None:
            assert getattr(config, key) == field.get_default(), key
    for key, field in model.model_fields.items():  # each option has its comment
        assert f"# {field.description.split()[0]}" in text, key  # type: ignore[union-attr]


def _verifiable(unit: Path, dest: Path) -> Path:
    """A copy of `unit` whose ExecStart names this installation's binary (verify checks
    that it exists and is executable; /usr/local/bin may not have it here)."""
    text = unit.read_text().replace(units.DEFAULT_BIN_DIR, bin_dir("agent"))
    copy = dest / unit.name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("unit", ["corral-agent.service", "corral-scheduler.service"])
def test_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts both units without a warning."""
    copy = _verifiable(SYSTEMD / unit, tmp_path)
    assert Path(bin_dir("agent"), unit.removesuffix(".service")).exists()
    result = subprocess.run(
        [analyze(), "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert unit not in result.stderr, result.stderr  # no warning about our unit


def test_scheduler_unit_is_hardened(tmp_path: Path) -> None:
    """systemd's own exposure score of the scheduler unit is low (OK, below 2.0)."""
    copy = _verifiable(SYSTEMD / "corral-scheduler.service", tmp_path)
    result = subprocess.run(
        [analyze(), "security", "--offline=true", "--threshold=20", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    score = re.search(r"Overall exposure level for .*: ([0-9.]+)", result.stdout)
    assert score is not None and float(score.group(1)) < 2.0


def test_agent_unit_keeps_pods_across_restarts() -> None:
    """The agent unit's KillMode lets pods outlive it; it owns a delegated cgroup."""
    unit = (SYSTEMD / "corral-agent.service").read_text()
    for line in (
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "Restart=always",
        "StateDirectory=corral",
        "After=network-online.target",
        "Wants=network-online.target",
        "ExecStart=/usr/local/bin/corral-agent --config /etc/corral/agent.toml --cgroup-delegated",
    ):
        assert f"\n{line}\n" in unit, line
    assert re.search(r"^WatchdogSec=\d+s$", unit, re.MULTILINE)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_agent_into_a_scratch_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unit, config (0600), join token (0600) and state directory; the config loads and
    names the server and the token file; an existing config is kept unless --force."""
    root = tmp_path / "root"
    argv = ["install", "agent", "--server", "http://10.1.2.3:7070", "--token", "jt-123"]
    assert run([*argv, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "systemctl daemon-reload && systemctl enable --now corral-agent.service" in out

    unit = (root / "etc/systemd/system/corral-agent.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.MULTILINE)
    assert exec_start is not None and Path(exec_start.group(1)).is_file()
    config_path = root / "etc/corral/agent.toml"
    token_path = root / "etc/corral/join-token"
    assert _mode(config_path) == 0o600 and _mode(token_path) == 0o600
    assert token_path.read_text().strip() == "jt-123"
    assert _mode(root / "var/lib/corral") == 0o700
    config = load_config(
        AgentConfig,
        ["--config", str(config_path)],
        prog="corral-agent",
        description="",
        env_prefix="CORRAL_AGENT_",
        environ={},
    )
    assert config.server == "http://10.1.2.3:7070"
    assert config.join_token_file == "/etc/corral/join-token"
    assert config.state_dir == "/var/lib/corral"

    config_path.write_text(config_path.read_text() + "\n# edited by hand\n")
    assert run(["install", "agent", "--token", "other", "--root", str(root)]) == 0
    assert "edited by hand" in config_path.read_text()
    assert token_path.read_text().strip() == "jt-123"
    assert "kept" in capsys.readouterr().out
    assert run([*argv, "--root", str(root), "--force"]) == 0
    assert "edited by hand" not in config_path.read_text()


def test_install_scheduler_into_a_scratch_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scheduler's config listens for agents and holds the join token (0640)."""
    root = tmp_path / "root"
    assert run(["install", "scheduler", "--token", "jt-9", "--root", str(root)]) == 0
    assert "enable --now corral-scheduler.service" in capsys.readouterr().out
    config_path = root / "etc/corral/scheduler.toml"
    assert _mode(config_path) == 0o640
    values = tomllib.loads(config_path.read_text())
    assert values == {
        "listen": "0.0.0.0:7070",
        "state_dir": "/var/lib/corral-scheduler",
        "join_token": "jt-9",
    }
    SchedulerConfig.model_validate(values)
    assert (root / "etc/systemd/system/corral-scheduler.service").exists()
    assert (root / "var/lib/corral-scheduler").is_dir()
    assert run(["install", "scheduler", "--server", "http://x:1", "--root", str(root)]) == 1


def test_uninstall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """uninstall removes the unit and its enablement; --purge also config, token, state."""
    root = tmp_path / "root"
    assert run(["install", "agent", "--token", "t", "--root", str(root)]) == 0
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "corral-agent.service").symlink_to("/etc/systemd/system/corral-agent.service")
    assert run(["uninstall", "agent", "--root", str(root)]) == 0
    assert not (root / "etc/systemd/system/corral-agent.service").exists()
    assert not (wants / "corral-agent.service").is_symlink()
    assert (root / "etc/corral/agent.toml").exists()
    assert run(["uninstall", "agent", "--root", str(root), "--purge"]) == 0
    assert not (root / "etc/corral").exists()
    assert not (root / "var/lib/corral").exists()
    assert "removed" in capsys.readouterr().out


def test_install_help_mentions_the_join_token() -> None:
    """`corral install --help` says what --token means there."""
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", "install", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 0
    assert "join token" in result.stdout


def test_install_sets_any_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--set writes any option as a TOML value (--ca-file, when the CA is already on this
    machine, sets ca_file too); a bad option or value is refused before anything is written."""
    root = tmp_path / "root"
    argv = ["install", "agent", "--server", "https://10.0.0.1:7070", "--token", "t"]
    extra = ["--set", "ca_file=/etc/corral/pki/ca.crt", "--set", "max_pods=20"]
    extra += ["--set", 'labels={zone = "a"}']
    assert run([*argv, *extra, "--root", str(root)]) == 0
    values = tomllib.loads((root / "etc/corral/agent.toml").read_text())
    assert values["ca_file"] == "/etc/corral/pki/ca.crt"
    assert values["max_pods"] == 20 and values["labels"] == {"zone": "a"}
    other = tmp_path / "other"
    assert run([*argv, "--set", "no_such=1", "--root", str(other)]) == 1
    assert run([*argv, "--set", "max_pods=-3", "--root", str(other)]) == 1
    assert "max_pods" in capsys.readouterr().err
    assert not other.exists()
    tls = ["--set", "tls_cert=/etc/corral/pki/s.crt", "--set", "tls_key=/etc/corral/pki/s.key"]
    assert run(["install", "scheduler", *tls, "--root", str(root)]) == 0
    values = tomllib.loads((root / "etc/corral/scheduler.toml").read_text())
    assert values["tls_key"] == "/etc/corral/pki/s.key"


@pytest.mark.parametrize("secret", ["join_token=jt-set", "admin_token=corral_adm-set"])
def test_scheduler_config_with_a_token_from_set_is_not_world_readable(
    secret: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token given with --set (not --token) also makes the scheduler's config 0640."""
    root = tmp_path / "root"
    assert run(["install", "scheduler", "--set", secret, "--root", str(root)]) == 0
    config_path = root / "etc/corral/scheduler.toml"
    assert secret.split("=", 1)[1] in config_path.read_text()
    assert _mode(config_path) == 0o640
    assert "(mode 640)" in capsys.readouterr().out
