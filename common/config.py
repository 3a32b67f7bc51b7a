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
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the option and the source."""


class DaemonConfig(BaseModel):
    """Base of each daemon's configuration model; unknown options are refused."""

    model_config = ConfigDict(extra="forbid")


C = TypeVar("C", bound=DaemonConfig)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (
        typing.get_origin(annotation) in (typing.Union, types.UnionType)
        and bool in typing.get_args(annotation)
    )


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    return "unset" if default is None else str(default)


def build_parser(
    model: type[DaemonConfig], prog: str, description: str, env_prefix: str
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of `model`, plus `--config FILE`."""
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
    parser.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file"
    )
    for name, field in model.model_fields.items():
        # argparse %-formats help text: a literal '%' must be doubled.
        help_text = f"{field.description or ''} (default: {_default_text(field)})".strip()
        help_text = help_text.replace("%", "%%")
        if _is_bool(field.annotation):
            parser.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                _flag(name),
                dest=name,
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=help_text,
            )
    return parser


def load_config(
    model: type[C],
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
) -> C:
    """Parse flags, read the file and environment, and validate the merged result.

    A `ConfigError` names each bad option and where its value came from.
    """
    parser = build_parser(model, prog, description, env_prefix)
    args = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    config_file = args.pop("config", None) or environ.get(f"{env_prefix}CONFIG")
    if config_file:
        try:
            values.update(tomllib.loads(Path(config_file).read_bytes().decode("utf-8")))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {config_file} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        sources.update(dict.fromkeys(values, f"config file {config_file}"))
    for name in model.model_fields:
        env_name = f"{env_prefix}{name.upper()}"
        if env_name in environ:
            values[name] = environ[env_name]
            sources[name] = f"environment {env_name}"
    values.update(args)
    sources.update({name: f"flag {_flag(name)}" for name in args})
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        # Here, not at the top: common.manifest imports yaml, which the agent never needs
        # otherwise (about 1 MiB of its resident memory).
        from common.manifest import field_path

        problems = []
        for err in exc.errors(include_url=False):
            name = field_path(err["loc"])
            source = sources.get(str(err["loc"][0])) if err["loc"] else None
            where = f" (from {source})" if source else ""
            message = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] == "value_error":  # a validator's ValueError: its own words
                message = str(err["ctx"]["error"])
            # A check of several options together (a model validator) names them itself.
            problems.append(f"{name}{where}: {message}" if name else message)
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}") from None
