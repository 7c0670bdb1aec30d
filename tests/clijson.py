"""Check what a command printed with ``--json`` against docs/cli-output.schema.json.

Any test that reads a command's JSON output can pass it through
:func:`envelope` (one document) or :func:`stream` (JSON lines), so every
JSON-reading test also proves the shape docs/cli.md promises.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "cli-output.schema.json"


@functools.cache
def _validator() -> Any:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def check(doc: Any) -> None:
    """``doc`` is a valid envelope or event line (raises jsonschema.ValidationError)."""
    _validator().validate(doc)


def envelope(stdout: str, exit_code: int | None = None, command: str | None = None) -> Any:
    """The one envelope ``stdout`` holds, checked; with its exit code and command if given."""
    docs = stream(stdout)
    assert len(docs) == 1, f"expected one JSON document, got {len(docs)}: {stdout!r}"
    doc = docs[0]
    _final(doc, exit_code, command)
    return doc


def stream(stdout: str, exit_code: int | None = None, command: str | None = None) -> list[Any]:
    """Every document in ``stdout`` (one pretty document, or JSON lines), each checked:
    events first, and at most one envelope, last."""
    text = stdout.strip()
    assert text, "no JSON on stdout"
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError:
        docs = [json.loads(line) for line in text.splitlines()]
    for i, doc in enumerate(docs):
        check(doc)
        if "event" not in doc:
            assert i == len(docs) - 1, f"an envelope before the last line: {doc}"
    if exit_code is not None or command is not None:
        _final(docs[-1], exit_code, command)
    return docs


def _final(doc: Any, exit_code: int | None, command: str | None) -> None:
    assert "event" not in doc, f"the last document is an event, not the envelope: {doc}"
    if exit_code is not None:
        assert doc["exit_code"] == exit_code, doc
    if command is not None:
        assert doc["command"] == command, doc
