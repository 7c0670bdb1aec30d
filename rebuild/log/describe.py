"""What one log entry says, for a person or a script reading the log.

Reports an entry's kind (a maintainer's ``release`` statement, a rebuilder's
``rebuild`` attestation, or ``other``), its package, version, artifacts,
verdict and signers. The only judgement it makes is which of the *given*
trusted keys signed the entry (``verify.dsse.check_signatures``, counting
distinct keys); everything else is reported as the entry claims it, and the
key IDs in ``signers`` are hints an entry's author chose. An entry that is
not one of rebuild's statements is described, never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from verify import merkle
from verify.dsse import Envelope, check_signatures, key_hint
from verify.errors import SignatureError, VerifyError
from verify.intoto import RebuildPredicate, ReleasePredicate, Statement
from verify.keys import VerifierKey


def describe_entry(data: bytes, trusted: Sequence[VerifierKey] = ()) -> dict[str, Any]:
    """A JSON-ready summary of entry ``data``; ``trusted`` keys are checked against it."""
    doc: dict[str, Any] = {"leaf_hash": merkle.leaf_hash(data).hex(), "bytes": len(data)}
    try:
        envelope = Envelope.parse(data)
    except VerifyError as e:
        return doc | {"kind": "other", "problem": f"not a DSSE envelope: {e}"}
    doc["payload_type"] = envelope.payload_type
    doc["signers"] = [s.keyid or None for s in envelope.signatures]
    if trusted:
        try:
            result = check_signatures(envelope, trusted)
        except SignatureError as e:
            doc["verified_signers"] = []
            doc["problem"] = str(e)
        else:
            doc["verified_signers"] = [key_hint(k) for k in result.signed]
    try:
        statement = Statement.parse(envelope.payload)
    except VerifyError as e:
        return doc | {"kind": "other", "problem": doc.get("problem") or f"not a statement: {e}"}
    doc["predicate_type"] = statement.predicate_type
    doc["subjects"] = [{"name": s.name, "sha256": s.sha256} for s in statement.subjects]
    p = statement.predicate
    doc["package"], doc["version"] = p.package, p.version
    doc["source"] = p.source.to_dict()
    doc["recipe_sha256"] = p.recipe_sha256
    if isinstance(p, ReleasePredicate):
        doc["kind"] = "release"
    elif isinstance(p, RebuildPredicate):
        doc["kind"] = "rebuild"
        doc["verdict"] = p.verdict
        doc["rebuilt_sha256"] = p.rebuilt_sha256
        doc["environment"] = p.environment.name
        doc["tool_version"] = p.tool_version
        doc["finished_at"] = p.finished_at
        doc["causes"] = list(p.causes)
    return doc


def one_line(doc: dict[str, Any]) -> str:
    """``release hello-phar 1.0.0 hello.phar, signed by maintainer.example+1234abcd``."""
    kind = doc.get("kind", "other")
    if kind == "other":
        return f"other entry ({doc.get('problem') or doc.get('payload_type', '?')})"
    names = ", ".join(s["name"] for s in doc.get("subjects", []))
    what = f"{kind} {doc['package']} {doc['version']} {names}"
    if kind == "rebuild":
        what += f": {doc['verdict']}"
    verified = doc.get("verified_signers")
    claimed = ", ".join(k or "(no key ID)" for k in doc.get("signers", []))
    if verified:
        return f"{what}; signed by {', '.join(verified)} (verified)"
    if verified is not None:
        return f"{what}; key IDs {claimed}, none of them a --trusted-key"
    return f"{what}; key IDs {claimed} (not verified: give --trusted-key)"
