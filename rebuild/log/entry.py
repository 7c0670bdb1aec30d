"""What the log accepts as an entry: a bounded DSSE envelope, structurally.

The log decides only that an entry *looks like* a DSSE envelope (a JSON
object with a string ``payloadType``, a base64 ``payload`` and a non-empty
``signatures`` list) and, when the payload is an in-toto statement, which
sha256 subject digests (and which package name) to index. It never judges a
signature: who is trusted
is the updater's business, and the log must stay a neutral append-only
record. It never raises anything but :class:`EntryError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from rebuild.errors import InputError

# 64 KiB less one byte: tlog-tiles entry bundles prefix each entry with a
# big-endian uint16 length, so 65535 bytes is the most a bundle can hold.
MAX_ENTRY_SIZE: Final = 64 * 1024 - 1
MAX_SIGNATURES: Final = 64
MAX_SUBJECTS: Final = 1024
IN_TOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


class EntryError(InputError):
    """An entry is not a bounded, well-formed DSSE envelope."""


class EntryTooLargeError(EntryError):
    """An entry is larger than :data:`MAX_ENTRY_SIZE` (HTTP 413)."""


@dataclass(frozen=True)
class EntryInfo:
    """What the log indexes about one accepted entry."""

    # raw 32-byte sha256 subject digests and the package key, deduplicated
    subjects: tuple[bytes, ...]


def is_sha256_hex(text: object) -> bool:
    return isinstance(text, str) and _SHA256_HEX.fullmatch(text) is not None


def _b64(text: str, what: str) -> bytes:
    """Standard or URL-safe base64, padding optional (DSSE allows both), strictly."""
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise EntryError(f"{what} is not base64") from None


_PACKAGE_KEY_DOMAIN: Final = b"rebuild log package index v1\x00"
_PACKAGE_SEPARATORS: Final = re.compile(r"[-_.]+")
PACKAGE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,199}")


def package_key(name: str) -> bytes:
    """The index key of a package name (``rebuild log find --package``).

    Names are compared the way Python's package index compares them
    (case-insensitive, runs of ``-_.`` equal), which is harmless for other
    ecosystems. Domain-separated: no artifact digest can collide with it.
    """
    normalized = _PACKAGE_SEPARATORS.sub("-", name).lower()
    return hashlib.sha256(_PACKAGE_KEY_DOMAIN + normalized.encode()).digest()


def _subjects(payload: bytes) -> tuple[bytes, ...]:
    """sha256 subject digests of an in-toto statement, and the key of the package its
    predicate names; () when it is not a statement."""
    try:
        statement = json.loads(payload)
    except (ValueError, RecursionError):
        return ()
    if not isinstance(statement, dict):
        return ()
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        return ()
    if len(subjects) > MAX_SUBJECTS:
        raise EntryError(f"in-toto statement has more than {MAX_SUBJECTS} subjects")
    found: dict[bytes, None] = {}
    for s in subjects:
        digest = s.get("digest") if isinstance(s, dict) else None
        hexd = digest.get("sha256") if isinstance(digest, dict) else None
        if is_sha256_hex(hexd):
            assert isinstance(hexd, str)
            found[bytes.fromhex(hexd)] = None
    predicate = statement.get("predicate")
    package = predicate.get("package") if isinstance(predicate, dict) else None
    if found and isinstance(package, str) and PACKAGE_NAME.fullmatch(package):
        found[package_key(package)] = None
    return tuple(found)


def check_entry(body: bytes) -> EntryInfo:
    """Accept ``body`` if it is a bounded DSSE envelope; return what to index."""
    if len(body) > MAX_ENTRY_SIZE:
        raise EntryTooLargeError(f"entry is {len(body)} bytes; the limit is {MAX_ENTRY_SIZE}")
    if not body:
        raise EntryError("entry is empty")
    try:
        doc: Any = json.loads(body)
    except UnicodeDecodeError:
        raise EntryError("entry is not UTF-8 JSON") from None
    except (ValueError, RecursionError):
        raise EntryError("entry is not JSON") from None
    if not isinstance(doc, dict):
        raise EntryError("entry is not a JSON object (a DSSE envelope)")
    payload_type, payload, sigs = doc.get("payloadType"), doc.get("payload"), doc.get("signatures")
    if not isinstance(payload_type, str) or not payload_type:
        raise EntryError("DSSE envelope lacks a payloadType string")
    if not isinstance(payload, str):
        raise EntryError("DSSE envelope lacks a payload string")
    if not isinstance(sigs, list) or not sigs:
        raise EntryError("DSSE envelope has no signatures")
    if len(sigs) > MAX_SIGNATURES:
        raise EntryError(f"DSSE envelope has more than {MAX_SIGNATURES} signatures")
    for sig in sigs:
        if not isinstance(sig, dict) or not isinstance(sig.get("sig"), str) or not sig["sig"]:
            raise EntryError("DSSE signature entries must be objects with a 'sig' string")
        keyid = sig.get("keyid", "")
        if not isinstance(keyid, str):
            raise EntryError("DSSE signature 'keyid' must be a string")
        _b64(sig["sig"], "DSSE signature")
    raw = _b64(payload, "DSSE payload")
    subjects = _subjects(raw) if payload_type == IN_TOTO_PAYLOAD_TYPE else ()
    return EntryInfo(subjects)
