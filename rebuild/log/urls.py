"""Which URLs a log client may talk to: HTTPS, or plain HTTP only to loopback.

Signatures make log content trustworthy; TLS stops replays and tampering in
transit, so every client (the CLI, the log's witness client) goes through
:func:`check_url` first. Plain ``http://`` is allowed only to 127.0.0.0/8,
``::1`` and ``localhost``. This module decides from the URL text alone.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from rebuild.errors import UsageError

MAX_URL_LENGTH = 2048


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str = "URL") -> str:
    """Return ``url`` without a trailing slash, or raise UsageError if unsafe."""
    if len(url) > MAX_URL_LENGTH:
        raise UsageError(f"{what} is too long")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(f"{what} {url!r} must be an https:// URL")
    if parts.username or parts.password:
        raise UsageError(f"{what} {url!r} must not carry credentials")
    if parts.query or parts.fragment:
        raise UsageError(f"{what} {url!r} must not have a query or fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise UsageError(
            f"{what} {url!r}: plain http is allowed only to a loopback address; use https"
        )
    return url.rstrip("/")


def client_ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A verifying TLS client context, trusting ``ca_bundle`` when given."""
    try:
        return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"{ca_bundle}: cannot load the CA bundle: {e}") from None


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"{cert}: cannot load the TLS certificate and key: {e}") from None
    return ctx
