"""The gateway's self-signed TLS certificate: made once, kept in the state directory, pinned
by its SHA-256 fingerprint (setup codes carry it as `tlsSha256`, mDNS as `gatewayTlsSha256`).

Clients pin the fingerprint rather than trust a CA, so the names in the certificate matter
little: a certificate made while on another network (other LAN addresses) is kept, because
a new one would break every phone that pinned the old fingerprint.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from moltis_desktop.core.atomic import atomic_write_bytes
from moltis_desktop.core.paths import private_dir

_LOGGER = logging.getLogger(__name__)

TLS_DIR = "tls"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
COMMON_NAME = "Moltis Desktop"
VALIDITY_DAYS = 3650
"""About ten years: phones pin the fingerprint, so a renewal means pairing them again."""
_RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsMaterial:
    """The certificate and key files in use, and the certificate's fingerprint."""

    cert_path: Path
    key_path: Path
    fingerprint_sha256: str
    """Lowercase hex SHA-256 of the certificate's DER bytes, without colons."""


class _UnusableCertificateError(Exception):
    """The stored certificate cannot be used (the message says why)."""


def certificate_fingerprint(der: bytes) -> str:
    """The pin of a certificate: lowercase hex SHA-256 of its DER bytes, no colons."""
    return hashlib.sha256(der).hexdigest()


def tls_paths(state_dir: Path) -> tuple[Path, Path]:
    """Where the certificate and its key are kept: `<state_dir>/tls/cert.pem`, `key.pem`."""
    directory = Path(state_dir) / TLS_DIR
    return directory / CERT_FILE, directory / KEY_FILE


def read_fingerprint(state_dir: Path) -> str | None:
    """The fingerprint of the stored certificate, or None when there is none (yet). For
    clients on this machine that want to pin the local gateway."""
    cert_path, _ = tls_paths(state_dir)
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return None
    return certificate_fingerprint(cert.public_bytes(Encoding.DER))


def load_or_create_certificate(state_dir: Path) -> TlsMaterial:
    """The certificate kept in `<state_dir>/tls/`, made (self-signed) when there is none.

    A certificate that cannot be read, does not match its key, or is about to expire is
    replaced, with a warning: clients that pinned it must be paired again.
    """
    cert_path, key_path = tls_paths(state_dir)
    if cert_path.exists() or key_path.exists():
        try:
            return _load(cert_path, key_path)
        except _UnusableCertificateError as exc:
            _LOGGER.warning(
                "the TLS certificate in %s cannot be used (%s); making a new one. Phones "
                "that pinned the old one must scan a new setup code",
                cert_path.parent,
                exc,
            )
    return _create(cert_path, key_path)


def _load(cert_path: Path, key_path: Path) -> TlsMaterial:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise _UnusableCertificateError(str(exc) or type(exc).__name__) from None
    spki = PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(Encoding.DER, spki) != key.public_key().public_bytes(
        Encoding.DER, spki
    ):
        raise _UnusableCertificateError("the key does not belong to the certificate")
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc - _RENEW_BEFORE < now:
        raise _UnusableCertificateError(f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}")
    if key_path.stat().st_mode & 0o077:
        key_path.chmod(0o600)  # a key readable by others is fixed, not replaced
    return TlsMaterial(
        cert_path, key_path, certificate_fingerprint(cert.public_bytes(Encoding.DER))
    )


def _subject_names() -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the certificate is made out to."""
    from moltis_desktop.pairing.setupcode import lan_addresses

    names = ["localhost"]
    host = socket.gethostname().strip().rstrip(".")
    if host:
        short = host.split(".")[0]
        names += [host, short, f"{short}.local"]
    try:
        addresses = ["127.0.0.1", "::1", *lan_addresses()]
    except Exception as exc:  # no interface list (odd platforms): loopback still works
        _LOGGER.debug("no LAN addresses for the TLS certificate: %s", exc)
        addresses = ["127.0.0.1", "::1"]
    return list(dict.fromkeys(n for n in names if n)), list(dict.fromkeys(addresses))


def _create(cert_path: Path, key_path: Path) -> TlsMaterial:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    dns_names, addresses = _subject_names()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # clocks of phones drift
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    private_dir(cert_path.parent)
    # The key first: a crash in between leaves a key without a certificate, which the next
    # start replaces, never a certificate whose key is lost.
    atomic_write_bytes(key_path, key_pem, mode=0o600)
    atomic_write_bytes(cert_path, cert.public_bytes(Encoding.PEM), mode=0o644)
    fingerprint = certificate_fingerprint(cert.public_bytes(Encoding.DER))
    _LOGGER.info("made a self-signed TLS certificate (SHA-256 %s) in %s", fingerprint, cert_path)
    return TlsMaterial(cert_path, key_path, fingerprint)


def ssl_context(material: TlsMaterial) -> ssl.SSLContext:
    """A server-side context serving the certificate, TLS 1.2 or newer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(material.cert_path, material.key_path)
    return context
