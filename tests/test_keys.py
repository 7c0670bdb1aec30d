"""Key files through the real CLI: generation, passphrases, and hostile or broken files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nacl.pwhash
import pytest

from rebuild.cli import main
from rebuild.keystore import generate_key_files
from verify.errors import KeyFormatError, PassphraseError
from verify.keys import SigningKey, VerifierKey, decode_secret_key_file, encode_secret_key_file

REPO = Path(__file__).resolve().parent.parent
# Tests encrypt with the cheapest Argon2id limits so the suite stays fast; the
# CLI default (MODERATE) is exercised once, in test_cli_passphrase_round_trip.
FAST_KDF = {
    "opslimit": nacl.pwhash.argon2id.OPSLIMIT_MIN,
    "memlimit": nacl.pwhash.argon2id.MEMLIMIT_MIN,
}


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line_error(err: str, *needles: str | Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rebuild: "), err
    for n in needles:
        assert str(n) in lines[0], (n, err)
    assert "Traceback" not in err


# -- generation -------------------------------------------------------------------


def test_generate_writes_a_0600_secret_and_a_c2sp_verifier_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "alice.key"
    code, stdout, _ = run(capsys, "key", "generate", "alice.example", "--out", out, "--json")
    assert code == 0
    doc = json.loads(stdout)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pub_text = (tmp_path / "alice.key.pub").read_text()
    vkey = VerifierKey.parse(pub_text)
    assert pub_text == doc["verifier_key"] + "\n"
    assert vkey.name == "alice.example"
    secret = SigningKey.parse(out.read_text())
    assert secret.verifier_key() == vkey
    assert not doc["encrypted"]
    code, stdout, _ = run(capsys, "key", "show", out)
    assert code == 0 and stdout.strip() == vkey.encode()


def test_generate_refuses_to_overwrite_an_existing_secret_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "k"
    out.write_text("precious\n")
    code, _, err = run(capsys, "key", "generate", "alice", "--out", out)
    assert code == 2
    assert_one_line_error(err, out, "refusing to overwrite")
    assert out.read_text() == "precious\n"
    assert not (tmp_path / "k.pub").exists()


def test_generate_refuses_when_only_the_public_half_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stale .pub must not end up describing a different secret key."""
    (tmp_path / "k.pub").write_text("old\n")
    code, _, err = run(capsys, "key", "generate", "alice", "--out", tmp_path / "k")
    assert code == 2
    assert_one_line_error(err, tmp_path / "k.pub", "refusing to overwrite")
    assert not (tmp_path / "k").exists()
    assert (tmp_path / "k.pub").read_text() == "old\n"


def test_generate_refuses_a_symlink_in_place_of_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A planted dangling symlink must not redirect where the secret key is written."""
    target = tmp_path / "elsewhere"
    (tmp_path / "k").symlink_to(target)
    code, _, err = run(capsys, "key", "generate", "alice", "--out", tmp_path / "k")
    assert code == 2
    assert_one_line_error(err, "refusing to overwrite")
    assert not target.exists()


@pytest.mark.parametrize("name", ["has+plus", "has space", ""])
def test_generate_rejects_names_c2sp_forbids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, _, err = run(capsys, "key", "generate", name, "--out", tmp_path / "k")
    assert code == 2
    assert_one_line_error(err, "invalid key name")
    assert err.count("invalid key name") == 1, err  # the reason once, not twice
    assert "'+'" in err and "white space" in err
    assert list(tmp_path.iterdir()) == []


def test_generate_into_a_missing_directory_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "key", "generate", "a", "--out", tmp_path / "no" / "k")
    assert code == 2
    assert_one_line_error(err, "does not exist")
    assert list(tmp_path.iterdir()) == []


# -- passphrases ----------------------------------------------------------------------


def test_cli_passphrase_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's default Argon2id limits (MODERATE), end to end, via an env var."""
    monkeypatch.setenv("TEST_PASS", "correct horse battery staple")
    out = tmp_path / "k"
    code, stdout, _ = run(
        capsys, "key", "generate", "alice", "--out", out, "--passphrase-env", "TEST_PASS", "--json"
    )
    assert code == 0 and json.loads(stdout)["encrypted"]
    doc = json.loads(out.read_text())
    assert doc["kdf"]["algorithm"] == "argon2id"
    assert doc["kdf"]["memlimit"] == nacl.pwhash.argon2id.MEMLIMIT_MODERATE
    assert b"PRIVATE+KEY" not in out.read_bytes()
    code, stdout, _ = run(capsys, "key", "show", out, "--passphrase-env", "TEST_PASS")
    assert code == 0
    assert stdout.strip() == (tmp_path / "k.pub").read_text().strip()


def _encrypted(tmp_path: Path, passphrase: bytes = b"right") -> Path:
    out = tmp_path / "enc.key"
    generate_key_files("alice", out, passphrase, **FAST_KDF)
    return out


