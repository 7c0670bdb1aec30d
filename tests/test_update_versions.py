"""Version lists are untrusted: a mirror can neither hide a newer release nor force an older one.

Mirrors are the project's static server on 127.0.0.1 (plain http with the
explicit ``--insecure-loopback``); ``rebuild update`` and the gate are real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rebuild.errors import TransportError
from rebuild.updater.mirror import FORMAT, parse_index
from tests.updaterutil import (
    Release,
    Releases,
    ThreadServer,
    installed,
    publish_to,
    report,
    static_mirror,
    tree,
    update_cli,
)


@pytest.fixture
def rel(tmp_path: Path) -> Releases:
    return Releases(tmp_path / "releases")


def _mirror(
    tmp: Path, servers: list[ThreadServer], name: str, *releases: Release
) -> tuple[Path, str]:
    root = tmp / "mirrors" / name
    root.mkdir(parents=True)
    for r in releases:
        publish_to(root, r)
    s = ThreadServer(static_mirror(root), None)
    servers.append(s)
    return root, s.url


def _relabel(root: Path, release: Release, as_version: str) -> None:
    """Make ``root`` list ``release``'s files under another version."""
    pkg = root / "hello-phar"
    shutil.copytree(pkg / release.version, pkg / as_version)
    index = json.loads((pkg / "index.json").read_text())
    entry = next(e for e in index["releases"] if e["version"] == release.version)
    index["releases"].append({**entry, "version": as_version})
    (pkg / "index.json").write_text(json.dumps(index))


def test_a_mirror_that_does_not_list_the_newest_release_cannot_hide_it(
    tmp_path: Path, rel: Releases, servers: list[ThreadServer]
) -> None:
    policy = rel.write_policy()
    v1, v2, v3 = rel.make("1.0.0"), rel.make("1.1.0"), rel.make("1.2.0")
    _, stale = _mirror(tmp_path, servers, "stale", v1, v2)
    _, fresh = _mirror(tmp_path, servers, "fresh", v1, v2, v3)
    install = tmp_path / "install"
    r = update_cli(policy, install, [stale, fresh], "--insecure-loopback")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(r)
    assert installed(install) == ("1.2.0", v3.data)
    assert doc["newest_listed"] == "1.2.0"
    assert [m["versions"] for m in doc["mirrors"]] == [
        ["1.0.0", "1.1.0"],
        ["1.0.0", "1.1.0", "1.2.0"],
    ]
    assert [(a["mirror"], a["version"], a["outcome"]) for a in doc["attempts"]] == [
        (fresh, "1.2.0", "installed")
    ]


def test_when_no_mirror_can_deliver_the_newest_release_the_skip_is_reported(
    tmp_path: Path, rel: Releases, servers: list[ThreadServer]
) -> None:
    policy = rel.write_policy()
    v1, v2, v3 = rel.make("1.0.0"), rel.make("1.1.0"), rel.make("1.2.0")
    _, honest = _mirror(tmp_path, servers, "honest", v1, v2)
    root, liar = _mirror(tmp_path, servers, "liar", v1, v2, v3)
    (root / "hello-phar" / "1.2.0" / "bundle.json").write_bytes(v2.bundle.read_bytes())
    install = tmp_path / "install"
    r = update_cli(policy, install, [liar, honest], "--insecure-loopback")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(r)
    assert installed(install) == ("1.1.0", v2.data)
    [skipped] = doc["skipped_newer"]
    assert skipped["version"] == "1.2.0"
    assert skipped["listed_by"] == [liar]
    assert skipped["reasons"] == [f"{liar}: rejected"]


def _newest_installed(
    tmp_path: Path, rel: Releases, servers: list[ThreadServer]
) -> tuple[Path, Release, Release, str]:
    """1.0.0 and 1.1.0 on a good mirror, 1.1.0 installed: (policy, v1, v2, mirror URL)."""
    policy = rel.write_policy()
    v1, v2 = rel.make("1.0.0"), rel.make("1.1.0")
    _, good = _mirror(tmp_path, servers, "good", v1, v2)
    assert update_cli(policy, tmp_path / "install", [good], "--insecure-loopback").returncode == 0
    assert installed(tmp_path / "install") == ("1.1.0", v2.data)
    return policy, v1, v2, good


