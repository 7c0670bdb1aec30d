"""Fuzz the PHAR, zip and tar readers with mutated real archives (hypothesis).

Mutations: bit flips, truncation, length fields overwritten with boundary
values, inserted bytes. Property: parsing and reading every entry either
succeeds or raises one of the project's typed ArchiveFormatErrors; nothing
else escapes, every example finishes within the deadline, and peak Python
memory stays bounded. compare() on a mutated artifact never raises at all
(an unparsable side is the cause ``format:<side>``).
"""

from __future__ import annotations

import contextlib
import io
import struct
import tarfile
import tempfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebuild.compare import compare
from rebuild.compare._errors import ArchiveFormatError
from rebuild.compare._phar import iter_entry, parse_phar
from rebuild.compare._tar import tar_view
from rebuild.compare._zip import iter_content, parse_zip
from tests.compare.builders import write_wheel
from tests.compare.phar_writer import PharFile, build_phar

PEAK_LIMIT = 64 << 20
FUZZ = settings(
    max_examples=250,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SEED_PHAR = build_phar(
    [
        PharFile("index.php", b"<?php echo 1;\n" * 20),
        PharFile("gz.txt", b"compressible " * 200, compression="gz", metadata=b"i:1;"),
        PharFile("bz.txt", b"bzip2 " * 200, compression="bz2"),
    ],
    metadata=b'a:1:{i:0;s:1:"x";}',
)


def _seed_wheel() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return write_wheel(Path(d) / "demo-1.0-py3-none-any.whl").read_bytes()


def _seed_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in ((".phar/stub.php", b"<?php __HALT_COMPILER();"), ("a.php", b"<?php\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SEED_WHEEL = _seed_wheel()
SEED_TAR = _seed_tar()
BOUNDARY = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "u32", "u16", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "u32" and pos + 4 <= len(data):
            struct.pack_into("<I", data, pos, draw(st.sampled_from([*BOUNDARY, len(data)])))
        elif op == "u16" and pos + 2 <= len(data):
            struct.pack_into("<H", data, pos, draw(st.sampled_from(BOUNDARY[:5])))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


def _bounded(fn: Callable[[], None]) -> None:
    tracemalloc.start()
    try:
        with contextlib.suppress(ArchiveFormatError):
            fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT


def _drain(chunks: object) -> None:
    for _ in chunks:  # type: ignore[attr-defined]
        pass


@FUZZ
@given(mutated(SEED_PHAR))
def test_mutated_phar_raises_only_typed_errors(data: bytes) -> None:
    def run() -> None:
        buf = memoryview(data)
        p = parse_phar(buf)
        for e in p.entries:
            _drain(iter_entry(buf, e))

    _bounded(run)


@FUZZ
@given(mutated(SEED_WHEEL))
def test_mutated_wheel_raises_only_typed_errors(data: bytes) -> None:
    def run() -> None:
        buf = memoryview(data)
        for e in parse_zip(buf).entries:
            _drain(iter_content(buf, e))

    _bounded(run)


@FUZZ
@given(mutated(SEED_TAR))
def test_mutated_tar_raises_only_typed_errors(data: bytes) -> None:
    def run() -> None:
        view = tar_view(memoryview(data))
        for e in view.entries:
            _drain(view.content(e.name))

    _bounded(run)


SEEDS = {"phar": SEED_PHAR, "whl": SEED_WHEEL, "tar": SEED_TAR}


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda k: st.tuples(st.just(k), mutated(SEEDS[k]))))
def test_compare_never_raises_on_a_mutated_artifact(case: tuple[str, bytes]) -> None:
    kind, data = case
    seed = SEEDS[kind]
    with tempfile.TemporaryDirectory() as d:
        a, b = Path(d) / f"a.{kind}", Path(d) / f"b.{kind}"
        a.write_bytes(seed)
        b.write_bytes(data)
        result = compare(a, b)
    assert result.identical == (data == seed)
    assert result.identical or result.causes


def test_fuzz_seeds_are_valid_archives() -> None:
    """The mutations start from archives the readers accept in full."""
    buf = memoryview(SEED_PHAR)
    assert [e.name for e in parse_phar(buf).entries] == ["index.php", "gz.txt", "bz.txt"]
    assert len(parse_zip(memoryview(SEED_WHEEL)).entries) == 6
    assert zipfile.ZipFile(io.BytesIO(SEED_WHEEL)).testzip() is None
    assert [e.name for e in tar_view(memoryview(SEED_TAR)).entries] == [".phar/stub.php", "a.php"]