def test_wrong_passphrase_is_a_one_line_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _encrypted(tmp_path)
    monkeypatch.setenv("TEST_PASS", "wrong")
    code, _, err = run(capsys, "key", "show", key, "--passphrase-env", "TEST_PASS")
    assert code == 2
    assert_one_line_error(err, key, "wrong passphrase")


def test_protected_key_without_a_passphrase_source_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _encrypted(tmp_path)
    monkeypatch.delenv("REBUILD_PASSPHRASE", raising=False)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 (closed by pytest)
    code, _, err = run(capsys, "key", "show", key)
    sys.stdin.close()
    assert code == 2
    assert_one_line_error(err, key, "passphrase-protected", "REBUILD_PASSPHRASE")


def test_generate_with_an_unset_passphrase_variable_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPE_UNSET", raising=False)
    code, _, err = run(
        capsys, "key", "generate", "a", "--out", tmp_path / "k", "--passphrase-env", "NOPE_UNSET"
    )
    assert code == 2
    assert_one_line_error(err, "NOPE_UNSET")
    assert list(tmp_path.iterdir()) == []


def test_tampered_ciphertext_is_detected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _encrypted(tmp_path)
    doc = json.loads(key.read_text())
    ct = doc["cipher"]["ciphertext"]
    doc["cipher"]["ciphertext"] = ("B" if ct[0] == "A" else "A") + ct[1:]
    key.write_text(json.dumps(doc))
    monkeypatch.setenv("TEST_PASS", "right")
    code, _, err = run(capsys, "key", "show", key, "--passphrase-env", "TEST_PASS")
    assert code == 2
    assert_one_line_error(err, key, "wrong passphrase (or the key file was altered)")


def test_encrypted_key_whose_clear_text_metadata_was_swapped_is_refused() -> None:
    """Tools may show the unencrypted verifier_key; it must not describe another key."""
    mine = SigningKey("alice", b"\x01" * 32)
    other = SigningKey("mallory", b"\x02" * 32)
    doc = json.loads(encode_secret_key_file(mine, b"pw", **FAST_KDF))
    doc["verifier_key"] = other.verifier_key().encode()
    with pytest.raises(KeyFormatError, match="does not match"):
        decode_secret_key_file(json.dumps(doc).encode(), b"pw")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("memlimit", 1 << 40, "out-of-range"),  # would allocate a TiB
        ("opslimit", 1000, "out-of-range"),
        ("opslimit", True, "non-integer"),
        ("memlimit", 8192.0, "non-integer"),
        ("salt", "AAAA", "salt or nonce length"),
    ],
)
def test_hostile_kdf_parameters_are_refused_before_deriving(
    field: str, value: object, message: str
) -> None:
    doc = json.loads(encode_secret_key_file(SigningKey("a", b"\x01" * 32), b"pw", **FAST_KDF))
    doc["kdf"][field] = value
    with pytest.raises(KeyFormatError, match=message):
        decode_secret_key_file(json.dumps(doc).encode(), b"pw")


def test_library_refuses_an_empty_passphrase() -> None:
    with pytest.raises(PassphraseError):
        encode_secret_key_file(SigningKey("a", b"\x01" * 32), b"", **FAST_KDF)


# -- truncated, garbled and mismatched key files ----------------------------------------

GOOD = SigningKey("alice.example", b"\x07" * 32)
GOOD_TEXT = GOOD.encode()
GOOD_HASH = GOOD_TEXT.split("+")[3]
WRONG_HASH = "00000000" if GOOD_HASH != "00000000" else "11111111"
ENC = encode_secret_key_file(GOOD, b"pw", **FAST_KDF)

BAD_SECRET_FILES: list[tuple[str, bytes, str]] = [  # (case, file bytes, message)
    ("empty", b"", "must start with PRIVATE+KEY+"),
    ("truncated", GOOD_TEXT[:-6].encode(), "base64"),
    ("cut after name", b"PRIVATE+KEY+alice.example", "name+keyid+key"),
    ("garbled base64", (GOOD_TEXT[:-8] + "!!!!!!!=").encode(), "invalid base64"),
    (
        "mismatched key ID",
        GOOD_TEXT.replace(
            GOOD_HASH, "00000000" if GOOD_HASH != "00000000" else "11111111"
        ).encode(),
        "does not match",
    ),
    ("renamed key", GOOD_TEXT.replace("alice.example", "bob.example").encode(), "does not match"),
    ("uppercase key ID", GOOD_TEXT.replace(GOOD_HASH, GOOD_HASH.upper()).encode(), "lowercase hex"),
    ("non-UTF-8", b"PRIVATE+KEY+\xff\xfe+00000000+AA==", "not UTF-8"),
    ("oversized", b"PRIVATE+KEY+" + b"a" * 5000, "larger than the 4096-byte limit"),
    ("truncated encrypted", ENC[: len(ENC) // 2], "malformed"),
    ("deeply nested JSON", b'{"a":' + b"[" * 3000, "malformed"),
    ("encrypted wrong format", ENC.replace(b"rebuild-secret-key/v1", b"other/v9"), "unknown"),
]


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in BAD_SECRET_FILES], ids=[c[0] for c in BAD_SECRET_FILES]
)
def test_broken_secret_key_file_is_a_one_line_error_naming_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    data: bytes,
    message: str,
) -> None:
    monkeypatch.setenv("TEST_PASS", "pw")
    key = tmp_path / "broken.key"
    key.write_bytes(data)
    key.chmod(0o600)  # only its contents are broken (a readable key is refused first)
    code, _, err = run(capsys, "key", "show", key, "--passphrase-env", "TEST_PASS")
    assert code == 2
    assert_one_line_error(err, key, message)


