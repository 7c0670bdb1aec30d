"""Adapt a parsed native phar to the neutral diagnosis model, and judge its signature.

A phar's hash signature covers every byte before it, so any other difference
changes it too. Such a signature difference is kept as a detail marked
``explained_by_others`` and contributes no cause; ``signature`` is a cause
only when the algorithm or presence differs, or when the values differ with
nothing else to explain it (e.g. two OpenSSL keys). A signature that does not
verify over its own archive is ``signature-invalid:<side>``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

from rebuild.compare._blob import Blob, Span
from rebuild.compare._model import Difference, Side
from rebuild.compare._phar import (
    ENT_COMPRESSED_BZ2,
    ENT_COMPRESSED_GZ,
    ENT_COMPRESSION_MASK,
    ENT_PERM_MASK,
    HDR_COMPRESSED_BZ2,
    HDR_COMPRESSED_GZ,
    HDR_SIGNATURE,
    Phar,
    PharEntry,
    entry_data,
    iter_entry,
    parse_phar,
)
from rebuild.compare._view import ArchiveView, Entry

_COMP_NAMES = {0: "none", ENT_COMPRESSED_GZ: "gz (deflate)", ENT_COMPRESSED_BZ2: "bzip2"}
_DERIVED_GLOBAL = HDR_SIGNATURE | HDR_COMPRESSED_GZ | HDR_COMPRESSED_BZ2


def _utc(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def _entry(e: PharEntry) -> Entry:
    return Entry(
        name=e.name,
        timestamps=(e.timestamp,),
        permissions=(e.permissions,),
        compression=(e.compression,),
        metadata=(e.metadata,),
        layout=(e.flags & ~(ENT_PERM_MASK | ENT_COMPRESSION_MASK),),
        show_time=_utc(e.timestamp),
        show_perm=f"{e.permissions:04o}",
        show_comp=_COMP_NAMES.get(e.compression, hex(e.compression)),
        size=e.usize,
        stored=e.csize,
    )


def phar_view(buf: Blob) -> tuple[ArchiveView, Phar]:
    p = parse_phar(buf)
    by_name = {e.name: e for e in p.entries}

    def raw(name: str) -> tuple[object, Span] | None:
        e = by_name[name]
        return (e.compression, entry_data(buf, e))

    def content(name: str) -> Iterator[bytes]:
        return iter_entry(buf, by_name[name])

    sig = p.signature
    view = ArchiveView(
        format="phar",
        entries=tuple(_entry(e) for e in p.entries),
        raw=raw,
        content=content,
        fields={
            "stub": ("stub", p.stub, f"{len(p.stub)} bytes"),
            "alias": ("alias", p.alias, repr(p.alias.decode("utf-8", "replace"))),
            "phar metadata": (
                "metadata",
                p.metadata,
                f"{len(p.metadata)} bytes of serialized data (compared as bytes)",
            ),
            "manifest API version": ("manifest", p.api_version, p.api_version_text),
            "manifest global flags": (
                "manifest",
                p.global_flags & ~_DERIVED_GLOBAL,
                f"{p.global_flags:#010x}",
            ),
            "signature algorithm": (
                "signature",
                sig.flags if sig else None,
                sig.algorithm if sig else "unsigned",
            ),
        },
    )
    return view, p


def signature_differences(pe: Phar, pa: Phar, others: list[Difference]) -> list[Difference]:
    """Signature validity on each side, and whether a value difference is explained."""
    out: list[Difference] = []
    sides: tuple[tuple[Side, Phar], ...] = (("expected", pe), ("actual", pa))
    for side, p in sides:
        if p.signature is not None and p.signature.valid is False:
            out.append(
                Difference(
                    "signature-invalid",
                    None,
                    f"the {p.signature.algorithm} signature does not match the archive",
                    side=side,
                )
            )
    se, sa = pe.signature, pa.signature
    if se is None or sa is None or se.flags != sa.flags or se.value == sa.value:
        return out
    # An invalid signature, or any other difference, explains differing values.
    explained = bool(out) or any(
        d.cause() is not None and d.kind not in {"signature", "signature-invalid"} for d in others
    )
    out.append(
        Difference(
            "signature",
            None,
            "signature value differs"
            + (" (a consequence of the differences listed)" if explained else ""),
            se.value.hex()[:64],
            sa.value.hex()[:64],
            explained_by_others=explained,
        )
    )
    return out
