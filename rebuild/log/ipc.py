"""The wire between HTTP front-end processes and the log's sequencer process.

``rebuild log serve`` can run several front-end processes that parse HTTP
and check entries in parallel, feeding one sequencer process that owns the
store, the key and the witnesses. They talk over a Unix socket pair, in
frames of ``uint32 length, uint8 kind, payload`` (big-endian). Both ends are
processes of the same server started from the same code, so this format is
private and unversioned; it is still parsed strictly and bounded, and a
malformed frame ends the connection (the front-end then exits).

Front-end to sequencer: ``ADD`` (many requests' entries in one frame),
``CALL`` (proof, lookup or size questions), ``READY``.
Sequencer to front-end: ``RESULT`` (per add request: first index or an
error status), ``REPLY``, ``STATE`` (committed and published sizes), ``STOP``.

This module only encodes and decodes; it decides nothing about entries.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator, Sequence
from typing import Final

from rebuild.errors import StorageError
from rebuild.log.store import Pending

MAX_FRAME: Final = 64 * 1024 * 1024

ADD: Final = 1
RESULT: Final = 2
CALL: Final = 3
REPLY: Final = 4
STATE: Final = 5
READY: Final = 6
STOP: Final = 7

# RESULT / REPLY statuses
OK: Final = 0
BUSY: Final = 1  # the sequencer's queue is full: HTTP 503, retry later
FAILED: Final = 2  # storage failed: HTTP 503
CLOSING: Final = 3  # the log is shutting down: HTTP 503

# CALL kinds
CALL_PROOF: Final = 1  # u64 index -> proof text, or empty when not yet covered
# 32-byte digest, u64 cursor, 4-byte key IDs -> u64 next cursor (NO_CURSOR: none), indexes
CALL_LOOKUP_SUBJECT: Final = 2
CALL_LOOKUP_LEAF: Final = 3  # 32-byte leaf hash -> u64 index, or empty
CALL_SIZE: Final = 4  # -> u64 committed size
CALL_STATUS: Final = 5  # -> the sequencer's status, JSON

NO_CURSOR: Final = (1 << 64) - 1

_HEAD = struct.Struct(">IB")
_REQ = struct.Struct(">IH")  # request id, entry count
_ENTRY = struct.Struct(">I32sH")  # data length, leaf hash, subject count
_RESULT = struct.Struct(">IBQ")  # request id, status, first index
_CALL = struct.Struct(">IB")  # request id, kind (argument follows)
_STATE = struct.Struct(">Qq")  # committed size, published size (-1: none yet)


class IpcError(StorageError):
    """The other process sent something malformed, or went away."""


def frame(kind: int, payload: bytes | bytearray = b"") -> bytes:
    return _HEAD.pack(len(payload) + 1, kind) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame; raises IpcError on EOF or a malformed length."""
    try:
        head = await reader.readexactly(_HEAD.size)
        length, kind = _HEAD.unpack(head)
        if not 1 <= length <= MAX_FRAME:
            raise IpcError(f"frame length {length} out of range")
        return kind, await reader.readexactly(length - 1)
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        raise IpcError(f"peer went away: {e}") from None


def encode_add(request_id: int, entries: Sequence[Pending]) -> bytes:
    """One request's entries (an ADD frame holds any number of these back to back)."""
    parts = [_REQ.pack(request_id, len(entries))]
    for p in entries:
        parts.append(_ENTRY.pack(len(p.data), p.leaf, len(p.subjects)))
        parts.extend(p.subjects)
        parts.append(p.data)
    return b"".join(parts)


def decode_add(payload: bytes) -> Iterator[tuple[int, list[Pending]]]:
    """(request id, entries) for each request in an ADD payload."""
    view = memoryview(payload)
    pos, end = 0, len(payload)
    try:
        while pos < end:
            request_id, count = _REQ.unpack_from(view, pos)
            pos += _REQ.size
            entries: list[Pending] = []
            for _ in range(count):
                n, leaf, n_subjects = _ENTRY.unpack_from(view, pos)
                pos += _ENTRY.size
                subjects = tuple(
                    bytes(view[pos + 32 * i : pos + 32 * (i + 1)]) for i in range(n_subjects)
                )
                pos += 32 * n_subjects
                data = bytes(view[pos : pos + n])
                pos += n
                if pos > end:
                    raise IpcError("ADD frame truncated")
                entries.append(Pending(data, leaf, subjects))
            yield request_id, entries
    except struct.error:
        raise IpcError("ADD frame truncated") from None


def encode_result(request_id: int, status: int, first_index: int = 0) -> bytes:
    return _RESULT.pack(request_id, status, first_index)


def decode_results(payload: bytes) -> Iterator[tuple[int, int, int]]:
    if len(payload) % _RESULT.size:
        raise IpcError("RESULT frame has a partial record")
    return (r for r in _RESULT.iter_unpack(payload))


def encode_call(request_id: int, kind: int, argument: bytes) -> bytes:
    return _CALL.pack(request_id, kind) + argument


def decode_call(payload: bytes) -> tuple[int, int, bytes]:
    if len(payload) < _CALL.size:
        raise IpcError("CALL frame truncated")
    request_id, kind = _CALL.unpack_from(payload)
    return request_id, kind, payload[_CALL.size :]


def encode_reply(request_id: int, status: int, body: bytes) -> bytes:
    return _CALL.pack(request_id, status) + body


decode_reply = decode_call


def encode_u64s(values: Sequence[int]) -> bytes:
    return struct.pack(f">{len(values)}Q", *values)


def decode_u64s(data: bytes) -> list[int]:
    if len(data) % 8:
        raise IpcError("integer list has a partial value")
    return list(struct.unpack(f">{len(data) // 8}Q", data))


def encode_state(committed: int, published: int) -> bytes:
    return _STATE.pack(committed, published)


def decode_state(payload: bytes) -> tuple[int, int]:
    if len(payload) != _STATE.size:
        raise IpcError("STATE frame has the wrong length")
    committed, published = _STATE.unpack(payload)
    return int(committed), int(published)


def encode_lookup(digest: bytes, cursor: int, key_ids: Sequence[bytes]) -> bytes:
    return digest + struct.pack(">Q", cursor) + b"".join(key_ids)


def decode_lookup(argument: bytes) -> tuple[bytes, int, list[bytes]]:
    if len(argument) < 40 or (len(argument) - 40) % 4:
        raise IpcError("lookup call has the wrong length")
    (cursor,) = struct.unpack_from(">Q", argument, 32)
    key_ids = [argument[i : i + 4] for i in range(40, len(argument), 4)]
    return argument[:32], int(cursor), key_ids


def encode_page(indexes: Sequence[int], next_cursor: int | None) -> bytes:
    return encode_u64s([NO_CURSOR if next_cursor is None else next_cursor, *indexes])


def decode_page(data: bytes) -> tuple[list[int], int | None]:
    values = decode_u64s(data)
    if not values:
        raise IpcError("lookup reply is empty")
    return values[1:], None if values[0] == NO_CURSOR else values[0]
