"""verify/'s public surface: pinned, loaded lazily, documented, and its example runs.

The names an updater may rely on are ``verify.__all__``. Changing that list
is an API change: this test must change with it, on purpose. Every public
function in verify/ says in its docstring what it raises (or that it raises
nothing), because a verifier's caller decides what an exception means.
"""

from __future__ import annotations

import ast
import doctest
import subprocess
import sys
from pathlib import Path

import verify
from benchmarks.code_shape import public_functions, raises_documented

VERIFY = Path(verify.__file__).parent

PUBLIC = [
    *("EMPTY_STATE", "MAX_CLOCK_SKEW", "PAYLOAD_TYPE_INTOTO"),
    *("REBUILD_PREDICATE_TYPE", "RELEASE_PREDICATE_TYPE"),
    *("Bundle", "BundleFormatError", "Checkpoint", "CheckpointFormatError", "Cosignature"),
    *("Decision", "DigestMismatchError", "Envelope", "EnvelopeFormatError", "EnvironmentRef"),
    *("FormatError", "GitSource", "InstalledRelease", "KeyFormatError", "Note"),
    *("NoteFormatError", "OriginError", "PackagePolicy", "PassphraseError", "PolicyError"),
    *("ProofError", "ProofFormatError", "RebuildPredicate", "ReleasePredicate", "SdistSource"),
    *("SignatureError", "SigningKey", "StateFormatError", "Statement", "Subject"),
    *("ThresholdError", "TileFormatError", "TlogPolicy", "TlogProof", "TrustError"),
    *("TrustedState", "UnsignedError", "UpdatePolicy", "VerificationResult", "VerifiedEnvelope"),
    *("VerifiedProof", "VerifiedStatement", "VerifierKey", "VerifyError", "Version"),
    *("VersionError", "cosign", "decide", "decode_secret_key_file", "encode_secret_key_file"),
    *("leaf_hash", "make_statement", "open_checkpoint", "open_note", "parse_bundle"),
    *("parse_checkpoint", "parse_state", "parse_tlog_policy", "parse_tlog_proof"),
    *("parse_update_policy", "parse_version", "sign_checkpoint", "sign_envelope", "sign_note"),
    *("sign_statement", "verify_consistency", "verify_cosignatures", "verify_envelope"),
    *("verify_inclusion", "verify_statement", "verify_tlog_proof", "witness_key"),
]


def test_public_surface_is_pinned() -> None:
    assert sorted(verify.__all__) == sorted(PUBLIC)
    assert len(set(PUBLIC)) == len(PUBLIC)


def test_every_public_name_resolves_to_a_verify_module() -> None:
    for name in verify.__all__:
        value = getattr(verify, name)
        module = getattr(value, "__module__", None) or verify._EXPORTS[name][0]
        assert module.startswith("verify."), name
    assert set(verify.__all__) <= set(dir(verify))


def test_type_checkers_see_the_same_names_as_the_runtime() -> None:
    """The TYPE_CHECKING imports and the lazy table name the same objects."""
    tree = ast.parse((VERIFY / "__init__.py").read_text(encoding="utf-8"))
    seen: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                for alias in stmt.names:
                    seen[alias.asname or alias.name] = (stmt.module, alias.name)
    assert seen == verify._EXPORTS


def test_an_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(verify, "no_such_name")


def test_import_verify_loads_no_submodule() -> None:
    """The CLI imports verify at start-up: the package itself must cost nothing."""
    code = "import sys, verify; print(sorted(m for m in sys.modules if m.startswith('verify')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['verify']"


def test_the_usage_example_in_the_docstring_runs() -> None:
    result = doctest.testmod(verify, raise_on_error=False, verbose=False)
    assert result.attempted >= 8
    assert result.failed == 0


def test_every_public_function_says_what_it_raises() -> None:
    """A "Raises" sentence, or "Never raises", on each public function and method."""
    undocumented = []
    checked = 0
    for path in sorted(VERIFY.glob("*.py")):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, fn in public_functions(tree):
            checked += 1
            if not raises_documented(ast.get_docstring(fn) or ""):
                undocumented.append(f"{path.name}: {name}")
    assert checked > 100
    assert undocumented == []


def test_the_raises_check_can_fail() -> None:
    assert not raises_documented("Parse the thing.")
    assert raises_documented("Parse the thing. Raises FormatError.")
    assert raises_documented("The value. Never raises.")
