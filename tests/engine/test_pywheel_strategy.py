"""The PyPI wheel strategy's decisions, from real wheel and sdist bytes made here."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from rebuild.errors import InputError
from rebuild.recipe import parse_recipe
from rebuild.strategies.pywheel import (
    SdistFacts,
    UnsupportedBackend,
    WheelFacts,
    build_requirements,
    choose_source_date_epoch,
    dynamic_requirements,
    in_tree_role,
    missing_from_log,
    parse_generator,
    read_wheel_facts,
    unpack_sdist,
    write_console_scripts,
)


@pytest.mark.parametrize(
    ("line", "family", "pin"),
    [
        ("hatchling 1.25.0", "hatchling", "hatchling==1.25.0"),
        ("flit 3.9.0", "flit", "flit-core==3.9.0"),
        ("poetry-core 1.9.0", "poetry-core", "poetry-core==1.9.0"),
        ("pdm-backend (2.3.3)", "pdm-backend", "pdm-backend==2.3.3"),
        ("setuptools (75.1.0)", "setuptools", "setuptools==75.1.0"),
        ("bdist_wheel (0.43.0)", "setuptools", "wheel==0.43.0"),
        ("scikit-build-core 0.10.7", "scikit-build-core", "scikit-build-core==0.10.7"),
        # meson-python names no version: the sdist's requirement stands, date-held.
        ("meson", "meson-python", "meson-python"),
    ],
)
def test_generator_line_pins_the_backend(line: str, family: str, pin: str) -> None:
    g = parse_generator(line)
    assert (g.family, g.requirement) == (family, pin)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("maturin (1.7.0)", "no Rust toolchain"),
        ("", "does not name a backend"),
        ("hatchling", "without a version"),
        ("evil; rm -rf / 1.0", "does not name a backend"),
        ("whey 0.1", "not one this strategy rebuilds"),
    ],
)
def test_unknown_or_malformed_generator_is_refused_with_its_cause(line: str, why: str) -> None:
    with pytest.raises(UnsupportedBackend, match=why) as err:
        parse_generator(line)
    assert "write a recipe" in str(err.value)


def test_meson_python_requirements_come_from_the_sdist_plus_ninja() -> None:
    """Generator 'meson' has no version: the sdist's meson-python spec is kept
    (held to the upload date later); ninja, a binary wheel, is added."""
    gen = parse_generator("meson")
    reqs = build_requirements(
        gen, {"requires": ["meson-python>=0.13.1", "meson>=1.1"], "build-backend": "mesonpy"}
    )
    assert reqs == ["meson-python>=0.13.1", "meson>=1.1", "ninja"]
    assert build_requirements(gen, {"requires": [], "build-backend": "mesonpy"}) == [
        "meson-python",
        "ninja",
    ]


def test_in_tree_wrapper_of_a_released_backend_stays_importable() -> None:
    """setuptools-scm 8.1.0: backend-path ['.', 'src'] holds _own_version_helper,
    which wraps setuptools. Dropping backend-path (as for poetry-core's released
    copy) fails with 'No module named _own_version_helper'."""
    gen = parse_generator("bdist_wheel (0.43.0)")
    bs = {
        "requires": ["setuptools>=61", "tomli; python_version < '3.11'"],
        "build-backend": "_own_version_helper:build_meta",
        "backend-path": [".", "src"],
    }
    assert in_tree_role(gen, bs) == "wrapper"
    assert build_requirements(gen, bs) == ["wheel==0.43.0", "setuptools<70.1,>=61"]
    self_built = {"requires": [], "build-backend": "mesonpy", "backend-path": ["."]}
    assert in_tree_role(parse_generator("meson"), self_built) == "self"
    assert in_tree_role(parse_generator("meson"), {"build-backend": "mesonpy"}) == "none"


def test_requirements_the_backend_asks_for_join_once_and_honour_markers(tmp_path: Path) -> None:
    """mkdocs' hatch hook needs babel, rfc3986-validator's setup.py pytest-runner:
    the frontend reports them, the host resolves them (not what is already there)."""
    log = tmp_path / "build.log"
    log.write_text(
        "rebuild-frontend: backend hatchling.build asks for [...]\n"
        'rebuild-frontend: missing-build-requirements ["babel", '
        '"setuptools; python_version >= \'3.12\'", "hatchling>=1.0"]\n'
    )
    asked = missing_from_log(log)
    assert asked == ["babel", "setuptools; python_version >= '3.12'", "hatchling>=1.0"]
    assert dynamic_requirements(["hatchling==1.25.0"], asked) == ["babel"]
    log.write_text("Traceback: the build failed for another reason\n")
    assert missing_from_log(log) is None
    log.write_text('rebuild-frontend: missing-build-requirements {"not": "a list"}\n')
    assert missing_from_log(log) is None


def test_console_scripts_become_checked_launchers(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "meson-1.4.0.dist-info").mkdir(parents=True)
    (site / "meson-1.4.0.dist-info" / "entry_points.txt").write_text(
        "[console_scripts]\n"
        "meson = mesonbuild.mesonmain:main\n"
        "evil = os:system('id')\n"
        "../escape = mesonbuild.mesonmain:main\n"
        "[other]\nx = y:z\n"
    )
    names = write_console_scripts(site, tmp_path / "bin")
    assert names == ["meson"]
    text = (tmp_path / "bin" / "meson").read_text()
    assert text.startswith("#!/usr/bin/python3 -S\n")
    assert "import_module('mesonbuild.mesonmain')" in text
    assert (tmp_path / "bin" / "meson").stat().st_mode & 0o111
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["meson"]


def test_build_requirements_replace_the_backend_and_honour_markers() -> None:
    reqs = build_requirements(
        parse_generator("hatchling 1.25.0"),
        {
            "requires": [
                "hatchling>=1.0",
                "hatch-vcs",
                "tomli; python_version < '3.11'",
                "hatch-fancy-pypi-readme>=23.2.0; python_version >= '3.8'",
            ]
        },
    )
    assert reqs == ["hatchling==1.25.0", "hatch-vcs", "hatch-fancy-pypi-readme>=23.2.0"]


def test_legacy_setuptools_sdist_gets_pep518_defaults_and_setuptools() -> None:
    """bdist_wheel from the wheel package means setuptools older than its own (70.1)."""
    reqs = build_requirements(parse_generator("bdist_wheel (0.38.4)"), {})
    assert reqs == ["wheel==0.38.4", "setuptools<70.1,>=40.8.0"]
    reqs = build_requirements(parse_generator("bdist_wheel (0.38.4)"), {"requires": ["wheel"]})
    assert reqs == ["wheel==0.38.4", "setuptools<70.1"]


def _wheel(path: Path, entries: dict[str, tuple[int, int, int, int, int, int]], gen: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, dt in entries.items():
            body = f"Wheel-Version: 1.0\nGenerator: {gen}\n" if name.endswith("/WHEEL") else "x"
            zf.writestr(zipfile.ZipInfo(name, date_time=dt), body)
    return path


def _sdist_facts(mtime: int) -> SdistFacts:
    return SdistFacts(root=Path("/nonexistent"), build_system={}, max_mtime=mtime)


def test_uniform_wheel_time_equal_to_sdist_uses_the_sdist(tmp_path: Path) -> None:
    t = (2024, 8, 6, 14, 27, 32)
    w = read_wheel_facts(
        _wheel(tmp_path / "a.whl", {"a/x.py": t, "a-1.dist-info/WHEEL": t}, "hatchling 1.25.0")
    )
    choice = choose_source_date_epoch(_sdist_facts(1722954453), w)
    assert (choice.value, choice.unset) == (1722954453, False)
    assert "sdist" in choice.rule


def test_uniform_wheel_time_differing_from_sdist_uses_the_wheel(tmp_path: Path) -> None:
    t = (2020, 2, 2, 0, 0, 0)  # hatchling's default when SOURCE_DATE_EPOCH was unset
    w = read_wheel_facts(
        _wheel(tmp_path / "b.whl", {"b/x.py": t, "b-1.dist-info/WHEEL": t}, "hatchling 1.25.0")
    )
    choice = choose_source_date_epoch(_sdist_facts(1722954453), w)
    assert choice.value == 1580601600
    assert "wheel" in choice.rule


def test_flit_wheel_built_without_sde_is_rebuilt_without_it(tmp_path: Path) -> None:
    w = read_wheel_facts(
        _wheel(
            tmp_path / "c.whl",
            {"c/x.py": (2024, 9, 15, 18, 6, 54), "c-1.dist-info/WHEEL": (2016, 1, 1, 0, 0, 0)},
            "flit 3.9.0",
        )
    )
    assert isinstance(w, WheelFacts)
    assert choose_source_date_epoch(_sdist_facts(1726423614), w).unset


def test_wheel_without_generator_or_with_two_wheel_files_is_refused(tmp_path: Path) -> None:
    t = (2024, 1, 1, 0, 0, 0)
    p = tmp_path / "d.whl"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(zipfile.ZipInfo("d-1.dist-info/WHEEL", date_time=t), "Wheel-Version: 1.0\n")
    with pytest.raises(InputError, match="Generator"):
        read_wheel_facts(p)
    q = tmp_path / "e.whl"
    with zipfile.ZipFile(q, "w") as zf:
        for n in ("e-1.dist-info/WHEEL", "f-1.dist-info/WHEEL"):
            zf.writestr(zipfile.ZipInfo(n, date_time=t), "Generator: flit 3.9.0\n")
    with pytest.raises(InputError, match="exactly one"):
        read_wheel_facts(q)


def _sdist(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = link
                tf.addfile(info)
            else:
                assert data is not None
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_sdist_pyproject_symlinked_out_is_refused(tmp_path: Path) -> None:
    arc = _sdist(tmp_path / "s.tar.gz", [("pkg-1/pyproject.toml", None, "../../../etc/passwd")])
    with pytest.raises(InputError):
        unpack_sdist(arc, tmp_path / "out")


def test_sdist_with_two_top_level_directories_is_refused(tmp_path: Path) -> None:
    arc = _sdist(tmp_path / "s.tar.gz", [("a/x", b"1", None), ("b/y", b"2", None)])
    with pytest.raises(InputError, match="one top-level"):
        unpack_sdist(arc, tmp_path / "out")


def test_sdist_build_system_is_read_without_running_anything(tmp_path: Path) -> None:
    arc = _sdist(
        tmp_path / "s.tar.gz",
        [
            ("pkg-1/pyproject.toml", b'[build-system]\nrequires = ["flit_core>=3"]\n', None),
            ("pkg-1/setup.py", b"raise SystemExit('must never run on the host')\n", None),
        ],
    )
    facts = unpack_sdist(arc, tmp_path / "out")
    assert facts.build_system == {"requires": ["flit_core>=3"]}
    assert facts.max_mtime == 1_700_000_000


def test_inferred_recipe_is_a_valid_recipe(tmp_path: Path) -> None:
    from rebuild.engine.plan import BuildPlan
    from rebuild.engine.targets import inferred_recipe
    from rebuild.sources.pypi import IndexFile

    plan = BuildPlan(
        environment="python-3.11",
        command=("python3", "/rebuild/frontend.py", "/rebuild/site", "/out"),
        source_dir=tmp_path,
        source_date_epoch=1722954453,
        sde_rule="newest sdist member mtime",
        output="demo-1.0-py3-none-any.whl",
        details={
            "generator": "hatchling 1.25.0",
            "wheelhouse": {
                "wheels": [{"name": "hatchling", "version": "1.25.0", "sha256": "ab" * 32}]
            },
        },
    )
    sdist = IndexFile(
        "demo-1.0.tar.gz", "https://index.invalid/demo-1.0.tar.gz", "cd" * 32, 1, None, False
    )
    text = inferred_recipe("demo", "1.0", sdist, plan, "ef" * 32)
    recipe = parse_recipe(text.encode())
    assert recipe.source_date_epoch == 1722954453
    assert recipe.environment.lock_sha256 == "ef" * 32
    assert f"hatchling==1.25.0 --hash=sha256:{'ab' * 32}" in recipe.text


def test_self_built_backend_is_used_in_tree_but_a_released_one_is_pinned() -> None:
    from rebuild.strategies.pywheel import builds_in_tree

    in_tree = {"requires": [], "backend-path": ["src"], "build-backend": "pdm.backend.intree"}
    assert builds_in_tree(parse_generator("pdm-backend (0.0.0+local)"), in_tree)
    assert build_requirements(parse_generator("pdm-backend (0.0.0+local)"), in_tree) == []
    released = {
        "requires": [],
        "backend-path": ["src"],
        "build-backend": "poetry.core.masonry.api",
    }
    assert not builds_in_tree(parse_generator("poetry-core 1.8.1"), released)
    assert build_requirements(parse_generator("poetry-core 1.8.1"), released) == [
        "poetry-core==1.8.1"
    ]


def test_umask_evidence_ignores_record_written_with_a_fixed_mode(tmp_path: Path) -> None:
    t = (2024, 1, 1, 0, 0, 0)

    def wheel(name: str, mode: int) -> WheelFacts:
        p = tmp_path / name
        with zipfile.ZipFile(p, "w") as zf:
            for entry, m in (("m.py", mode), ("m-1.dist-info/WHEEL", 0o644)):
                info = zipfile.ZipInfo(entry, date_time=t)
                info.external_attr = (0o100000 | m) << 16
                body = "Generator: bdist_wheel (0.43.0)\n" if entry.endswith("WHEEL") else "x"
                zf.writestr(info, body)
            rec = zipfile.ZipInfo("m-1.dist-info/RECORD", date_time=t)
            rec.external_attr = 0o664 << 16
            zf.writestr(rec, "")
        return read_wheel_facts(p)

    assert not wheel("a.whl", 0o644).group_writable
    assert wheel("b.whl", 0o664).group_writable


def test_maintainers_time_zone_with_daylight_saving_is_recovered(tmp_path: Path) -> None:
    """Two files, one in summer and one in winter, shown as London wall-clock time."""
    from rebuild.strategies.pywheel import infer_time_zone

    root = tmp_path / "pkg-1"
    (root / "pkg").mkdir(parents=True)
    summer, winter = 1717978730, 1710065236  # 2024-06-10T00:18:50Z, 2024-03-10T10:07:16Z
    for name, mtime in (("a.py", summer), ("b.py", winter)):
        f = root / "pkg" / name
        f.write_text("x")
        import os

        os.utime(f, (mtime, mtime))
    w = read_wheel_facts(
        _wheel(
            tmp_path / "p.whl",
            {
                "pkg/a.py": (2024, 6, 10, 1, 18, 50),  # BST, UTC+1
                "pkg/b.py": (2024, 3, 10, 10, 7, 16),  # GMT
                "pkg-1.dist-info/WHEEL": (2016, 1, 1, 0, 0, 0),
            },
            "flit 3.9.0",
        )
    )
    tz = infer_time_zone(SdistFacts(root=root, build_system={}, max_mtime=summer), w)
    assert tz is not None and tz.endswith("M3.5.0/1,M10.5.0")
