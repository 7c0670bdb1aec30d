"""Format-aware diagnosis: classify every difference between two archives.

Each format reader (zip, native phar, tar) is adapted to one neutral model, an
ordered list of :class:`Entry` whose fields are grouped by what a difference in
them *means* (timestamps, permissions, compression, metadata, layout). The
generic comparison below then reports, per entry, which groups differ, and
compares content exactly: identical compressed bytes under the same method
prove identical content; otherwise both sides are decompressed (bounded) and
their SHA-256 digests compared. A CRC-32 match is never taken as proof, since
CRC-32 collisions are trivial to forge.

It must never execute, unserialize or extract anything, and it reads at most
what each format's bounds allow.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rebuild.compare._blob import Blob, spans_equal
from rebuild.compare._decompress import Codec
from rebuild.compare._errors import ArchiveFormatError
from rebuild.compare._limits import DEFAULT_LIMITS, InflationLimitError, InflationLimits
from rebuild.compare._model import Difference, Side
from rebuild.compare._phar import Phar
from rebuild.compare._pharview import phar_view, signature_differences
from rebuild.compare._tar import tar_view
from rebuild.compare._view import ArchiveView, Entry
from rebuild.compare._wrapped import header_differences, unwrap
from rebuild.compare._zipview import zip_view

# Enough for PHP's default phar stub (about 7 KiB) and typical custom stubs.
SNIFF = 64 << 10
CHUNK = 1 << 20
MAX_RECORD_SIZE = 64 << 20


class SideError(Exception):
    """An archive error found while reading content, tagged with its side."""

    def __init__(self, side: str, error: ArchiveFormatError) -> None:
        super().__init__(f"{side}: {error}")
        self.side = side
        self.error = error


@dataclass(frozen=True)
class Diagnosis:
    format: str
    differences: tuple[Difference, ...]
    notes: tuple[str, ...] = ()


def sniff_format(path: Path) -> str:
    """Guess a file's format from its first bytes (and, for wheels, its name)."""
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF)
    except OSError:
        return "file"
    return _sniff(head, path.name)


def _sniff(head: bytes, name: str) -> str:
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "wheel" if name.endswith(".whl") else "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if b"__HALT_COMPILER();" in head or name.endswith(".phar"):
        return "phar"
    return "file"


class _Side:
    """One artifact opened for diagnosis: read with pread, never loaded whole."""

    def __init__(self, path: Path, stack: ExitStack) -> None:
        self.path = path
        f = stack.enter_context(path.open("rb"))
        self.buf = Blob.open_fd(f.fileno())


class _Contents:
    """Exact content comparison with a digest cache shared across checks."""

    def __init__(self, e: ArchiveView, a: ArchiveView) -> None:
        self.views = {"expected": e, "actual": a}
        self.digests: dict[tuple[str, str], bytes] = {}
        for side, v in self.views.items():
            for n, d in v.digests.items():
                self.digests[(side, n)] = d
        self.raw_same: dict[str, bool] = {}

    def digest(self, side: str, name: str) -> bytes:
        key = (side, name)
        if key not in self.digests:
            h = hashlib.sha256()
            try:
                for piece in self.views[side].content(name):
                    h.update(piece)
            except ArchiveFormatError as err:
                raise SideError(side, err) from None
            self.digests[key] = h.digest()
            if self.raw_same.get(name):
                other = "actual" if side == "expected" else "expected"
                self.digests[(other, name)] = self.digests[key]
        return self.digests[key]

    def same(self, name: str) -> tuple[bool, bool]:
        """(content identical, compressed bytes identical under the same codec)."""
        re_ = self.views["expected"].raw(name)
        ra = self.views["actual"].raw(name)
        if re_ is not None and ra is not None and re_[0] == ra[0] and spans_equal(re_[1], ra[1]):
            self.raw_same[name] = True
            return True, True
        return self.digest("expected", name) == self.digest("actual", name), False


