"""Downloads from untrusted mirrors over HTTPS (aiohttp): the updater's only network seam.

Decides nothing about the bytes; it bounds how they arrive. Every request:

1. goes to an ``https://`` URL, or to plain ``http://`` only on a loopback
   address and only when the caller passed ``insecure_loopback`` (tests, the
   demo); a redirect is never followed (it could leave HTTPS or the mirror);
2. verifies the server's certificate and name against the system CA store or
   the caller's CA bundle;
3. has a connect timeout, a read timeout (between bytes) and the caller's
   overall deadline;
4. is capped in bytes: a declared Content-Length above the cap is refused
   before reading, and a body that runs past it is cut off;
5. is asked for ``identity`` encoding and never decompressed, so the cap is a
   cap on what crosses the wire and on what lands on disk.

Every failure is a :class:`MirrorError` with a short ``kind`` the update
report shows per mirror (``refused``, ``tls``, ``timeout``, ``too-large``,
``http``, ``connection``, ``deadline``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, urlsplit

from rebuild.errors import TransportError, UsageError
from rebuild.log.urls import check_url, client_ssl_context, is_loopback_host

if TYPE_CHECKING:
    import aiohttp

CHUNK: Final = 64 * 1024
USER_AGENT: Final = "rebuild-updater/1"


class MirrorError(TransportError):
    """A mirror failed, was refused, or misbehaved; ``kind`` says how.

    ``status`` is the HTTP status of an ``http`` failure (else None).
    """

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass(frozen=True)
class FetchOptions:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    ca_bundle: Path | None = None
    insecure_loopback: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.connect_timeout <= 600 or not 0 < self.read_timeout <= 600:
            raise UsageError("timeouts must be in (0, 600] seconds")


def check_mirror_url(url: str, insecure_loopback: bool, what: str = "mirror") -> str:
    """The base URL without a trailing slash, or MirrorError(refused).

    ``what`` names the peer in the message (a mirror, a tile source).
    """
    try:
        base = check_url(url, f"{what} URL")
    except UsageError as e:
        raise MirrorError("refused", str(e)) from None
    parts = urlsplit(base)
    if parts.scheme == "http":
        if not insecure_loopback:
            raise MirrorError(
                "refused",
                f"{what} {url}: plain http refused (HTTPS only; --insecure-loopback "
                "allows http to a loopback address)",
            )
        if not is_loopback_host(parts.hostname or ""):  # pragma: no cover (check_url did)
            raise MirrorError("refused", f"{what} {url}: plain http only to loopback")
    return base


def join(base: str, path: str) -> str:
    return base + "/" + quote(path, safe="/")


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    seconds: float


class MirrorSession:
    """One aiohttp client session shared by all mirrors of one update."""

    def __init__(self, options: FetchOptions, deadline: float) -> None:
        self.options = options
        self.deadline = deadline  # time.monotonic() value
        self._ssl: ssl.SSLContext = client_ssl_context(options.ca_bundle)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MirrorSession:
        import aiohttp  # noqa: PLC0415 (heavy; only commands that fetch pay for it)

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.options.connect_timeout,
                sock_read=self.options.read_timeout,
            ),
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8),
            auto_decompress=False,
            trust_env=False,  # no proxy from the environment silently in the path
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def get_bytes(self, url: str, cap: int) -> bytes:
        chunks: list[bytes] = []
        await self._get(url, cap, chunks.append)
        return b"".join(chunks)

    async def download(self, url: str, dest: Path, cap: int) -> Downloaded:
        """Stream ``url`` into a new file ``dest`` (fsynced), hashing as it arrives."""
        t0 = time.monotonic()
        digest = hashlib.sha256()
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise MirrorError("local", f"{dest}: cannot create: {e.strerror}") from None
        with os.fdopen(fd, "wb") as f:

            def sink(chunk: bytes) -> None:
                digest.update(chunk)
                f.write(chunk)

            size = await self._get(url, cap, sink)
            f.flush()
            os.fsync(f.fileno())
        return Downloaded(dest, size, digest.hexdigest(), time.monotonic() - t0)

    async def _get(self, url: str, cap: int, sink: Callable[[bytes], None]) -> int:
        import aiohttp  # noqa: PLC0415

        assert self._session is not None, "use MirrorSession as an async context manager"
        remaining = self.remaining()
        if remaining <= 0:
            raise MirrorError("deadline", f"{url}: the update's deadline passed")
        try:
            async with asyncio.timeout(remaining):
                async with self._session.get(url, allow_redirects=False) as resp:
                    if resp.status != 200:
                        raise MirrorError("http", f"{url}: HTTP {resp.status}", resp.status)
                    if resp.content_length is not None and resp.content_length > cap:
                        raise MirrorError(
                            "too-large",
                            f"{url}: declares {resp.content_length} bytes, over the {cap}-byte cap",
                        )
                    total = 0
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        total += len(chunk)
                        if total > cap:
                            raise MirrorError("too-large", f"{url}: more than the {cap}-byte cap")
                        sink(chunk)
                    return total
        except TimeoutError:
            if self.remaining() <= 0:
                raise MirrorError("deadline", f"{url}: the update's deadline passed") from None
            raise MirrorError("timeout", f"{url}: no data within the timeouts") from None
        except aiohttp.ServerTimeoutError:
            raise MirrorError(
                "timeout",
                f"{url}: timed out (connect {self.options.connect_timeout:g} s, "
                f"read {self.options.read_timeout:g} s)",
            ) from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as e:
            raise MirrorError("tls", f"{url}: TLS: {_reason(e)}") from None
        except aiohttp.ClientPayloadError as e:
            raise MirrorError("connection", f"{url}: broken response body: {e}") from None
        except (aiohttp.ClientError, OSError) as e:
            raise MirrorError("connection", f"{url}: {type(e).__name__}: {e}") from None


def _reason(e: BaseException) -> str:
    cause = getattr(e, "certificate_error", None) or getattr(e, "os_error", None) or e
    return str(getattr(cause, "reason", None) or getattr(cause, "verify_message", None) or cause)
