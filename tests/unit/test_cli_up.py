"""`corral up` pointing the CLI at its cluster: the config file it writes or leaves alone."""

from __future__ import annotations

import os
import signal
import socket
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.cli.main import run
from scheduler.cli.up import _point_cli_at

UP_MARK = "# written by `corral up`"  # the first line of the file it writes


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI config path, under a private XDG_CONFIG_HOME."""
    monkeypatch.delenv("CORRAL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "corral" / "config.toml"


def assert_points_at(config: Path, url: str, token: Path) -> None:
    """The CLI config names `url` and `token`, and only its owner may read it."""
    assert tomllib.loads(config.read_text()) == {"server": url, "token_file": str(token)}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_writes_a_config_when_there_is_none(config: Path, tmp_path: Path) -> None:
    token = tmp_path / "new" / "admin-token"
    said = _point_cli_at("http://127.0.0.1:7070", token)
    assert said == f"the CLI is configured in {config} (admin token in {token})"
    assert_points_at(config, "http://127.0.0.1:7070", token)


def test_a_token_path_with_quotes_and_backslashes_stays_one_string(
    config: Path, tmp_path: Path
) -> None:
    token = tmp_path / 'odd "dir\\' / "admin-token"
    _point_cli_at("http://127.0.0.1:7070", token)
    assert tomllib.loads(config.read_text())["token_file"] == str(token)


@pytest.mark.parametrize("odd", ["\U0001f600", "caf\u00e9", "del\x7f", "tab\tnl\n"])
def test_a_token_path_with_any_character_stays_readable(
    config: Path, tmp_path: Path, odd: str
) -> None:
    """JSON's ASCII escapes wrote a character past U+FFFF as a surrogate pair, which
    TOML refuses: the config could not be read (and was then taken for the user's)."""
    token = tmp_path / odd / "admin-token"
    _point_cli_at("http://127.0.0.1:7070", token)
    assert tomllib.loads(config.read_text(encoding="utf-8"))["token_file"] == str(token)


def test_replaces_the_config_an_earlier_corral_up_wrote(config: Path, tmp_path: Path) -> None:
    """A second `corral up` (here, or in another directory whose cluster is gone) said
    "your CLI config is left alone" of its own file, which still named the old
    cluster's token: every plain `corral` command then failed (Unauthorized, or a
    token file that no longer exists). Its own file is now pointed at the new cluster."""
    old = tmp_path / "old" / "admin-token"
    _point_cli_at("http://127.0.0.1:7070", old)
    new = tmp_path / "new" / "admin-token"
    said = _point_cli_at("http://127.0.0.1:7171", new)
    assert said == f"the CLI is configured in {config} (admin token in {new})"
    assert_points_at(config, "http://127.0.0.1:7171", new)
    assert [p.name for p in config.parent.iterdir()] == ["config.toml"]  # no temporary left


@pytest.mark.parametrize(
    "text",
    [
        'server = "https://prod:7070"\ntoken_file = "/etc/corral/token"\n',  # the user's own
        f'{UP_MARK}\nserver = "http://127.0.0.1:7070"\ntoken_file = "/t"\nca_file = "/ca"\n',
        f"{UP_MARK}\nserver = \n",  # edited into something corral up never wrote
    ],
)
def test_leaves_any_other_config_alone(config: Path, tmp_path: Path, text: str) -> None:
    config.parent.mkdir(parents=True)
    config.write_text(text)
    token = tmp_path / "admin-token"
    said = _point_cli_at("http://127.0.0.1:7070", token)
    assert said == (
        f"the admin token is in {token}; your CLI config {config} is left alone: "
        f"export CORRAL_SERVER=http://127.0.0.1:7070 CORRAL_TOKEN=$(cat {token})"
    )
    assert config.read_text() == text


@pytest.fixture
def signals_kept() -> Iterator[None]:
    """`corral up` takes SIGINT and SIGTERM for itself: give them back after."""
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


@pytest.mark.skipif(os.geteuid() != 0, reason="corral up needs root")
def test_a_scheduler_that_cannot_start_is_said_why(
    tmp_path: Path, config: Path, signals_kept: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`corral up` on a busy port said only "corral-scheduler (log: ...) did not start;
    see its log": the reason (the address in use, or the state directory held by the
    `corral up` already running there) is in the log's last line, and is now said."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        state = tmp_path / "state"
        code = run(["up", "--state-dir", str(state), "--listen", f"127.0.0.1:{port}"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: corral-scheduler did not start: "), err
    assert "address already in use" in err and f"(log: {state / 'scheduler.log'})" in err
    assert not config.exists()  # the CLI is not pointed at a cluster that never came up