def compare_views(e: ArchiveView, a: ArchiveView) -> tuple[list[Difference], _Contents]:
    """The generic, format-neutral comparison of two parsed archives."""
    diffs: list[Difference] = []
    contents = _Contents(e, a)
    for key in sorted(set(e.fields) | set(a.fields)):
        fe = e.fields.get(key)
        fa = a.fields.get(key)
        if fe is None or fa is None or fe[1] != fa[1]:
            kind = (fe or fa)[0]  # type: ignore[index]
            diffs.append(
                Difference(
                    kind,
                    None,
                    f"{key} differs",
                    expected=fe[2] if fe else "(absent)",
                    actual=fa[2] if fa else "(absent)",
                )
            )
    e_by = {x.name: x for x in e.entries}
    a_by = {x.name: x for x in a.entries}
    for n in e_by:
        if n not in a_by:
            diffs.append(Difference("removed", n, "only in the expected artifact"))
    for n in a_by:
        if n not in e_by:
            diffs.append(Difference("added", n, "only in the actual artifact"))
    e_common = [x.name for x in e.entries if x.name in a_by]
    a_common = [x.name for x in a.entries if x.name in e_by]
    if e_common != a_common:
        first = next(i for i, (p, q) in enumerate(zip(e_common, a_common, strict=True)) if p != q)
        diffs.append(
            Difference(
                "order",
                None,
                f"entries are listed in a different order from position {first}",
                expected=e_common[first],
                actual=a_common[first],
            )
        )
    elif e.physical_order is not None and a.physical_order is not None:
        pe = [n for n in e.physical_order if n in a_by]
        pa = [n for n in a.physical_order if n in e_by]
        if pe != pa:
            diffs.append(Difference("order", None, "entry data is stored in a different order"))
    for n in e_common:
        diffs += _entry_differences(n, e_by[n], a_by[n], contents, e)
    return diffs, contents


def _entry_differences(
    n: str, x: Entry, y: Entry, contents: _Contents, e: ArchiveView
) -> list[Difference]:
    """How entry ``n`` differs between the expected (``x``) and actual (``y``) archives."""
    diffs: list[Difference] = []
    if x.timestamps != y.timestamps:
        diffs.append(Difference("timestamps", n, "timestamp differs", x.show_time, y.show_time))
    if x.permissions != y.permissions:
        diffs.append(Difference("permissions", n, "permissions differ", x.show_perm, y.show_perm))
    if x.compression != y.compression:
        diffs.append(Difference("compression", n, "compression differs", x.show_comp, y.show_comp))
    if x.metadata != y.metadata:
        diffs.append(Difference("metadata", n, "entry metadata differs"))
    if x.layout != y.layout or (x.compression == y.compression and x.derived != y.derived):
        diffs.append(Difference("layout", n, "entry header layout differs"))
    same, raw_same = contents.same(n)
    if not same:
        diffs.append(
            Difference(
                "content",
                n,
                "content differs",
                contents.digest("expected", n).hex(),
                contents.digest("actual", n).hex(),
            )
        )
    elif not raw_same and x.compression == y.compression and e.raw(n) is not None:
        diffs.append(
            Difference(
                "compression",
                n,
                "same content, different compressed bytes (compression level or encoder)",
                x.show_comp,
                y.show_comp,
            )
        )
    return diffs


# --- wheels -----------------------------------------------------------------

_RECORD_RE = re.compile(r"^[^/]+\.dist-info/RECORD$")
_RECORD_SIGS = ("RECORD.jws", "RECORD.p7s")


def _record_name(view: ArchiveView) -> str | None:
    names = [x.name for x in view.entries if _RECORD_RE.match(x.name)]
    return names[0] if len(names) == 1 else None


