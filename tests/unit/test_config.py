"""Daemon configuration: default < TOML file < environment < flag, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from common.config import ConfigError, DaemonConfig, build_parser, load_config

PREFIX = "CORRAL_TEST_"


class _Config(DaemonConfig):
    """A small daemon configuration exercising each kind of option."""

    listen: str = Field("127.0.0.1:8080", description="address to listen on")
    workers: int = Field(2, description="worker tasks, at most 100% of the CPUs")
    grace_seconds: float = Field(10.0, description="seconds before a node is NotReady")
    debug: bool = Field(False, description="log at debug level")
    data_dir: Path | None = Field(None, description="where state is kept")
    labels: list[str] = Field(default_factory=list, description="node labels")


class _Required(DaemonConfig):
    """A configuration with an option that has no default."""

    token: str = Field(description="join token")


def _load(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> _Config:
    """load_config with the test prefix and an isolated environment."""
    return load_config(
        _Config,
        argv or [],
        prog="corral-test",
        description="test daemon",
        env_prefix=PREFIX,
        environ=environ or {},
    )


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    """A TOML file setting listen, workers and debug."""
    path = tmp_path / "corral.toml"
    path.write_text('listen = "0.0.0.0:9000"\nworkers = 4\ndebug = true\n')
    return path


def test_defaults() -> None:
    """With no file, environment or flags, every option has its default."""
    config = _load()
    assert config == _Config()
    assert config.listen == "127.0.0.1:8080"
    assert config.data_dir is None


def test_file_overrides_default(toml_file: Path) -> None:
    """A TOML file given by --config overrides the defaults."""
    config = _load(["--config", str(toml_file)])
    assert (config.listen, config.workers, config.debug) == ("0.0.0.0:9000", 4, True)
    assert config.grace_seconds == 10.0


def test_config_file_from_environment(toml_file: Path) -> None:
    """The file may also be named by <PREFIX>CONFIG."""
    config = _load(environ={f"{PREFIX}CONFIG": str(toml_file)})
    assert config.workers == 4


def test_environment_overrides_file(toml_file: Path) -> None:
    """An environment variable overrides the file."""
    config = _load(["--config", str(toml_file)], {f"{PREFIX}WORKERS": "8"})
    assert config.workers == 8
    assert config.listen == "0.0.0.0:9000"


def test_flag_overrides_environment(toml_file: Path) -> None:
    """A flag overrides the environment and the file."""
    config = _load(
        ["--config", str(toml_file), "--workers", "16", "--grace-seconds", "2.5"],
        {f"{PREFIX}WORKERS": "8", f"{PREFIX}GRACE_SECONDS": "30"},
    )
    assert (config.workers, config.grace_seconds) == (16, 2.5)


def test_path_option() -> None:
    """A path option is parsed into a Path."""
    assert _load(["--data-dir", "/var/lib/corral"]).data_dir == Path("/var/lib/corral")


@pytest.mark.parametrize(
    ("argv", "expected"), [([], False), (["--debug"], True), (["--no-debug"], False)]
)
def test_boolean_flags(argv: list[str], expected: bool) -> None:
    """Booleans have --name and --no-name flags."""
    assert _load(argv).debug is expected


def test_no_flag_overrides_true_file(toml_file: Path) -> None:
    """--no-debug turns off what the file turned on."""
    assert _load(["--config", str(toml_file), "--no-debug"]).debug is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("off", False)],
)
def test_boolean_environment(value: str, expected: bool) -> None:
    """Environment booleans accept the usual spellings."""
    assert _load(environ={f"{PREFIX}DEBUG": value}).debug is expected


def test_invalid_boolean_environment_names_variable() -> None:
    """A bad environment value is refused naming the option and the variable."""
    with pytest.raises(ConfigError) as info:
        _load(environ={f"{PREFIX}DEBUG": "maybe"})
    message = str(info.value)
    assert message.startswith("invalid configuration: debug (from environment CORRAL_TEST_DEBUG)")
    assert "valid boolean" in message


def test_invalid_flag_value_names_flag() -> None:
    """A bad flag value is refused naming the option and the flag."""
    with pytest.raises(ConfigError, match=r"workers \(from flag --workers\): Input should be"):
        _load(["--workers", "many"])


def test_unknown_option_in_file_refused(tmp_path: Path) -> None:
    """An option the daemon does not have is refused by name, with the file."""
    path = tmp_path / "bad.toml"
    path.write_text('listen = ":1"\nnode_grase_seconds = 5\n')
    with pytest.raises(ConfigError) as info:
        _load(["--config", str(path)])
    assert str(info.value) == (
        f"invalid configuration: node_grase_seconds (from config file {path}): unknown option"
    )


def test_wrong_type_in_file_names_file(tmp_path: Path) -> None:
    """A value of the wrong type in the file is refused naming the option and the file."""
    path = tmp_path / "bad.toml"
    path.write_text('workers = "four"\n')
    with pytest.raises(ConfigError, match=rf"workers \(from config file {path}\)"):
        _load(["--config", str(path)])


def test_invalid_toml_refused(tmp_path: Path) -> None:
    """A file that is not TOML is refused with the parser's position."""
    path = tmp_path / "bad.toml"
    path.write_text('listen = "unterminated\n')
    with pytest.raises(ConfigError) as info:
        _load(["--config", str(path)])
    assert str(info.value).startswith(f"config file {path} is not valid TOML: ")
    assert "line 1" in str(info.value)


