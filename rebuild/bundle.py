"""``rebuild bundle``: collect what the gate needs from a log, or from files.

From a log (:func:`collect_from_log`): fetch the published checkpoint *once*;
find the entries whose in-toto subject is the artifact's sha256 through the
paged lookup API; read those entries from the log's entry bundles; keep the
release statement and the rebuild attestations; and compute every inclusion
proof (and the consistency proof from ``--since-size``) from the log's hash
tiles against that one checkpoint, after checking the tiles reproduce its
root. Nothing is taken from ``/proof/N``, whose checkpoint can move between
calls. From files (:func:`bundle_from_files`): envelopes and their
tlog-proofs on disk, which must all be proofs in one tree.

The result is a :class:`verify.bundle.Bundle`. Nothing here decides trust:
without a policy every candidate envelope goes in and the gate judges; with
one (``--policy``) only envelopes signed by the package's maintainers and
rebuilders are kept, so junk logged by strangers for a popular digest cannot
crowd out the real attestations. Network failures are TransportError, a log
whose tiles disagree with its checkpoint too; inputs that do not make a
bundle are InputError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from rebuild.errors import InputError, TransportError, UsageError
from rebuild.fsio import read_bounded
from rebuild.log.client import LogClient, NotFoundError
from verify.bundle import MAX_ATTESTATIONS, Bundle, ConsistencyProof, LoggedEnvelope
from verify.checkpoint import Checkpoint
from verify.checkpoint import parse as parse_checkpoint
from verify.dsse import MAX_ENVELOPE_SIZE, PAYLOAD_TYPE_INTOTO, Envelope, check_signatures
from verify.errors import FormatError, SignatureError, VerifyError
from verify.intoto import RebuildPredicate, ReleasePredicate, Statement
from verify.keys import VerifierKey
from verify.merkle import leaf_hash, verify_consistency, verify_inclusion
from verify.note import split_note
from verify.policy import UpdatePolicy
from verify.tiles import TILE_WIDTH, Tile, TileHashes, parse_entry_bundle
from verify.tlogproof import MAX_PROOF_TEXT, TlogProof
from verify.tlogproof import parse as parse_proof

MAX_LOOKUP_PAGES: Final = 64
MAX_LOOKUP_ENTRIES: Final = 16384
MAX_KEYID_LOOKUPS: Final = 32
_HEX8 = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True)
class Candidate:
    """One logged envelope about the artifact, as found (nothing verified)."""

    index: int
    envelope: bytes
    statement: Statement
    signers: tuple[str, ...]
    """The envelope's keyid hints (unauthenticated)."""


@dataclass
class Collected:
    """A bundle and what went into it (for the CLI's report)."""

    bundle: Bundle
    release: Candidate
    attestations: list[Candidate]
    skipped: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        cp = self.bundle.checkpoint_body()
        pred = self.release.statement.predicate
        return {
            "package": pred.package,
            "version": pred.version,
            "release_index": self.release.index,
            "attestations": [
                {
                    "index": a.index,
                    "signers": list(a.signers),
                    "verdict": a.statement.predicate.verdict
                    if isinstance(a.statement.predicate, RebuildPredicate)
                    else None,
                }
                for a in self.attestations
            ],
            "checkpoint": {"origin": cp.origin, "size": cp.size},
            "consistency_from": [c.old_size for c in self.bundle.consistency],
            "skipped": self.skipped,
        }


# -- lookup -------------------------------------------------------------------


def _lookup_page(
    client: LogClient, digest: str, cursor: int | None, keyid: str | None
) -> tuple[list[int], int | None]:
    query: dict[str, str] = {}
    if cursor is not None:
        query["cursor"] = str(cursor)
    if keyid is not None:
        query["keyid"] = keyid
    path = f"/lookup/sha256/{digest}" + (f"?{urlencode(query)}" if query else "")
    status, _, data = client.request("GET", path)
    where = f"{client.url}/lookup/sha256/{digest}"
    if status == 404:
        return [], None
    if status != 200:
        raise TransportError(f"{where}: HTTP {status}")
    try:
        doc = json.loads(data)
    except ValueError:
        raise TransportError(f"{where}: response is not JSON") from None
    if not isinstance(doc, dict) or doc.get("sha256") != digest:
        raise TransportError(f"{where}: response is not about this digest")
    indexes = doc.get("indexes")
    if not isinstance(indexes, list) or not all(type(i) is int and i >= 0 for i in indexes):
        raise TransportError(f"{where}: response lacks a list of indexes")
    if indexes != sorted(set(indexes)):
        raise TransportError(f"{where}: indexes are not ascending")
    nxt = doc.get("next_cursor")
    if nxt is not None and (type(nxt) is not int or nxt < 0):
        raise TransportError(f"{where}: next_cursor is not a non-negative integer")
    return indexes, nxt


