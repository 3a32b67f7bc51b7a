"""Certificates from `corral certs`, the plain-HTTP rule, and the agent's join prerequisites."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.config import AgentConfig
from agent.credentials import CredentialStore
from agent.security import check_transport, join_token
from common.config import ConfigError, load_config
from common.tls import client_context, is_loopback, plain_http_problem, server_context
from scheduler import certs
from scheduler.config import SchedulerConfig
from scheduler.controlplane import JOIN_TOKEN_PREFIX, new_join_token
from scheduler.controlplane import join_token as scheduler_join_token
from scheduler.nodeauth import node_of
from scheduler.transport import listener


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a server certificate for 127.0.0.1/localhost and a client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    certs.init_ca(directory)
    certs.issue(directory, "server", ["127.0.0.1", "localhost"])
    certs.issue(directory, "client", client=True)
    return directory


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_and_certificates(pki: Path) -> None:
    """The CA signs both; server has SANs and serverAuth, client has clientAuth; keys 0600."""
    ca, server, client = (load(pki / f"{n}.crt") for n in ("ca", "server", "client"))
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for key in ("ca.key", "server.key", "client.key"):
        assert (pki / key).stat().st_mode & 0o777 == 0o600


def test_certs_refusals(tmp_path: Path, pki: Path) -> None:
    """No overwrite without force; no CA; no host for a server; bad names."""
    with pytest.raises(certs.CertError, match="exists"):
        certs.init_ca(pki)
    with pytest.raises(certs.CertError, match="exists"):
        certs.issue(pki, "server", ["127.0.0.1"])
    with pytest.raises(certs.CertError, match="corral certs init"):
        certs.issue(tmp_path, "x", ["h"])
    with pytest.raises(certs.CertError, match="--host"):
        certs.issue(pki, "nohost")
    with pytest.raises(certs.CertError, match="neither"):
        certs.issue(pki, "bad", ["http://x/"])
    for name in ("ca", "../up", ".hidden", ""):
        with pytest.raises(certs.CertError):
            certs.issue(pki, name, ["h"])
    certs.issue(pki, "server", ["10.0.0.1"], force=True)  # force replaces it
    certs.issue(pki, "server", ["127.0.0.1", "localhost"], force=True)


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> bytes:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(5))
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=host
        )
        writer.write(b"hello")
        data = await reader.read(5)
        writer.close()
        return data
    finally:
        srv.close()


async def test_contexts_verify_the_peer(pki: Path, tmp_path: Path) -> None:
    """The right CA connects; another CA, another host name, or a missing client
    certificate (when the server asks for one) fail the handshake."""
    server = server_context(str(pki / "server.crt"), str(pki / "server.key"))
    assert await _handshake(server, client_context(str(pki / "ca.crt")), "localhost") == b"hello"
    other = tmp_path / "other"
    certs.init_ca(other)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server, client_context(str(other / "ca.crt")), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server, client_context(str(pki / "ca.crt")), "elsewhere.example")
    mutual = server_context(str(pki / "server.crt"), str(pki / "server.key"), str(pki / "ca.crt"))
    with_cert = client_context(
        str(pki / "ca.crt"), str(pki / "client.crt"), str(pki / "client.key")
    )
    assert await _handshake(mutual, with_cert, "localhost") == b"hello"
    # With TLS 1.3 the server checks the client's certificate after the client thinks the
    # handshake is done: the refusal shows as an alert or an end of stream on the read.
    try:
        data = await _handshake(mutual, client_context(str(pki / "ca.crt")), "localhost")
    except (ssl.SSLError, ConnectionError):
        data = b""
    assert data == b""


def test_loopback_rule() -> None:
    """Plain HTTP is fine on loopback only."""
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "10.0.0.1", "::", "example.com", "localhost.example.com", ""):
        assert not is_loopback(host), host
    assert plain_http_problem("http://127.0.0.1:7070") is None
    assert plain_http_problem("https://10.0.0.1:7070") is None
    assert plain_http_problem("http://10.0.0.1:7070")
    assert plain_http_problem("10.0.0.1:7070")


def test_scheduler_listener(pki: Path) -> None:
    """Off loopback without TLS the scheduler refuses to start unless allowed (then warns)."""
    assert listener(SchedulerConfig(listen="127.0.0.1:0")) == (None, None)
    with pytest.raises(ConfigError, match="allow_insecure_http"):
        listener(SchedulerConfig(listen="0.0.0.0:7070"))
    ctx, warning = listener(SchedulerConfig(listen="0.0.0.0:7070", allow_insecure_http=True))
    assert ctx is None and warning and "not loopback" in warning
    tls = SchedulerConfig(
        listen="0.0.0.0:7070", tls_cert=str(pki / "server.crt"), tls_key=str(pki / "server.key")
    )
    ctx, warning = listener(tls)
    assert isinstance(ctx, ssl.SSLContext) and warning is None
    with pytest.raises(ConfigError, match="tls_cert"):
        listener(tls.model_copy(update={"tls_key": str(pki / "missing.key")}))
    with pytest.raises(ValueError, match="go together"):
        SchedulerConfig(tls_cert="a")
    with pytest.raises(ValueError, match="needs tls_cert"):
        SchedulerConfig(tls_client_ca="a")


def test_agent_transport_and_token(tmp_path: Path, pki: Path) -> None:
    """The agent: https or loopback; a join token unless it holds a credential."""
    base = {"state_dir": str(tmp_path), "node_name": "n1"}
    assert check_transport(AgentConfig(**base, server="http://127.0.0.1:7070")) is None
    with pytest.raises(ConfigError, match="allow_insecure_http"):
        check_transport(AgentConfig(**base, server="http://10.0.0.1:7070"))
    warning = check_transport(
        AgentConfig(**base, server="http://10.0.0.1:7070", allow_insecure_http=True)
    )
    assert warning and "allowed" in warning
    ok = AgentConfig(**base, server="https://10.0.0.1:7070", ca_file=str(pki / "ca.crt"))
    assert check_transport(ok) is None
    with pytest.raises(ConfigError, match="ca_file"):
        check_transport(ok.model_copy(update={"ca_file": str(tmp_path / "nope.crt")}))

    with pytest.raises(ConfigError, match="join token is required"):
        join_token(AgentConfig(**base))
    assert join_token(AgentConfig(**base, join_token="j")) == "j"
    store = CredentialStore(tmp_path)
    store.save("corralnode_n1_secret")
    assert (tmp_path / "node-credential").stat().st_mode & 0o777 == 0o600
    assert store.load() == "corralnode_n1_secret"
    assert join_token(AgentConfig(**base)) is None  # joined before: the credential suffices
    store.forget()
    assert store.load() is None


def test_credential_format() -> None:
    """A node credential names its node; anything else names none."""
    assert node_of("corralnode_node-a.example_s3cr_et") == "node-a.example"
    for token in ("corral_abc_def", "corralnode_", "corralnode_n1", "corralnode__x", "x"):
        assert node_of(token) is None, token


def test_cli_tls_settings(tmp_path: Path, pki: Path) -> None:
    """--ca-file > CORRAL_CA_FILE > config `ca_file`; client certificate from env or config;
    an https server gets a verifying context, an http one none; a bad CA file is an error."""
    from scheduler.cli.settings import SettingsError, resolve, ssl_context

    config = tmp_path / "config.toml"
    config.write_text(
        f'server = "https://127.0.0.1:7443"\nca_file = "{pki / "ca.crt"}"\n'
        f'client_cert = "{pki / "client.crt"}"\nclient_key = "{pki / "client.key"}"\n'
    )
    env = {"CORRAL_CONFIG": str(config)}
    settings = resolve(None, "t", env)
    assert settings.ca_file == str(pki / "ca.crt")
    assert settings.client_cert == str(pki / "client.crt")
    ctx = ssl_context(settings)
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert resolve(None, "t", {**env, "CORRAL_CA_FILE": "/env.crt"}).ca_file == "/env.crt"
    assert resolve(None, "t", {**env, "CORRAL_CA_FILE": "/env.crt"}, "/flag.crt").ca_file == (
        "/flag.crt"
    )
    assert ssl_context(resolve("http://127.0.0.1:1", "t", env)) is None
    with pytest.raises(SettingsError, match="ca_file"):
        ssl_context(resolve("https://x:1", "t", {"HOME": str(tmp_path)}, str(tmp_path / "no")))


def test_a_generated_join_token_passes_as_a_command_line_value(tmp_path: Path) -> None:
    """The scheduler's generated join token is kept in STATE_DIR/join-token and always
    parses as the value of `--join-token` (a bare urlsafe token began with '-' one time in
    64, which argparse took for an option)."""
    config = SchedulerConfig(state_dir=str(tmp_path))
    token = scheduler_join_token(config)
    assert token.startswith(JOIN_TOKEN_PREFIX) and len(token) > len(JOIN_TOKEN_PREFIX) + 40
    assert scheduler_join_token(config) == token  # generated once, then read back
    assert (tmp_path / "join-token").stat().st_mode & 0o777 == 0o600
    for token in [new_join_token() for _ in range(300)]:
        argv = ["--node-name", "n1", "--join-token", token]
        config_ = load_config(AgentConfig, argv, prog="a", description="", env_prefix="X_")
        assert config_.join_token == token


def test_a_stored_join_token_that_starts_with_a_dash_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Generated before the prefix: kept (agents may be configured with it), and the
    operator is told how to pass it."""
    (tmp_path / "join-token").write_text("-old-token\n")
    with caplog.at_level("WARNING", logger="scheduler.controlplane"):
        assert scheduler_join_token(SchedulerConfig(state_dir=str(tmp_path))) == "-old-token"
    assert "--join-token=TOKEN" in caplog.text
    caplog.clear()
    (tmp_path / "join-token").write_text("corraljoin_fine\n")
    with caplog.at_level("WARNING", logger="scheduler.controlplane"):
        assert scheduler_join_token(SchedulerConfig(state_dir=str(tmp_path))) == "corraljoin_fine"
    assert not caplog.text
