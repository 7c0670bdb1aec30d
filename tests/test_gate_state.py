"""The updater's trusted state: strict encoding, atomic commits under a lock."""

from __future__ import annotations

import json
import multiprocessing
import os
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from rebuild.errors import StorageError
from rebuild.gate import STATE_FILE, StateDir, open_gate
from tests.gatesim import NOW, World, honest
from verify.errors import StateFormatError
from verify.state import EMPTY_STATE, InstalledRelease, TrustedState, parse_state

W = World()
NOTE = W.checkpoint(size=0)


def test_state_round_trips_and_sorts() -> None:
    s = EMPTY_STATE.with_installed(InstalledRelease("b", "1.0", "a" * 64, NOW))
    s = s.with_installed(InstalledRelease("a", "2.0", "b" * 64, NOW, downgrade_from="3.0"))
    s = s.with_checkpoint(NOTE)
    assert [r.package for r in s.installed] == ["a", "b"]
    assert s.checkpoint("log.example/sim") == NOTE
    assert parse_state(s.encode()) == s
    assert s.installed_release("a").downgrade_from == "3.0"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"format": "rebuild-gate-state/v1", "checkpoints": {}},
        {"format": "rebuild-gate-state/v2", "checkpoints": {}, "installed": {}},
        {"format": "rebuild-gate-state/v1", "checkpoints": {"other.origin": NOTE}, "installed": {}},
        {"format": "rebuild-gate-state/v1", "checkpoints": {"x": "junk"}, "installed": {}},
        {
            "format": "rebuild-gate-state/v1",
            "checkpoints": {},
            "installed": {"p": {"version": "1", "sha256": "a" * 64}},
        },
        {
            "format": "rebuild-gate-state/v1",
            "checkpoints": {},
            "installed": {"p": {"version": "1", "sha256": "A" * 64, "accepted_at": 1}},
        },
        {
            "format": "rebuild-gate-state/v1",
            "checkpoints": {},
            "installed": {"p": {"version": "1", "sha256": "a" * 64, "accepted_at": 1, "x": 1}},
        },
    ],
)
def test_malformed_state_is_refused(doc: object) -> None:
    with pytest.raises(StateFormatError):
        parse_state(json.dumps(doc).encode())


def test_damaged_state_file_is_an_error_never_a_reset(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{ damaged")
    with StateDir(tmp_path) as d, pytest.raises(StorageError, match="refusing to reset"):
        d.load()


def _hold_lock(path: str, ready: Event, done: Event) -> None:
    with StateDir(Path(path)):
        ready.set()
        done.wait(30)


def test_a_second_process_waits_for_the_lock_then_gives_up(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
    holder.start()
    try:
        assert ready.wait(30)
        with (
            pytest.raises(StorageError, match="locked by another process"),
            StateDir(tmp_path, timeout=0.2),
        ):
            pass
    finally:
        done.set()
        holder.join(30)
    with StateDir(tmp_path, timeout=5):
        pass


def test_acceptance_commits_checkpoint_and_install_separately(tmp_path: Path) -> None:
    w = World()
    artifact, bundle = honest(w)
    policy = w.policy()
    with open_gate(artifact, bundle, policy, tmp_path, now=NOW) as run:
        assert run.decision.accepted
        assert not (tmp_path / STATE_FILE).exists()  # nothing until a commit
        run.commit_checkpoint()
    state = parse_state((tmp_path / STATE_FILE).read_bytes())
    assert state.checkpoint(w.log_key.name) is not None
    assert state.installed == ()
    with open_gate(artifact, bundle, policy, tmp_path, now=NOW) as run:
        assert run.decision.accepted
        run.commit_installed()
    state = parse_state((tmp_path / STATE_FILE).read_bytes())
    assert state.installed_release("hello-phar").version == "1.0.0"  # type: ignore[union-attr]
    assert oct((tmp_path / STATE_FILE).stat().st_mode & 0o777) == "0o600"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_rejection_cannot_be_committed(tmp_path: Path) -> None:
    w = World()
    artifact, bundle = honest(w)
    with open_gate(artifact + b"x", bundle, w.policy(), tmp_path, now=NOW) as run:
        assert not run.decision.accepted
        with pytest.raises(ValueError, match="rejected"):
            run.commit_installed()
    assert not (tmp_path / STATE_FILE).exists()


def test_nothing_can_be_committed_after_the_run(tmp_path: Path) -> None:
    w = World()
    artifact, bundle = honest(w)
    with open_gate(artifact, bundle, w.policy(), tmp_path, now=NOW) as run:
        pass
    with pytest.raises(StorageError, match="over"):
        run.commit_installed()
    assert TrustedState() == EMPTY_STATE


def test_the_same_fork_refused_twice_in_one_second_keeps_both_pieces_of_evidence(
    tmp_path: Path,
) -> None:
    """An updater trying the same forked bundle on two mirrors (or a daemon handling
    two requests) within one second must refuse it twice, not fail on the second
    evidence file's name."""
    honest_world, forked_world = World(), World()  # same keys, other histories
    artifact, bundle = honest(honest_world)
    with open_gate(artifact, bundle, honest_world.policy(), tmp_path, now=NOW) as run:
        run.commit_checkpoint()
    other, forked = honest(forked_world, b"<?php echo 'forked';\n")
    for _ in range(2):
        with open_gate(other, forked, forked_world.policy(), tmp_path, now=NOW) as run:
            assert [(f.step, f.code) for f in run.decision.failures] == [(6, "fork")]
    evidence = sorted(tmp_path.glob("fork-evidence-*"))
    assert len(evidence) == 2
    assert evidence[0].read_bytes() == evidence[1].read_bytes()
