"""The causes vocabulary: one line per kind, shared by the CLI and the HTML report.

docs/comparison.md documents the same list; tests pin that every kind has a line.
"""

from __future__ import annotations

DESCRIPTIONS: dict[str, str] = {
    "timestamps": "entry modification times differ (zip DOS time or extended-time fields, "
    "phar entry timestamps, tar mtimes, the gzip header mtime)",
    "permissions": "file modes, external attributes or owners differ (often the umask)",
    "compression": "same content, but a different compression method, level or encoder",
    "order": "the same entries are stored in a different order",
    "content": "an entry's uncompressed bytes differ",
    "added": "an entry exists only in the actual (rebuilt) artifact",
    "removed": "an entry exists only in the expected (published) artifact",
    "metadata": "metadata differs: the phar's serialized metadata (compared as bytes, "
    "never unserialized), per-entry metadata, zip comments or unknown extra fields",
    "manifest": "the phar manifest's API version or global flags differ",
    "stub": "the phar stub (the PHP loader before __HALT_COMPILER();) differs",
    "alias": "the phar alias differs",
    "signature": "the phar signature differs in algorithm or presence, or in value with "
    "nothing else to explain it",
    "signature-invalid": "a phar's signature does not match its own bytes",
    "record-invalid": "a wheel's RECORD does not match its own entries",
    "layout": "the bytes differ only in archive structure (headers, padding, offsets)",
    "format": "an artifact could not be parsed, or the two are of different formats",
    "limit": "an artifact declares more uncompressed bytes, or a higher compression ratio, "
    "than the inflation caps allow: it was not inflated (a decompression bomb, or a "
    "limit to raise)",
}


def describe(cause: str) -> str:
    """A one-line explanation of a cause string such as ``content:pkg/mod.py``."""
    kind = cause.split(":", 1)[0]
    return DESCRIPTIONS.get(kind, "unclassified difference")
