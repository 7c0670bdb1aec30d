"""The strict pieces every parser in verify/ shares, each written once.

Base64 (:func:`decode_base64`), ASCII decimals (:func:`parse_decimal`),
bounded UTF-8 TOML (:func:`load_toml`), exact field sets
(:func:`exact_fields`) and display-safe text (:func:`unsafe_character`).
Each accepts exactly one spelling of a value, so two different byte strings
never mean the same thing, and each takes the error class (or factory) its
caller's format raises, so a key, a checkpoint and a bundle report their
own :class:`~verify.errors.FormatError`. Nothing here reads files.
"""

from __future__ import annotations

import binascii
import re
import unicodedata
from collections.abc import Callable, Set
from typing import Any, Final

from verify.errors import FormatError

MAX_INT63: Final = (1 << 63) - 1
"""The largest tree size, index or timestamp any C2SP format allows."""

ErrorFactory = Callable[[str], Exception]
"""Builds the caller's error from a message (an error class is one)."""

_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # [0-9], not \d: ASCII digits only
_FROM_URLSAFE = str.maketrans("-_", "+/")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_INVALID: Final = "invalid base64 (not base64 characters or length)"
_NOT_CANONICAL: Final = "non-canonical base64 (not canonical padding or final bits)"


def decode_base64(
    text: object,
    what: str,
    error: ErrorFactory,
    *,
    urlsafe: bool = False,
    unpadded: bool = False,
) -> bytes:
    """Decode canonical base64: the one spelling that encodes these bytes.

    Standard alphabet with complete ``=`` padding by default. ``urlsafe``
    also accepts the URL-safe alphabet (not both in one string);
    ``unpadded`` also accepts the padding left off entirely (never partly).
    Refused, with ``error("<what>: ...")``: a non-string, characters outside
    the alphabet (white space included), padding that is incomplete, extra
    or after a complete group (``AAAA=``, which Go's decoders refuse too),
    and stray bits in the last character (``AB==`` for ``AA==``): the
    decoded bytes must encode back to exactly ``text``.

    Raises the caller's ``error`` (never anything else) for every refusal above.
    """
    if not isinstance(text, str):
        raise error(f"{what} must be a base64 string")
    std = text
    if urlsafe and ("-" in text or "_" in text):
        if "+" in text or "/" in text:
            raise error(f"{what}: mixes standard and URL-safe base64")
        std = text.translate(_FROM_URLSAFE)
    missing = -len(std) % 4
    if missing:
        if not unpadded or std.endswith("="):
            bad = _BASE64_TEXT.fullmatch(std) is None
            raise error(f"{what}: {_INVALID if bad else _NOT_CANONICAL}")
        std += "=" * missing
    try:
        # strict_mode refuses characters outside the alphabet and data after
        # padding; it still takes "AAAA=" and stray bits, hence the re-encode.
        raw = binascii.a2b_base64(std, strict_mode=True)
    except (binascii.Error, ValueError):
        raise error(f"{what}: {_INVALID}") from None
    if binascii.b2a_base64(raw, newline=False) != std.encode("ascii"):
        raise error(f"{what}: {_NOT_CANONICAL}")
    return raw


def parse_decimal(text: object, what: str, error: ErrorFactory, *, maximum: int = MAX_INT63) -> int:
    """An unsigned ASCII decimal in ``0..maximum`` with no sign, space or leading zero.

    ``str.isdigit`` and ``int`` alone would take other scripts' digits
    (``"١٢"``), ``"+1"``, ``" 1"``, ``"1_000"`` and ``"007"``: one number,
    many spellings. Raises ``error("<what> ...")`` for anything else.
    """
    if not isinstance(text, str) or _DECIMAL.fullmatch(text) is None:
        shown = repr(text) if isinstance(text, str) and len(text) <= 40 else "value"
        raise error(f"{what} {shown} is not a decimal number (ASCII digits, no leading zero)")
    if len(text) > len(str(maximum)) or int(text) > maximum:
        raise error(f"{what} is larger than {maximum}")
    return int(text)


# Characters that render as nothing, reorder the text around them or break
# the line: C0 and C1 controls and DEL (Cc), format characters such as the
# bidi overrides U+202A..U+202E, U+2066..U+2069, the zero-width U+200B..U+200D
# and U+FEFF (Cf), the line and paragraph separators U+2028/U+2029 (Zl, Zp)
# and lone surrogates (Cs).
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


def unsafe_character(text: str) -> str | None:
    """The first character of ``text`` that would hide or reorder what a reader sees.

    None when there is none. Only characters outside printable ASCII are
    looked up, so mostly-ASCII text costs one regular-expression scan.
    Never raises.
    """
    for m in _NOT_PRINTABLE_ASCII.finditer(text):
        if unicodedata.category(m.group()) in _UNSAFE_CATEGORIES:
            return m.group()
    return None


def load_toml(data: bytes, where: str, limit: int, error: ErrorFactory) -> dict[str, Any]:
    """Parse at most ``limit`` bytes of UTF-8 TOML (duplicate keys are TOML errors).

    Raises ``error("<where>: ...")`` for oversized, non-UTF-8 or invalid text.
    """
    if len(data) > limit:
        raise error(f"{where}: larger than the {limit}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: not UTF-8 text (byte {e.start})") from None
    import tomllib  # noqa: PLC0415  (only the policy needs it; the CLI starts without it)

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{where}: invalid TOML: {e}") from None


def exact_fields(
    doc: object,
    what: str,
    allowed: Set[str],
    required: Set[str],
    error: type[FormatError],
) -> dict[str, Any]:
    """``doc`` as a dict holding only ``allowed`` keys and every ``required`` one.

    Raises ``error`` for a non-object, or naming the first (sorted) unknown
    or missing field, so one input always gets the same message.
    """
    if not isinstance(doc, dict):
        raise error(f"{what} must be an object")
    extra = sorted(doc.keys() - allowed)
    if extra:
        raise error(f"{what}: unknown field {extra[0]!r}")
    missing = sorted(required - doc.keys())
    if missing:
        raise error(f"{what}: missing field {missing[0]!r}")
    return doc
