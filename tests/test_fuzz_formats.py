"""Fuzzing the parsers: hostile bytes may only ever produce the typed errors.

Any other exception (KeyError, TypeError, RecursionError, ...) would reach the
CLI as a traceback and, worse, means a code path nobody reasoned about.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebuild.errors import InputError
from rebuild.recipe import parse_recipe
from verify.dsse import verify_envelope
from verify.errors import FormatError, TrustError
from verify.intoto import (
    GitSource,
    ReleasePredicate,
    Statement,
    Subject,
    make_statement,
    sign_statement,
)
from verify.keys import SigningKey

KEY = SigningKey("fuzz.example", b"\x05" * 32)
RECIPE_TEXT = '[package]\nname = "x"\n'
STATEMENT = make_statement(
    [Subject("a.phar", "a" * 64)],
    ReleasePredicate(
        "x",
        "1",
        GitSource("https://git.example.org/x", "v1", "0" * 40),
        RECIPE_TEXT,
        hashlib.sha256(RECIPE_TEXT.encode()).hexdigest(),
    ),
)
ENVELOPE = sign_statement(STATEMENT, [KEY])
RECIPE_FILE = Path(__file__).resolve().parent.parent / "fixtures/recipes/hello-phar.recipe.toml"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
# Enough to shake out untyped exceptions while keeping the suite fast on 2 cores.
FUZZ = settings(max_examples=100, deadline=None)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(doc)]


STATEMENT_DOC = json.loads(STATEMENT.to_json())
STATEMENT_PATHS = _paths(STATEMENT_DOC)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_never_verify_and_fail_only_with_typed_errors(data: bytes) -> None:
    with pytest.raises((FormatError, TrustError)):
        verify_envelope(data, [KEY.verifier_key()])


@FUZZ
@given(st.integers(0, len(ENVELOPE) - 1), st.integers(0, 255))
def test_one_flipped_byte_in_a_signed_envelope_never_verifies(index: int, value: int) -> None:
    mutated = bytearray(ENVELOPE)
    if mutated[index] == value:
        return
    mutated[index] = value
    try:
        verified = verify_envelope(bytes(mutated), [KEY.verifier_key()])
    except (FormatError, TrustError):
        return
    # Only changes outside the signed bytes (e.g. the keyid hint) may survive.
    assert verified.payload == STATEMENT.to_json()


@FUZZ
@given(st.sampled_from(STATEMENT_PATHS), json_values)
def test_any_field_of_a_statement_replaced_by_junk_is_only_a_format_error(
    path: tuple[Any, ...], junk: Any
) -> None:
    data = json.dumps(_replace(STATEMENT_DOC, path, junk)).encode()
    try:
        parsed = Statement.parse(data)
    except FormatError:
        return
    # Junk that happens to be valid must survive a round trip unchanged.
    assert Statement.parse(parsed.to_json()) == parsed


@FUZZ
@given(st.integers(0, len(RECIPE_FILE.read_bytes()) - 1), st.binary(min_size=1, max_size=4))
def test_recipe_with_corrupted_bytes_is_only_an_input_error(index: int, junk: bytes) -> None:
    data = bytearray(RECIPE_FILE.read_bytes())
    data[index : index + len(junk)] = junk
    try:
        recipe = parse_recipe(bytes(data), "fuzz.toml")
    except InputError as e:
        assert str(e).startswith("fuzz.toml: ")
        assert "\n" not in str(e)
    else:
        assert recipe.sha256 == hashlib.sha256(bytes(data)).hexdigest()
