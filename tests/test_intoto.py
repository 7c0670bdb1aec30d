"""in-toto statements with the release and rebuild predicates: strict, bounded, self-consistent."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from verify.errors import EnvelopeFormatError, SignatureError
from verify.intoto import (
    REBUILD_PREDICATE_TYPE,
    RELEASE_PREDICATE_TYPE,
    STATEMENT_TYPE,
    EnvironmentRef,
    GitSource,
    Normalization,
    RebuildPredicate,
    ReleasePredicate,
    SdistSource,
    Statement,
    Subject,
    make_statement,
    parse_time,
    sign_statement,
    verify_statement,
)
from verify.keys import SigningKey

RECIPE = '[package]\nname = "hello"\nversion = "1.0.0"\n'
RECIPE_SHA = hashlib.sha256(RECIPE.encode()).hexdigest()
ART = "a" * 64
OTHER = "b" * 64
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GIT = GitSource("https://git.example.org/hello.git", "v1.0.0", COMMIT)
ENV = EnvironmentRef("debian-bookworm-php", "c" * 64)
MAINTAINER = SigningKey("maintainer.example", b"\x11" * 32)
REBUILDER = SigningKey("rebuilder.example", b"\x22" * 32)


NORM = Normalization(("zip-entry-times",), "e" * 64, "e" * 64)


def equivalent() -> RebuildPredicate:
    return rebuild(
        verdict="equivalent",
        rebuilt_sha256=OTHER,
        diff_report_sha256="d" * 64,
        normalization=NORM,
        causes=("timestamps",),
    )


def release() -> Statement:
    return make_statement(
        [Subject("hello-1.0.0.phar", ART)],
        ReleasePredicate("hello", "1.0.0", GIT, RECIPE, RECIPE_SHA),
    )


def rebuild(**changes: Any) -> RebuildPredicate:
    base = RebuildPredicate(
        package="hello",
        version="1.0.0",
        verdict="reproduced",
        source=GIT,
        recipe_sha256=RECIPE_SHA,
        environment=ENV,
        tool_version="rebuild/0.1.0",
        started_at=1_790_000_000,
        finished_at=1_790_000_042,
        rebuilt_sha256=ART,
    )
    return dataclasses.replace(base, **changes)


def test_release_statement_round_trips_and_has_the_documented_shape() -> None:
    st = release()
    doc = json.loads(st.to_json())
    assert doc["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == RELEASE_PREDICATE_TYPE
    assert doc["subject"] == [{"name": "hello-1.0.0.phar", "digest": {"sha256": ART}}]
    assert doc["predicate"]["source"] == {"git": GIT.url, "tag": "v1.0.0", "commit": COMMIT}
    assert doc["predicate"]["recipe"] == {"content": RECIPE, "digest": {"sha256": RECIPE_SHA}}
    assert Statement.parse(st.to_json()) == st


def test_rebuild_attestation_round_trips_through_a_signed_envelope() -> None:
    pred = rebuild(
        verdict="mismatch",
        rebuilt_sha256=OTHER,
        diff_report_sha256="d" * 64,
        causes=("zip timestamps differ",),
    )
    st = make_statement([Subject("hello-1.0.0.phar", ART)], pred)
    envelope = sign_statement(st, [REBUILDER])
    v = verify_statement(
        envelope, [REBUILDER.verifier_key()], predicate_type=REBUILD_PREDICATE_TYPE
    )
    assert v.statement == st
    assert v.result.signed == (REBUILDER.verifier_key(),)
    doc = json.loads(st.to_json())["predicate"]
    assert doc["startedOn"] == "2026-09-21T14:13:20Z"
    assert doc["rebuiltDigest"] == {"sha256": OTHER}
    assert doc["environment"] == {"name": ENV.name, "lockDigest": {"sha256": "c" * 64}}


def test_sdist_source_round_trips() -> None:
    src = SdistSource("https://files.example.org/hello-1.0.0.tar.gz", "e" * 64)
    st = make_statement([Subject("x.whl", ART)], rebuild(source=src))
    assert Statement.parse(st.to_json()).predicate.source == src


def test_statement_from_another_predicate_type_is_refused_when_one_is_expected() -> None:
    envelope = sign_statement(release(), [MAINTAINER])
    with pytest.raises(EnvelopeFormatError, match="expected"):
        verify_statement(
            envelope, [MAINTAINER.verifier_key()], predicate_type=REBUILD_PREDICATE_TYPE
        )


def test_statement_signed_by_someone_else_is_not_parsed_as_trusted() -> None:
    envelope = sign_statement(release(), [REBUILDER])
    doc = json.loads(envelope)
    doc["signatures"][0]["keyid"] = f"maintainer.example+{MAINTAINER.verifier_key().key_id}"
    with pytest.raises(SignatureError):
        verify_statement(json.dumps(doc).encode(), [MAINTAINER.verifier_key()])


# -- contradictions inside a rebuild attestation ---------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rebuilt_sha256": OTHER}, "differs from the subject for reproduced"),
        ({"verdict": "mismatch", "diff_report_sha256": "d" * 64}, "equals the subject"),
        (
            {"verdict": "mismatch", "rebuilt_sha256": OTHER},
            "required exactly for verdicts equivalent and mismatch",
        ),
        ({"diff_report_sha256": "d" * 64}, "required exactly for verdicts equivalent and mismatch"),
        ({"verdict": "failed"}, "must be absent for verdict failed"),
        ({"verdict": "error", "rebuilt_sha256": None, "finished_at": 1}, "before startedOn"),
        ({"rebuilt_sha256": None}, "required for verdict reproduced"),
        ({"verdict": "maybe"}, "must be one of reproduced, equivalent, mismatch, failed, error"),
        # equivalent: never bit-identical, always with its normalization and report.
        (
            {"verdict": "equivalent", "diff_report_sha256": "d" * 64, "normalization": NORM},
            "equals the subject for equivalent",
        ),
        (
            {"verdict": "equivalent", "rebuilt_sha256": OTHER, "diff_report_sha256": "d" * 64},
            "normalization: is required exactly for verdict equivalent",
        ),
        (
            {"verdict": "equivalent", "rebuilt_sha256": OTHER, "normalization": NORM},
            "required exactly for verdicts equivalent and mismatch",
        ),
        (
            {
                "verdict": "mismatch",
                "rebuilt_sha256": OTHER,
                "diff_report_sha256": "d" * 64,
                "normalization": NORM,
            },
            "normalization: is required exactly for verdict equivalent",
        ),
        ({"causes": ("x" * 201,)}, "longer than 200"),
        ({"causes": tuple(str(i) for i in range(33))}, "at most 32"),
        ({"causes": ["a list"]}, "must be a tuple"),
        ({"started_at": -1}, "Unix time"),
        ({"tool_version": "bad\x00"}, "control character"),
        ({"recipe_sha256": "A" * 64}, "lowercase hex"),
    ],
)
def test_self_contradicting_rebuild_attestation_cannot_be_built(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(EnvelopeFormatError, match=message):
        make_statement([Subject("hello-1.0.0.phar", ART)], rebuild(**changes))


def test_equivalent_attestation_round_trips_with_its_normalization() -> None:
    st = make_statement([Subject("hello-1.0.0.whl", ART)], equivalent())
    doc = json.loads(st.to_json())["predicate"]
    assert doc["verdict"] == "equivalent"
    assert doc["normalization"] == {
        "rules": ["zip-entry-times"],
        "subjectDigest": {"sha256": "e" * 64},
        "rebuiltDigest": {"sha256": "e" * 64},
    }
    assert Statement.parse(st.to_json()) == st


@pytest.mark.parametrize(
    ("rules", "subject", "rebuilt", "message"),
    [
        ((), "e" * 64, "e" * 64, "at least one rule"),
        (("zip-entry-times", "content"), "e" * 64, "e" * 64, "'content' is not one of"),
        (("zip-entry-order", "zip-entry-times"), "e" * 64, "e" * 64, "canonical order"),
        (("zip-entry-times", "zip-entry-times"), "e" * 64, "e" * 64, "canonical order"),
        (("zip-entry-times",), "e" * 64, "f" * 64, "the two normalized digests differ"),
        (("zip-entry-times",), "E" * 64, "E" * 64, "lowercase hex"),
    ],
)
def test_an_equivalence_without_equal_normalized_forms_or_known_rules_is_refused(
    rules: tuple[str, ...], subject: str, rebuilt: str, message: str
) -> None:
    with pytest.raises(EnvelopeFormatError, match=message):
        Normalization(rules, subject, rebuilt)  # type: ignore[arg-type]


def test_parsed_equivalent_with_a_tampered_normalization_is_refused() -> None:
    doc = json.loads(make_statement([Subject("w.whl", ART)], equivalent()).to_json())
    doc["predicate"]["normalization"]["rebuiltDigest"]["sha256"] = "f" * 64
    with pytest.raises(EnvelopeFormatError, match="normalized digests differ"):
        Statement.parse(json.dumps(doc).encode())
    doc["predicate"]["normalization"] = {"rules": ["zip-entry-times"]}
    with pytest.raises(EnvelopeFormatError, match="missing field"):
        Statement.parse(json.dumps(doc).encode())


def test_rebuild_attestation_is_about_exactly_one_artifact() -> None:
    with pytest.raises(EnvelopeFormatError, match="exactly one subject"):
        make_statement([Subject("a", ART), Subject("b", OTHER)], rebuild())


def test_failed_rebuild_needs_no_rebuilt_digest() -> None:
    pred = rebuild(verdict="failed", rebuilt_sha256=None, causes=("build exited 1",))
    st = make_statement([Subject("hello-1.0.0.phar", ART)], pred)
    assert "rebuiltDigest" not in json.loads(st.to_json())["predicate"]
    assert Statement.parse(st.to_json()) == st


def test_release_with_a_recipe_that_does_not_match_its_digest_is_refused() -> None:
    with pytest.raises(EnvelopeFormatError, match="does not match the recipe text"):
        ReleasePredicate("hello", "1.0.0", GIT, RECIPE + "# changed\n", RECIPE_SHA)


# -- strict parsing of hostile JSON -----------------------------------------------------


def _mutated(path: list[Any], value: Any) -> bytes:
    doc = json.loads(release().to_json())
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    elif isinstance(target, list) and path[-1] == len(target):
        target.append(value)
    else:
        target[path[-1]] = value
    return json.dumps(doc).encode()


BAD_STATEMENTS = [
    (["_type"], "https://in-toto.io/Statement/v0.1", "must be https://in-toto.io/Statement/v1"),
    (["predicateType"], "https://slsa.dev/provenance/v1", "unsupported predicate type"),
    (["subject"], [], "non-empty list"),
    (["subject", 0, "digest"], {"sha512": "a" * 128}, "missing field 'sha256'"),
    (["subject", 0, "digest", "sha1"], "a" * 40, "unknown field 'sha1'"),
    (["subject", 0, "digest", "sha256"], "A" * 64, "64 lowercase hex"),
    (["subject", 0, "name"], "../../etc/passwd", "plain file name"),
    (["subject", 0, "name"], "evil\nname", "control character"),
    (["subject", 1], {"name": "hello-1.0.0.phar", "digest": {"sha256": OTHER}}, "same artifact"),
    (["predicate", "source", "commit"], "0123456", "40-hex"),
    (["predicate", "source", "tag"], "v1 .0", "white space"),
    (["predicate", "source", "sdist"], "x", "unknown field 'sdist'"),
    (["predicate", "source"], {"svn": "x"}, "either a 'git' or an 'sdist'"),
    (["predicate", "version"], None, "null"),
    (["predicate", "version"], KeyError, "missing field 'version'"),
    (["predicate", "version"], 1, "must be a string"),
    (["predicate", "extra"], True, "unknown field 'extra'"),
    (["predicate", "recipe", "content"], "x" * 20000, "longer than 16384"),
    (["extra"], 1, "unknown field 'extra'"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_STATEMENTS)
def test_malformed_statement_is_refused(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(EnvelopeFormatError, match=message):
        Statement.parse(_mutated(path, value))


def test_statement_that_is_not_json_is_refused() -> None:
    with pytest.raises(EnvelopeFormatError, match="not valid JSON"):
        Statement.parse(b'{"_type": ')
    with pytest.raises(EnvelopeFormatError, match="not UTF-8"):
        Statement.parse(b'{"_type": "\xc3"}')


@pytest.mark.parametrize(
    "value",
    [
        "2026-06-30T23:59:60Z",  # leap second
        "2026-02-30T00:00:00Z",  # no such day
        "2026-01-01T00:00:00.5Z",  # fractional
        "2026-01-01T00:00:00+00:00",  # offset instead of Z
        "2026-01-01 00:00:00Z",
        1790000000,
    ],
)
def test_times_must_be_plain_rfc3339_utc(value: object) -> None:
    with pytest.raises(EnvelopeFormatError):
        parse_time(value, "t")


def test_rebuild_predicate_from_json_rejects_a_boolean_where_a_list_belongs() -> None:
    st = make_statement([Subject("hello-1.0.0.phar", ART)], rebuild())
    doc = json.loads(st.to_json())
    doc["predicate"]["causes"] = True
    with pytest.raises(EnvelopeFormatError, match="causes"):
        Statement.parse(json.dumps(doc).encode())


def test_predicate_types_are_the_documented_uris() -> None:
    assert RELEASE_PREDICATE_TYPE == "https://rebuild-tools.github.io/predicates/release/v1"
    assert REBUILD_PREDICATE_TYPE == "https://rebuild-tools.github.io/predicates/rebuild/v1"
    assert ReleasePredicate.PREDICATE_TYPE == RELEASE_PREDICATE_TYPE
    assert RebuildPredicate.PREDICATE_TYPE == REBUILD_PREDICATE_TYPE
