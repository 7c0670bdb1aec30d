"""rebuild-policy/v1: every ambiguous, empty or unsafe policy is refused (exit 2)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebuild.gate import load_policy
from tests.gatesim import World
from verify.errors import PolicyError
from verify.keys import SigningKey
from verify.policy import (
    DEFAULT_MAX_ARTIFACT_BYTES,
    DEFAULT_MAX_BUNDLE_BYTES,
    parse_policy,
)

W = World()
TLOG = W.tlog_policy().encode()


def _parse(text: str, tlog: bytes = TLOG) -> object:
    return parse_policy(text.encode(), lambda _: tlog)


def _vk(k: SigningKey) -> str:
    return f'"{k.verifier_key().encode()}"'


def test_the_documented_example_parses_with_its_defaults() -> None:
    p = W.policy()
    pkg = p.package("hello-phar")
    assert pkg is not None
    assert pkg.threshold == 2 and len(pkg.rebuilders) == 3
    assert pkg.verdicts == ("reproduced",)
    assert pkg.max_artifact_bytes == DEFAULT_MAX_ARTIFACT_BYTES == 256 << 20
    assert pkg.max_bundle_bytes == DEFAULT_MAX_BUNDLE_BYTES == 4 << 20
    assert pkg.health_check is None
    assert p.mirrors == () and p.logs == ()
    assert p.max_checkpoint_age == 86400
    assert p.package("other") is None
    assert p.tlog.quorum == "witnesses"


def test_delivery_settings_parse() -> None:
    text = W.policy_toml(
        package_extra=(
            "max_artifact_bytes = 1048576\nmax_bundle_bytes = 65536\n"
            'health_check = ["php", "{release_dir}/bin/check.php", "--artifact={artifact}"]\n'
        )
    )
    text = 'mirrors = ["https://mirror.example/a", "http://127.0.0.1:8080/"]\n' + text
    text = 'logs = ["https://log.example/tiles/", "https://mirror.example/a/log"]\n' + text
    p = _parse(text)
    pkg = p.package("hello-phar")  # type: ignore[attr-defined]
    assert pkg.max_artifact_bytes == 1 << 20
    assert pkg.max_bundle_bytes == 65536
    assert pkg.health_check == ("php", "{release_dir}/bin/check.php", "--artifact={artifact}")
    assert p.mirrors == ("https://mirror.example/a", "http://127.0.0.1:8080/")  # type: ignore[attr-defined]
    assert p.logs == ("https://log.example/tiles/", "https://mirror.example/a/log")  # type: ignore[attr-defined]


R = W.rebuilder_keys
M = W.maintainer
OTHER = SigningKey.generate("other.example")


def _pkg(**fields: str) -> str:
    base = {
        "name": '"hello-phar"',
        "maintainers": f"[{_vk(M)}]",
        "rebuilders": f"[{', '.join(_vk(k) for k in R)}]",
        "threshold": "2",
    }
    base.update(fields)
    body = "".join(f"{k} = {v}\n" for k, v in base.items() if v != "")
    return (
        'format = "rebuild-policy/v1"\ntlog_policy = "t"\nmax_checkpoint_age = 600\n'
        f"[[package]]\n{body}"
    )


SAME_KEY_OTHER_NAME = SigningKey("renamed.example", R[0].seed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_pkg(threshold="0"), "threshold must be an integer in 1..3"),
        (_pkg(threshold="4"), "threshold must be an integer in 1..3"),
        (_pkg(threshold="true"), "threshold must be an integer"),
        (_pkg(threshold='"2"'), "threshold must be an integer"),
        (_pkg(rebuilders="[]"), "rebuilders must list at least one key"),
        (_pkg(maintainers="[]"), "maintainers must list at least one key"),
        (_pkg(rebuilders=f"[{_vk(R[0])}, {_vk(R[0])}]"), "same public key is listed twice"),
        (
            _pkg(rebuilders=f"[{_vk(R[0])}, {_vk(SAME_KEY_OTHER_NAME)}]"),
            "same public key is listed twice",
        ),
        (_pkg(rebuilders=f"[{_vk(R[0])}, {_vk(M)}]", threshold="1"), "is also a maintainer"),
        (_pkg(verdicts='["mismatch"]'), "verdict 'mismatch' cannot be accepted"),
        (_pkg(verdicts='["failed"]'), "cannot be accepted"),
        (_pkg(verdicts='["error"]'), "cannot be accepted"),
        (_pkg(verdicts="[]"), "verdicts must not be empty"),
        (_pkg(verdicts='["reproduced", "reproduced"]'), "lists a verdict twice"),
        (_pkg(unknown="1"), "unknown field 'unknown'"),
        (_pkg(name=""), "missing field 'name'"),
        (_pkg(name='"two words"'), "must not contain white space"),
        (_pkg(rebuilders='["not a key"]'), "rebuilders[0]"),
        (_pkg(rebuilders=f'["{R[0].verifier_key(4).encode()}"]', threshold="1"), "(0x01)"),
        (_pkg(max_bundle_bytes=str(64 << 20)), "max_bundle_bytes must be an integer in 1.."),
        (_pkg(max_artifact_bytes="0"), "max_artifact_bytes must be an integer"),
        (_pkg(health_check="[]"), "health_check must be an argv list"),
        (_pkg(health_check='["check", "{other}"]'), "the only placeholders are"),
        (_pkg(health_check='["check", "{release_dir"]'), "the only placeholders are"),
        (_pkg(health_check='["", "x"]'), "the program"),
        (_pkg() + 'name = "x"\n', "invalid TOML"),  # duplicate key
        (
            _pkg().replace("max_checkpoint_age = 600\n", ""),
            "missing field 'max_checkpoint_age'",
        ),
        (_pkg().replace("max_checkpoint_age = 600", "max_checkpoint_age = 0"), "1.."),
        (_pkg().replace("rebuild-policy/v1", "rebuild-policy/v2"), "format must be"),
        ('format = "rebuild-policy/v1"\ntlog_policy = "t"\nmax_checkpoint_age = 1\n', "package"),
        ('mirrors = ["ftp://x"]\n' + _pkg(), "must be an https:// URL"),
        ('mirrors = ["https://u:p@x.example/"]\n' + _pkg(), "credentials"),
        ('mirrors = ["https://x.example/", "https://x.example/"]\n' + _pkg(), "listed twice"),
        ('logs = ["file:///var/log/tiles"]\n' + _pkg(), "logs[0]"),
        ('logs = ["https://log.example/?x=1"]\n' + _pkg(), "query"),
        ('logs = ["https://l.example/", "https://l.example/"]\n' + _pkg(), "listed twice"),
        ('logs = "https://l.example/"\n' + _pkg(), "logs must be a list"),
        ("surprise = 1\n" + _pkg(), "unknown field 'surprise'"),
        (_pkg() + "[[package]]\n" + _pkg().split("[[package]]\n")[1], "listed twice"),
    ],
)
def test_unsafe_or_ambiguous_policies_are_refused(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=None) as e:
        _parse(text)
    assert message in str(e.value)


def test_the_same_rebuilder_may_serve_two_packages() -> None:
    second = _pkg().split("[[package]]\n")[1].replace('"hello-phar"', '"other"')
    p = _parse(_pkg() + "[[package]]\n" + second.replace(_vk(M), _vk(OTHER)))
    assert p.package("other") is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("tlog", "message"),
    [
        (W.tlog_policy().replace("group witnesses 3", "group witnesses 4"), "threshold"),
        ("\n".join(W.tlog_policy().splitlines()[:-2]) + "\nquorum none\n", "quorum none"),
        (
            "\n".join(line for line in W.tlog_policy().splitlines() if not line.startswith("log")),
            "no log",
        ),
        ("junk\n", "unknown keyword"),
    ],
)
def test_unsafe_tlog_policies_are_refused(tlog: str, message: str) -> None:
    with pytest.raises(PolicyError) as e:
        _parse(_pkg(), tlog.encode())
    assert message in str(e.value)
    assert "tlog_policy t" in str(e.value)


def test_equivalent_is_accepted_only_when_listed() -> None:
    p = _parse(_pkg(verdicts='["reproduced", "equivalent"]'))
    assert p.package("hello-phar").verdicts == ("reproduced", "equivalent")  # type: ignore[attr-defined]
    assert "equivalent" not in W.policy().package("hello-phar").verdicts  # type: ignore[union-attr]


def test_relative_tlog_policy_is_read_next_to_the_policy_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "tlog.policy").write_bytes(TLOG)
    (conf / "policy.toml").write_text(W.policy_toml())
    p = load_policy(conf / "policy.toml")
    assert p.tlog_policy_path == "tlog.policy"
    assert p.tlog.log_keys() == (W.log_key.verifier_key(),)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=400))
def test_arbitrary_text_is_a_policy_error_or_a_policy(text: str) -> None:
    with contextlib.suppress(PolicyError):
        _parse(text)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_pkg()) - 1), st.characters(codec="utf-8"))
def test_a_changed_character_is_a_policy_error_or_a_policy(pos: int, ch: str) -> None:
    text = _pkg()
    with contextlib.suppress(PolicyError):
        _parse(text[:pos] + ch + text[pos + 1 :])
