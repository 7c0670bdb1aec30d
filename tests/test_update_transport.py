"""Untrusted mirrors over real HTTPS on 127.0.0.1: every bad one is skipped, with its reason.

Each mirror is a real aiohttp server (the project's static mirror server, or a
hostile variant of it) with a certificate from a test CA made by ``trustme``;
``rebuild update`` runs as a real subprocess trusting that CA through
``--ca-bundle``, and the real gate judges what it downloads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aiohttp import web

from tests.updaterutil import (
    TLS,
    Release,
    Releases,
    ThreadServer,
    dead_url,
    endless_body,
    hostile_mirror,
    installed,
    publish_to,
    report,
    slow_body,
    static_mirror,
    tree,
    update_cli,
)


@pytest.fixture
def tls(tmp_path: Path) -> TLS:
    return TLS(tmp_path / "tls")


def _serve(servers: list[ThreadServer], app: object, tls: TLS | None, *names: str) -> str:
    s = ThreadServer(app, tls.server_context(*names) if tls else None)  # type: ignore[arg-type]
    servers.append(s)
    return s.url


@pytest.fixture
def world(tmp_path: Path) -> tuple[Releases, Release, Release, Path]:
    """Releases 1.0.0 (installed first) and 1.1.0 (the update), and the policy."""
    rel = Releases(tmp_path / "releases")
    policy = rel.write_policy(package_extra="max_artifact_bytes = 1048576\n")
    old = rel.make("1.0.0")
    new = rel.make("1.1.0")
    return rel, old, new, policy


def _mirror(tmp_path: Path, name: str, *releases: Release) -> Path:
    root = tmp_path / "mirrors" / name
    for r in releases:
        publish_to(root, r)
    return root


def _bad_mirrors(
    tmp_path: Path, servers: list[ThreadServer], tls: TLS, old: Release, new: Release
) -> dict[str, str]:
    """One mirror per fault, each listing 1.1.0: name -> URL."""
    urls: dict[str, str] = {}
    # tampered: the artifact's bytes changed after publishing (index left as published)
    tampered = _mirror(tmp_path, "tampered", old, new)
    art = tampered / "hello-phar" / "1.1.0" / new.name
    art.write_bytes(art.read_bytes().replace(b"hello", b"pwned"))
    urls["tampered"] = _serve(servers, static_mirror(tampered), tls)
    # a bundle for another release (1.0.0's) served with 1.1.0's artifact
    wrong_bundle = _mirror(tmp_path, "wrong-bundle", old, new)
    shutil.copy(old.bundle, wrong_bundle / "hello-phar" / "1.1.0" / "bundle.json")
    urls["wrong-bundle"] = _serve(servers, static_mirror(wrong_bundle), tls)
    # slow: the artifact stalls after a few bytes, past the read timeout
    listed = _mirror(tmp_path, "listed", old, new)
    urls["slow"] = _serve(servers, hostile_mirror(listed, artifact=slow_body), tls)
    # endless: the artifact never ends, past the policy's byte cap
    urls["endless"] = _serve(servers, hostile_mirror(listed, artifact=endless_body), tls)
    urls["dead"] = dead_url()
    # a certificate from the trusted CA, but for another name
    urls["wrong-name"] = _serve(servers, static_mirror(listed), tls, "mirror.example.org")
    # plain http on loopback, and no --insecure-loopback
    urls["plain-http"] = _serve(servers, static_mirror(listed), None)
    plain = urls["plain-http"]

    # a redirect to the same file over plain http: never followed
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(plain + request.path)

    urls["redirect"] = _serve(servers, hostile_mirror(listed, artifact=redirect), tls)
    return urls


EXPECTED_KIND = {
    "tampered": "inconsistent",
    "wrong-bundle": "rejected",
    "slow": "timeout",
    "endless": "too-large",
    "dead": "connection",
    "wrong-name": "tls",
    "plain-http": "refused",
    "redirect": "http",
}


def _install_old(
    tmp_path: Path, servers: list[ThreadServer], tls: TLS, old: Release, policy: Path
) -> list[str]:
    """Install 1.0.0 into tmp_path/install; returns the client options the tests use."""
    ca = ["--mirror-ca-bundle", str(tls.ca_bundle), "--read-timeout", "2", "--connect-timeout", "5"]
    only_old = _serve(servers, static_mirror(_mirror(tmp_path, "old-only", old)), tls)
    assert update_cli(policy, tmp_path / "install", [only_old], *ca).returncode == 0
    assert installed(tmp_path / "install") == ("1.0.0", old.data)
    return ca


@pytest.mark.slow
def test_every_bad_mirror_is_skipped_with_its_reason_and_the_honest_one_installs(
    tmp_path: Path,
    tls: TLS,
    servers: list[ThreadServer],
    world: tuple[Releases, Release, Release, Path],
) -> None:
    _, old, new, policy = world
    install = tmp_path / "install"
    honest = _serve(servers, static_mirror(_mirror(tmp_path, "honest", old, new)), tls)
    # 1.0.0 is installed; then 1.1.0 is offered by all the bad mirrors first
    ca = _install_old(tmp_path, servers, tls, old, policy)

    bad = _bad_mirrors(tmp_path, servers, tls, old, new)
    r = update_cli(policy, install, [*bad.values(), honest], *ca)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(r)
    assert doc["status"] == "installed"
    assert installed(install) == ("1.1.0", new.data)
    by_url = {m["url"]: m for m in doc["mirrors"]}
    outcomes = {a["mirror"]: a for a in doc["attempts"]}
    for name, url in bad.items():
        kind = EXPECTED_KIND[name]
        if name in ("dead", "wrong-name", "plain-http"):
            # never got as far as the version list
            assert by_url[url]["status"] == kind, (name, by_url[url])
            assert url not in outcomes
        else:
            assert outcomes[url]["outcome"] == kind, (name, outcomes[url])
            assert outcomes[url]["error"]
    assert outcomes[honest]["outcome"] == "installed"
    assert doc["previous_version"] == "1.0.0"


@pytest.mark.slow
def test_with_no_honest_mirror_the_update_fails_with_exit_1_and_nothing_changes(
    tmp_path: Path,
    tls: TLS,
    servers: list[ThreadServer],
    world: tuple[Releases, Release, Release, Path],
) -> None:
    _, old, new, policy = world
    install = tmp_path / "install"
    ca = _install_old(tmp_path, servers, tls, old, policy)
    before = tree(install)
    bad = _bad_mirrors(tmp_path, servers, tls, old, new)
    r = update_cli(policy, install, list(bad.values()), *ca)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = report(r)
    assert doc["status"] == "failed"
    assert doc["skipped_newer"][0]["version"] == "1.1.0"
    assert tree(install) == before
    assert installed(install) == ("1.0.0", old.data)


def test_plain_http_to_loopback_needs_the_explicit_flag(
    tmp_path: Path,
    servers: list[ThreadServer],
    world: tuple[Releases, Release, Release, Path],
) -> None:
    _, old, _, policy = world
    install = tmp_path / "install"
    url = _serve(servers, static_mirror(_mirror(tmp_path, "plain", old)), None)
    r = update_cli(policy, install, [url])
    assert r.returncode == 1
    assert report(r)["mirrors"][0]["status"] == "refused"
    assert not (install / "current").exists()
    r = update_cli(policy, install, [url], "--insecure-loopback")
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(install) == ("1.0.0", old.data)
