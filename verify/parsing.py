"""Strict pieces shared by the parsers: bounded UTF-8 TOML, exact field sets."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Set
from typing import Any

from verify.errors import FormatError


def load_toml(
    data: bytes, where: str, limit: int, error: Callable[[str], Exception]
) -> dict[str, Any]:
    """Parse at most ``limit`` bytes of UTF-8 TOML (duplicate keys are TOML errors).

    Raises ``error("<where>: ...")`` for oversized, non-UTF-8 or invalid text.
    """
    if len(data) > limit:
        raise error(f"{where}: larger than the {limit}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: not UTF-8 text (byte {e.start})") from None
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
