"""What a demo run reports: timed steps, expected outcomes, and the run's verdict.

Values only; the story (:mod:`rebuild.demo.story`) fills them in, the CLI
renders them. An outcome is *expected* behaviour of the system (an honest
release installs; an attack is refused **with the gate's reason for that
attack**); the run passes only when every outcome happened as expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

FORMAT: Final = "rebuild-demo/v1"
OutcomeKind = Literal["flow", "attack"]


@dataclass(frozen=True)
class Step:
    """One timed step of the story."""

    chapter: int
    title: str
    seconds: float
    lines: tuple[str, ...] = ()
    completed: bool = True  # False: the step stopped the demo (see the run's error)

    def to_json(self) -> dict[str, Any]:
        return {
            "chapter": self.chapter,
            "title": self.title,
            "seconds": round(self.seconds, 3),
            "lines": list(self.lines),
            "completed": self.completed,
        }


@dataclass(frozen=True)
class GateReason:
    """One failed gate step as an updater reported it, and where the bytes came from."""

    source: str  # "mirror 1", "mirror 2", ...
    version: str
    step: int
    code: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "version": self.version,
            "step": self.step,
            "code": self.code,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Outcome:
    """An expected outcome, and whether it happened."""

    name: str
    kind: OutcomeKind
    expected: str
    observed: str
    ok: bool
    gate: tuple[GateReason, ...] = ()
    attack_succeeded: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "expected": self.expected,
            "observed": self.observed,
            "ok": self.ok,
            "attack_succeeded": self.attack_succeeded,
            "gate": [g.to_json() for g in self.gate],
        }


class Reporter(Protocol):
    """Where the story is told as it happens (the CLI: rich text, or stderr lines)."""

    def chapter(self, number: int, title: str, intro: str) -> None: ...

    def step(self, step: Step) -> None: ...

    def outcome(self, outcome: Outcome) -> None: ...


@dataclass
class DemoResult:
    """The whole run: every step, every outcome, and what stopped it (if anything)."""

    directory: Path
    kept: bool
    chapters: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    users: dict[str, str] = field(default_factory=dict)
    error: dict[str, str] | None = None

    @property
    def exit_code(self) -> int:
        """2 when the demo could not run to its end, 1 when an outcome was not as expected."""
        if self.error is not None:
            return 2
        return 0 if self.outcomes and all(o.ok for o in self.outcomes) else 1

    @property
    def verdict(self) -> str:
        return "expected" if self.exit_code == 0 else "unexpected"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "demo": FORMAT,
            "directory": str(self.directory),
            "kept": self.kept,
            "seconds": round(self.seconds, 3),
            "users": self.users,
            "outcomes": [o.to_json() for o in self.outcomes],
            "chapters": [{"chapter": n, "title": t} for n, t in enumerate(self.chapters, 1)],
            "steps": [s.to_json() for s in self.steps],
            "expected_outcomes": len(self.outcomes),
            "unexpected": [o.name for o in self.outcomes if not o.ok],
            "attacks_succeeded": [o.name for o in self.outcomes if o.attack_succeeded],
        }
        return doc
