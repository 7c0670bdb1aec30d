"""A certificate authority made for one demo run, and a server certificate from it.

``rebuild demo`` serves its log, witnesses and mirrors over HTTPS on
127.0.0.1. Their certificate comes from a CA generated here, at run time,
with the ``cryptography`` package: a fresh P-256 key, valid for one day,
whose certificate is written to ``ca.pem`` and trusted only by the demo's own
clients (``--log-ca-bundle``, ``--witness-ca-bundle``, ``--mirror-ca-bundle``),
never installed anywhere. The CA's private key is never written to disk: it signs the one server
certificate and is dropped.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from rebuild.fsio import atomic_write

VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class DemoTLS:
    """Where the demo's CA certificate and the servers' certificate and key are."""

    ca_bundle: Path
    cert: Path
    key: Path


def make_demo_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> DemoTLS:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` (0600) into ``directory``."""
    from cryptography import x509  # noqa: PLC0415 - only the demo needs it, only when it runs
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + VALIDITY

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rebuild demo CA (one run)")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    tls = DemoTLS(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    atomic_write(tls.ca_bundle, ca_cert.public_bytes(pem))
    atomic_write(tls.cert, cert.public_bytes(pem))
    atomic_write(
        tls.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        mode=0o600,
    )
    return tls