def test_a_mirror_relabelling_an_old_release_as_newer_cannot_force_a_downgrade(
    tmp_path: Path, rel: Releases, servers: list[ThreadServer]
) -> None:
    policy, v1, _, _ = _newest_installed(tmp_path, rel, servers)
    install = tmp_path / "install"
    before = tree(install)
    root, evil = _mirror(tmp_path, servers, "evil", v1)
    _relabel(root, v1, "9.0.0")
    r = update_cli(policy, install, [evil], "--insecure-loopback")
    assert r.returncode == 1, r.stdout + r.stderr
    [attempt] = report(r)["attempts"]
    assert attempt["version"] == "9.0.0"
    assert attempt["outcome"] == "rejected"
    assert "downgrade" in attempt["error"]
    assert tree(install) == before


def test_an_explicit_request_for_an_older_version_is_refused_by_the_gate(
    tmp_path: Path, rel: Releases, servers: list[ThreadServer]
) -> None:
    policy, _, _, url = _newest_installed(tmp_path, rel, servers)
    install = tmp_path / "install"
    before = tree(install)
    r = update_cli(policy, install, [url], "--insecure-loopback", "--version", "1.0.0")
    assert r.returncode == 1, r.stdout + r.stderr
    [attempt] = report(r)["attempts"]
    assert attempt["outcome"] == "rejected"
    # refused as a downgrade (and its older checkpoint as a log rollback)
    assert {"downgrade", "rollback"} <= {f["code"] for f in attempt["gate"]["failures"]}
    assert tree(install) == before


def test_a_valid_release_listed_under_another_version_is_refused_as_mislabelled(
    tmp_path: Path, rel: Releases, servers: list[ThreadServer]
) -> None:
    policy = rel.write_policy()
    v1, v2 = rel.make("1.0.0"), rel.make("1.1.0")
    root, evil = _mirror(tmp_path, servers, "evil", v1, v2)
    _relabel(root, v2, "1.5.0")  # steer the updater: "1.5.0" is really 1.1.0
    _, good = _mirror(tmp_path, servers, "good", v1, v2)
    install = tmp_path / "install"
    r = update_cli(policy, install, [evil, good], "--insecure-loopback")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(r)
    assert (doc["attempts"][0]["version"], doc["attempts"][0]["outcome"]) == (
        "1.5.0",
        "mislabelled",
    )
    assert installed(install) == ("1.1.0", v2.data)


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (
            b'{"format": "rebuild-mirror/v1", "format": "x", "package": "hello-phar", '
            b'"releases": []}',
            "duplicate",
        ),
        (
            b'{"format": "rebuild-mirror/v1", "package": "other", "releases": []}',
            "not 'hello-phar'",
        ),
        (b"[" * 100000, "nested too deeply"),
        (b" " * (2 << 20), "larger than"),
        (
            json.dumps(
                {
                    "format": FORMAT,
                    "package": "hello-phar",
                    "releases": [
                        {"version": "../../etc", "artifact": "a", "size": 1, "sha256": "0" * 64}
                    ],
                }
            ).encode(),
            "invalid version",
        ),
        (
            json.dumps(
                {
                    "format": FORMAT,
                    "package": "hello-phar",
                    "releases": [
                        {"version": "1.0", "artifact": "../passwd", "size": 1, "sha256": "0" * 64}
                    ],
                }
            ).encode(),
            "invalid artifact",
        ),
    ],
)
def test_a_hostile_version_list_is_refused(doc: bytes, problem: str) -> None:
    with pytest.raises(TransportError, match=problem):
        parse_index(doc, "hello-phar")
