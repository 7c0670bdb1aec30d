"""Ed25519 keys named and identified the C2SP signed-note way.

A verifier key is ``<name>+<hex key ID>+<base64(type || public key)>`` where
the key ID is the first four bytes of SHA-256(name || 0x0A || type || public
key). Every key in the system (maintainer, rebuilder, log, witness) is written
this way. Type 0x01 is a plain Ed25519 signed-note key; type 0x04 is a
tlog-cosignature/v1 witness key (the same Ed25519 key pair, a different
signed message and key ID).

Secret keys use Go's ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)``
text, optionally wrapped in a passphrase-protected JSON envelope
(Argon2id + XSalsa20-Poly1305 secretbox). This module parses and produces
bytes; it never touches files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from verify.errors import KeyFormatError, PassphraseError
from verify.parsing import decode_base64

ALG_ED25519: Final = 0x01
ALG_COSIGNATURE_V1: Final = 0x04
KNOWN_ALGORITHMS: Final = frozenset({ALG_ED25519, ALG_COSIGNATURE_V1})

PRIVATE_KEY_PREFIX: Final = "PRIVATE+KEY+"
ENCRYPTED_FORMAT: Final = "rebuild-secret-key/v1"
MAX_KEY_TEXT: Final = 4096
# Bounds on attacker-chosen KDF parameters read from a key file: refuse to
# burn more than 1 GiB or an absurd number of passes on a hostile file.
MAX_MEMLIMIT: Final = 1 << 30
MAX_OPSLIMIT: Final = 16


# ``\s`` matches exactly the characters str.isspace() accepts, which include
# every Zs (space separator) character; one search replaces a loop per character.
_WHITE_SPACE = re.compile(r"\s")


def is_valid_name(name: str) -> bool:
    """A key name: non-empty UTF-8 with no '+' and no Unicode white space. Never raises."""
    if not name or "+" in name:
        return False
    return _WHITE_SPACE.search(name) is None


def compute_key_hash(name: str, algorithm: int, public_key: bytes) -> int:
    """The 32-bit key ID: SHA-256(name || 0x0A || type || key)[:4], big-endian.

    Raises ValueError for an ``algorithm`` outside 0..255 and UnicodeEncodeError for a
    ``name`` UTF-8 cannot encode (a lone surrogate).
    """
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public_key).digest()
    return int(struct.unpack(">I", digest[:4])[0])


@dataclass(frozen=True)
class VerifierKey:
    """A parsed C2SP verifier key."""

    name: str
    key_hash: int
    algorithm: int
    public_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise KeyFormatError(f"invalid key name {self.name!r}")
        if self.algorithm not in KNOWN_ALGORITHMS:
            raise KeyFormatError(f"unsupported key type 0x{self.algorithm:02x}")
        if len(self.public_key) != 32:
            raise KeyFormatError("Ed25519 public key must be 32 bytes")
        if compute_key_hash(self.name, self.algorithm, self.public_key) != self.key_hash:
            raise KeyFormatError(f"key ID does not match key for {self.name!r}")

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse ``name+hash+base64``; the base64 may itself contain '+'.

        Raises KeyFormatError for anything but one well-formed verifier key of a known
        type (0x01 or 0x04) whose key ID matches.
        """
        text = text.strip()
        if len(text) > MAX_KEY_TEXT:
            raise KeyFormatError("verifier key too long")
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("verifier key must be name+keyid+key")
        name, hash_hex, b64 = parts
        if not is_valid_name(name):
            # Never echo much of it: it may be some other file's content.
            shown = repr(name) if len(name) <= 64 else f"{name[:24]!r}... ({len(name)} chars)"
            raise KeyFormatError(f"invalid key name {shown}")
        if len(hash_hex) != 8 or any(c not in "0123456789abcdef" for c in hash_hex):
            raise KeyFormatError("key ID must be 8 lowercase hex digits")
        raw = decode_base64(b64, "verifier key", KeyFormatError)
        if len(raw) != 33:
            raise KeyFormatError("verifier key must encode a type byte and 32 key bytes")
        if raw[0] not in KNOWN_ALGORITHMS:
            raise KeyFormatError(f"unsupported key type 0x{raw[0]:02x}")
        return cls(name, int(hash_hex, 16), raw[0], raw[1:])

    def encode(self) -> str:
        """The ``name+hexkeyid+base64(type || key)`` text. Never raises."""
        keydata = base64.b64encode(bytes([self.algorithm]) + self.public_key).decode()
        return f"{self.name}+{self.key_hash:08x}+{keydata}"

    def __str__(self) -> str:
        return self.encode()

    @property
    def key_id(self) -> str:
        """The key ID as 8 lowercase hex digits. Never raises."""
        return f"{self.key_hash:08x}"

    def verify_raw(self, message: bytes, signature: bytes) -> bool:
        """Check a raw 64-byte Ed25519 signature over ``message``.

        Never raises: a signature that is invalid or not 64 bytes is False.
        """
        if len(signature) != 64:
            return False
        try:
            nacl.signing.VerifyKey(self.public_key).verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 secret key with its signed-note name."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise KeyFormatError(f"invalid key name {self.name!r}")
        if len(self.seed) != 32:
            raise KeyFormatError("Ed25519 seed must be 32 bytes")

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        """A new random key named ``name``. Raises KeyFormatError for an invalid name."""
        return cls(name, nacl.utils.random(32))

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key. Never raises."""
        return bytes(nacl.signing.SigningKey(self.seed).verify_key)

    def verifier_key(self, algorithm: int = ALG_ED25519) -> VerifierKey:
        """This key's verifier key of type ``algorithm`` (0x01 signed note, 0x04
        cosignature).

        Raises KeyFormatError for an unknown type.
        """
        pub = self.public_key
        return VerifierKey(self.name, compute_key_hash(self.name, algorithm, pub), algorithm, pub)

    def sign_raw(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature over ``message``. Never raises."""
        return bytes(nacl.signing.SigningKey(self.seed).sign(message).signature)

    def encode(self) -> str:
        """Go's ``PRIVATE+KEY+name+hash+base64(0x01||seed)`` form. Never raises."""
        key_hash = compute_key_hash(self.name, ALG_ED25519, self.public_key)
        b64 = base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{key_hash:08x}+{b64}"

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        """Parse Go's ``PRIVATE+KEY+name+hash+base64(0x01||seed)`` text.

        Raises KeyFormatError when malformed or when the key ID does not match the key.
        """
        text = text.strip()
        if not text.startswith(PRIVATE_KEY_PREFIX):
            raise KeyFormatError("secret key must start with PRIVATE+KEY+")
        parts = text[len(PRIVATE_KEY_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("secret key must be PRIVATE+KEY+name+keyid+key")
        name, hash_hex, b64 = parts
        if len(hash_hex) != 8 or any(c not in "0123456789abcdef" for c in hash_hex):
            raise KeyFormatError("secret key ID must be 8 lowercase hex digits")
        raw = decode_base64(b64, "secret key", KeyFormatError)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise KeyFormatError("secret key must encode type 0x01 and a 32-byte seed")
        key = cls(name, raw[1:])
        if compute_key_hash(name, ALG_ED25519, key.public_key) != int(hash_hex, 16):
            raise KeyFormatError(f"secret key ID does not match key for {name!r}")
        return key


def encode_secret_key_file(
    key: SigningKey,
    passphrase: bytes | None,
    *,
    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE,
) -> bytes:
    """Serialize a secret key file, encrypting it when a passphrase is given.

    Raises PassphraseError for an empty passphrase; PyNaCl's own error propagates for
    KDF limits it refuses.
    """
    plain = key.encode().encode() + b"\n"
    if passphrase is None:
        return plain
    if not passphrase:
        raise PassphraseError("empty passphrase")
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    box_key = nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    ct = nacl.secret.SecretBox(box_key).encrypt(plain, nonce).ciphertext
    doc = {
        "format": ENCRYPTED_FORMAT,
        "name": key.name,
        "verifier_key": key.verifier_key().encode(),
        "kdf": {
            "algorithm": "argon2id",
            "salt": base64.b64encode(salt).decode(),
            "opslimit": opslimit,
            "memlimit": memlimit,
        },
        "cipher": {
            "algorithm": "xsalsa20-poly1305",
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(ct).decode(),
        },
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def secret_key_file_is_encrypted(data: bytes) -> bool:
    """True when the file holds the encrypted (JSON) form. Never raises."""
    return data.lstrip().startswith(b"{")


def decode_secret_key_file(data: bytes, passphrase: bytes | None) -> SigningKey:
    """Parse a secret key file made by :func:`encode_secret_key_file`.

    Raises KeyFormatError when the file is malformed or inconsistent, PassphraseError
    when it is encrypted and the passphrase is missing or wrong.
    """
    if len(data) > MAX_KEY_TEXT:
        raise KeyFormatError("secret key file too large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError("secret key file is not UTF-8 text") from None
    if not secret_key_file_is_encrypted(data):
        return SigningKey.parse(text)
    try:
        doc = json.loads(text)
        if doc["format"] != ENCRYPTED_FORMAT:
            raise KeyFormatError(f"unknown secret key format {doc['format']!r}")
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf["algorithm"] != "argon2id" or cipher["algorithm"] != "xsalsa20-poly1305":
            raise KeyFormatError("unsupported secret key encryption")
        opslimit, memlimit = kdf["opslimit"], kdf["memlimit"]
        salt = decode_base64(kdf["salt"], "encrypted secret key salt", KeyFormatError)
        nonce = decode_base64(cipher["nonce"], "encrypted secret key nonce", KeyFormatError)
        ct = decode_base64(cipher["ciphertext"], "encrypted secret key", KeyFormatError)
    except KeyFormatError:
        raise
    except (ValueError, KeyError, TypeError, RecursionError):
        raise KeyFormatError("encrypted secret key file is malformed") from None
    # type() rather than isinstance(): JSON true/false are ints to Python.
    if not (type(opslimit) is int and type(memlimit) is int):
        raise KeyFormatError("encrypted secret key file has non-integer KDF limits")
    if not (1 <= opslimit <= MAX_OPSLIMIT and 8192 <= memlimit <= MAX_MEMLIMIT):
        raise KeyFormatError("encrypted secret key file has out-of-range KDF limits")
    if len(salt) != nacl.pwhash.argon2id.SALTBYTES or len(nonce) != 24:
        raise KeyFormatError("encrypted secret key file has a bad salt or nonce length")
    if passphrase is None:
        raise PassphraseError("secret key is passphrase-protected and no passphrase was given")
    box_key = nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )
    try:
        plain = nacl.secret.SecretBox(box_key).decrypt(ct, nonce)
    except nacl.exceptions.CryptoError:
        raise PassphraseError("wrong passphrase (or the key file was altered)") from None
    try:
        key = SigningKey.parse(plain.decode("utf-8"))
    except UnicodeDecodeError:
        raise KeyFormatError("decrypted secret key is not text") from None
    # The clear-text name and verifier key are unauthenticated metadata that
    # tools may show without decrypting; they must describe the key inside.
    if doc.get("name") != key.name or doc.get("verifier_key") != key.verifier_key().encode():
        raise KeyFormatError("encrypted secret key file's name or verifier_key does not match")
    return key
