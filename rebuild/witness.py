"""A C2SP tlog-witness: cosign checkpoints that extend what it saw before.

``POST /add-checkpoint`` takes ``old <size>``, consistency proof lines, an
empty line and a signed checkpoint; the witness checks the log's signature
(404 unknown origin, 403 no valid signature by a trusted key), the request
shape (400), its stored size (409, answering its size as
``text/x.tlog.size``) and the consistency proof (422), then stores the new
checkpoint durably and answers with a cosignature/v1 line (200).
``GET /<sha256(origin) hex>/checkpoint`` serves the last cosigned checkpoint.

State is one file per log in the state directory, replaced atomically
(temp file, fsync, rename, fsync dir) under a per-log lock, so the check of
the old size and the write of the new one are one compare-and-swap; a
directory lock keeps a second process off the same state. The witness never
rolls back: a stored size only ever grows, and an unreadable state file
stops the witness rather than being mistaken for "never seen this log".
Cryptographic decisions live in :mod:`verify`; this module owns HTTP and disk.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from rebuild.errors import InputError, StorageError, UsageError
from rebuild.fsio import atomic_write, read_bounded
from rebuild.httpserve import (
    ConnectionLimits,
    RunningGuarded,
    read_body,
    serve_until_signalled,
    start_guarded,
)
from verify.checkpoint import Checkpoint
from verify.checkpoint import parse as parse_checkpoint
from verify.cosignature import cosign, witness_key
from verify.errors import FormatError, ProofError, SignatureError, VerifyError
from verify.keys import ALG_ED25519, SigningKey, VerifierKey
from verify.merkle import HASH_SIZE, verify_consistency
from verify.note import open_note, split_note
from verify.parsing import decode_base64, parse_decimal

log = logging.getLogger("rebuild.witness")

MAX_BODY: Final = 64 * 1024
MAX_PROOF_LINES: Final = 63
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"
_ORIGIN_HASH = re.compile(r"[0-9a-f]{64}")


class BadRequest(Exception):
    """The request body does not follow tlog-witness (HTTP 400)."""


@dataclass(frozen=True)
class AddCheckpointRequest:
    old_size: int
    proof: tuple[bytes, ...]
    note: str


@dataclass(frozen=True)
class Stored:
    """What the witness last cosigned for one log."""

    checkpoint: Checkpoint
    note: str  # the checkpoint with the log's and this witness's signatures


def origin_hash(origin: str) -> str:
    return hashlib.sha256(origin.encode()).hexdigest()


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Parse an add-checkpoint body strictly; BadRequest on any deviation."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise BadRequest("no empty line between the proof and the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old "):
        raise BadRequest("first line must be 'old <size>'")
    old = parse_decimal(first[4:], "old size", BadRequest)
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise BadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof: list[bytes] = []
    for line in lines[1:]:
        h = decode_base64(line, "consistency proof line", BadRequest)
        if len(h) != HASH_SIZE:
            raise BadRequest("consistency proof line is not a canonical 32-byte hash")
        proof.append(h)
    return AddCheckpointRequest(old, tuple(proof), note)


class WitnessState:
    """Durable per-log state in one directory, held under an exclusive lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.logs_dir = directory / "logs"
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StorageError(f"{directory}: cannot use as witness state: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"{directory}: in use by another witness process") from None
        self._lock_fd: int | None = fd
        self._cache: dict[str, Stored | None] = {}

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def path(self, origin: str) -> Path:
        return self.logs_dir / origin_hash(origin)

    def load(self, origin: str) -> Stored | None:
        """The last cosigned checkpoint for ``origin``, or None if never cosigned.

        The file is this witness's own atomic write, so its signatures are
        not re-verified (a rotated-out log key must not brick the witness);
        its structure and origin are.
        """
        if origin in self._cache:
            return self._cache[origin]
        p = self.path(origin)
        if not p.exists():
            self._cache[origin] = None
            return None
        try:
            note = read_bounded(p, MAX_BODY * 4).decode("utf-8")
            text, _ = split_note(note)
            cp = parse_checkpoint(text)
        except (UnicodeDecodeError, VerifyError, InputError) as e:
            # Never treat damaged state as "size 0": that would let anyone
            # roll this witness back. Stop and let the operator look.
            raise StorageError(f"{p}: witness state for {origin!r} is unreadable: {e}") from None
        if cp.origin != origin:
            raise StorageError(f"{p}: holds a checkpoint for {cp.origin!r}, not {origin!r}")
        stored = Stored(cp, note)
        self._cache[origin] = stored
        return stored

    def store(self, stored: Stored) -> None:
        """Persist durably, then update the in-memory view. Caller holds the log's lock."""
        atomic_write(self.path(stored.checkpoint.origin), stored.note.encode(), mode=0o644)
        self._cache[stored.checkpoint.origin] = stored


class Witness:
    """The witness's decisions over one state directory and a set of trusted logs."""

    def __init__(
        self,
        key: SigningKey,
        logs: Iterable[VerifierKey],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.vkey = witness_key(key)
        self.state = state
        self.clock = clock
        self.logs: dict[str, list[VerifierKey]] = {}
        for k in logs:
            if k.algorithm != ALG_ED25519:
                raise UsageError(f"log key {k.name} is not an Ed25519 (0x01) note key")
            self.logs.setdefault(k.name, []).append(k)
        if not self.logs:
            raise UsageError("a witness needs at least one --log key")
        self._locks: dict[str, asyncio.Lock] = {}
        self.observer: Callable[[int], None] | None = None  # --metrics: each answer's status

    def _lock(self, origin: str) -> asyncio.Lock:
        return self._locks.setdefault(origin, asyncio.Lock())

    async def add_checkpoint(self, body: bytes) -> web.Response:
        # Step 1: request shape (400).
        try:
            req = parse_add_checkpoint(body)
            text, _ = split_note(req.note)
            cp = parse_checkpoint(text)
        except (BadRequest, FormatError) as e:
            return _text(400, f"malformed request: {e}\n")
        # Step 2: the origin must be a log we witness (404), signed by its key (403).
        keys = self.logs.get(cp.origin)
        if keys is None:
            return _text(404, "unknown log origin\n")
        try:
            opened = open_note(req.note, keys)
        except SignatureError as e:
            return _text(403, f"{e}\n")
        except FormatError as e:
            return _text(400, f"malformed checkpoint: {e}\n")
        # Step 3: an old size beyond the checkpoint is a malformed request (400);
        # a size-0 checkpoint must carry the empty tree's root (422).
        if req.old_size > cp.size:
            return _text(400, f"old size {req.old_size} is beyond checkpoint size {cp.size}\n")
        if not cp.has_valid_empty_root:
            return _text(422, "an empty tree must have the root SHA-256('')\n")
        async with self._lock(cp.origin):
            # Step 4 (compare): the old size must be exactly what we last cosigned (409).
            try:
                stored = self.state.load(cp.origin)
            except StorageError as e:
                log.error("%s", e)
                return _text(500, "witness state unavailable\n")
            have = stored.checkpoint.size if stored else 0
            if req.old_size != have:
                # Exactly "text/x.tlog.size", no charset parameter, as specified.
                return web.Response(
                    status=409, body=f"{have}\n".encode(), content_type=SIZE_CONTENT_TYPE
                )
            # Step 5: the checkpoint must extend it (422).
            problem = self._consistency_problem(req, cp, stored)
            if problem:
                log.warning("refused %s at size %d: %s", cp.origin, cp.size, problem)
                return _text(422, f"{problem}\n")
            # Step 6 (swap): cosign, persist durably, then answer.
            timestamp = max(1, int(self.clock()))
            line = cosign(cp.body(), self.key, timestamp)
            log_sigs = "".join(s.line() for s in opened.verified)
            new = Stored(cp, opened.text + "\n" + log_sigs + line)
            try:
                await asyncio.to_thread(self.state.store, new)
            except StorageError as e:
                log.error("%s", e)
                return _text(500, "could not persist the checkpoint\n")
        return _text(200, line)

    @staticmethod
    def _consistency_problem(
        req: AddCheckpointRequest, cp: Checkpoint, stored: Stored | None
    ) -> str | None:
        if req.old_size == 0:
            # The empty tree is consistent with every tree: no proof allowed.
            return "old size 0 needs an empty consistency proof" if req.proof else None
        assert stored is not None  # old_size == stored size > 0
        try:
            verify_consistency(
                req.old_size, cp.size, req.proof, stored.checkpoint.root_hash, cp.root_hash
            )
        except (ProofError, FormatError) as e:
            return f"not consistent with the cosigned size {req.old_size}: {e}"
        return None

    def get_checkpoint(self, ohash: str) -> web.Response:
        if not _ORIGIN_HASH.fullmatch(ohash):
            return _text(404, "not found\n")
        for origin in self.logs:
            if origin_hash(origin) == ohash:
                try:
                    stored = self.state.load(origin)
                except StorageError as e:
                    log.error("%s", e)
                    return _text(500, "witness state unavailable\n")
                if stored is None:
                    break
                return web.Response(
                    status=200,
                    text=stored.note,
                    content_type="text/plain",
                    charset="utf-8",
                    headers={"Cache-Control": "no-cache"},
                )
        return _text(404, "never cosigned a checkpoint for this log\n")


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain", charset="utf-8")


def make_handler(
    witness: Witness, limits: ConnectionLimits
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """Route by hand on aiohttp's low-level server (see rebuild.httpserve)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path, _, _ = request.raw_path.partition("?")
        if path == "/add-checkpoint":
            if request.method != "POST":
                return _text(405, "use POST\n")
            body = await read_body(request, MAX_BODY, limits.body_timeout)
            if body is None:
                return _text(413, f"request body larger than {MAX_BODY} bytes\n")
            response = await witness.add_checkpoint(body)
            if witness.observer is not None:
                witness.observer(response.status)
            return response
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "" and parts[2] == "checkpoint":
            if request.method not in ("GET", "HEAD"):
                return _text(405, "use GET\n")
            return witness.get_checkpoint(parts[1])
        return _text(404, "not found\n")

    return handle


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"cannot load TLS certificate {cert} / key {key}: {e}") from None
    return ctx


async def start(
    witness: Witness,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
    limits: ConnectionLimits | None = None,
) -> RunningGuarded:
    """Start serving; returns once the socket listens (port 0 picks a free one)."""
    limits = limits or ConnectionLimits()
    return await start_guarded(make_handler(witness, limits), limits, host, port, tls)


async def serve_forever(
    witness: Witness,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    on_ready: Callable[[str], None],
    *,
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down cleanly."""
    await serve_until_signalled(await start(witness, host, port, tls, limits), on_ready)
