"""Debian control-file stanzas (deb822): apt sources, apt indices, dpkg status.

One small parser for the formats apt and dpkg speak: stanzas separated by
blank lines, ``Field: value`` lines, continuation lines starting with a
space or tab. It only splits text; what a field means is the caller's.
"""

from __future__ import annotations

import re

MAX_STANZAS = 100_000


def parse_stanzas(text: str, *, comments: bool = False) -> list[dict[str, str]]:
    """Split deb822 ``text`` into stanzas of ``{field: value}``.

    Field names keep their case. A continuation line is appended to the
    field's value after a newline. With ``comments``, lines starting with
    ``#`` are skipped (apt sources allow them; indices do not have them).
    """
    stanzas: list[dict[str, str]] = []
    for block in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key: str | None = None
        for line in block.splitlines():
            if not line.strip() or (comments and line.lstrip().startswith("#")):
                continue
            if line[0] in " \t":
                if key is not None:
                    fields[key] += "\n" + line.strip()
                continue
            name, sep, value = line.partition(":")
            if not sep:
                key = None
                continue
            key = name.strip()
            fields[key] = value.strip()
        if fields:
            stanzas.append(fields)
            if len(stanzas) > MAX_STANZAS:
                raise ValueError(f"more than {MAX_STANZAS} stanzas")
    return stanzas