def lookup_indexes(client: LogClient, digest: str, keyid: str | None = None) -> list[int]:
    """Every index whose subject is ``digest``, following ``next_cursor`` pages.

    Works with servers that do not page (no ``next_cursor``). Bounded by
    :data:`MAX_LOOKUP_PAGES` pages and :data:`MAX_LOOKUP_ENTRIES` indexes; a
    cursor that does not advance is a TransportError.
    """
    if keyid is not None and not _HEX8.fullmatch(keyid):
        raise UsageError(f"keyid {keyid!r} must be 8 lowercase hex digits")
    found: set[int] = set()
    cursor: int | None = None
    for _ in range(MAX_LOOKUP_PAGES):
        indexes, nxt = _lookup_page(client, digest, cursor, keyid)
        found.update(indexes)
        if len(found) > MAX_LOOKUP_ENTRIES:
            raise TransportError(
                f"{client.url}: more than {MAX_LOOKUP_ENTRIES} entries for sha256 {digest}"
            )
        if nxt is None:
            return sorted(found)
        if cursor is not None and nxt <= cursor:
            raise TransportError(f"{client.url}: lookup cursor did not advance ({nxt})")
        cursor = nxt
    raise TransportError(f"{client.url}: more than {MAX_LOOKUP_PAGES} lookup pages for {digest}")


# -- entries and proofs -----------------------------------------------------


def _entry_bundle(client: LogClient, n: int, size: int) -> list[bytes]:
    width = min(TILE_WIDTH, size - n * TILE_WIDTH)
    tile = Tile(-1, n, width)
    try:
        data = client.tile(tile)
        return parse_entry_bundle(data, width)
    except NotFoundError:
        if not tile.is_partial:
            raise
    # tlog-tiles lets a log delete a partial bundle once the full one exists.
    full = parse_entry_bundle(client.tile(tile.full()), TILE_WIDTH)
    return full[:width]


def read_entries(client: LogClient, indexes: Iterable[int], size: int) -> dict[int, bytes]:
    """The logged bytes of each index below ``size``, one bundle fetch per 256 entries."""
    wanted = sorted(i for i in set(indexes) if i < size)
    out: dict[int, bytes] = {}
    bundles: dict[int, list[bytes]] = {}
    try:
        for i in wanted:
            n = i // TILE_WIDTH
            if n not in bundles:
                bundles[n] = _entry_bundle(client, n, size)
            out[i] = bundles[n][i % TILE_WIDTH]
    except FormatError as e:
        raise TransportError(f"{client.url}: malformed entry bundle: {e}") from None
    return out


def _candidate(index: int, envelope: bytes, digest: str) -> Candidate | None:
    """The envelope as a statement about ``digest``, or None if it is not one."""
    try:
        env = Envelope.parse(envelope)
        if env.payload_type != PAYLOAD_TYPE_INTOTO:
            return None
        statement = Statement.parse(env.payload)
    except FormatError:
        return None
    if statement.subject_for(digest) is None:
        return None
    return Candidate(index, envelope, statement, tuple(s.keyid for s in env.signatures))


def _signed_by(envelope: bytes, keys: Sequence[VerifierKey]) -> bool:
    try:
        return bool(check_signatures(Envelope.parse(envelope), keys, 1).signed)
    except (FormatError, SignatureError):
        return False


