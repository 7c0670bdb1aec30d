"""Environments and the hermetic runner against the real Docker engine.

The session fixture builds the environments with the code ``rebuild env
build`` runs (a no-op when scripts/setup already built them). Every test
checks that no build container is left behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rebuild.cli import main
from rebuild.envs import _docker
from rebuild.envs.definition import (
    LABEL_LOCK_DIGEST,
    LABEL_NAME,
    Definition,
    Lock,
    build_order,
    default_containers_dir,
    list_definitions,
    load_definition,
    load_lock,
)
from rebuild.envs.images import (
    DriftError,
    build_environment,
    check_environment,
    find_image,
    own_packages,
)
from rebuild.envs.mirror import resolve_mirrors
from rebuild.envs.runner import RUN_LABEL, Limits, RunResult, run_build
from rebuild.envs.store import PackageStore
from tests.debtools import TestMirror, make_deb, probe_mirror

pytestmark = pytest.mark.docker

SDE = 1_700_000_000


@pytest.fixture(scope="session")
def environments() -> list[str]:
    names = list_definitions()
    for d in build_order(names):
        build_environment(d, lambda: resolve_mirrors("bookworm"))
    return names


def _containers_of(tmp_path: Path) -> list[str]:
    """Containers (any state) that mount something under this test's tmp_path.

    Other work may run builds on the same engine at the same time, so a test
    only counts the containers made for its own directories. ``sparse``: the
    mounts come with the listing, so a container someone else removes between
    the listing and an inspect cannot fail the check.
    """
    c = _docker.client()
    found = []
    for container in c.containers.list(all=True, sparse=True, filters={"label": RUN_LABEL}):
        sources = [m.get("Source", "") for m in container.attrs.get("Mounts", [])]
        if any(s.startswith(str(tmp_path)) for s in sources):
            found.append(container.short_id)
    return found


@pytest.fixture
def no_leftovers(environments: list[str], tmp_path: Path) -> Iterator[None]:
    yield
    assert _containers_of(tmp_path) == []


def _run(tmp_path: Path, script: str, **kw: Any) -> RunResult:
    src = tmp_path / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "hello.txt").write_text("hello\n")
    return run_build(
        kw.pop("environment", "python-3.11"),
        ["sh", "-c", script],
        out_dir=tmp_path / "out",
        log_path=tmp_path / "build.log",
        source_date_epoch=SDE,
        source_dir=src,
        **kw,
    )


def test_second_env_build_is_a_noop_and_fast(
    environments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert main(["env", "build", "--all", "--json"]) == 0
    elapsed = time.monotonic() - started
    doc = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in doc["environments"]} == set(environments)
    assert all(e["built"] is False for e in doc["environments"])
    assert elapsed < 10


def test_env_check_passes_for_a_fresh_image(
    environments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["env", "check", "php-8.2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    lock = load_lock(load_definition("php-8.2"))
    assert doc["matches"] is True and doc["lock_digest"] == lock.digest
    assert doc["drift"] == {
        "missing": [],
        "extra": [],
        "changed": [],
        "files": [],
        "architecture": None,
    }


def test_env_list_reports_lock_digests_and_present_images(
    environments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["env", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["environments"]}
    for name in environments:
        lock = load_lock(load_definition(name))
        assert rows[name]["lock_digest"] == lock.digest
        assert rows[name]["present"] is True


@pytest.fixture
def tampered_env(environments: list[str], tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A copy of php-8.2 named drift-probe whose image was modified after locking.

    A package is purged, another's recorded version is changed, a package that
    is not in the lock is registered, and the ini file is rewritten; the
    result is committed and tagged as if it were the environment's image.
    """
    containers = tmp_path / "containers"
    shutil.copytree(default_containers_dir(), containers)
    probe = containers / "drift-probe"
    (containers / "php-8.2").rename(probe)
    toml = probe / "environment.toml"
    toml.write_text(toml.read_text().replace('name = "php-8.2"', 'name = "drift-probe"'))
    php_lock = load_lock(load_definition("php-8.2"))
    lock = dataclasses.replace(php_lock, name="drift-probe")
    (probe / "lock.json").write_bytes(lock.canonical_bytes())
    c = _docker.client()
    tamper = (
        "dpkg --purge --force-depends php8.2-readline >/dev/null 2>&1; "
        "sed -i '/^Package: psmisc$/,/^$/s/^Version: .*/Version: 99.0-evil/' "
        "/var/lib/dpkg/status; "
        "printf '\\nPackage: evil-tool\\nStatus: install ok installed\\nVersion: 1.0\\n"
        "Architecture: amd64\\n' >> /var/lib/dpkg/status; "
        "echo 'phar.readonly = On' > /etc/php/8.2/cli/conf.d/99-rebuild.ini"
    )
    container = c.containers.create(
        php_lock.image_tag, ["sh", "-c", tamper], network_mode="none", labels={RUN_LABEL: "t"}
    )
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0
        repo, _, tag = lock.image_tag.rpartition(":")
        container.commit(
            repository=repo,
            tag=tag,
            changes=[f"LABEL {LABEL_NAME}=drift-probe {LABEL_LOCK_DIGEST}={lock.digest}"],
        )
    finally:
        container.remove(force=True)
    try:
        yield containers, lock.image_tag
    finally:
        c.images.remove(lock.image_tag, force=True)


