"""tlog-policy parsing and quorum evaluation: table-driven threshold cases."""

from __future__ import annotations

import pytest

from verify.errors import PolicyError, ThresholdError
from verify.keys import SigningKey, VerifierKey
from verify.tlog_policy import QUORUM_NONE, parse_policy

LOG = SigningKey.generate("log.example/a")
W = {
    n: SigningKey.generate(f"{n.lower()}.witness.example")
    for n in ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
}
WK = {n: k.verifier_key(4) for n, k in W.items()}


def _wline(name: str, url: str = "") -> str:
    return f"witness {name} {WK[name].encode()} {url}".rstrip()


TRAILING = "  \t "  # leading/trailing white space is allowed
SPEC_EXAMPLE = f"""# the example from c2sp.org/tlog-policy
log {LOG.verifier_key().encode()} http://127.0.0.1:9/log

{_wline("X1", "https://x1.example/")}
{_wline("X2")}
\t{_wline("X3")}{TRAILING}
group X-witnesses 2 X1 X2 X3

{_wline("Y1")}
{_wline("Y2")}
{_wline("Y3")}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def test_spec_example_parses() -> None:
    p = parse_policy(SPEC_EXAMPLE)
    assert p.log_keys("log.example/a") == (LOG.verifier_key(),)
    assert p.log_keys("other") == ()
    assert p.logs[0].url == "http://127.0.0.1:9/log"
    assert p.witnesses[0].url == "https://x1.example/" and p.witnesses[1].url is None
    assert [g.threshold for g in p.groups] == [2, 1, 2]
    assert parse_policy(p.encode()) == p


@pytest.mark.parametrize(
    ("cosigners", "ok"),
    [
        ([], False),
        (["X1", "X2"], False),  # X group met, Y group not
        (["X1", "Y1"], False),  # Y met, X not
        (["X1", "X2", "Y3"], True),
        (["X1", "X3", "Y1", "Y2"], True),
        (["X1", "X1", "Y1"], False),  # the same witness twice counts once
        (["Y1", "Y2", "Y3"], False),
        (["X1", "X2", "X3", "Y2"], True),
    ],
)
def test_nested_group_quorum_table(cosigners: list[str], ok: bool) -> None:
    p = parse_policy(SPEC_EXAMPLE)
    result = p.evaluate(WK[n] for n in cosigners)
    assert result.satisfied is ok
    assert set(result.witnesses) == set(cosigners)
    if not ok:
        with pytest.raises(ThresholdError):
            p.require_quorum(WK[n] for n in cosigners)


def test_unknown_witness_keys_are_ignored() -> None:
    p = parse_policy(SPEC_EXAMPLE)
    strangers = [SigningKey.generate("s").verifier_key(4) for _ in range(5)]
    assert not p.evaluate([*strangers, WK["X1"]]).satisfied
    assert p.evaluate([*strangers, WK["X1"]]).witnesses == ("X1",)


def test_quorum_none_is_explicit_and_accepts_no_cosignatures() -> None:
    p = parse_policy(f"log {LOG.verifier_key().encode()}\nquorum none\n")
    assert p.quorum == QUORUM_NONE
    assert p.require_quorum([]).satisfied


def test_single_witness_quorum() -> None:
    p = parse_policy(f"{_wline('X1')}\nquorum X1\n")
    assert p.evaluate([WK["X1"]]).satisfied
    assert not p.evaluate([WK["X2"]]).satisfied


def _bad(body: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(body)


@pytest.mark.parametrize(
    "body",
    [
        "",  # no quorum: fail closed
        "# only a comment\n",
        f"log {LOG.verifier_key().encode()}\n",  # logs but no quorum
        "quorum X1\n",  # undefined name
        f"quorum X1\n{_wline('X1')}\n",  # quorum before its witness
        f"{_wline('X1')}\nquorum X1\nquorum X1\n",  # two quorum lines
        f"{_wline('X1')}\n{_wline('X1')}\nquorum X1\n",  # name twice
        f"{_wline('X1')}\nwitness X2 {WK['X1'].encode()}\nquorum X1\n",  # same key twice
        f"{_wline('X1')}\ngroup G 2 X1\nquorum G\n",  # k > n
        f"{_wline('X1')}\ngroup G 0 X1\nquorum G\n",  # k = 0
        f"{_wline('X1')}\ngroup G 01 X1\nquorum G\n",  # leading zero
        f"{_wline('X1')}\ngroup G -1 X1\nquorum G\n",
        f"{_wline('X1')}\ngroup G any X1 X1\nquorum G\n",  # member twice
        f"{_wline('X1')}\ngroup G any\nquorum G\n",  # no members
        f"{_wline('X1')}\ngroup G any X1 none\nquorum G\n",  # none as member
        f"{_wline('X1')}\ngroup G any G\nquorum G\n",  # self-reference (a cycle)
        f"{_wline('X1')}\ngroup G any X1 H\ngroup H any G\nquorum H\n",  # forward ref / cycle
        f"witness none {WK['X1'].encode()}\nquorum none\n",  # reserved name
        f"{_wline('X1')}\ngroup X1 any X1\nquorum X1\n",  # group reuses a witness name
        f"witness X1 {LOG.verifier_key().encode()}\nquorum X1\n",  # 0x01 key as witness
        f"log {WK['X1'].encode()}\nquorum none\n",  # 0x04 key as log
        f"log {LOG.verifier_key().encode()}\nlog {LOG.verifier_key().encode()}\nquorum none\n",
        "log not-a-key\nquorum none\n",
        f"log {LOG.verifier_key().encode()} url extra\nquorum none\n",
        "witness X1\nquorum none\n",
        "quorum\n",
        "quorum none none\n",
        "frobnicate\nquorum none\n",
        "quorum none\x0b\n",  # vertical tab is a control character
        "quorum none\r\n",
        f"{_wline('X1')}\ngroup G 99999 X1\nquorum G\n",
    ],
)
def test_malformed_or_ambiguous_policies_are_refused(body: str) -> None:
    _bad(body)


def test_oversized_policy_is_refused() -> None:
    _bad("#" * (256 * 1024 + 1))
    with pytest.raises(PolicyError):
        parse_policy(b"quorum none\n\xff\n")


def test_too_many_witnesses_are_refused() -> None:
    lines = [
        f"witness w{i} {SigningKey.generate(f'w{i}').verifier_key(4).encode()}" for i in range(257)
    ]
    _bad("\n".join([*lines, "quorum none"]) + "\n")


def test_policy_with_32_logs_32_witnesses_32_groups_is_supported() -> None:
    logs = [f"log {SigningKey.generate(f'l{i}').verifier_key().encode()}" for i in range(32)]
    keys = [SigningKey.generate(f"w{i}").verifier_key(4) for i in range(32)]
    wits = [f"witness w{i} {k.encode()}" for i, k in enumerate(keys)]
    groups = [f"group g{i} any w{i}" for i in range(31)] + [
        "group all-of-them 16 " + " ".join(f"g{i}" for i in range(31))
    ]
    p = parse_policy("\n".join([*logs, *wits, *groups, "quorum all-of-them"]) + "\n")
    assert not p.evaluate(keys[:15]).satisfied
    assert p.evaluate(keys[:16]).satisfied


def test_witness_in_two_groups_helps_each_once() -> None:
    body = f"""{_wline("X1")}
{_wline("X2")}
{_wline("Y1")}
group A 2 X1 X2
group B 2 X1 Y1
group Q all A B
quorum Q
"""
    p = parse_policy(body)
    assert not p.evaluate([WK["X1"], WK["X2"]]).satisfied
    assert p.evaluate([WK["X1"], WK["X2"], WK["Y1"]]).satisfied


def test_key_of_another_type_with_the_same_public_key_is_not_the_witness() -> None:
    p = parse_policy(f"{_wline('X1')}\nquorum X1\n")
    same_pub = W["X1"].verifier_key()  # type 0x01 over the same Ed25519 key
    assert isinstance(same_pub, VerifierKey)
    assert not p.evaluate([same_pub]).satisfied