def _choose(
    candidates: list[Candidate],
    digest: str,
    package: str | None,
    trust: UpdatePolicy | None,
) -> tuple[Candidate, list[Candidate], list[str]]:
    releases: list[Candidate] = []
    others: list[Candidate] = []
    skipped: list[str] = []
    seen: set[bytes] = set()
    for c in candidates:
        if c.envelope in seen:
            skipped.append(f"index {c.index}: a copy of an earlier entry")
            continue
        seen.add(c.envelope)
        pred = c.statement.predicate
        if not isinstance(pred, ReleasePredicate):
            others.append(c)
        elif package is not None and pred.package != package:
            skipped.append(f"index {c.index}: release of another package ({pred.package})")
        elif trust is not None and not _signed_by(c.envelope, _maintainers(trust, pred.package)):
            skipped.append(
                f"index {c.index}: release not signed by a maintainer of {pred.package} "
                "in the policy"
            )
        else:
            releases.append(c)
    if not releases:
        raise InputError(
            f"no release statement for sha256 {digest}"
            + (f" of package {package}" if package else "")
            + " in the log's published checkpoint"
            + (f" ({'; '.join(skipped)})" if skipped else "")
        )
    if len(releases) > 1:
        which = ", ".join(f"index {r.index} ({_release_name(r)})" for r in releases)
        raise InputError(
            f"several release statements for sha256 {digest}: {which}; choose one with "
            "--package, or keep only trusted signers with --policy"
        )
    attestations: list[Candidate] = []
    chosen = releases[0].statement.predicate.package
    pkg = trust.package(chosen) if trust is not None else None
    for c in others:
        if pkg is not None and not _signed_by(c.envelope, pkg.rebuilders):
            skipped.append(f"index {c.index}: attestation not signed by a rebuilder of {chosen}")
        else:
            attestations.append(c)
    if len(attestations) > MAX_ATTESTATIONS:
        raise InputError(
            f"{len(attestations)} attestations for sha256 {digest}, more than a bundle holds "
            f"({MAX_ATTESTATIONS}); keep only trusted rebuilders with --policy"
        )
    return releases[0], attestations, skipped


def _maintainers(policy: UpdatePolicy, package: str) -> tuple[VerifierKey, ...]:
    pkg = policy.package(package)
    return () if pkg is None else pkg.maintainers


def _release_name(c: Candidate) -> str:
    pred = c.statement.predicate
    return f"{pred.package} {pred.version}"


def collect_from_log(
    client: LogClient,
    artifact_sha256: str,
    *,
    package: str | None = None,
    since_size: int | None = None,
    trust: UpdatePolicy | None = None,
) -> Collected:
    """Build a bundle for ``artifact_sha256`` from the log behind ``client``.

    ``trust`` (an update policy) keeps only a release signed by a maintainer
    of the package it names and attestations signed by that package's
    rebuilders, and asks the lookup for those keys' keyids. Raises TransportError (network,
    a log whose tiles disagree with its checkpoint), InputError (no or
    several release statements; too many attestations) and UsageError
    (``since_size`` beyond the log's published size).
    """
    note_bytes = client.checkpoint()
    try:
        note = note_bytes.decode("utf-8")
        cp = parse_checkpoint(split_note(note)[0])
    except (UnicodeDecodeError, FormatError) as e:
        raise TransportError(f"{client.url}/checkpoint: not a checkpoint: {e}") from None
    if since_size is not None and since_size > cp.size:
        raise UsageError(
            f"--since-size {since_size} is beyond the log's published checkpoint (size "
            f"{cp.size}): the log is behind what this updater accepted"
        )
    ids = _keyids(trust, package)
    if ids is None:
        indexes = lookup_indexes(client, artifact_sha256)
    else:
        indexes = sorted({i for kid in ids for i in lookup_indexes(client, artifact_sha256, kid)})
    skipped = [f"index {i}: not yet in the published checkpoint" for i in indexes if i >= cp.size]
    entries = read_entries(client, indexes, cp.size)
    candidates = [c for i, e in sorted(entries.items()) if (c := _candidate(i, e, artifact_sha256))]
    release, attestations, more = _choose(candidates, artifact_sha256, package, trust)
    skipped += more
    tiles = TileHashes(cp.size, client.tile)
    bundle = _prove(
        tiles,
        cp,
        note,
        release=release,
        attestations=attestations,
        since_size=since_size,
        where=client.url,
    )
    return Collected(bundle, release, attestations, skipped)


