"""Steps 5 and 6: sign a rebuild attestation; publish it to the audit log.

Builds the in-toto rebuild predicate from what the pipeline found and signs
it as a DSSE envelope. Decides nothing about the verdict; the predicate's
own validation refuses an attestation that contradicts its digests.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from rebuild.engine.result import LogEntryRef, Verdict
from rebuild.errors import InputError, TransportError
from rebuild.fsio import read_bounded
from rebuild.log.client import LogClient
from rebuild.log.entry import MAX_ENTRY_SIZE
from verify import merkle
from verify.errors import VerifyError
from verify.intoto import (
    EnvironmentRef,
    GitSource,
    Normalization,
    RebuildPredicate,
    SdistSource,
    Subject,
    make_statement,
    sign_statement,
)

_UNKNOWN = "0" * 64


def rebuild_attestation(
    *,
    key: Any,
    artifact_name: str,
    artifact_sha256: str,
    package: str,
    version: str,
    verdict: Verdict,
    source: GitSource | SdistSource,
    recipe_sha256: str | None,
    environment: str,
    environment_lock: str | None,
    tool_version: str,
    started_at: int,
    finished_at: int,
    rebuilt_sha256: str | None,
    diff_report_sha256: str | None,
    causes: tuple[str, ...],
    normalization: Normalization | None = None,
) -> bytes:
    """The signed envelope bytes of one rebuild attestation.

    ``normalization`` (verdict ``equivalent``) records the rules and both
    normalized digests; the subject is the upstream side.
    """
    try:
        predicate = RebuildPredicate(
            package=package,
            version=version,
            verdict=verdict,
            source=source,
            # An error before the recipe or lock were known is attested with
            # an all-zero digest: present, and matching nothing.
            recipe_sha256=recipe_sha256 or _UNKNOWN,
            environment=EnvironmentRef(
                environment, (environment_lock or _UNKNOWN).removeprefix("sha256:")
            ),
            tool_version=tool_version,
            started_at=started_at,
            finished_at=finished_at,
            rebuilt_sha256=rebuilt_sha256,
            diff_report_sha256=diff_report_sha256,
            causes=tuple(c[:200] for c in causes[:32]),
            normalization=normalization,
        )
        statement = make_statement([Subject(artifact_name, artifact_sha256)], predicate)
        data: bytes = sign_statement(statement, [key])
    except VerifyError as e:
        raise InputError(f"cannot form the rebuild attestation: {e}") from None
    return data


def publish(log_url: str, attestation: Path, *, ca_bundle: Path | None = None) -> LogEntryRef:
    """Submit the attestation envelope to the log; wait for its index and proof.

    The log's answer is checked to be about these bytes (its leaf hash); the
    proof itself is verified by whoever relies on it (``rebuild log verify-proof``,
    the gate), not here.
    """
    entry = read_bounded(attestation, MAX_ENTRY_SIZE)
    with LogClient(log_url, ca_bundle) as client:
        doc = client.add(entry, wait=True)
    if doc["leaf_hash"] != merkle.leaf_hash(entry).hex():
        raise TransportError(f"{log_url}: the log reports a leaf hash that is not this entry's")
    proof = doc.get("proof")
    return LogEntryRef(
        url=log_url, index=int(doc["index"]), proof=proof if isinstance(proof, str) else None
    )


def publish_later(log_url: str, attestation: Path) -> str:
    """The command that publishes a kept attestation (and saves its proof)."""
    a = shlex.quote(str(attestation))
    proof = shlex.quote(f"{attestation}.proof")
    return f"rebuild log add --log {shlex.quote(log_url)} --wait --out {proof} {a}"


def prove_later(log_url: str, attestation: Path) -> str:
    """The command that fetches a published attestation's proof once it exists."""
    a = shlex.quote(str(attestation))
    proof = shlex.quote(f"{attestation}.proof")
    return f"rebuild log prove --log {shlex.quote(log_url)} --out {proof} {a}"