def _read_record(view: ArchiveView, name: str) -> list[list[str]] | None:
    data = bytearray()
    for piece in view.content(name):
        data += piece
        if len(data) > MAX_RECORD_SIZE:
            return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        return [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error:
        return None


def _b64(d: bytes) -> str:
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


def verify_record(view: ArchiveView, contents: _Contents, side: Side) -> list[str]:
    """Check a wheel's RECORD against its entries; return the problems found."""
    rec = _record_name(view)
    if rec is None:
        return ["no single *.dist-info/RECORD"]
    rows = _read_record(view, rec)
    if rows is None:
        return [f"{rec} is not readable UTF-8 CSV within {MAX_RECORD_SIZE} bytes"]
    problems: list[str] = []
    sizes = {x.name: x.size for x in view.entries}
    listed: set[str] = set()
    for row in rows:
        if len(row) != 3:
            problems.append(f"malformed row {row[:1]}")
            continue
        path, hash_, size = row
        if path in listed:
            problems.append(f"{path} listed twice")
        listed.add(path)
        if path not in sizes:
            problems.append(f"{path} listed but not in the archive")
            continue
        if path == rec or (path.endswith(_RECORD_SIGS) and path.startswith(rec.rsplit("/", 1)[0])):
            continue
        algo, _, want = hash_.partition("=")
        if algo != "sha256":
            problems.append(f"{path}: hash algorithm {algo or '(none)'} is not sha256")
            continue
        if _b64(contents.digest(side, path)) != want:
            problems.append(f"{path}: sha256 does not match")
        if size != str(sizes[path]):
            problems.append(f"{path}: size {size} does not match {sizes[path]}")
    for n in sizes:
        if n not in listed and not n.endswith("/") and n != rec:
            if n.startswith(rec.rsplit("/", 1)[0] + "/") and n.endswith(_RECORD_SIGS):
                continue
            problems.append(f"{n} is not listed in RECORD")
    return problems


def wheel_record_diagnosis(
    e: ArchiveView, a: ArchiveView, contents: _Contents, diffs: list[Difference]
) -> list[Difference]:
    """Verify both RECORDs; mark a RECORD difference that only follows from others."""
    out = list(diffs)
    valid = True
    for side, view in (("expected", e), ("actual", a)):
        problems = verify_record(view, contents, side)  # type: ignore[arg-type]
        if problems:
            valid = False
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            out.append(
                Difference(
                    "record-invalid",
                    _record_name(view),
                    f"RECORD does not match the archive: {problems[0]}{more}",
                    side=side,  # type: ignore[arg-type]
                )
            )
    rec = _record_name(e)
    if rec is None or rec != _record_name(a) or not valid:
        return out
    changed = {d.path for d in out if d.kind in {"content", "added", "removed"} and d.path != rec}
    re_rows = _read_record(e, rec) or []
    ra_rows = _read_record(a, rec) or []
    keep_e = [tuple(r) for r in re_rows if r and r[0] not in changed]
    keep_a = [tuple(r) for r in ra_rows if r and r[0] not in changed]
    reordered = any(d.kind == "order" for d in out)
    # Rows for unchanged entries must be identical; their order may differ only
    # when the entries themselves were reordered (RECORD follows the archive).
    if keep_e == keep_a or (reordered and sorted(keep_e) == sorted(keep_a)):
        out = [
            Difference(
                d.kind,
                d.path,
                "RECORD differs only in the rows of entries reported separately",
                d.expected,
                d.actual,
                explained_by_others=True,
            )
            if d.kind == "content" and d.path == rec
            else d
            for d in out
        ]
    return out


# --- dispatch -----------------------------------------------------------------


def _view(fmt: str, side: _Side) -> tuple[ArchiveView, Phar | None]:
    if fmt in {"zip", "wheel"}:
        return zip_view(side.buf, fmt), None
    if fmt == "phar":
        return phar_view(side.buf)
    if fmt == "tar":
        return tar_view(side.buf), None
    raise ArchiveFormatError(f"{side.path}: no diagnosis for format {fmt}")


# Special members of tar- and zip-based phars and the kind a change to them is.
_PHAR_MEMBERS = {
    ".phar/stub.php": "stub",
    ".phar/alias.txt": "alias",
    ".phar/.metadata.bin": "metadata",
    ".phar/signature.bin": "signature",
}


def _phar_member_kind(name: str | None) -> str | None:
    if name is None:
        return None
    if name in _PHAR_MEMBERS:
        return _PHAR_MEMBERS[name]
    if name.startswith(".phar/.metadata/") and name.endswith("/.metadata.bin"):
        return "metadata"
    return None


def phar_members(diffs: list[Difference]) -> list[Difference]:
    """Re-classify content changes of a tar/zip-based phar's ``.phar/`` members."""
    out: list[Difference] = []
    for d in diffs:
        kind = _phar_member_kind(d.path)
        if kind is not None and d.kind in {"content", "added", "removed"}:
            out.append(Difference(kind, d.path, f"{d.detail} ({d.path})", d.expected, d.actual))
        else:
            out.append(d)
    real = [d for d in out if d.cause() is not None and d.kind != "signature"]
    if real:
        out = [
            Difference(d.kind, d.path, d.detail, d.expected, d.actual, explained_by_others=True)
            if d.kind == "signature" and d.path == ".phar/signature.bin" and d.expected
            else d
            for d in out
        ]
    return out


def _refusal(side: str, err: ArchiveFormatError) -> Difference:
    """A side that cannot be read (``format``) or would inflate past the caps (``limit``)."""
    if isinstance(err, InflationLimitError):
        return Difference("limit", None, f"not inflated: {err}", side=side)  # type: ignore[arg-type]
    return Difference("format", None, str(err), side=side)  # type: ignore[arg-type]


def diagnose(expected: Path, actual: Path, limits: InflationLimits = DEFAULT_LIMITS) -> Diagnosis:
    """Classify the differences between two (different) artifacts."""
    fe, fa = sniff_format(expected), sniff_format(actual)
    if fe == fa and fe in {"gzip", "bzip2"}:
        return _diagnose_wrapped(expected, actual, fe, limits)
    return _diagnose(expected, actual, fe, fa, limits)


def _diagnose_wrapped(expected: Path, actual: Path, fmt: str, limits: InflationLimits) -> Diagnosis:
    codec: Codec = "gzip" if fmt == "gzip" else "bzip2"
    suffix = ".gz" if fmt == "gzip" else ".bz2"
    with ExitStack() as stack:
        unwrapped: dict[str, tuple[Path, str]] = {}
        broken: list[Difference] = []
        for side, path in (("expected", expected), ("actual", actual)):
            try:
                unwrapped[side] = unwrap(path, codec, stack, limits)
            except ArchiveFormatError as err:
                broken.append(_refusal(side, err))
        if broken:
            return Diagnosis(fmt, tuple(broken))
        diffs: list[Difference] = []
        notes: list[str] = []
        if fmt == "gzip":
            try:
                diffs += header_differences(expected, actual)
            except (ArchiveFormatError, struct.error, IndexError) as err:
                diffs.append(Difference("format", None, f"gzip header: {err}"))
        (pe, se), (pa, sa) = unwrapped["expected"], unwrapped["actual"]
        inner_fmt = sniff_format(pe)
        if se != sa:
            # A different payload always compresses differently: not a cause of its own.
            diffs = [d for d in diffs if d.kind != "compression"]
            fi, fa = inner_fmt, sniff_format(pa)
            if fi in {"gzip", "bzip2"} or fa in {"gzip", "bzip2"}:
                fi = fa = "file"  # one level of wrapping only
            inner = _diagnose(pe, pa, fi, fa, limits)
            diffs += inner.differences
            notes += inner.notes
            inner_fmt = inner.format
        if se == sa and not any(d.cause() for d in diffs):
            diffs.append(
                Difference(
                    "compression",
                    None,
                    f"same payload, compressed differently ({fmt})",
                )
            )
    return Diagnosis(f"{inner_fmt}{suffix}", tuple(diffs), tuple(notes))


def _diagnose(expected: Path, actual: Path, fe: str, fa: str, limits: InflationLimits) -> Diagnosis:
    if {fe, fa} == {"zip", "wheel"}:
        fe = fa = "wheel"
    if fe != fa:
        return Diagnosis(
            fe, (Difference("format", None, "the artifacts are of different formats", fe, fa),)
        )
    if fe == "file":
        return Diagnosis(
            fe,
            (Difference("content", None, "the files differ (no archive format recognised)"),),
            ("no archive format recognised; compared as plain files",),
        )
    notes: list[str] = []
    with ExitStack() as stack:
        views: dict[str, ArchiveView] = {}
        phars: dict[str, Phar | None] = {}
        broken: list[Difference] = []
        for side, path in (("expected", expected), ("actual", actual)):
            try:
                views[side], phars[side] = _view(fe, _Side(path, stack))
                # Before anything is inflated: the declared sizes against the caps.
                limits.check(
                    [
                        (x.name, x.size if x.stored < 0 else x.stored, x.size)
                        for x in views[side].entries
                    ],
                    f"the {side} artifact",
                )
            except InflationLimitError as err:
                broken.append(_refusal(side, err))
            except ArchiveFormatError as err:
                broken.append(
                    Difference("format", None, f"cannot be parsed as {fe}: {err}", side=side)  # type: ignore[arg-type]
                )
        if broken:
            refused = sum(d.kind == "limit" for d in broken)
            note = (
                f"{refused} side(s) over the inflation caps: not inflated, not diagnosed"
                if refused
                else f"{len(broken)} side(s) could not be parsed"
            )
            return Diagnosis(fe, tuple(broken), (note,))
        e, a = views["expected"], views["actual"]
        fmt = e.format if e.format == a.format else fe
        try:
            diffs, contents = compare_views(e, a)
            if fmt == "wheel":
                diffs = wheel_record_diagnosis(e, a, contents, diffs)
            pe, pa = phars["expected"], phars["actual"]
            if pe is not None and pa is not None:
                diffs += signature_differences(pe, pa, diffs)
            names = {x.name for x in e.entries} | {x.name for x in a.entries}
            if fmt in {"zip", "tar"} and ".phar/stub.php" in names:
                fmt = f"phar-{fmt}"
                diffs = phar_members(diffs)
        except SideError as err:
            return Diagnosis(
                fmt,
                (Difference("format", None, f"cannot be read: {err.error}", side=err.side),),  # type: ignore[arg-type]
                ("diagnosis stopped at the first unreadable entry",),
            )
    if not any(d.cause() for d in diffs):
        diffs.append(
            Difference(
                "layout",
                None,
                "the bytes differ but every entry and field compared equal "
                "(archive structure, padding or offsets)",
            )
        )
    return Diagnosis(fmt, tuple(diffs), tuple(notes))