GOOD_PUB = GOOD.verifier_key().encode()
BAD_PUB_FILES: list[tuple[str, bytes, str]] = [
    ("truncated", GOOD_PUB[:-4].encode(), "must encode a type byte and 32 key bytes"),
    ("no key", b"alice.example+" + GOOD_HASH.encode(), "name+keyid+key"),
    (
        "mismatched key ID",
        GOOD_PUB.replace(GOOD_HASH, WRONG_HASH).encode(),
        "key ID does not match",
    ),
    ("renamed", GOOD_PUB.replace("alice.example", "bob").encode(), "key ID does not match"),
    ("non-UTF-8", b"alice\xff+00000000+AQ==", "not UTF-8"),
    # "AQ" -> "Ag" turns the type byte 0x01 into 0x02 (the key's first nibble is 0)
    ("unknown type", GOOD_PUB[:-44].encode() + b"Ag" + GOOD_PUB[-42:].encode(), "type 0x02"),
]


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in BAD_PUB_FILES], ids=[c[0] for c in BAD_PUB_FILES]
)
def test_broken_verifier_key_file_is_a_one_line_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, message: str
) -> None:
    pub = tmp_path / "broken.pub"
    pub.write_bytes(data)
    artifact = tmp_path / "a"
    artifact.write_bytes(b"x")
    statement = tmp_path / "s.json"
    statement.write_text("{}")
    code, _, err = run(
        capsys, "release", "verify", artifact, "--statement", statement, "--maintainer-key", pub
    )
    assert code == 2
    assert_one_line_error(err, pub, message)


def test_the_installed_entry_point_generates_keys(tmp_path: Path) -> None:
    """The real process: `python -m rebuild`, exit codes and files."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "rebuild", "key", "generate", "ci", "--out", "k"]
    ok = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr


# -- a secret key where a verifier key belongs ---------------------------------------------


def _secret_key_material(path: Path) -> list[str]:
    """Every run of 12+ characters of the secret key file that could leak it."""
    text = path.read_text()
    words = text.replace('"', " ").replace("+", " ").replace(",", " ").split()
    return [w for w in words if len(w) >= 12 and not w.startswith("rebuild-secret-key")]


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_a_secret_key_passed_as_the_maintainer_key_is_named_and_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], encrypted: bool
) -> None:
    """A user who passes the secret key file where its .pub belongs learns which
    file to pass, and the error (a log line, a CI transcript) shows none of the key."""
    secret = tmp_path / "maint.key"
    generate_key_files("maint.example", secret, b"s3cret" if encrypted else None, **FAST_KDF)
    artifact = tmp_path / "a"
    artifact.write_bytes(b"x")
    code, out, err = run(
        capsys, "release", "verify", artifact, "--statement", tmp_path / "s.json",
        "--maintainer-key", secret, "--json",
    )  # fmt: skip
    assert code == 2
    assert f"{secret}: this is a secret key file" in err
    assert f"pass {secret}.pub" in err
    for material in _secret_key_material(secret):
        assert material not in err and material not in out, material
    doc = json.loads(out)
    assert doc["error"]["kind"] == "InputError" and "secret key file" in doc["error"]["message"]


def test_a_secret_key_given_literally_as_a_verifier_key_is_not_echoed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = SigningKey.generate("lit.example")
    literal = key.encode()
    code, out, err = run(
        capsys, "release", "verify", tmp_path / "a", "--statement", tmp_path / "s.json",
        "--maintainer-key", literal,
    )  # fmt: skip
    assert code == 2
    assert "this is a secret key, not a verifier key" in err
    # PRIVATE+KEY+<name>+<id>+<base64>, and the base64 itself may hold "+"
    secret = literal.split("+", 4)[4]
    assert len(secret) > 40 and secret not in err + out


def test_a_verifier_key_passed_as_a_secret_key_says_which_file_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "maint.key"
    generate_key_files("maint.example", secret, None)
    code, _, err = run(capsys, "key", "show", f"{secret}.pub")
    assert code == 2
    assert "this is a verifier (public) key, not a secret key file" in err
    assert f"pass the secret key file ({secret})" in err


def test_a_long_garbage_key_name_is_shown_truncated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = tmp_path / "odd.pub"
    pub.write_text("x y" * 400 + "+abcdef01+AAAA")
    code, _, err = run(
        capsys, "release", "verify", tmp_path / "a", "--statement", tmp_path / "s.json",
        "--maintainer-key", pub,
    )  # fmt: skip
    assert code == 2
    assert "chars)" in err and len(err) < 400, err
