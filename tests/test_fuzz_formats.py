"""Fuzzing the parsers: hostile bytes may only ever produce the typed errors.

Any other exception (KeyError, TypeError, RecursionError, ...) would reach the
CLI as a traceback and, worse, means a code path nobody reasoned about.
"""

from __future__ import annotations

import base64
import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rebuild.errors import InputError
from rebuild.recipe import parse_recipe
from verify.dsse import verify_envelope
from verify.errors import FormatError, TrustError
from verify.intoto import (
    MAX_TIME,
    NORMALIZATION_RULES,
    VERDICTS,
    EnvironmentRef,
    GitSource,
    Normalization,
    RebuildPredicate,
    ReleasePredicate,
    SdistSource,
    Statement,
    Subject,
    make_statement,
    sign_statement,
    verify_statement,
)
from verify.keys import SigningKey
from verify.parsing import unsafe_character

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


# Well-formed values, built from the rules in docs/formats.md (not filtered from junk):
# text without control or invisible characters, tokens without white space either,
# lowercase hex.
_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)
_text = _text.filter(lambda t: unsafe_character(t) is None)
_LAYOUT = dict.fromkeys(map(ord, "\n\r\t"))  # the layout a recipe may hold
_token = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Z")), min_size=1, max_size=40)
_token = _token.filter(lambda t: not any(ch.isspace() for ch in t))
_token = _token.filter(lambda t: unsafe_character(t) is None)
_sha256 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_commit = st.binary(min_size=20, max_size=20).map(bytes.hex)
_recipe = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("\n\r\t"), min_size=1
)
_recipe = _recipe.filter(lambda t: unsafe_character(t.translate(_LAYOUT)) is None)
_source = st.builds(GitSource, _token, _token, _commit) | st.builds(SdistSource, _token, _sha256)
_subject = st.builds(
    Subject,
    _text.filter(
        lambda n: (
            "/" not in n and n not in (".", "..") and unicodedata.is_normalized("NFC", n)
        )  # one spelling per name
    ),
    _sha256,
)


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    if draw(st.booleans()):
        recipe = draw(_recipe)
        release = ReleasePredicate(
            draw(_token),
            draw(_token),
            draw(_source),
            recipe,
            hashlib.sha256(recipe.encode()).hexdigest(),
        )
        subjects = draw(st.lists(_subject, min_size=1, max_size=4, unique_by=lambda s: s.name))
        return make_statement(subjects, release)
    subject = draw(_subject)
    verdict = draw(st.sampled_from(VERDICTS))
    other = draw(_sha256)
    rebuilt = {"reproduced": subject.sha256, "equivalent": other, "mismatch": other}.get(verdict)
    assume(verdict not in ("equivalent", "mismatch") or rebuilt != subject.sha256)
    compared = verdict in ("equivalent", "mismatch")
    normalized = draw(_sha256)
    rules = draw(st.lists(st.sampled_from(NORMALIZATION_RULES), min_size=1, unique=True))
    canonical = tuple(r for r in NORMALIZATION_RULES if r in rules)
    started, finished = sorted(draw(st.lists(st.integers(0, MAX_TIME), min_size=2, max_size=2)))
    rebuild = RebuildPredicate(
        package=draw(_token),
        version=draw(_token),
        verdict=verdict,
        source=draw(_source),
        recipe_sha256=draw(_sha256),
        environment=EnvironmentRef(draw(_token), draw(_sha256)),
        tool_version=draw(_text),
        started_at=started,
        finished_at=finished,
        rebuilt_sha256=rebuilt,
        diff_report_sha256=draw(_sha256) if compared else None,
        normalization=(
            Normalization(canonical, normalized, normalized) if verdict == "equivalent" else None
        ),
        causes=tuple(draw(st.lists(_text, max_size=3))),
    )
    return make_statement([subject], rebuild)


@FUZZ
@given(statements())
def test_every_well_formed_statement_survives_signing_and_parsing(statement: Statement) -> None:
    assert Statement.parse(statement.to_json()) == statement
    envelope = sign_statement(statement, [KEY])
    assert verify_statement(envelope, [KEY.verifier_key()]).statement == statement


@st.composite
def respelled_envelopes(draw: st.DrawFn) -> bytes:
    """ENVELOPE spelled another valid way; none of what changes is signed.

    Field order, JSON white space, each base64 field in the standard or the
    URL-safe alphabet, padded or not, and the keyid hint kept or dropped.
    """
    doc = json.loads(ENVELOPE)

    def b64(text: str) -> str:
        out = base64.b64encode(base64.b64decode(text)).decode()
        if draw(st.booleans()):
            out = out.replace("+", "-").replace("/", "_")
        return out.rstrip("=") if draw(st.booleans()) else out

    signature = {"sig": b64(doc["signatures"][0]["sig"])}
    if draw(st.booleans()):
        signature["keyid"] = doc["signatures"][0]["keyid"]
    fields = {
        "payload": b64(doc["payload"]),
        "payloadType": doc["payloadType"],
        "signatures": [signature],
    }
    order = draw(st.permutations(list(fields)))
    return json.dumps(
        {k: fields[k] for k in order},
        indent=draw(st.sampled_from([None, 2])),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    ).encode()


@FUZZ
@given(respelled_envelopes())
def test_the_envelope_spelled_another_valid_way_verifies_to_the_same_statement(
    data: bytes,
) -> None:
    verified = verify_envelope(data, [KEY.verifier_key()])
    assert verified.payload == STATEMENT.to_json()
    assert Statement.parse(verified.payload) == STATEMENT


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
