"""``rebuild fleet publish``: sign each result and add it to the log exactly once.

The one process that holds the rebuilder's key. A result is identified by
(artifact sha256, recipe digest, rebuilder key); for each, in order:

1. the local record (``D/published.sqlite``, durable before anything is
   sent) says it is in the log: done;
2. the local record holds a signed envelope not yet confirmed: look its
   leaf hash up in the log and add it only if absent (a crash between the
   add and the record is repaired here, with the same bytes);
3. the log already has an attestation by this key for the same artifact
   and recipe (found through the lookup endpoint and read through the
   tiles, e.g. after the local state was lost): record it, done;
4. otherwise sign, record the envelope, add it, record its index.

A redelivered job, a second worker's result or a replayed message therefore
never produces a second entry. The log being unreachable is retried (the
result stays in the broker until the entry is durable); a malformed result
is dead-lettered. The signing key never leaves this process: workers send
unsigned results, and trust in them is trust in the broker's access control
(docs/fleet.md).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rebuild.engine import attest
from rebuild.errors import InputError, StorageError, TransportError
from rebuild.fleet.broker import Fleet, Keys, now
from rebuild.fleet.jobs import JobResult, MessageError
from rebuild.fleet.state import StateDir
from rebuild.log.client import LogClient
from rebuild.log.tree import TreeReader
from verify import merkle
from verify.checkpoint import parse as parse_checkpoint
from verify.errors import VerifyError
from verify.intoto import RebuildPredicate, verify_statement
from verify.keys import SigningKey
from verify.note import split_note

log = logging.getLogger("rebuild.fleet.publish")

MAX_LOOKUP: Final = 1000
LATEST_KEPT: Final = 100_000
_BUILT: Final = ("reproduced", "equivalent", "mismatch")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attestations (
    artifact_sha256 TEXT NOT NULL,
    recipe_sha256 TEXT NOT NULL,
    key_id TEXT NOT NULL,
    envelope BLOB NOT NULL,
    log_index INTEGER,
    job_key TEXT NOT NULL,
    verdict TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (artifact_sha256, recipe_sha256, key_id)
)
"""


class MalformedResult(Exception):
    """A result no publisher can sign; Dramatiq dead-letters it (``throws``)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one result."""

    action: str  # "added", "already-recorded", "found-in-log"
    log_index: int
    verdict: str


class Ledger:
    """The durable local record of what this rebuilder key put in the log."""

    def __init__(self, state: StateDir) -> None:
        path = state.path / "published.sqlite"
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise StorageError(f"{path}: {e}") from None
        self.path = path

    def get(self, triple: tuple[str, str, str]) -> tuple[bytes, int | None] | None:
        row = self._one(
            "SELECT envelope, log_index FROM attestations "
            "WHERE artifact_sha256=? AND recipe_sha256=? AND key_id=?",
            triple,
        )
        return None if row is None else (bytes(row[0]), row[1])

    def record(
        self, triple: tuple[str, str, str], envelope: bytes, index: int | None, r: JobResult
    ) -> None:
        self._exec(
            "INSERT INTO attestations VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET log_index=excluded.log_index",
            (*triple, envelope, index, r.job_key, r.verdict, now()),
        )

    def count(self) -> int:
        row = self._one("SELECT count(*) FROM attestations WHERE log_index IS NOT NULL", ())
        return int(row[0]) if row else 0

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        try:
            return self.db.execute(sql, args).fetchone()
        except sqlite3.Error as e:
            raise StorageError(f"{self.path}: {e}") from None

    def _exec(self, sql: str, args: tuple[Any, ...]) -> None:
        try:
            self.db.execute(sql, args)
        except sqlite3.Error as e:
            raise StorageError(f"{self.path}: {e}") from None

    def close(self) -> None:
        self.db.close()


