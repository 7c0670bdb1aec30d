"""The fixtures' artifacts equal a build made without rebuild's pipeline.

The published fixture artifacts were made by ``rebuild verify``'s own build
(fixtures/README.md), so "reproduced" alone shows only that the pipeline
repeats itself. Here each reproducible fixture is also built the plain way a
maintainer would: a ``git clone`` checkout of the tag (not rebuild's fetch and
unpacker), the pinned environment image started with the docker CLI (not the
runner: no read-only root, no copy into /build, no fixed user or
environment), the project's own build command (``php build.php``; ``pip
wheel`` rather than the recipe's direct PEP 517 call) and SOURCE_DATE_EPOCH
from the fixture's release date. rebuild's rebuilt artifact, the published
artifact and this reference must be the same bytes. php-nonrepro embeds its
build time, so it has no reference.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from rebuild.engine.build_env import environment_image
from rebuild.engine.fixtures import load_fixture, make_repository
from rebuild.hashing import sha256_file
from tests.engine.conftest import verify_fixture

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_envs")]

# fixture -> (environment, the project's own build command, run in the checkout)
REFERENCE_BUILDS = {
    "php-phar": ("php-8.2", ["php", "-d", "phar.readonly=0", "build.php", "/out/hello.phar"]),
    "python-wheel": (
        "python-3.11",
        ["python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", "/out", "."],
    ),
}  # fmt: skip


def reference_build(name: str, tmp: Path) -> Path:
    """Build fixture ``name`` from a checkout of its tag with plain ``docker run``."""
    fixture = load_fixture(name)
    upstream = tmp / "upstream"
    make_repository(fixture, upstream)  # the maintainer's repository, tagged
    checkout = tmp / "checkout"
    subprocess.run(
        ["git", "clone", "--quiet", "--branch", fixture.tag, str(upstream), str(checkout)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    epoch = int(datetime.fromisoformat(fixture.date.replace("Z", "+00:00")).timestamp())
    out = tmp / "out"
    out.mkdir()
    environment, command = REFERENCE_BUILDS[name]
    _, _, image_id = environment_image(environment)
    docker = [
        "docker", "run", "--rm", "--network", "none",
        "--user", f"{os.getuid()}:{os.getgid()}",
        "--env", f"SOURCE_DATE_EPOCH={epoch}", "--env", "HOME=/tmp",
        "--volume", f"{checkout}:/work", "--volume", f"{out}:/out", "--workdir", "/work",
        image_id, *command,
    ]  # fmt: skip
    built = subprocess.run(docker, capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    artifacts = sorted(out.iterdir())
    assert [a.name for a in artifacts] == [fixture.artifact.name]
    return artifacts[0]


@pytest.mark.parametrize("name", sorted(REFERENCE_BUILDS))
def test_rebuild_matches_a_plain_build_of_the_fixture(name: str, tmp_path: Path) -> None:
    reference = sha256_file(reference_build(name, tmp_path / "plain"))
    r = verify_fixture(name, tmp_path / "rebuild")
    assert r.verdict == "reproduced", r.message
    assert r.rebuilt_sha256 == reference
    assert sha256_file(load_fixture(name).artifact) == reference
