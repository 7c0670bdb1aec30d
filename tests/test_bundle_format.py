"""rebuild-bundle/v1 parsing: strict, bounded, one encoding per bundle."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.gatesim import World, honest
from verify.bundle import MAX_BUNDLE_SIZE, MAX_DEPTH, json_depth, parse_bundle
from verify.errors import BundleFormatError

WORLD = World()
ARTIFACT, BUNDLE = honest(WORLD)
DOC = json.loads(BUNDLE)


def _mutate(change: Any) -> bytes:
    doc = json.loads(BUNDLE)
    change(doc)
    return json.dumps(doc).encode()


def test_an_honest_bundle_round_trips_byte_for_byte() -> None:
    b = parse_bundle(BUNDLE)
    assert b.encode() == BUNDLE
    assert len(b.attestations) == 3
    assert b.checkpoint_body().size == 4
    assert b.release.proof.index == 0


def test_consistency_proofs_round_trip() -> None:
    release = WORLD.release(b"v2", version="2.0.0")
    WORLD.add(release)
    data = WORLD.bundle(release, [], consistency=[WORLD.consistency(3, 5)])
    b = parse_bundle(data)
    proof = b.consistency_from(3)
    assert proof is not None and proof.old_size == 3
    assert b.consistency_from(4) is None
    assert b.encode() == data


def _set(path: list[Any], value: Any) -> Any:
    def change(doc: Any) -> None:
        for p in path[:-1]:
            doc = doc[p]
        doc[path[-1]] = value

    return change


def _delete(path: list[Any]) -> Any:
    def change(doc: Any) -> None:
        for p in path[:-1]:
            doc = doc[p]
        del doc[path[-1]]

    return change


ENV0 = DOC["attestations"][0]["envelope"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_mutate(_set(["format"], "rebuild-bundle/v2")), "format must be"),
        (_mutate(_set(["extra"], 1)), "unknown field 'extra'"),
        (_mutate(_delete(["checkpoint"])), "missing field 'checkpoint'"),
        (_mutate(_set(["release", "note"], "x")), "unknown field 'note'"),
        (_mutate(_set(["attestations"], {})), "attestations must be a list"),
        (_mutate(_set(["attestations", 0, "envelope"], 5)), "base64 string"),
        (_mutate(_set(["attestations", 0, "envelope"], "AB==")), "not canonical"),
        (_mutate(_set(["attestations", 0, "envelope"], "!!")), "not base64"),
        (_mutate(_set(["attestations", 0, "envelope"], "")), "must be 1.."),
        (_mutate(_set(["attestations", 0, "proof"], "garbage")), "attestations[0].proof"),
        (_mutate(_set(["attestations", 1], DOC["attestations"][0])), "repeats an envelope"),
        (_mutate(_set(["attestations", 0], DOC["release"])), "repeats an envelope"),
        (_mutate(_set(["checkpoint"], "not a note")), "checkpoint"),
        (_mutate(_set(["checkpoint"], None)), "signed note string"),
        (_mutate(_set(["consistency"], [{"old_size": 0, "hashes": []}])), "old_size"),
        (_mutate(_set(["consistency"], [{"old_size": True, "hashes": []}])), "old_size"),
        (_mutate(_set(["consistency"], [{"old_size": 1, "hashes": ["AAAA"]}])), "32 bytes"),
        (
            _mutate(_set(["consistency"], [{"old_size": 1, "hashes": []}] * 2)),
            "same old_size",
        ),
        (BUNDLE.replace(b'"format"', b'"format":"rebuild-bundle/v1","format"', 1), "duplicate"),
        (BUNDLE[:-20], "not valid JSON"),
        (b"\xff" + BUNDLE, "not UTF-8"),
        (b"[]", "must be an object"),
        (BUNDLE.replace(b"}\n", b', "n": NaN}\n'), "NaN"),
    ],
)
def test_malformed_bundles_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(BundleFormatError) as e:
        parse_bundle(data)
    assert message in str(e.value)
    assert e.value.code == "bundle-malformed"


def test_an_oversized_bundle_is_refused_before_parsing() -> None:
    padded = BUNDLE.rstrip(b"}\n") + b', "pad": "' + b"A" * MAX_BUNDLE_SIZE + b'"}'
    with pytest.raises(BundleFormatError) as e:
        parse_bundle(padded)
    assert e.value.code == "bundle-too-large"
    with pytest.raises(BundleFormatError) as e:
        parse_bundle(BUNDLE, limit=len(BUNDLE) - 1)
    assert e.value.code == "bundle-too-large"


def test_a_deeply_nested_bundle_is_refused_before_the_json_parser_runs() -> None:
    deep = b'{"format": "rebuild-bundle/v1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(BundleFormatError) as e:
        parse_bundle(deep)
    assert e.value.code == "bundle-too-deep"
    assert str(MAX_DEPTH) in str(e.value)


def test_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth(b'{"a": "[[[[[[[[[[[[\\"]]]]", "b": [[1]]}') == 3
    assert json_depth(BUNDLE) == 3


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_escape_as_anything_but_a_bundle_error(data: bytes) -> None:
    with contextlib.suppress(BundleFormatError):
        parse_bundle(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(BUNDLE) - 1), st.integers(0, 255))
def test_single_byte_corruption_is_refused_or_still_canonical(pos: int, value: int) -> None:
    data = bytearray(BUNDLE)
    data[pos] = value
    try:
        b = parse_bundle(bytes(data))
    except BundleFormatError:
        return
    # Whatever still parses has one encoding: re-encoding gives a bundle
    # that parses to the same value.
    assert parse_bundle(b.encode()) == b


def test_envelopes_are_kept_as_exact_bytes() -> None:
    b = parse_bundle(BUNDLE)
    assert b.attestations[0].envelope == base64.b64decode(ENV0)
