"""The gate and the ``equivalent`` verdict: refused by default, counted when the policy opts in.

Everything is real: keys from ``rebuild key generate``, a ``witness serve``
and a ``log serve`` witnessed by it, the maintainer's ``release sign`` of a
wheel that was zipped at another time than its tagged source builds (the
python-wheel fixture re-zipped with other entry times: what building
without SOURCE_DATE_EPOCH gives), a real ``rebuild verify STATEMENT
ARTIFACT --key --log`` in the python-3.11 environment that finds it
``equivalent`` and logs that attestation, ``rebuild bundle`` from the log,
and ``rebuild gate`` as an updater runs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rebuild.engine.build_env import lock_digest
from rebuild.engine.fixtures import materialize
from tests.engine.conftest import docker_envs  # noqa: F401 (session fixture)
from tests.engine.test_equivalent_verify import LATER, rezip
from tests.gateworld import RealWorld, vkey
from tests.logutil import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_envs")]


@dataclass
class Equivalent:
    world: RealWorld
    artifact: Path
    bundle: Path


@pytest.fixture(scope="module")
def equivalent(
    tmp_path_factory: pytest.TempPathFactory,
    docker_envs: None,  # noqa: F811
) -> Iterator[Equivalent]:
    root = tmp_path_factory.mktemp("gate-equivalent")
    w = RealWorld(root)
    try:
        for name in ("log", "maintainer", "r1", "w1"):
            w.key(f"{name}.equivalent.test", name)
        witness = w.witness(w.keys["w1"], "w1-state", [w.pub("log")])
        w.tlog_policy_a = w.tlog_policy(root / "tlog.policy", [("W1", w.keys["w1"], witness.url)])
        log = w.log("log-a", w.keys["log"], w.tlog_policy_a)
        fixture = materialize("python-wheel", root / "fixture", lock_for=lock_digest)
        artifact = rezip(fixture.artifact, root / "published" / fixture.artifact.name, LATER)
        release = root / "release.json"
        w.sign("maintainer", artifact, fixture.recipe, release)
        log.add("release", release.read_bytes(), root)
        r = run_cli(
            "verify",
            str(release),
            str(artifact),
            "--maintainer-key",
            str(w.pub("maintainer")),
            "--key",
            str(w.keys["r1"]),
            "--log",
            log.url,
            "--report-dir",
            str(root / "report"),
            "--json",
            timeout=600,
        )
        doc = json.loads(r.stdout)
        assert doc["verdict"] == "equivalent", doc.get("message")
        assert r.returncode == 1  # not bit-identical
        assert doc["log_entry"]["index"] == 1
        bundle = root / "bundle.json"
        b = run_cli(
            "bundle", "--log", log.url, "--artifact", str(artifact), "--out", str(bundle), "--json"
        )
        assert b.returncode == 0, b.stderr
        yield Equivalent(w, artifact, bundle)
    finally:
        w.stop()


def _policy(e: Equivalent, path: Path, verdicts: str = "") -> Path:
    w = e.world
    path.write_text(
        'format = "rebuild-policy/v1"\n'
        f'tlog_policy = "{w.tlog_policy_a.name}"\n'
        "max_checkpoint_age = 3600\n"
        '[[package]]\nname = "hello-wheel"\n'
        f'maintainers = ["{vkey(w.pub("maintainer"))}"]\n'
        f'rebuilders = ["{vkey(w.pub("r1"))}"]\n'
        f"threshold = 1\n{verdicts}"
    )
    return path


def _gate(e: Equivalent, policy: Path, state: Path) -> tuple[int, dict[str, object]]:
    r = run_cli(
        "gate",
        str(e.artifact),
        "--bundle",
        str(e.bundle),
        "--policy",
        str(policy),
        "--state",
        str(state),
        "--json",
    )
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict)
    return r.returncode, doc


def test_gate_refuses_an_equivalent_rebuild_by_default(equivalent: Equivalent) -> None:
    root = equivalent.world.root
    code, doc = _gate(equivalent, _policy(equivalent, root / "default.toml"), root / "s1")
    assert (code, doc["decision"]) == (1, "rejected")
    reports = doc["attestations"]
    assert isinstance(reports, list)
    assert [(a["verdict"], a["code"]) for a in reports] == [("equivalent", "verdict-not-accepted")]
    assert not (root / "s1" / "state.json").exists()


def test_gate_counts_an_equivalent_rebuild_when_the_policy_opts_in(
    equivalent: Equivalent,
) -> None:
    root = equivalent.world.root
    policy = _policy(equivalent, root / "opt-in.toml", 'verdicts = ["reproduced", "equivalent"]\n')
    code, doc = _gate(equivalent, policy, root / "s2")
    assert (code, doc["decision"]) == (0, "accepted"), doc
    reports = doc["attestations"]
    assert isinstance(reports, list)
    assert [(a["verdict"], a["status"]) for a in reports] == [("equivalent", "counted")]
    state = json.loads((root / "s2" / "state.json").read_text())
    assert state["installed"]["hello-wheel"]
