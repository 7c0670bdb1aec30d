"""A blocking HTTP client for one log: add, prove, look up, read tiles.

The CLI's only network seam to a log. It refuses plain HTTP except to
loopback (:func:`rebuild.log.urls.check_url`), never follows redirects (a
redirect could downgrade to http or leave the log), bounds every response,
and turns every network failure into :class:`~rebuild.errors.TransportError`.
It verifies nothing: callers hand what it returns to :mod:`verify`.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from rebuild.errors import TransportError, UsageError
from rebuild.log.entry import PACKAGE_NAME
from rebuild.log.urls import check_url, client_ssl_context
from verify.errors import VerifyError
from verify.merkle import HASH_SIZE
from verify.tiles import TILE_WIDTH, Tile, encode_entry_bundle, parse_entry_bundle

MAX_CHECKPOINT: Final = 1 << 20
MAX_TILE: Final = TILE_WIDTH * (2 + 0xFFFF)  # an entry bundle at worst
MAX_JSON: Final = 4 << 20
USER_AGENT: Final = "rebuild-log-client/1"


class NotFoundError(TransportError):
    """The log answered 404 for a resource."""


class HTTPStatusError(TransportError):
    def __init__(self, message: str, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class LogClient:
    """Talks to the log whose tlog-tiles prefix is ``url``."""

    def __init__(self, url: str, ca_bundle: Path | None = None, timeout: float = 30.0) -> None:
        self.url = check_url(url, "log URL")
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._ssl: ssl.SSLContext | None = client_ssl_context(ca_bundle) if self._https else None
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> LogClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, body: bytes | None = None, limit: int = MAX_JSON
    ) -> tuple[int, str, bytes]:
        """One request; returns (status, content type, body). Retries a stale keep-alive once."""
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read(limit + 1)
                if len(data) > limit:
                    self.close()
                    raise TransportError(f"{self.url}{path}: response larger than {limit} bytes")
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, resp.getheader("Content-Type", ""), data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt == 1:
                    raise TransportError(f"{self.url}{path}: {e}", hint=self._hint()) from None
            except ssl.SSLError as e:
                self.close()
                raise TransportError(
                    f"{self.url}{path}: TLS error: {e.reason}",
                    hint="pass the log's CA bundle with --log-ca-bundle F",
                ) from None
            except ConnectionRefusedError:
                self.close()
                raise TransportError(
                    f"cannot reach the log at {self.url}: connection refused", hint=self._hint()
                ) from None
            except TimeoutError:
                self.close()
                raise TransportError(
                    f"the log at {self.url} did not answer {method} {path} within "
                    f"{self._timeout:g} s",
                    hint=self._hint(),
                ) from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise TransportError(
                    f"cannot reach the log at {self.url} ({path}): {_os_reason(e)}",
                    hint=self._hint(),
                ) from None
        raise TransportError(f"{self.url}{path}: request failed")  # pragma: no cover

    def _hint(self) -> str:
        return f"is the log running at {self.url}? (rebuild log status --log {self.url})"

    def _get(self, path: str, limit: int) -> bytes:
        status, _, data = self.request("GET", path, limit=limit)
        if status == 404:
            raise NotFoundError(f"{self.url}{path}: not found")
        if status != 200:
            raise HTTPStatusError(f"{self.url}{path}: HTTP {status}: {_snippet(data)}", status)
        return data

    def _json(self, data: bytes, path: str) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except ValueError:
            raise TransportError(f"{self.url}{path}: response is not JSON") from None
        if not isinstance(doc, dict):
            raise TransportError(f"{self.url}{path}: response is not a JSON object")
        return doc

    # --- the read API (tlog-tiles) ------------------------------------------

    def checkpoint(self) -> bytes:
        try:
            return self._get("/checkpoint", MAX_CHECKPOINT)
        except NotFoundError:
            raise NotFoundError(
                f"the log at {self.url} has published no checkpoint yet",
                hint="a log with witnesses publishes its first checkpoint once their quorum "
                f"cosigned it: rebuild log status --log {self.url}",
            ) from None

    def tile(self, tile: Tile) -> bytes:
        """A tile at exactly ``tile.width``; a partial one falls back to the full tile."""
        try:
            return self._get("/" + tile.path(), MAX_TILE)
        except NotFoundError:
            if not tile.is_partial or tile.is_entries:
                raise
        data = self._get("/" + tile.full().path(), MAX_TILE)
        return data[: tile.width * HASH_SIZE]

    def entry_bundle(self, tile: Tile) -> bytes:
        """An entry bundle at exactly ``tile.width``; a partial one falls back to the full one."""
        try:
            return self._get("/" + tile.path(), MAX_TILE)
        except NotFoundError:
            if not tile.is_partial:
                raise
        data = self._get("/" + tile.full().path(), MAX_TILE)
        return encode_entry_bundle(parse_entry_bundle(data, TILE_WIDTH)[: tile.width])

    # --- the write and lookup API ---------------------------------------------

    def add(self, entry: bytes, *, wait: bool) -> dict[str, Any]:
        path = "/add?wait=1" if wait else "/add"
        status, _, data = self.request("POST", path, body=entry)
        if status not in (200, 202):
            raise HTTPStatusError(f"{self.url}/add: HTTP {status}: {_snippet(data)}", status)
        doc = self._json(data, "/add")
        if not isinstance(doc.get("index"), int) or not isinstance(doc.get("leaf_hash"), str):
            raise TransportError(f"{self.url}/add: response lacks index and leaf_hash")
        return doc

    def proof(self, index: int) -> bytes:
        return self._get(f"/proof/{index}", MAX_CHECKPOINT * 2)

    def lookup_leaf(self, leaf: bytes) -> int | None:
        try:
            doc = self._json(self._get(f"/lookup/leaf/{leaf.hex()}", MAX_JSON), "/lookup/leaf")
        except NotFoundError:
            return None
        index = doc.get("index")
        if not isinstance(index, int) or index < 0:
            raise TransportError(f"{self.url}/lookup/leaf: response lacks an index")
        return index

    def _lookup_page(
        self, path: str, cursor: int, key_ids: Sequence[bytes] = ()
    ) -> tuple[list[int], int | None]:
        """One page of a ``/lookup/...`` answer: indexes and the next cursor (or None)."""
        query = [f"cursor={cursor}"] if cursor else []
        query += [f"keyid={k.hex()}" for k in key_ids]
        what = path.rsplit("/", 1)[0]
        doc = self._json(self._get(path + ("?" + "&".join(query) if query else ""), MAX_JSON), what)
        indexes, next_cursor = doc.get("indexes"), doc.get("next_cursor", "missing")
        if (
            not isinstance(indexes, list)
            or not all(type(i) is int and cursor <= i for i in indexes)
            or indexes != sorted(set(indexes))
        ):
            raise TransportError(f"{self.url}{what}: response lacks ascending indexes")
        if next_cursor is not None and (
            type(next_cursor) is not int or next_cursor <= max(indexes, default=cursor)
        ):
            raise TransportError(f"{self.url}{what}: bad next_cursor")
        return [int(i) for i in indexes], next_cursor

    def _lookup_all(
        self, path: str, what: str, key_ids: Sequence[bytes], max_results: int
    ) -> list[int]:
        found: list[int] = []
        cursor: int | None = 0
        while cursor is not None:
            page, cursor = self._lookup_page(path, cursor, key_ids)
            found += page
            if len(found) > max_results:
                raise TransportError(f"{self.url}: more than {max_results} entries name {what}")
        return found

    def lookup_subject_page(
        self, digest: bytes, cursor: int = 0, key_ids: Sequence[bytes] = ()
    ) -> tuple[list[int], int | None]:
        """One page of ``GET /lookup/sha256/<hex>``: indexes and the next cursor (or None)."""
        return self._lookup_page(f"/lookup/sha256/{digest.hex()}", cursor, key_ids)

    def lookup_subject(
        self, digest: bytes, key_ids: Sequence[bytes] = (), max_results: int = 100_000
    ) -> list[int]:
        """Every index of entries with this subject (following pages), at most ``max_results``."""
        path = f"/lookup/sha256/{digest.hex()}"
        return self._lookup_all(path, digest.hex(), key_ids, max_results)

    def lookup_package(self, name: str, max_results: int = 100_000) -> list[int]:
        """Indexes of statements naming package ``name`` (every version: the caller
        reads the entries to filter by version), following pages."""
        if not PACKAGE_NAME.fullmatch(name):
            raise UsageError(f"package name {name[:40]!r} has characters the log does not index")
        try:
            return self._lookup_all(f"/lookup/package/{name}", name, (), max_results)
        except NotFoundError:
            raise NotFoundError(
                f"{self.url}: this log server has no package lookup",
                hint="find the artifact's entries instead: rebuild log find --sha256 HEX",
            ) from None

    def status(self) -> dict[str, Any]:
        """The server's ``/status``: sizes, checkpoint age, witnesses, pending work."""
        doc = self._json(self._get("/status", MAX_JSON), "/status")
        for field, kind in (("origin", str), ("committed_size", int), ("published_size", int)):
            if not isinstance(doc.get(field), kind):
                raise TransportError(f"{self.url}/status: response lacks {field}")
        return doc


def _os_reason(e: Exception) -> str:
    """``Name or service not known`` rather than ``[Errno -2] Name or ...``."""
    reason = getattr(e, "strerror", None)
    return reason if isinstance(reason, str) and reason else f"{type(e).__name__}: {e}"


def _snippet(data: bytes) -> str:
    text = data[:300].decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return str(doc["error"])
    except (ValueError, VerifyError):
        pass
    return text
