"""A small CA for corral: `corral certs init` makes it, `corral certs issue` signs certificates.

Files, all PEM, in one directory:

    ca.crt  ca.key          the CA (keep ca.key off the nodes; 0600)
    NAME.crt NAME.key       a server certificate (`--host` names and addresses in its
                            subjectAltName, serverAuth) or a client one (`--client`,
                            clientAuth; for a scheduler that sets tls_client_ca)

Keys are ECDSA P-256: small, fast to make, supported by every TLS 1.2+ peer.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CERT_DAYS = 825  # what browsers and most clients accept for a leaf certificate


class CertError(Exception):
    """A certificate cannot be made: missing CA, file already there, bad host name."""


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    if path.exists() and not force:
        raise CertError(f"{path} exists; use --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    # Backdated a little: a peer whose clock is slightly behind still accepts it.
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def init_ca(directory: Path, name: str = "corral CA", *, force: bool = False) -> Issued:
    """Make a CA in `directory` (ca.crt, ca.key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    issued = Issued(directory / "ca.crt", directory / "ca.key")
    for path in (issued.cert, issued.key):
        if path.exists() and not force:
            raise CertError(f"{path} exists; use --force to replace the CA")
    _write(issued.key, _key_pem(key), 0o600, force)
    _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
    return issued


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    except FileNotFoundError as exc:
        raise CertError(f"no CA in {directory} ({exc.filename}): run `corral certs init`") from None
    except ValueError as exc:
        raise CertError(f"the CA in {directory} cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{directory / 'ca.key'} is not an EC key made by `corral certs init`")
    return cert, key


def _san(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip().strip("[]")
        if not host:
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if any(c.isspace() or c in "/:@" for c in host):
                raise CertError(f"{host!r} is neither an IP address nor a DNS name") from None
            names.append(x509.DNSName(host))
    return names


def issue(
    directory: Path,
    name: str,
    hosts: list[str] | None = None,
    *,
    client: bool = False,
    days: int = CERT_DAYS,
    force: bool = False,
) -> Issued:
    """Sign a server certificate for `hosts` (or a client certificate) with the CA in
    `directory`; written as NAME.crt and NAME.key next to it."""
    if not name or "/" in name or name.startswith("."):
        raise CertError(f"{name!r} cannot name a certificate file")
    if name == "ca":
        raise CertError("'ca' is the CA's own name; pick another")
    sans = _san(hosts or [])
    if not client and not sans:
        raise CertError("a server certificate needs at least one --host (name or address)")
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(directory / f"{name}.crt", directory / f"{name}.key")
    for path in (issued.cert, issued.key):
        if path.exists() and not force:
            raise CertError(f"{path} exists; use --force to replace it")
    _write(issued.key, _key_pem(key), 0o600, force)
    _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
    return issued