def _keyids(trust: UpdatePolicy | None, package: str | None) -> list[str] | None:
    """The keyids to ask the lookup for, or None for one unfiltered lookup."""
    if trust is None:
        return None
    pkgs = [p for p in trust.packages if package is None or p.name == package]
    ids = sorted({f"{k.key_hash:08x}" for p in pkgs for k in (*p.maintainers, *p.rebuilders)})
    # Many keys: one unfiltered lookup costs less than one per key.
    return ids if 0 < len(ids) <= MAX_KEYID_LOOKUPS else None


def _prove(
    tiles: TileHashes,
    cp: Checkpoint,
    note: str,
    *,
    release: Candidate,
    attestations: list[Candidate],
    since_size: int | None,
    where: str,
) -> Bundle:
    """Proofs from tiles, each checked here so a bad log is caught before the gate."""
    try:
        if tiles.root() != cp.root_hash:
            raise TransportError(
                f"{where}: the log's tiles do not reproduce the root of its checkpoint "
                f"(size {cp.size})"
            )

        def logged(c: Candidate) -> LoggedEnvelope:
            proof = tiles.inclusion_proof(c.index)
            verify_inclusion(leaf_hash(c.envelope), c.index, cp.size, proof, cp.root_hash)
            return LoggedEnvelope(c.envelope, TlogProof(c.index, tuple(proof), note))

        consistency: tuple[ConsistencyProof, ...] = ()
        if since_size is not None and 0 < since_size < cp.size:
            hashes = tiles.consistency_proof(since_size)
            # Checked against the tiles' own view of the old root: a sanity
            # check of the log's data; the gate checks it against its state.
            old_root = tiles.subtree(0, since_size)
            verify_consistency(since_size, cp.size, hashes, old_root, cp.root_hash)
            consistency = (ConsistencyProof(since_size, tuple(hashes)),)
        return Bundle(note, logged(release), tuple(logged(a) for a in attestations), consistency)
    except VerifyError as e:
        raise TransportError(f"{where}: the log's tiles do not prove its entries: {e}") from None


# -- from files -----------------------------------------------------------------


def _read_logged(envelope: Path, proof: Path) -> tuple[bytes, TlogProof]:
    data = read_bounded(envelope, MAX_ENVELOPE_SIZE)
    text = read_bounded(proof, MAX_PROOF_TEXT)
    try:
        return data, parse_proof(text)
    except FormatError as e:
        raise InputError(f"{proof}: {e}") from None


def _cosigned_at(note: str) -> int:
    """The newest timestamp among a note's cosignature lines (unverified; 0 if none)."""
    _, sigs = split_note(note)
    return max(
        (int.from_bytes(s.signature[:8], "big") for s in sigs if len(s.signature) == 72),
        default=0,
    )


def bundle_from_files(
    release: tuple[Path, Path],
    attestations: Sequence[tuple[Path, Path]],
    *,
    artifact_sha256: str | None = None,
) -> Bundle:
    """A bundle from (envelope, tlog-proof) file pairs, e.g. a mirror's copies.

    Every proof must be in the same tree (same origin, size and root); the
    bundle uses the checkpoint note with the newest cosignature among them
    (the gate verifies it). With ``artifact_sha256`` the release must name
    it. Raises InputError.
    """
    pairs = [release, *attestations]
    loaded = [_read_logged(e, p) for e, p in pairs]
    bodies = {split_note(tp.checkpoint)[0] for _, tp in loaded}
    if len(bodies) != 1:
        sizes = sorted({parse_checkpoint(b).size for b in bodies})
        raise InputError(
            f"the proofs are against {len(bodies)} different trees (sizes {sizes}); fetch them "
            "against one checkpoint (rebuild log prove, or rebuild bundle --log)"
        )
    note = max((tp.checkpoint for _, tp in loaded), key=_cosigned_at)
    entries = [
        LoggedEnvelope(data, TlogProof(tp.index, tp.proof, note, tp.extra)) for data, tp in loaded
    ]
    if artifact_sha256 is not None:
        c = _candidate(entries[0].proof.index, entries[0].envelope, artifact_sha256)
        if c is None or not isinstance(c.statement.predicate, ReleasePredicate):
            raise InputError(f"{release[0]}: not a release statement for sha256 {artifact_sha256}")
    try:
        return Bundle(note, entries[0], tuple(entries[1:]))
    except FormatError as e:
        raise InputError(f"cannot make a bundle: {e}") from None
