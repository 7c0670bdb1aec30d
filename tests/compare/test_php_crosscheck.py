"""Cross-check the PHAR reader and the test writer against real PHP 8.2.

PHP runs in the project's pinned php-8.2 environment image (built by
scripts/setup) with --network none. PHP must open, verify and read the phars
our writer makes; our reader must parse phars PHP makes, and classify two
PHP-built phars that differ in one way exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from rebuild.compare import compare
from rebuild.compare._phar import iter_entry, parse_phar
from tests.compare.phar_writer import DEMO_FILES, build_phar

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BUILD = """<?php
$p = new Phar($argv[1], 0, $argv[2]);
$p->buildFromDirectory('/w/src');
$p->setMetadata(['k' => 'v']);
if ($argv[3] === 'gz') { $p['lib/A.php']->compress(Phar::GZ); }
$p->setStub("<?php Phar::mapPhar('" . $argv[2] . "'); __HALT_COMPILER(); ?>\\r\\n");
"""
READ = """<?php
$p = new Phar($argv[1]);
foreach (new RecursiveIteratorIterator($p) as $f) {
    echo substr($f->getPathname(), strlen('phar://' . $argv[1]) + 1), '=',
        md5(file_get_contents($f->getPathname())), "\\n";
}
echo 'alias=', $p->getAlias(), "\\n", 'sig=', $p->getSignature()['hash_type'], "\\n";
echo 'gz=', var_export($p['src/App.php']->isCompressed(Phar::GZ), true), "\\n";
"""


def _php_image() -> tuple[Any, str]:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        images = client.images.list(name="rebuild-env/php-8.2")
    except Exception as e:  # the engine is not running here
        pytest.skip(f"no Docker engine: {e}")
    if not images or not images[0].tags:
        pytest.skip("the rebuild-env/php-8.2 image is not built (scripts/setup)")
    return client, images[0].tags[0]


def _php(client: Any, image: str, work: Path, script: str) -> str:
    out: bytes = client.containers.run(
        image,
        ["sh", "-c", script],
        network_mode="none",
        volumes={str(work): {"bind": "/w", "mode": "rw"}},
        working_dir="/w",
        remove=True,
    )
    return out.decode()


def test_php_reads_and_verifies_phars_from_the_test_writer(tmp_path: Path) -> None:
    import hashlib

    client, image = _php_image()
    files = (DEMO_FILES[0], dataclasses.replace(DEMO_FILES[1], compression="gz"), DEMO_FILES[2])
    (tmp_path / "mine.phar").write_bytes(build_phar(files, signature="sha512"))
    (tmp_path / "read.php").write_text(READ)
    out = _php(client, image, tmp_path, "php read.php /w/mine.phar")
    for f in files:
        assert f"{f.name}={hashlib.md5(f.data).hexdigest()}" in out
    assert "alias=demo.phar" in out and "sig=SHA-512" in out and "gz=true" in out


def test_reader_parses_php_built_phars_and_classifies_their_differences(tmp_path: Path) -> None:
    client, image = _php_image()
    (tmp_path / "src" / "lib").mkdir(parents=True)
    (tmp_path / "src" / "index.php").write_text("<?php require 'phar://x/lib/A.php';\n")
    (tmp_path / "src" / "lib" / "A.php").write_text("<?php class A {}\n" * 20)
    (tmp_path / "build.php").write_text(BUILD)
    _php(
        client,
        image,
        tmp_path,
        "php -d phar.readonly=0 build.php /w/a.phar demo.phar gz && "
        "php -d phar.readonly=0 build.php /w/b.phar demo.phar none && "
        "php -d phar.readonly=0 build.php /w/c.phar demo.phar gz && "
        "chmod 600 /w/src/index.php && "
        "php -d phar.readonly=0 build.php /w/d.phar demo.phar gz",
    )
    data = (tmp_path / "a.phar").read_bytes()
    buf = memoryview(data)
    p = parse_phar(buf)
    assert p.alias == b"demo.phar" and p.metadata == b'a:1:{s:1:"k";s:1:"v";}'
    assert p.signature is not None and p.signature.valid is True
    contents = {e.name: b"".join(iter_entry(buf, e)) for e in p.entries}
    assert contents["lib/A.php"] == b"<?php class A {}\n" * 20
    assert compare(tmp_path / "a.phar", tmp_path / "c.phar").identical
    assert compare(tmp_path / "a.phar", tmp_path / "b.phar").causes == ("compression",)
    assert compare(tmp_path / "a.phar", tmp_path / "d.phar").causes == ("permissions",)
