"""Signed statements for tests that need real log entries: a rebuilder's attestation."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rebuild.engine.attest import rebuild_attestation
from rebuild.keystore import load_signing_key
from verify.intoto import GitSource, Verdict

SOURCE = GitSource(
    "https://git.example.org/hello-phar.git", "v1.0.0", "3f786850e387550fdab836ed7e6dc881de23001b"
)


def attestation(key_file: Path, artifact: Path, verdict: Verdict = "reproduced") -> bytes:
    """The DSSE envelope of a hello-phar 1.0.0 rebuild attestation about ``artifact``,
    signed with the secret key in ``key_file`` (``mismatch``: another rebuilt digest)."""
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    reproduced = verdict == "reproduced"
    return rebuild_attestation(
        key=load_signing_key(key_file),
        artifact_name=artifact.name,
        artifact_sha256=digest,
        package="hello-phar",
        version="1.0.0",
        verdict=verdict,
        source=SOURCE,
        recipe_sha256="1" * 64,
        environment="php-8.2",
        environment_lock="2" * 64,
        tool_version="rebuild/0.1.0",
        started_at=1_700_000_000,
        finished_at=1_700_000_060,
        rebuilt_sha256=digest if reproduced else "3" * 64,
        diff_report_sha256=None if reproduced else "4" * 64,
        causes=() if reproduced else ("timestamps",),
    )