def test_env_check_lists_drift_of_a_modified_image_and_exits_1(
    tampered_env: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    containers, _ = tampered_env
    monkeypatch.setenv("REBUILD_CONTAINERS_DIR", str(containers))
    assert main(["env", "check", "drift-probe", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    drift = doc["drift"]
    assert doc["matches"] is False
    assert any(m.startswith("php8.2-readline=") for m in drift["missing"])
    assert drift["extra"] == ["evil-tool=1.0 (amd64)"]
    assert any("psmisc" in ch and "99.0-evil" in ch for ch in drift["changed"])
    assert [f.split(":")[0] for f in drift["files"]] == ["/etc/php/8.2/cli/conf.d/99-rebuild.ini"]
    report = check_environment(load_definition("drift-probe", containers))
    assert not report.ok


def test_runner_refuses_a_drifted_image(
    tampered_env: tuple[Path, str], tmp_path: Path, no_leftovers: None
) -> None:
    containers, _ = tampered_env
    with pytest.raises(DriftError, match="does not match its lock"):
        _run(tmp_path, "php -v", environment="drift-probe", containers_dir=containers)
    assert not (tmp_path / "build.log").exists()


def test_build_that_tries_the_network_has_none(tmp_path: Path, no_leftovers: None) -> None:
    # 192.0.2.1 is TEST-NET-1 (documentation only). With no interface but
    # loopback there is no route, so connect() fails in the kernel: nothing is sent.
    r = _run(
        tmp_path,
        "ls /sys/class/net > /out/ifaces; "
        "python3 -c \"import socket; socket.create_connection(('192.0.2.1', 80), timeout=3)\"",
    )
    assert r.exit_code != 0 and not r.timed_out and not r.ok
    assert (tmp_path / "out" / "ifaces").read_text().split() == ["lo"]
    assert "Network is unreachable" in r.log_path.read_text()


def test_build_cannot_write_outside_build_tmp_and_out(tmp_path: Path, no_leftovers: None) -> None:
    r = _run(
        tmp_path,
        "for p in /etc/evil /usr/bin/evil /evil /var/evil /src/evil /root/evil /home/evil; do "
        '  if touch "$p" 2>/dev/null; then echo "wrote $p"; fi; done > /out/escaped; '
        "touch /build/ok /tmp/ok && echo fine > /out/ok",
    )
    assert r.ok, r.describe()
    assert (tmp_path / "out" / "escaped").read_text() == ""
    assert [o.path for o in r.outputs] == ["escaped", "ok"]


def test_fork_bomb_is_stopped_by_the_pids_limit(tmp_path: Path, no_leftovers: None) -> None:
    bomb = (
        "import os, sys, time\n"
        "n = 0\n"
        "while n < 10000:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        print('limited at', n, flush=True); sys.exit(3)\n"
        "    if pid == 0:\n"
        "        time.sleep(60); os._exit(0)\n"
        "    n += 1\n"
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bomb.py").write_text(bomb)
    r = _run(tmp_path, "python3 bomb.py", limits=Limits(pids=64, timeout_s=60))
    assert r.exit_code == 3, r.log_path.read_text()
    count = int(r.log_path.read_text().split("limited at")[1].split()[0])
    assert 0 < count < 64


def test_endless_build_is_killed_at_the_timeout_and_removed(
    tmp_path: Path, no_leftovers: None
) -> None:
    started = time.monotonic()
    r = _run(tmp_path, "echo started; sleep 1000", limits=Limits(timeout_s=2))
    assert r.timed_out and r.exit_code is None and not r.ok
    assert time.monotonic() - started < 20
    log = r.log_path.read_text()
    assert "started" in log and "timeout" in log


def test_ctrl_c_during_a_build_leaves_no_container(tmp_path: Path, no_leftovers: None) -> None:
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    started = tmp_path / "out" / "started"

    def interrupt() -> None:
        # Wait until the build command itself runs (it leaves a file in its
        # output directory), then deliver SIGINT to the main thread as a
        # terminal's Ctrl-C would: the runner is then waiting for the build.
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(main_thread, signal.SIGINT)

    t = threading.Thread(target=interrupt)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path, "touch /out/started; sleep 1000", limits=Limits(timeout_s=120))
    finally:
        t.join()
    assert started.exists()


def test_build_runs_as_fixed_non_root_user_with_normalized_environment(
    tmp_path: Path, no_leftovers: None
) -> None:
    r = _run(
        tmp_path,
        "id -u > /out/uid; id -g >> /out/uid; umask > /out/umask; hostname > /out/hostname; "
        "env | sort > /out/env; pwd > /out/pwd; cp hello.txt /out/; "
        "date +%Z > /out/tz; touch made; stat -c %a made > /out/mode",
        env={"EXTRA": "1"},
    )
    assert r.ok, r.describe()
    out = tmp_path / "out"
    assert out.joinpath("uid").read_text().split() == ["1000", "1000"]
    assert out.joinpath("umask").read_text().strip() == "0022"
    assert out.joinpath("mode").read_text().strip() == "644"
    assert out.joinpath("hostname").read_text().strip() == "rebuild"
    assert out.joinpath("pwd").read_text().strip() == "/build"
    assert out.joinpath("tz").read_text().strip() == "UTC"
    assert out.joinpath("hello.txt").read_text() == "hello\n"
    env = dict(line.split("=", 1) for line in out.joinpath("env").read_text().splitlines())
    assert env["SOURCE_DATE_EPOCH"] == str(SDE)
    assert env["TZ"] == "UTC" and env["LC_ALL"] == "C.UTF-8" and env["LANG"] == "C.UTF-8"
    assert env["EXTRA"] == "1"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_symlink_left_in_outputs_to_a_host_file_is_a_problem(
    tmp_path: Path, no_leftovers: None
) -> None:
    r = _run(tmp_path, "ln -s /etc/shadow /out/artifact.whl; echo x > /out/real")
    assert r.exit_code == 0 and not r.ok
    assert r.problems == ("output artifact.whl is not a regular file",)
    assert [o.path for o in r.outputs] == ["real"]


def test_memory_hog_is_killed_at_the_memory_limit(tmp_path: Path, no_leftovers: None) -> None:
    r = _run(
        tmp_path,
        "python3 -c \"b = bytearray(512 * 1024 * 1024); print('survived')\"",
        limits=Limits(memory_bytes=128 * 1024 * 1024, timeout_s=60),
    )
    assert not r.ok and r.exit_code != 0
    assert "survived" not in r.log_path.read_text()


def test_php_environment_can_build_a_phar(tmp_path: Path, no_leftovers: None) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.php").write_text("<?php echo 'hi';\n")
    r = _run(
        tmp_path,
        'php -r \'$p = new Phar("/out/app.phar"); $p->buildFromDirectory("/build"); '
        '$p->setStub($p->createDefaultStub("index.php"));\' && php /out/app.phar',
        environment="php-8.2",
    )
    assert r.ok, r.log_path.read_text()
    assert [o.path for o in r.outputs] == ["app.phar"]
    assert r.log_path.read_text().endswith("hi")


def _probe_containers(tmp_path: Path, name: str, like: str) -> Path:
    """A copy of containers/ with environment ``like`` renamed to ``name``."""
    containers = tmp_path / "containers"
    shutil.copytree(default_containers_dir(), containers)
    probe = containers / name
    (containers / like).rename(probe)
    toml = probe / "environment.toml"
    toml.write_text(toml.read_text().replace(f'name = "{like}"', f'name = "{name}"'))
    return probe


@dataclasses.dataclass
class StoreProbe:
    """A builder on debian-bookworm whose own packages come from a test mirror."""

    containers: Path
    definition: Definition
    lock: Lock
    mirror: TestMirror
    lib: Path  # probe-lib 1.0's .deb
    tool: Path  # probe-tool 1.0's .deb (depends on probe-lib = 1.0)
    store: PackageStore

    def build_args(self) -> list[str]:
        return [
            "env",
            "build",
            "store-probe",
            "--mirror",
            self.mirror.url,
            "--store",
            str(self.store.root),
            "--json",
        ]


@pytest.fixture
def store_probe(
    environments: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreProbe]:
    """store-probe: debian-bookworm's lock plus probe-lib 1.0 and probe-tool 1.0.

    The lock is made from the test mirror's index (dpkg-scanpackages), as
    ``env lock`` makes one from apt's. The test mirror runs on 127.0.0.1; the
    host fetches from it, the build itself has no network.
    """
    mirror, lib, tool = probe_mirror(tmp_path)
    containers = tmp_path / "containers"
    shutil.copytree(default_containers_dir(), containers)
    (containers / "store-probe").mkdir()
    (containers / "store-probe" / "environment.toml").write_text(
        'name = "store-probe"\nparent = "debian-bookworm"\npackages = ["probe-tool"]\n'
    )
    base = load_lock(load_definition("debian-bookworm"))
    own = (mirror.locked("probe-lib", "1.0"), mirror.locked("probe-tool", "1.0"))
    lock = dataclasses.replace(
        base,
        name="store-probe",
        parent="debian-bookworm",
        parent_lock_digest=base.digest,
        packages=tuple(sorted((*base.packages, *own))),
    )
    (containers / "store-probe" / "lock.json").write_bytes(lock.canonical_bytes())
    monkeypatch.setenv("REBUILD_CONTAINERS_DIR", str(containers))
    with mirror.serve():
        yield StoreProbe(
            containers,
            load_definition("store-probe", containers),
            lock,
            mirror,
            lib,
            tool,
            PackageStore(tmp_path / "store"),
        )
    if find_image(lock) is not None:
        _docker.client().images.remove(lock.image_tag, force=True)


def test_build_takes_a_pinned_version_the_mirror_dropped_from_the_package_store(
    store_probe: StoreProbe,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_leftovers: None,
) -> None:
    """The mirror moved on (probe-lib 1.0 replaced by 1.1); the store still has 1.0."""
    p = store_probe
    lib = p.mirror.locked("probe-lib", "1.0")
    p.store.add_file(lib, p.lib, "an earlier build")
    p.mirror.remove(p.lib)
    p.mirror.publish([make_deb(tmp_path, "probe-lib", "1.1")])
    p.mirror.requests.clear()
    assert main(p.build_args()) == 0
    doc = json.loads(capsys.readouterr().out)["environments"][-1]
    assert doc["name"] == "store-probe" and doc["built"] is True
    assert doc["fetch"]["in_store"] == 1 and doc["fetch"]["fetched"] == 1
    assert not any("probe-lib" in r for r in p.mirror.requests)
    assert check_environment(p.definition).ok
    r = _run(
        tmp_path / "run",
        "probe-lib > /out/lib; probe-tool > /out/tool",
        environment="store-probe",
        containers_dir=p.containers,
    )
    assert r.ok, r.log_path.read_text()
    assert (tmp_path / "run" / "out" / "lib").read_text() == "probe-lib 1.0\n"
    # The store now holds every package the lock pins beyond the parent's.
    assert (
        p.store.missing(own_packages(p.lock, load_lock(load_definition("debian-bookworm")))) == []
    )


def test_build_of_a_version_gone_from_mirror_and_store_fails_naming_it(
    store_probe: StoreProbe, capsys: pytest.CaptureFixture[str]
) -> None:
    p = store_probe
    p.mirror.remove(p.lib)
    assert main(p.build_args()) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "PackagesUnavailableError"
    assert "probe-lib=1.0" in error["message"] and "probe-tool" not in error["message"]
    assert "snapshot" in error["message"] and str(p.store.root) in error["message"]
    assert find_image(p.lock) is None


def test_build_refuses_a_mirror_serving_other_bytes_for_a_pinned_package(
    store_probe: StoreProbe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = store_probe
    pinned = p.mirror.locked("probe-tool", "1.0")
    evil = make_deb(tmp_path, "probe-tool", "1.0", script="#!/bin/sh\necho pwned\n")
    p.mirror.overrides[pinned.filename] = evil.read_bytes()
    assert main(p.build_args()) == 1
    error = json.loads(capsys.readouterr().out)["reason"]  # a negative verdict: exit 1
    assert error["kind"] == "DigestMismatchError"
    assert "probe-tool=1.0" in error["message"] and pinned.sha256 in error["message"]
    assert hashlib.sha256(evil.read_bytes()).hexdigest() in error["message"]
    assert find_image(p.lock) is None
    assert not p.store.has(pinned)


def test_exported_image_is_imported_and_tagged_only_after_its_checks(
    store_probe: StoreProbe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Round trip with --with-image; then a swapped image (manifest rewritten) stays untagged."""
    p = store_probe
    assert main(p.build_args()) == 0
    capsys.readouterr()
    archive = tmp_path / "probe.tar"
    export = ["env", "export", "store-probe", "-o", str(archive), "--with-image"]
    assert main([*export, "--store", str(p.store.root), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    image = find_image(p.lock)
    assert image is not None and exported["image_id"] == image.id
    _docker.client().images.remove(p.lock.image_tag)
    other = tmp_path / "other-store"
    imp = ["env", "import", str(archive), "--store", str(other), "--with-image", "--json"]
    assert main(imp) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["image_id"] == image.id and doc["added_to_store"] == len(p.lock.packages)
    assert (found := find_image(p.lock)) is not None and found.id == image.id
    assert check_environment(p.definition).ok

    # An attacker swaps in another image and rewrites the manifest to match.
    _docker.client().images.remove(p.lock.image_tag)
    base = find_image(load_lock(load_definition("debian-bookworm")))
    assert base is not None
    swapped = tmp_path / "swapped.tar"
    _swap_image(archive, swapped, base.id, tmp_path)
    assert main([*imp[:2], str(swapped), *imp[3:]]) == 1
    assert "not labelled with lock" in json.loads(capsys.readouterr().out)["reason"]["message"]
    assert find_image(p.lock) is None


def _swap_image(archive: Path, out: Path, image_id: str, tmp: Path) -> None:
    """Rewrite ``archive`` with ``image_id``'s docker save in place of its image."""
    saved = tmp / "swap.tar"
    with saved.open("wb") as f:
        for chunk in _docker.client().images.get(image_id).save():
            f.write(chunk)
    data = saved.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with tarfile.open(archive) as src, tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as dst:
        for m in src.getmembers():
            content = src.extractfile(m)
            assert content is not None
            body = content.read()
            if m.name == "rebuild-env-export.json":
                manifest = json.loads(body)
                manifest["image"] = {"id": image_id, "sha256": digest, "size": len(data)}
                body = json.dumps(manifest).encode()
            elif m.name.startswith("image/"):
                m.name, body = f"image/{digest}.tar", data
            m.size = len(body)
            dst.addfile(m, io.BytesIO(body))


def test_env_lock_writes_a_canonical_lock_and_a_labelled_image(
    environments: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = _probe_containers(tmp_path, "lock-probe", "php-8.2")
    (probe / "lock.json").unlink()
    monkeypatch.setenv("REBUILD_CONTAINERS_DIR", str(probe.parent))
    store = PackageStore(tmp_path / "store")
    assert main(["env", "lock", "lock-probe", "--store", str(store.root), "--json"]) == 0
    d = load_definition("lock-probe", probe.parent)
    lock = load_lock(d)  # refuses a non-canonical file
    try:
        image = find_image(lock)
        assert image is not None and image.labels[LABEL_LOCK_DIGEST] == lock.digest
        assert any(p.name == "php8.2-cli" for p in lock.packages)
        parent = load_lock(load_definition("debian-bookworm"))
        assert lock.parent_lock_digest == parent.digest
        # Each package the lock adds is pinned to a .deb now in the store, as
        # the apt index gave it; inherited entries are the parent's own.
        own = own_packages(lock, parent)
        assert own and store.missing(own) == []
        for p in own:
            assert hashlib.sha256(store.path(p).read_bytes()).hexdigest() == p.sha256
        assert set(lock.packages) - set(own) == set(parent.packages)
        assert check_environment(d).ok
        # A second build of the fresh lock is a no-op.
        assert not build_environment(d, lambda: resolve_mirrors("bookworm")).built
    finally:
        _docker.client().images.remove(lock.image_tag, force=True)


def test_rebuilt_environment_image_is_found_again_after_the_old_one_is_deleted(
    environments: list[str], tmp_path: Path, no_leftovers: None
) -> None:
    """The runner remembers verified images; a deleted one must not break the next build."""
    from rebuild.envs.images import _docker_build

    probe = _probe_containers(tmp_path, "moved-probe", "python-3.11")
    lock = dataclasses.replace(load_lock(load_definition("python-3.11")), name="moved-probe")
    (probe / "lock.json").write_bytes(lock.canonical_bytes())
    labels = {LABEL_NAME: "moved-probe", LABEL_LOCK_DIGEST: lock.digest}
    base_id = load_lock(load_definition("python-3.11"))
    parent = find_image(base_id)
    assert parent is not None
    c = _docker.client()

    def label_image(marker: str) -> str:
        ctx = tmp_path / f"ctx-{marker}"
        ctx.mkdir()
        dockerfile = f"FROM {parent.id}\nLABEL org.rebuild.test.marker={marker}\n"
        image_id, _ = _docker_build(
            ctx, dockerfile, lock.image_tag, labels, lambda _: None, nocache=True
        )
        return image_id

    first = label_image("one")
    try:
        r1 = _run(tmp_path / "a", "true", environment="moved-probe", containers_dir=probe.parent)
        assert r1.ok and r1.image_id == first
        c.images.remove(lock.image_tag, force=True)
        second = label_image("two")
        assert second != first
        r2 = _run(tmp_path / "b", "true", environment="moved-probe", containers_dir=probe.parent)
        assert r2.ok and r2.image_id == second
    finally:
        c.images.remove(lock.image_tag, force=True)
