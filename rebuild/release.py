"""Maintainer release statements: build and sign them, check an artifact against one.

This is the thin I/O layer around :mod:`verify.intoto` and :mod:`verify.dsse`:
it hashes artifact files, reads envelope files (bounded) and prefixes every
error with the file it concerns. The trust decision itself is made by
``verify``; this module never prints, never exits and never writes (the CLI
writes the envelope atomically).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rebuild.errors import InputError, UsageError
from rebuild.fsio import read_bounded
from rebuild.log.urls import check_url
from rebuild.recipe import Recipe
from verify.dsse import MAX_ENVELOPE_SIZE
from verify.errors import DigestMismatchError, FormatError, VerifyError
from verify.intoto import (
    RELEASE_PREDICATE_TYPE,
    ReleasePredicate,
    Statement,
    Subject,
    make_statement,
    sign_statement,
    verify_statement,
)
from verify.keys import SigningKey, VerifierKey

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, streamed (artifacts may be large)."""
    p = Path(path)
    h = hashlib.sha256()
    try:
        with p.open("rb") as f:
            # A FIFO or device would never end (or would change under us).
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InputError(f"{p}: not a regular file")
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, expected a file") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror}") from None
    return h.hexdigest()


def release_statement(
    artifacts: Sequence[Path],
    recipe: Recipe,
    *,
    package: str | None = None,
    version: str | None = None,
    url: str | None = None,
) -> Statement:
    """The release statement for ``artifacts`` built by ``recipe``.

    ``url``, when given, is where the artifact can be downloaded (a directory
    URL ending in ``/`` gets the file name appended). ``package``/``version``,
    when given, must agree with the recipe: a
    maintainer who says "this is 1.0.1" while holding the 1.0.0 recipe is
    about to sign the wrong thing.
    """
    if package is not None and package != recipe.package:
        raise UsageError(f"--package {package} does not match the recipe's {recipe.package}")
    if version is not None and version != recipe.version:
        raise UsageError(f"--version {version} does not match the recipe's {recipe.version}")
    subjects: list[Subject] = []
    for a in artifacts:
        if not recipe.builds(a.name):
            # A rebuilder compares the published file with the build output of
            # the same name: a release no output matches can never be reproduced.
            outputs = ", ".join(recipe.outputs)
            raise UsageError(
                f"{a}: its name matches none of the recipe's outputs ({outputs}), so no "
                "rebuild could ever reproduce it",
                hint=f"publish the artifact under the name the build gives it ({outputs}), "
                "or change the recipe's [build] outputs",
            )
        digest = sha256_file(a)
        location = None
        if url is not None:
            check_url(url, "--url")
            location = url + a.name if url.endswith("/") else url
        try:
            subjects.append(Subject(a.name, digest, location))
        except FormatError as e:
            raise InputError(f"{a}: unusable as a statement subject: {e}") from None
    predicate = ReleasePredicate(
        package=recipe.package,
        version=recipe.version,
        source=recipe.source,
        recipe=recipe.text,
        recipe_sha256=recipe.sha256,
    )
    try:
        return make_statement(subjects, predicate)
    except FormatError as e:
        raise InputError(f"release statement: {e}") from None


def sign_release(statement: Statement, key: SigningKey) -> bytes:
    """The signed DSSE envelope (JSON bytes, no trailing newline)."""
    try:
        return sign_statement(statement, [key])
    except FormatError as e:
        raise InputError(f"release statement: {e}") from None


@dataclass(frozen=True)
class ReleaseCheck:
    """A release statement that verified, and the artifact it covers."""

    statement: Statement
    predicate: ReleasePredicate
    subject: Subject
    signers: tuple[VerifierKey, ...]
    artifact_sha256: str


def _prefixed(e: VerifyError, where: Path) -> VerifyError:
    """The same error type with the file named, so the CLI's exit code is unchanged."""
    return type(e)(f"{where}: {e}")


def verify_release(
    artifact: Path, statement_file: Path, trusted: Sequence[VerifierKey]
) -> ReleaseCheck:
    """Check that a trusted maintainer key signed a release statement covering ``artifact``.

    1. Read the envelope, refusing more than the log's 64 KiB entry limit.
    2. Verify the DSSE signature against ``trusted`` (one distinct key suffices).
    3. Parse the statement strictly; it must carry the release predicate.
    4. Hash the artifact; its sha256 must be one of the statement's subjects.
    """
    data = read_bounded(statement_file, MAX_ENVELOPE_SIZE)  # step 1
    try:
        verified = verify_statement(  # steps 2 and 3
            data, trusted, 1, predicate_type=RELEASE_PREDICATE_TYPE
        )
    except VerifyError as e:
        raise _prefixed(e, statement_file) from None
    statement = verified.statement
    if not isinstance(statement.predicate, ReleasePredicate):  # verify_statement ensured it
        raise FormatError(f"{statement_file}: not a release statement")
    digest = sha256_file(artifact)  # step 4
    subject = statement.subject_for(digest)
    if subject is None:
        names = ", ".join(f"{s.name} ({s.sha256[:12]}…)" for s in statement.subjects)
        raise DigestMismatchError(
            f"{artifact}: sha256 {digest} is not covered by {statement_file} (it signs {names})"
        )
    return ReleaseCheck(statement, statement.predicate, subject, verified.result.signed, digest)
