"""The gate's pure decision, in memory: table-driven threshold cases and each step.

Everything here is built with tests/gatesim.py (real keys, real signatures,
a real RFC 6962 tree, in memory). The same attacks against real servers and
real rebuilds are in tests/test_gate_attacks.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest

from tests.gatesim import COMMIT, NOW, RECIPE_SHA256, World, honest
from verify.bundle import Bundle, LoggedEnvelope
from verify.gate import Decision, decide
from verify.keys import SigningKey
from verify.state import EMPTY_STATE, InstalledRelease, TrustedState

ART = b"<?php echo 'hello';\n"
OUTSIDER = SigningKey("outsider.example", hashlib.sha256(b"outsider").digest())


def _codes(d: Decision) -> list[tuple[int, str]]:
    return [(f.step, f.code) for f in d.failures]


def _run(
    build: Callable[[World], list[bytes]],
    *,
    k: int = 2,
    n: int = 3,
    strict: bool = False,
    verdicts: list[str] | None = None,
) -> Decision:
    w = World(rebuilders=n, threshold=k)
    release = w.release(ART)
    atts = build(w)
    w.add(release, *atts)
    return decide(
        ART,
        w.bundle(release, atts),
        w.policy(verdicts=verdicts),
        EMPTY_STATE,
        now=NOW,
        strict=strict,
    )


R = 0  # index helpers for readability below

# (name, k, n, attestation builder, accepted, distinct counted)
THRESHOLD_CASES: list[tuple[str, int, int, Callable[[World], list[bytes]], bool, int]] = [
    (
        "k of k",
        2,
        2,
        lambda w: [w.attest(ART, w.rebuilder_keys[0]), w.attest(ART, w.rebuilder_keys[1])],
        True,
        2,
    ),
    ("k+1 of n", 2, 3, lambda w: [w.attest(ART, r) for r in w.rebuilder_keys], True, 3),
    ("k-1", 2, 3, lambda w: [w.attest(ART, w.rebuilder_keys[0])], False, 1),
    ("none", 1, 3, lambda w: [], False, 0),
    (
        "one key twice",
        2,
        3,
        lambda w: [
            w.attest(ART, w.rebuilder_keys[0]),
            w.attest(ART, w.rebuilder_keys[0], started=NOW - 900),
        ],
        False,
        1,
    ),
    (
        "one envelope signed by two trusted keys",
        2,
        3,
        lambda w: [w.attest(ART, w.rebuilder_keys[:2])],
        True,
        2,
    ),
    (
        "trusted plus outsider",
        2,
        3,
        lambda w: [w.attest(ART, w.rebuilder_keys[0]), w.attest(ART, OUTSIDER)],
        False,
        1,
    ),
    (
        "trusted plus outsider in one envelope",
        2,
        3,
        lambda w: [w.attest(ART, [w.rebuilder_keys[0], OUTSIDER])],
        False,
        1,
    ),
    (
        "the maintainer attesting",
        2,
        3,
        lambda w: [w.attest(ART, w.rebuilder_keys[0]), w.attest(ART, w.maintainer)],
        False,
        1,
    ),
    (
        "k-1 plus a mismatch",
        2,
        3,
        lambda w: [
            w.attest(ART, w.rebuilder_keys[0]),
            w.attest(ART, w.rebuilder_keys[1], verdict="mismatch"),
        ],
        False,
        1,
    ),
    (
        "k-1 plus a failed build",
        2,
        3,
        lambda w: [
            w.attest(ART, w.rebuilder_keys[0]),
            w.attest(ART, w.rebuilder_keys[1], verdict="failed"),
        ],
        False,
        1,
    ),
    (
        "k-1 plus an error",
        2,
        3,
        lambda w: [
            w.attest(ART, w.rebuilder_keys[0]),
            w.attest(ART, w.rebuilder_keys[1], verdict="error"),
        ],
        False,
        1,
    ),
    (
        "k-1 plus another digest",
        2,
        3,
        lambda w: [w.attest(ART, w.rebuilder_keys[0]), w.attest(b"other", w.rebuilder_keys[1])],
        False,
        1,
    ),
    (
        "k-1 plus another commit",
        2,
        3,
        lambda w: [
            w.attest(ART, w.rebuilder_keys[0]),
            w.attest(ART, w.rebuilder_keys[1], commit="0" * 40),
        ],
        False,
        1,
    ),
    (
        "k-1 plus another recipe",
        2,
        3,
        lambda w: [
            w.attest(ART, w.rebuilder_keys[0]),
            w.attest(ART, w.rebuilder_keys[1], recipe_sha256="0" * 64),
        ],
        False,
        1,
    ),
    ("k = n = 1", 1, 1, lambda w: [w.attest(ART, w.rebuilder_keys[0])], True, 1),
    ("all of many", 5, 5, lambda w: [w.attest(ART, r) for r in w.rebuilder_keys], True, 5),
    (
        "all of many but one",
        5,
        5,
        lambda w: [w.attest(ART, r) for r in w.rebuilder_keys[:4]],
        False,
        4,
    ),
]


@pytest.mark.parametrize(
    ("k", "n", "build", "accepted", "distinct"),
    [c[1:] for c in THRESHOLD_CASES],
    ids=[c[0] for c in THRESHOLD_CASES],
)
def test_threshold_counts_distinct_trusted_rebuilders(
    k: int, n: int, build: Callable[[World], list[bytes]], accepted: bool, distinct: int
) -> None:
    d = _run(build, k=k, n=n)
    assert d.accepted is accepted, _codes(d)
    assert len(d.counted) == distinct
    if accepted:
        assert d.failures == ()
    else:
        assert _codes(d) == [(3, "threshold-not-met")]
        assert f"{distinct} of the required {k}" in d.failures[0].reason


def test_ignored_attestations_say_why() -> None:
    d = _run(
        lambda w: [
            w.attest(ART, w.rebuilder_keys[0]),
            w.attest(ART, w.rebuilder_keys[0], started=NOW - 900),
            w.attest(ART, OUTSIDER),
            w.attest(b"x", w.rebuilder_keys[1]),
            w.attest(ART, w.rebuilder_keys[1], commit="1" * 40),
            w.attest(ART, w.rebuilder_keys[2], recipe_sha256="1" * 64),
        ],
    )
    assert [a.code for a in d.attestations] == [
        "counted",
        "duplicate-key",
        "untrusted-key",
        "other-digest",
        "other-commit",
        "other-recipe",
    ]
    assert "commit 1111" in d.attestations[4].reason and COMMIT in d.attestations[4].reason
    assert RECIPE_SHA256 in d.attestations[5].reason


def test_a_trusted_mismatch_is_reported_and_rejects_only_with_strict() -> None:
    def build(w: World) -> list[bytes]:
        return [
            w.attest(ART, w.rebuilder_keys[0]),
            w.attest(ART, w.rebuilder_keys[1]),
            w.attest(ART, w.rebuilder_keys[2], verdict="mismatch"),
        ]

    lenient = _run(build)
    assert lenient.accepted
    assert any("attests mismatch" in n for n in lenient.step(3).notes)
    strict = _run(build, strict=True)
    assert _codes(strict) == [(3, "dissent")]
    assert "r3.example" in strict.failures[0].reason


def test_an_untrusted_mismatch_is_not_reported() -> None:
    d = _run(
        lambda w: [
            w.attest(ART, w.rebuilder_keys[0]),
            w.attest(ART, w.rebuilder_keys[1]),
            w.attest(ART, OUTSIDER, verdict="mismatch"),
        ],
        strict=True,
    )
    assert d.accepted
    assert d.step(3).notes == ()


def test_an_invalid_signature_by_a_trusted_rebuilder_counts_zero() -> None:
    def build(w: World) -> list[bytes]:
        good = w.attest(ART, w.rebuilder_keys[0])
        doc = json.loads(w.attest(ART, w.rebuilder_keys[1], started=NOW - 700))
        doc["payload"] = json.loads(good)["payload"]  # r2's signature over r1's statement
        return [good, json.dumps(doc).encode()]

    d = _run(build)
    assert _codes(d) == [(3, "threshold-not-met")]
    assert d.attestations[1].code == "invalid-signature"


def test_the_whole_json_decision_numbers_every_step() -> None:
    w = World()
    artifact, bundle = honest(w)
    d = decide(artifact, bundle, w.policy(), EMPTY_STATE, now=NOW)
    doc = json.loads(json.dumps(d.to_dict()))
    assert doc["decision"] == "accepted"
    assert [s["step"] for s in doc["steps"]] == [1, 2, 3, 4, 5, 6, 7]
    assert [s["name"] for s in doc["steps"]] == [
        "bundle",
        "maintainer",
        "rebuilders",
        "inclusion",
        "checkpoint",
        "consistency",
        "version",
    ]
    assert doc["rebuilders"]["distinct"] == 3
    assert doc["checkpoint"]["age_seconds"] == 60


def test_a_bundle_that_does_not_parse_skips_every_later_step() -> None:
    w = World()
    d = decide(ART, b"{}", w.policy(), EMPTY_STATE, now=NOW)
    assert _codes(d) == [(1, "bundle-malformed")]
    assert [s.status for s in d.steps] == ["failed"] + ["skipped"] * 6


def test_an_unknown_package_still_checks_the_log() -> None:
    w = World()
    release = w.release(ART, package="unlisted")
    w.add(release)
    d = decide(ART, w.bundle(release, []), w.policy(), EMPTY_STATE, now=NOW)
    assert _codes(d) == [(1, "unknown-package")]
    assert [s.status for s in d.steps] == [
        "failed",
        "skipped",
        "skipped",
        "passed",
        "passed",
        "passed",
        "skipped",
    ]


def test_every_failure_is_collected_not_just_the_first() -> None:
    w = World()
    release = w.release(ART, signer=OUTSIDER)
    atts = [w.attest(ART, w.rebuilder_keys[0])]
    w.add(release, *atts)
    note = w.checkpoint(cosign_time=NOW - 100_000)
    d = decide(ART + b"!", w.bundle(release, atts, note), w.policy(), EMPTY_STATE, now=NOW)
    assert _codes(d) == [
        (1, "subject-mismatch"),
        (2, "maintainer-untrusted"),
        (3, "threshold-not-met"),
        (5, "checkpoint-stale"),
    ]


@pytest.mark.parametrize(
    ("age", "ok"),
    [(0, True), (86399, True), (86400, False), (10**6, False)],
)
def test_freshness_boundary(age: int, ok: bool) -> None:
    w = World()
    release = w.release(ART)
    atts = [w.attest(ART, r) for r in w.rebuilder_keys]
    w.add(release, *atts)
    d = decide(
        ART,
        w.bundle(release, atts, w.checkpoint(cosign_time=NOW - age)),
        w.policy(),
        EMPTY_STATE,
        now=NOW,
    )
    assert d.accepted is ok
    if not ok:
        assert _codes(d) == [(5, "checkpoint-stale")]


@pytest.mark.parametrize(("skew", "ok"), [(300, True), (301, False)])
def test_cosignature_clock_skew_boundary(skew: int, ok: bool) -> None:
    w = World()
    release = w.release(ART)
    atts = [w.attest(ART, r) for r in w.rebuilder_keys]
    w.add(release, *atts)
    note = w.checkpoint(cosign_time=NOW + skew)
    d = decide(ART, w.bundle(release, atts, note), w.policy(), EMPTY_STATE, now=NOW)
    assert d.accepted is ok
    if not ok:
        assert (5, "cosignature-future") in _codes(d)


def _accepted_state(w: World, artifact: bytes, bundle: bytes) -> TrustedState:
    d = decide(artifact, bundle, w.policy(), EMPTY_STATE, now=NOW)
    assert d.accepted, _codes(d)
    return d.apply(EMPTY_STATE, installed=True)


def test_a_larger_checkpoint_needs_the_consistency_proof_from_the_stored_size() -> None:
    w = World()
    artifact, bundle = honest(w)
    state = _accepted_state(w, artifact, bundle)
    release = w.release(b"v2", version="2.0.0")
    atts = [w.attest(b"v2", r) for r in w.rebuilder_keys]
    w.add(release, *atts)
    missing = decide(b"v2", w.bundle(release, atts), w.policy(), state, now=NOW)
    assert _codes(missing) == [(6, "consistency-proof-missing")]
    assert missing.needs_since_size == 4
    assert "--since-size 4" in missing.failures[0].reason
    good = decide(
        b"v2",
        w.bundle(release, atts, consistency=[w.consistency(4, 8)]),
        w.policy(),
        state,
        now=NOW,
    )
    assert good.accepted, _codes(good)
    assert good.fork is None


def test_a_bad_consistency_proof_is_a_fork_with_evidence() -> None:
    w = World()
    artifact, bundle = honest(w)
    state = _accepted_state(w, artifact, bundle)
    release = w.release(b"v2", version="2.0.0")
    atts = [w.attest(b"v2", r) for r in w.rebuilder_keys]
    w.add(release, *atts)
    wrong = w.consistency(3, 8)  # a proof from another size, presented as from 4
    forged = type(wrong)(4, wrong.hashes)
    d = decide(b"v2", w.bundle(release, atts, consistency=[forged]), w.policy(), state, now=NOW)
    assert _codes(d) == [(6, "fork")]
    assert d.fork is not None
    assert d.fork.accepted == state.checkpoint(w.log_key.name)


def _skipped_release(w: World) -> tuple[TrustedState, bytes, list[bytes], bytes]:
    """State at 1.0.0 (size 4); 1.1.0 logged (size 8); 2.0.0 (size 12) bundled from size 8."""
    artifact, bundle = honest(w)
    state = _accepted_state(w, artifact, bundle)
    for version in ("1.1.0", "2.0.0"):
        data = version.encode()
        release = w.release(data, version=version)
        atts = [w.attest(data, r) for r in w.rebuilder_keys]
        w.add(release, *atts)
    bundle = w.bundle(release, atts, consistency=[w.consistency(8, 12)])
    return state, release, atts, bundle


def test_an_updater_that_skipped_a_release_is_told_exactly_which_proof_it_needs() -> None:
    w = World()
    state, _, _, bundle = _skipped_release(w)
    d = decide(b"2.0.0", bundle, w.policy(), state, now=NOW)
    assert _codes(d) == [(6, "consistency-proof-missing")]
    need = d.only_needs_consistency
    assert need is not None and need == d.needs_consistency
    assert (need.origin, need.old_size, need.new_size) == (w.log_key.name, 4, 12)
    assert d.checkpoint is not None and need.new_root == d.checkpoint.root_hash
    assert "--log URL" in d.failures[0].reason and "--since-size 4" in d.failures[0].reason
    assert d.to_dict()["needs_consistency"]["old_size"] == 4


def test_a_proof_handed_in_by_the_caller_lets_a_skipping_updater_catch_up() -> None:
    w = World()
    state, _, _, bundle = _skipped_release(w)
    d = decide(b"2.0.0", bundle, w.policy(), state, now=NOW, consistency=[w.consistency(4, 12)])
    assert d.accepted, _codes(d)
    assert d.consistency_from_caller and d.needs_consistency is None
    assert "from the log's tiles" in " ".join(d.step(6).notes)
    # a proof from another size is no proof from the stored one
    other = decide(b"2.0.0", bundle, w.policy(), state, now=NOW, consistency=[w.consistency(5, 12)])
    assert _codes(other) == [(6, "consistency-proof-missing")]


def test_a_forged_proof_from_the_caller_cannot_make_the_gate_accept() -> None:
    w = World()
    state, _, _, bundle = _skipped_release(w)
    wrong = w.consistency(5, 12)
    forged = type(wrong)(4, wrong.hashes)
    d = decide(b"2.0.0", bundle, w.policy(), state, now=NOW, consistency=[forged])
    assert _codes(d) == [(6, "fork")]
    assert d.fork is not None and not d.consistency_from_caller
    assert "the caller's proof" in d.failures[0].reason


def test_a_garbage_proof_in_the_bundle_does_not_outvote_a_valid_one_from_the_tiles() -> None:
    w = World()
    state, release, atts, _ = _skipped_release(w)
    wrong = w.consistency(5, 12)
    bundle = w.bundle(release, atts, consistency=[type(wrong)(4, wrong.hashes)])
    d = decide(b"2.0.0", bundle, w.policy(), state, now=NOW, consistency=[w.consistency(4, 12)])
    assert d.accepted, _codes(d)
    assert d.fork is None and d.consistency_from_caller


def test_a_missing_proof_with_other_failures_is_not_worth_fetching() -> None:
    w = World()
    state, release, atts, _ = _skipped_release(w)
    stale = w.checkpoint(cosign_time=NOW - 10 * 86400)
    d = decide(b"2.0.0", w.bundle(release, atts, stale), w.policy(), state, now=NOW)
    assert (6, "consistency-proof-missing") in _codes(d)
    assert d.needs_consistency is not None and d.only_needs_consistency is None


def test_version_rules() -> None:
    w = World()
    artifact, bundle = honest(w)
    policy = w.policy()

    def with_installed(version: str, sha: str | None = None) -> TrustedState:
        return EMPTY_STATE.with_installed(
            InstalledRelease("hello-phar", version, sha or hashlib.sha256(artifact).hexdigest(), 1)
        )

    assert decide(artifact, bundle, policy, with_installed("0.9"), now=NOW).accepted
    same = decide(artifact, bundle, policy, with_installed("1.0"), now=NOW)
    assert same.accepted and "already installed" in same.step(7).summary
    reused = decide(artifact, bundle, policy, with_installed("1.0.0", "b" * 64), now=NOW)
    assert _codes(reused) == [(7, "version-reused")]
    older = decide(artifact, bundle, policy, with_installed("1.0.1"), now=NOW)
    assert _codes(older) == [(7, "downgrade")]
    allowed = decide(
        artifact, bundle, policy, with_installed("1.0.1"), now=NOW, allow_downgrade=True
    )
    assert allowed.accepted
    assert allowed.install is not None and allowed.install.downgrade_from == "1.0.1"
    assert "allowed by --allow-downgrade" in allowed.step(7).notes[0]


def test_an_unorderable_version_is_refused() -> None:
    w = World()
    release = w.release(ART, version="1.0-beta")
    atts = [w.attest(ART, r) for r in w.rebuilder_keys]
    w.add(release, *atts)
    d = decide(ART, w.bundle(release, atts), w.policy(), EMPTY_STATE, now=NOW)
    assert _codes(d) == [(7, "version-unorderable")]


def test_now_is_required_and_checked() -> None:
    w = World()
    artifact, bundle = honest(w)
    with pytest.raises(TypeError):
        decide(artifact, bundle, w.policy(), EMPTY_STATE)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="now"):
        decide(artifact, bundle, w.policy(), EMPTY_STATE, now=1.5)  # type: ignore[arg-type]


def test_equivalent_counts_only_where_the_policy_lists_it() -> None:
    """Until the rebuild predicate defines ``equivalent`` such attestations do not
    parse at all; the policy side already refuses to count a verdict it does not list."""
    d = _run(lambda w: [w.attest(ART, r) for r in w.rebuilder_keys], verdicts=["equivalent"])
    assert _codes(d) == [(3, "threshold-not-met")]
    assert {a.code for a in d.attestations} == {"verdict-not-accepted"}


def _policy_with_other_package(w: World) -> str:
    return (
        "[[package]]\n"
        'name = "other-pkg"\n'
        f'maintainers = ["{OUTSIDER.verifier_key().encode()}"]\n'
        f'rebuilders = ["{OTHER_REBUILDER.verifier_key().encode()}"]\n'
        "threshold = 1\n"
    )


OTHER_REBUILDER = SigningKey("other-rebuilder.example", hashlib.sha256(b"orb").digest())


def test_another_packages_rebuilder_and_maintainer_count_zero() -> None:
    w = World()
    tlog = w.tlog_policy().encode()
    from verify.policy import parse_policy

    policy = parse_policy(
        w.policy_toml(extra_packages=_policy_with_other_package(w)).encode(), lambda _: tlog
    )
    release = w.release(ART, signer=OUTSIDER)
    atts = [w.attest(ART, w.rebuilder_keys[0]), w.attest(ART, OTHER_REBUILDER)]
    w.add(release, *atts)
    d = decide(ART, w.bundle(release, atts), policy, EMPTY_STATE, now=NOW)
    assert _codes(d) == [(2, "maintainer-other-package"), (3, "threshold-not-met")]
    assert "a maintainer of other-pkg" in d.failures[0].reason
    assert [a.code for a in d.attestations] == ["counted", "untrusted-key"]


def _world_with_release() -> tuple[World, bytes, list[bytes]]:
    w = World()
    release = w.release(ART)
    atts = [w.attest(ART, r) for r in w.rebuilder_keys]
    w.add(release, *atts)
    return w, release, atts


def test_a_proof_against_another_tree_and_an_unlogged_envelope() -> None:
    w, release, atts = _world_with_release()
    note = w.checkpoint()
    old = w.checkpoint(size=3)
    unlogged = w.attest(ART, w.rebuilder_keys[2], started=NOW - 5000)
    bundle = Bundle(
        note,
        w.logged(release, note),
        (
            w.logged(atts[0], old),  # a proof in the tree of size 3
            w.logged(atts[1], note),
            LoggedEnvelope(unlogged, w.logged(atts[2], note).proof),
        ),
    ).encode()
    d = decide(ART, bundle, w.policy(), EMPTY_STATE, now=NOW)
    assert _codes(d) == [(4, "proof-other-checkpoint"), (4, "not-included")]
    assert "size 3" in d.failures[0].reason


@pytest.mark.parametrize(
    ("note_kw", "code"),
    [
        ({"witnesses": "two"}, "witness-quorum"),
        ({"witnesses": "none"}, "witness-quorum"),
        ({"log_key": "impostor"}, "log-signature"),
        ({"log_key": "other-origin"}, "log-untrusted"),
    ],
)
def test_checkpoint_trust(note_kw: dict[str, str], code: str) -> None:
    w, release, atts = _world_with_release()
    kw: dict[str, object] = {}
    if note_kw.get("witnesses") == "two":
        kw["witnesses"] = w.witness_keys[:2]
    if note_kw.get("witnesses") == "none":
        kw["witnesses"] = [SigningKey("stranger.example", hashlib.sha256(b"s").digest())]
    if note_kw.get("log_key") == "impostor":
        kw["log_key"] = SigningKey(w.log_key.name, hashlib.sha256(b"impostor").digest())
    if note_kw.get("log_key") == "other-origin":
        kw["log_key"] = SigningKey("log.example/other", hashlib.sha256(b"other").digest())
    note = w.checkpoint(**kw)  # type: ignore[arg-type]
    d = decide(ART, w.bundle(release, atts, note), w.policy(), EMPTY_STATE, now=NOW)
    assert (5, code) in _codes(d), _codes(d)
    assert {step for step, _ in _codes(d)} == {5}


def test_rollback_and_same_size_fork() -> None:
    w, release, atts = _world_with_release()
    state = decide(ART, w.bundle(release, atts), w.policy(), EMPTY_STATE, now=NOW).apply(
        EMPTY_STATE, installed=False
    )
    older = decide(
        ART, w.bundle(release, atts[:2], w.checkpoint(size=3)), w.policy(), state, now=NOW
    )
    assert _codes(older) == [(6, "rollback")]
    assert older.fork is None
    # Another history of the same size, signed by the same log key.
    other = World()
    other_release = other.release(ART)
    other.add(b"junk", other_release, *atts[:2])
    forked = decide(ART, other.bundle(other_release, atts[:2]), w.policy(), state, now=NOW)
    assert _codes(forked) == [(6, "fork")]
    assert forked.fork is not None and "two different roots" in forked.fork.reason


def test_a_forged_maintainer_signature_is_named() -> None:
    w, release, atts = _world_with_release()
    doc = json.loads(release)
    doc["payload"] = json.loads(w.release(ART, version="9.9.9"))["payload"]
    forged = json.dumps(doc).encode()
    w.add(forged)
    d = decide(ART, w.bundle(forged, atts), w.policy(), EMPTY_STATE, now=NOW)
    assert _codes(d) == [(2, "maintainer-signature-invalid")]
    assert "maintainer.example" in d.failures[0].reason
