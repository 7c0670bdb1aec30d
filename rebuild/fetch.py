"""Fetch a release's artifacts by URL, keeping only the bytes its statement names.

A release statement's subjects carry each artifact's name and sha256 and may
carry a ``downloadLocation``; ``--url`` adds more places (mirrors). Bytes are
downloaded with the index seam's rules (https, or http to loopback only;
bounded; written to a temporary file, fsynced, renamed) and kept only when
their sha256 is the subject's: a mirror can withhold an artifact, never swap
it. With maintainer keys, the statement's signature is checked before any
URL it names is contacted. Decides nothing else; never prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rebuild.errors import InputError, RebuildError, TransportError, UsageError
from rebuild.fsio import read_bounded
from rebuild.hashing import sha256_file
from rebuild.sources.pypi import MAX_ARTIFACT, IndexFile, PackageIndex
from verify.dsse import MAX_ENVELOPE_SIZE, Envelope
from verify.errors import VerifyError
from verify.intoto import RELEASE_PREDICATE_TYPE, Statement, Subject, verify_statement
from verify.keys import VerifierKey


@dataclass(frozen=True)
class Fetched:
    """One artifact on disk with the statement's sha256, and where it came from."""

    name: str
    sha256: str
    path: Path
    url: str | None  # None: it was already there

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "path": str(self.path), "url": self.url}


def read_release(statement_file: Path, trusted: Sequence[VerifierKey] = ()) -> Statement:
    """The release statement in ``statement_file``; signed by one of ``trusted`` if given.

    Raises a TrustError (bad or missing trusted signature) or InputError.
    """
    data = read_bounded(statement_file, MAX_ENVELOPE_SIZE)
    try:
        if trusted:
            statement = verify_statement(
                data, trusted, 1, predicate_type=RELEASE_PREDICATE_TYPE
            ).statement
        else:
            statement = Statement.parse(Envelope.parse(data).payload)
    except VerifyError as e:
        raise type(e)(f"{statement_file}: {e}") from None
    if statement.predicate_type != RELEASE_PREDICATE_TYPE:
        raise InputError(f"{statement_file}: not a release statement")
    return statement


def urls_for(subject: Subject, urls: Sequence[str], *, one: bool) -> list[str]:
    """Where to look for ``subject``: each ``urls`` entry (a directory URL ending in
    ``/`` gets the name appended; a file URL only when one artifact is fetched),
    then the statement's own ``downloadLocation``."""
    found: list[str] = []
    for u in urls:
        if u.endswith("/"):
            found.append(u + subject.name)
        elif one:
            found.append(u)
        else:
            raise UsageError(f"--url {u}: with several artifacts, give a directory URL ending in /")
    if subject.download_location:
        found.append(subject.download_location)
    return list(dict.fromkeys(found))


def fetch_subject(subject: Subject, urls: Sequence[str], out_dir: Path) -> Fetched:
    """Put ``subject`` in ``out_dir`` from the first URL that serves its exact bytes."""
    target = out_dir / subject.name
    if target.is_file() and sha256_file(target) == subject.sha256:
        return Fetched(subject.name, subject.sha256, target, None)
    if not urls:
        raise UsageError(
            f"{subject.name}: the release statement gives no downloadLocation",
            hint="say where it is: --url URL (a file, or a directory URL ending in /)",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for url in urls:
        try:
            index = PackageIndex(url)
            path = index.download(
                IndexFile(subject.name, url, subject.sha256, None, None, False),
                out_dir,
                max_bytes=MAX_ARTIFACT,
            )
        except RebuildError as e:
            problems.append(str(e))
            continue
        return Fetched(subject.name, subject.sha256, path, url)
    raise TransportError(
        f"{subject.name}: no URL served it with sha256 {subject.sha256}: " + "; ".join(problems)
    )


def fetch_release(
    statement_file: Path,
    out_dir: Path,
    *,
    urls: Sequence[str] = (),
    names: Sequence[str] = (),
    trusted: Sequence[VerifierKey] = (),
) -> list[Fetched]:
    """Fetch the statement's artifacts (only ``names`` when given) into ``out_dir``."""
    statement = read_release(statement_file, trusted)
    subjects = [s for s in statement.subjects if not names or s.name in names]
    missing = set(names) - {s.name for s in subjects}
    if missing:
        raise UsageError(f"{statement_file}: releases no artifact named {sorted(missing)[0]!r}")
    one = len(subjects) == 1
    return [fetch_subject(s, urls_for(s, urls, one=one), out_dir) for s in subjects]