class Publisher:
    """The publish actor's body (see the module docstring for the steps)."""

    def __init__(
        self,
        fleet: Fleet,
        key: SigningKey,
        log_url: str,
        state: StateDir,
        *,
        ca_bundle: Path | None = None,
    ) -> None:
        self.fleet = fleet
        self.key = key
        self.vkey = key.verifier_key()
        self.log_url = log_url
        self.ca_bundle = ca_bundle
        self.ledger = Ledger(state)
        self.outcomes: dict[str, int] = {}

    def __call__(self, payload: dict[str, Any]) -> Outcome:
        try:
            result = JobResult.from_json(payload)
        except MessageError as e:
            log.error("dead-lettering a malformed result: %s", e)
            raise MalformedResult(str(e)) from None
        outcome = self.publish(result)
        self.outcomes[outcome.action] = self.outcomes.get(outcome.action, 0) + 1
        log.info(
            "%s: %s %s at log index %d",
            result.label,
            outcome.verdict,
            outcome.action,
            outcome.log_index,
        )
        return outcome

    def publish(self, r: JobResult) -> Outcome:
        triple = (r.artifact.sha256, r.triple_recipe, self.vkey.encode())
        with LogClient(self.log_url, self.ca_bundle) as client:
            # Step 1 and 2: the local record.
            known = self.ledger.get(triple)
            if known is not None and known[1] is not None:
                self._status(r, known[1], new=False)
                return Outcome("already-recorded", known[1], r.verdict)
            if known is not None:
                index = self._ensure_logged(client, known[0])
                self.ledger.record(triple, known[0], index, r)
                self._status(r, index, new=True)
                return Outcome("added", index, r.verdict)
            # Step 3: the log itself.
            found = self._find_in_log(client, r)
            if found is not None:
                index, envelope = found
                self.ledger.record(triple, envelope, index, r)
                self._status(r, index, new=False)
                return Outcome("found-in-log", index, r.verdict)
            # Step 4: sign, record, add, record.
            envelope = self._sign(r)
            self.ledger.record(triple, envelope, None, r)
            index = self._ensure_logged(client, envelope)
            self.ledger.record(triple, envelope, index, r)
            self._status(r, index, new=True)
            return Outcome("added", index, r.verdict)

    def _sign(self, r: JobResult) -> bytes:
        try:
            return attest.rebuild_attestation(
                key=self.key,
                artifact_name=r.artifact.name,
                artifact_sha256=r.artifact.sha256,
                package=r.package,
                version=r.version,
                verdict=r.verdict,
                source=r.source,
                recipe_sha256=r.recipe_sha256,
                environment=r.environment or "unknown",
                environment_lock=r.environment_lock,
                tool_version=r.tool_version,
                started_at=r.started_at,
                finished_at=r.finished_at,
                rebuilt_sha256=r.rebuilt_sha256 if r.verdict in _BUILT else None,
                diff_report_sha256=(
                    r.diff_report_sha256 if r.verdict in ("equivalent", "mismatch") else None
                ),
                causes=r.causes,
                normalization=r.normalization,
            )
        except InputError as e:
            raise MalformedResult(f"{r.label}: {e}") from None

    def _ensure_logged(self, client: LogClient, envelope: bytes) -> int:
        leaf = merkle.leaf_hash(envelope)
        index = client.lookup_leaf(leaf)
        if index is not None:
            return index
        doc = client.add(envelope, wait=False)
        if doc["leaf_hash"] != leaf.hex():
            raise TransportError(f"{self.log_url}: the log reports another entry's leaf hash")
        return int(doc["index"])

    def _find_in_log(self, client: LogClient, r: JobResult) -> tuple[int, bytes] | None:
        """An attestation by this key about this artifact and recipe already in the log.

        The checkpoint's signature is not checked here: an entry counts only
        if it carries this publisher's own signature over the same artifact
        and recipe, which no log can forge.
        """
        # Only entries whose signature hint names this publisher's key ID: junk
        # naming the same artifact cannot push ours out of the first page.
        key_id = bytes.fromhex(self.vkey.key_id)
        indexes = client.lookup_subject(bytes.fromhex(r.artifact.sha256), [key_id])[:MAX_LOOKUP]
        if not indexes:
            return None
        try:
            text, _ = split_note(client.checkpoint().decode("utf-8", "replace"))
            reader = TreeReader(client, parse_checkpoint(text))
        except VerifyError as e:
            raise TransportError(f"{self.log_url}: unusable checkpoint: {e}") from None
        if max(indexes) >= reader.size:
            # Not yet in a published checkpoint: look again later rather than guess.
            raise TransportError(
                f"{self.log_url}: entries for {r.artifact.sha256[:12]}… are not published yet"
            )
        for index in reversed(indexes):
            entry = reader.entry(index)
            try:
                verified = verify_statement(entry, [self.vkey])
            except VerifyError:
                continue  # not ours (or not a statement)
            predicate = verified.statement.predicate
            if (
                isinstance(predicate, RebuildPredicate)
                and predicate.recipe_sha256 == r.triple_recipe
                and verified.statement.subject_for(r.artifact.sha256) is not None
            ):
                return index, entry
        return None

    def _status(self, r: JobResult, index: int, *, new: bool) -> None:
        """What ``fleet status`` shows: verdict counts and the latest per package version."""
        name = f"{r.package}=={r.version}"
        doc = {
            "package": r.package,
            "version": r.version,
            "label": r.label,
            "artifact": r.artifact.name,
            "sha256": r.artifact.sha256,
            "verdict": r.verdict,
            "causes": list(r.causes[:8]),
            "log_index": index,
            "finished_at": r.finished_at,
            "attempts": r.attempts,
            "worker": r.worker,
            "reports": [x.to_json() for x in r.reports],
        }
        with self.fleet.errors("recording the status"):
            pipe = self.fleet.client.pipeline(transaction=True)
            if new:
                pipe.hincrby(Keys.verdicts, r.verdict, 1)
            pipe.hset(Keys.latest, name, json.dumps(doc, sort_keys=True))
            pipe.zadd(Keys.latest_order, {name: r.finished_at})
            pipe.execute()
            excess = int(self.fleet.client.zcard(Keys.latest_order)) - LATEST_KEPT
            if excess > 0:
                names: Any = self.fleet.client.zrange(Keys.latest_order, 0, excess - 1)
                old = [n for n in names if isinstance(n, bytes)]
                if old:
                    self.fleet.client.zrem(Keys.latest_order, *old)
                    self.fleet.client.hdel(Keys.latest, *old)

    def close(self) -> None:
        self.ledger.close()
