"""Key files on disk: secret keys (0600, never overwritten) and verifier keys.

Parsing and cryptography live in :mod:`verify.keys`; this module only reads and
writes files and obtains passphrases (environment variable or terminal prompt).
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from pathlib import Path

from rebuild.errors import InputError, StorageError, UsageError
from rebuild.fsio import atomic_write, read_text_bounded
from verify.errors import KeyFormatError, PassphraseError
from verify.keys import (
    MAX_KEY_TEXT,
    PRIVATE_KEY_PREFIX,
    SigningKey,
    VerifierKey,
    decode_secret_key_file,
    encode_secret_key_file,
    secret_key_file_is_encrypted,
)

PASSPHRASE_ENV = "REBUILD_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)


def passphrase_from_env(var: str) -> bytes:
    value = os.environ.get(var)
    if value is None:
        raise UsageError(f"environment variable {var} is not set")
    if not value:
        raise UsageError(f"environment variable {var} is empty")
    return value.encode()


def prompt_new_passphrase() -> bytes:
    if not sys.stdin.isatty():
        raise UsageError("cannot prompt for a passphrase: standard input is not a terminal")
    first = getpass.getpass("New passphrase: ")
    if not first:
        raise UsageError("empty passphrase")
    if getpass.getpass("Repeat passphrase: ") != first:
        raise UsageError("passphrases do not match")
    return first.encode()


def generate_key_files(
    name: str, out: Path, passphrase: bytes | None, **kdf: int
) -> tuple[SigningKey, Path]:
    """Create ``out`` (secret, 0600) and ``out.pub``; refuse to overwrite either."""
    pub_path = out.with_name(out.name + ".pub")
    for p in (out, pub_path):
        if p.exists() or p.is_symlink():
            raise StorageError(f"{p}: already exists; refusing to overwrite")
    try:
        key = SigningKey.generate(name)
    except KeyFormatError:
        raise UsageError(
            f"invalid key name {name!r}: a name must be non-empty, without '+' or white space"
        ) from None
    secret = encode_secret_key_file(key, passphrase, **kdf)
    atomic_write(out, secret, mode=0o600, overwrite=False)
    try:
        atomic_write(pub_path, (key.verifier_key().encode() + "\n").encode(), overwrite=False)
    except BaseException:
        # Never leave a secret key without its public half: undo the first write.
        out.unlink(missing_ok=True)
        raise
    return key, pub_path


def read_secret_key_file(p: Path) -> bytes:
    """A secret key file's bytes, only from a regular file no one else may read.

    Like ssh, a key readable or writable by group or others is refused (it
    may already be compromised, and using it silently hides that); a FIFO or
    device would block or never end, so only a regular file is read.
    """
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{p}: not a regular file; a secret key must be a file")
        open_to_others = st.st_mode & 0o077
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_KEY_TEXT:
            chunk = os.read(fd, MAX_KEY_TEXT + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_KEY_TEXT:
        raise InputError(f"{p}: larger than the {MAX_KEY_TEXT}-byte limit")
    data = b"".join(chunks)
    if open_to_others:
        if _is_verifier_key(data):  # a .pub given for the secret key: say that, not chmod
            raise _verifier_key_given(p)
        raise InputError(
            f"{p}: secret key is accessible by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); refusing to use it: chmod 600 {p}"
        )
    return data


def load_signing_key(path: str | os.PathLike[str], passphrase_env: str | None = None) -> SigningKey:
    """Load a secret key file, decrypting with a passphrase when it is protected."""
    p = Path(path)
    data = read_secret_key_file(p)
    passphrase: bytes | None = None
    if secret_key_file_is_encrypted(data):
        var = passphrase_env or PASSPHRASE_ENV
        if os.environ.get(var):
            passphrase = passphrase_from_env(var)
        elif sys.stdin.isatty():
            passphrase = getpass.getpass(f"Passphrase for {p}: ").encode()
        else:
            raise UsageError(f"{p}: key is passphrase-protected; set {var} or run on a terminal")
    try:
        return decode_secret_key_file(data, passphrase)
    except KeyFormatError as e:
        if _is_verifier_key(data):
            raise _verifier_key_given(p) from None
        raise InputError(f"{p}: {e}") from None
    except PassphraseError as e:
        raise InputError(f"{p}: {e}") from None


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # e.g. a literal key too long to be a file name
        return False


def load_verifier_key(spec: str | os.PathLike[str]) -> VerifierKey:
    """A verifier key from a file (``.pub``) or given literally as ``name+id+key``.

    A file that exists wins; otherwise the text is parsed as a literal key,
    whatever it contains: C2SP key names are often ``example.com/log``, and
    the base64 part may hold ``/`` too, so a slash does not make it a path.
    Raises InputError.
    """
    text = str(spec)
    p = Path(text)
    if _is_file(p):
        text = read_text_bounded(p, MAX_KEY_TEXT).strip()
        if text.startswith(PRIVATE_KEY_PREFIX) or secret_key_file_is_encrypted(text.encode()):
            raise _secret_key_error(p)
        try:
            return VerifierKey.parse(text)
        except KeyFormatError as e:
            raise InputError(f"{p}: {e}") from None
    if text.startswith(PRIVATE_KEY_PREFIX):
        raise _secret_key_error(None)
    try:
        return VerifierKey.parse(text)
    except KeyFormatError as e:
        if text.count("+") >= 2:
            raise InputError(f"verifier key {text[:80]!r}: {e}") from None
        raise InputError(f"{p}: no such file (and not a verifier key)") from None


def _verifier_key_given(p: Path) -> InputError:
    secret = p.with_name(p.name.removesuffix(".pub"))
    return InputError(
        f"{p}: this is a verifier (public) key, not a secret key file",
        hint=f"pass the secret key file ({secret})" if secret != p else None,
    )


def _is_verifier_key(data: bytes) -> bool:
    try:
        VerifierKey.parse(data.decode("utf-8"))
    except (UnicodeDecodeError, KeyFormatError):
        return False
    return True


def _secret_key_error(path: Path | None) -> InputError:
    """A secret key where a public one is expected: say so, and echo none of it."""
    if path is None:
        return InputError(
            "this is a secret key, not a verifier key",
            hint="give its verifier key: the .pub file next to the secret key file",
        )
    return InputError(
        f"{path}: this is a secret key file, not a verifier key; pass {path}.pub",
        hint=f"rebuild key generate wrote the verifier key to {path}.pub",
    )
