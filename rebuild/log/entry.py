"""What the log accepts as an entry: a bounded DSSE envelope, parsed strictly.

The log decides only that an entry *is* a well-formed DSSE envelope, by the
one strict parser the verifiers use (:meth:`verify.dsse.Envelope.parse`:
UTF-8 JSON without a BOM, no duplicate or unknown fields, no NaN, no lone
surrogates, canonical base64, 1 to 32 signatures), so the log never holds an
entry a verifier would refuse to parse. It also extracts what the lookup
index needs: when the payload is an in-toto statement, each
``subject[].digest.sha256`` (lowercase hex), the package name its predicate
names, and the key IDs named by the signatures' ``keyid`` hints
(``name+<8 hex>``). It never judges a signature: who is trusted is the
updater's business, and the log must stay a neutral append-only record; the
hints are unauthenticated and only narrow lookups.
It never raises anything but :class:`EntryError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Final

from rebuild.errors import InputError
from verify.dsse import PAYLOAD_TYPE_INTOTO, Envelope
from verify.errors import EnvelopeFormatError

# 64 KiB less one byte: tlog-tiles entry bundles prefix each entry with a
# big-endian uint16 length, so 65535 bytes is the most a bundle can hold.
MAX_ENTRY_SIZE: Final = 64 * 1024 - 1
MAX_SUBJECTS: Final = 1024
# (subject, keyid) pairs indexed per entry: an entry naming 1,024 subjects
# and 32 key IDs must not cost 32,768 index rows. A release of 256 artifacts
# signed by 4 keys fits.
MAX_KEYED_ROWS: Final = 1024
IN_TOTO_PAYLOAD_TYPE: Final = PAYLOAD_TYPE_INTOTO
KEY_ID_SIZE: Final = 4
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_KEY_ID_HEX: Final = re.compile(r"[0-9a-f]{8}")


class EntryError(InputError):
    """An entry is not a bounded, well-formed DSSE envelope."""


class EntryTooLargeError(EntryError):
    """An entry is larger than :data:`MAX_ENTRY_SIZE` (HTTP 413)."""


@dataclass(frozen=True)
class EntryInfo:
    """What the log indexes about one accepted entry."""

    subjects: tuple[bytes, ...]  # raw 32-byte sha256 subject digests, deduplicated
    keyed: tuple[bytes, ...] = ()  # keyed_subject(digest, key ID) for each pair
    package: bytes | None = None  # package_key of the predicate's package, if any

    @property
    def index_keys(self) -> tuple[bytes, ...]:
        """The lookup index's subject rows: digests, (digest, key ID) keys, package key."""
        return self.subjects + self.keyed + ((self.package,) if self.package else ())


def is_sha256_hex(text: object) -> bool:
    return isinstance(text, str) and _SHA256_HEX.fullmatch(text) is not None


def key_id_of_hint(hint: str) -> bytes | None:
    """The 4-byte C2SP key ID a DSSE ``keyid`` hint ``name+<8 hex>`` names, if any."""
    name, sep, hexid = hint.rpartition("+")
    if not sep or not name or _KEY_ID_HEX.fullmatch(hexid) is None:
        return None
    return bytes.fromhex(hexid)


def keyed_subject(digest: bytes, key_id: bytes) -> bytes:
    """The lookup index's key for "subject ``digest`` in an entry with hint ``key_id``"."""
    return hashlib.sha256(digest + key_id).digest()


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


def _subjects(payload: bytes) -> tuple[tuple[bytes, ...], bytes | None]:
    """sha256 subject digests of an in-toto statement and the key of the package its
    predicate names; ((), None) when it is not a statement.

    Parsed leniently on purpose: this only chooses lookup keys (the envelope
    itself was parsed strictly). A statement a verifier will refuse may be
    found by a lookup and is then refused by the verifier; the strict parse's
    hooks would cost ~4 us an entry on the hot path for nothing.
    """
    try:
        statement = json.loads(payload)
    except (ValueError, RecursionError):
        return (), None
    if not isinstance(statement, dict):
        return (), None
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        return (), None
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
        return tuple(found), package_key(package)
    return tuple(found), None


def check_entry(body: bytes) -> EntryInfo:
    """Accept ``body`` if it is a bounded, strictly well-formed DSSE envelope."""
    if len(body) > MAX_ENTRY_SIZE:
        raise EntryTooLargeError(f"entry is {len(body)} bytes; the limit is {MAX_ENTRY_SIZE}")
    if not body:
        raise EntryError("entry is empty")
    try:
        envelope = Envelope.parse(body)
    except EnvelopeFormatError as e:
        raise EntryError(f"not a DSSE envelope: {e}") from None
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        return EntryInfo(())
    subjects, package = _subjects(envelope.payload)
    if not subjects:
        return EntryInfo(())
    key_ids = {k: None for s in envelope.signatures if (k := key_id_of_hint(s.keyid))}
    if len(subjects) * len(key_ids) > MAX_KEYED_ROWS:
        raise EntryError(
            f"{len(subjects)} subjects signed under {len(key_ids)} key IDs: more than "
            f"{MAX_KEYED_ROWS} pairs to index"
        )
    keyed = tuple(keyed_subject(d, k) for d in subjects for k in key_ids)
    return EntryInfo(subjects, keyed, package)
