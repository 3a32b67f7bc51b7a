"""Daemon configuration: embedded defaults < TOML file < environment < command-line flags.

One mechanism for both daemons: a pydantic model whose field descriptions
become `--help`, whose names become flags (`--node-grace-seconds`) and
environment variables (`CORRAL_SCHEDULER_NODE_GRACE_SECONDS`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from common.manifest import field_path


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the option and the source."""


class DaemonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


C = TypeVar("C", bound=DaemonConfig)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (
        typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType"))
        and bool in typing.get_args(annotation)
    )


def build_parser(model: type[DaemonConfig], prog: str, description: str, env_prefix: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=(
            f"Every option can also be set in the TOML file given by --config, or in the "
            f"environment as {env_prefix}<OPTION> (for example {env_prefix}LISTEN). "
            "Precedence: flag > environment > file > default."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    for name, field in model.model_fields.items():
        help_text = field.description or ""
        if _is_bool(field.annotation):
            parser.add_argument(
                _flag(name), dest=name, action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS, help=f"{help_text} (default: {field.default})",
            )
        else:
            parser.add_argument(
                _flag(name), dest=name, default=argparse.SUPPRESS, metavar=name.upper(),
                help=f"{help_text} (default: {field.default if field.default is not None else 'unset'})",
            )
    return parser


def load_config(
    model: type[C],
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    env_prefix: str,
    environ: dict[str, str] | None = None,
) -> C:
    """Parse flags, read the file and environment, and validate the merged result."""
    parser = build_parser(model, prog, description, env_prefix)
    args = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = args.pop("config", None) or environ.get(f"{env_prefix}CONFIG")
    if config_file:
        try:
            values.update(tomllib.loads(Path(config_file).read_text()))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    for name in model.model_fields:
        env_name = f"{env_prefix}{name.upper()}"
        if env_name in environ:
            values[name] = environ[env_name]
    values.update(args)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{field_path(e['loc'])}: {e['msg']}" if e["type"] != "extra_forbidden"
            else f"{field_path(e['loc'])}: unknown option"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
