"""Where the CLI finds its server, token and TLS files: flag > environment > config file > default.

TLS: `ca_file` (verify an https server against this CA instead of the system's),
`client_cert` and `client_key` (for a scheduler that asks for client certificates);
as `--ca-file`, `CORRAL_CA_FILE`, `CORRAL_CLIENT_CERT`, `CORRAL_CLIENT_KEY` or keys
of the config file.
"""

from __future__ import annotations

import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

DEFAULT_SERVER = "http://127.0.0.1:7070"


class SettingsError(ValueError):
    """A config file that cannot be read or holds values of the wrong type."""


@dataclass(frozen=True)
class Settings:
    server: str
    token: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


def config_path(environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read, and whether it was named explicitly (`$CORRAL_CONFIG`).

    A file named explicitly must exist; the default one (`~/.config/corral/config.toml`,
    or under `$XDG_CONFIG_HOME`) is optional.
    """
    explicit = environ.get("CORRAL_CONFIG")
    if explicit:
        return Path(explicit).expanduser(), True
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "corral" / "config.toml", False


def read_config(path: Path, required: bool) -> dict[str, object]:
    """The TOML table in `path`; `{}` when an optional file is missing."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise SettingsError(f"config file {path} (from CORRAL_CONFIG) does not exist") from None
        return {}
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None


def normalize_server(url: str) -> str:
    """`host:7070` -> `http://host:7070`; no trailing slash. SettingsError if it is no
    http(s) URL with a host."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise SettingsError(f"server {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"server {url!r} is not an http:// or https:// URL with a host")
    return url.rstrip("/")


def resolve(
    server: str | None,
    token: str | None,
    environ: Mapping[str, str],
    ca_file: str | None = None,
) -> Settings:
    """Merge flags (`server`, `token`, `ca_file`), the environment and the config file.

    The config file is read only when a flag or variable leaves something unset.
    """
    server = server or environ.get("CORRAL_SERVER") or None
    token = token or environ.get("CORRAL_TOKEN") or None
    tls = {
        "ca_file": ca_file or environ.get("CORRAL_CA_FILE") or None,
        "client_cert": environ.get("CORRAL_CLIENT_CERT") or None,
        "client_key": environ.get("CORRAL_CLIENT_KEY") or None,
    }
    https = (server or "").startswith("https://")
    if server is None or token is None or (https and None in tls.values()):
        path, required = config_path(environ)
        config = read_config(path, required)
        for key in ("server", "token", "token_file", *tls):
            if key in config and not isinstance(config[key], str):
                raise SettingsError(f"config file {path}: {key} must be a string")
        server = server or str(config.get("server") or "") or None
        token = token or str(config.get("token") or "") or None
        for key, value in tls.items():
            if value is None and config.get(key):
                tls[key] = str(Path(str(config[key])).expanduser())
        if token is None and config.get("token_file"):
            token_file = Path(str(config["token_file"])).expanduser()
            try:
                token = token_file.read_text().strip() or None
            except OSError as exc:
                raise SettingsError(
                    f"config file {path}: cannot read token_file {token_file}: {exc.strerror}"
                ) from None
    return Settings(server=normalize_server(server or DEFAULT_SERVER), token=_token(token), **tls)


def _token(token: str | None) -> str | None:
    """The token without surrounding whitespace (a pasted or `echo`ed newline); SettingsError,
    which never shows it, if anything else in it cannot go into an HTTP header."""
    token = (token or "").strip() or None
    if token is not None and not all(" " <= ch <= "~" for ch in token):
        raise SettingsError(
            "the API token (from --token, CORRAL_TOKEN or the config file) holds a control "
            "or non-ASCII character: it cannot be a corral token"
        )
    return token


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client context for an https server (verifying it against `ca_file` or the
    system's CAs); None for http."""
    if not settings.server.startswith("https://"):
        return None
    from common.tls import TLSConfigError, client_context

    try:
        return client_context(settings.ca_file, settings.client_cert, settings.client_key)
    except TLSConfigError as exc:
        raise SettingsError(str(exc)) from None