def test_non_utf8_file_refused(tmp_path: Path) -> None:
    """A file that is not UTF-8 is refused with a message, not a traceback."""
    path = tmp_path / "bad.toml"
    path.write_bytes(b'listen = "\xff"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        _load(["--config", str(path)])


def test_missing_file_refused(tmp_path: Path) -> None:
    """A config file that does not exist is refused naming it."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=rf"cannot read config file {path}: No such file"):
        _load(["--config", str(path)])


def test_unrelated_environment_ignored() -> None:
    """Variables outside the prefix, or with it but unknown, are ignored."""
    config = _load(environ={"WORKERS": "9", f"{PREFIX}BOGUS": "1", "CORRAL_WORKERS": "9"})
    assert config.workers == 2


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """--help shows a flag, description and default for every option, then exits 0."""
    with pytest.raises(SystemExit) as info:
        _load(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for name, field in _Config.model_fields.items():
        assert "--" + name.replace("_", "-") in out
        assert field.description is not None
        assert field.description in out
    assert "--no-debug" in out
    assert "--config FILE" in out
    assert "(default: 127.0.0.1:8080)" in out
    assert "(default: unset)" in out
    assert "(default: [])" in out
    assert "CORRAL_TEST_<OPTION>" in out


def test_help_marks_required_options() -> None:
    """An option without a default is shown as required, not as pydantic's sentinel."""
    text = build_parser(_Required, "p", "d", PREFIX).format_help()
    assert "(default: required)" in " ".join(text.split())
    assert "Undefined" not in text


def test_required_option_missing() -> None:
    """A required option left unset is refused by name."""
    with pytest.raises(ConfigError, match="token: Field required"):
        load_config(_Required, [], prog="p", description="d", env_prefix=PREFIX, environ={})


def test_unknown_flag_exits(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown flag is an argparse usage error (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        _load(["--bogus"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_a_check_of_several_options_is_said_in_its_own_words() -> None:
    """A model validator (the agent's image gc thresholds) has no one option to name: its
    message stands alone, without pydantic's "Value error, " prefix, as a field's does."""
    from agent.config import AgentConfig

    argv = ["--image-gc-high-threshold-percent", "70", "--image-gc-low-threshold-percent", "70"]
    with pytest.raises(ConfigError) as info:
        load_config(AgentConfig, argv, prog="a", description="", env_prefix="X_", environ={})
    assert str(info.value) == (
        "invalid configuration: image_gc_low_threshold_percent (70) must be below "
        "image_gc_high_threshold_percent (70)"
    )
    with pytest.raises(ConfigError) as info:
        load_config(
            AgentConfig,
            ["--cpu-reserved", "1x"],
            prog="a",
            description="",
            env_prefix="X_",
            environ={},
        )
    assert "(from flag --cpu-reserved): '1x' is not a quantity" in str(info.value)
