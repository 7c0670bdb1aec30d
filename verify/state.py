"""An updater's trusted state: what it accepted before (rebuild-gate-state/v1).

Two things carry over from one gate decision to the next, and both defend
against replay: the last checkpoint accepted from each log (so a later
checkpoint must extend it: no rollback, no fork; step 6 of
:mod:`verify.gate`) and the release installed for each package (so a later
release must be newer: no downgrade; step 7). This module is the value and
its strict JSON encoding; persisting it (atomically, under a lock) is the
caller's job (``rebuild.gate``). A stored checkpoint is not re-verified
here: it was verified when it was accepted, and the state directory is the
updater's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Final

from verify.checkpoint import parse as parse_checkpoint
from verify.dsse import dump_json, load_json
from verify.errors import FormatError, StateFormatError
from verify.note import split_note

FORMAT: Final = "rebuild-gate-state/v1"
MAX_STATE_SIZE: Final = 8 << 20
MAX_LOGS: Final = 256
MAX_PACKAGES: Final = 4096
MAX_TEXT: Final = 256
MAX_NOTE: Final = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOP: Final = frozenset({"format", "checkpoints", "installed"})
_INSTALLED: Final = frozenset({"version", "sha256", "accepted_at"})
_INSTALLED_OPTIONAL: Final = frozenset({"downgrade_from"})


def _text(value: object, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise StateFormatError(f"{what} must be a string of 1..{limit} characters")
    if any(ch < "\x20" or ch == "\x7f" for ch in value):
        raise StateFormatError(f"{what} contains a control character")
    return value


def checkpoint_origin_of(note: str) -> str:
    """The origin of a stored checkpoint note (parsed, not verified).

    Raises StateFormatError when the note is not a well-formed checkpoint.
    """
    try:
        text, _ = split_note(note)
        return parse_checkpoint(text).origin
    except FormatError as e:
        raise StateFormatError(f"stored checkpoint: {e}") from None


@dataclass(frozen=True)
class InstalledRelease:
    """The release of one package the updater installed (or accepted) last.

    Construction raises StateFormatError for a malformed field.
    """

    package: str
    version: str
    sha256: str
    accepted_at: int
    """The gate's reference time ``now`` when it was accepted (POSIX seconds)."""
    downgrade_from: str | None = None
    """Set when ``--allow-downgrade`` let this release replace a newer one."""

    def __post_init__(self) -> None:
        _text(self.package, "installed package")
        _text(self.version, f"installed {self.package} version")
        if not isinstance(self.sha256, str) or not _HEX64.fullmatch(self.sha256):
            raise StateFormatError(f"installed {self.package} sha256 must be 64 lowercase hex")
        if type(self.accepted_at) is not int or self.accepted_at < 0:
            raise StateFormatError(f"installed {self.package} accepted_at must be a Unix time")
        if self.downgrade_from is not None:
            _text(self.downgrade_from, f"installed {self.package} downgrade_from")

    def to_dict(self) -> dict[str, Any]:
        """The release's entry in the state file. Never raises."""
        doc: dict[str, Any] = {
            "version": self.version,
            "sha256": self.sha256,
            "accepted_at": self.accepted_at,
        }
        if self.downgrade_from is not None:
            doc["downgrade_from"] = self.downgrade_from
        return doc


@dataclass(frozen=True)
class TrustedState:
    """Checkpoints accepted per log origin and releases installed per package.

    Immutable: the ``with_*`` methods return a new state. Both mappings are
    stored as tuples of pairs sorted by key so that equal states are equal
    values with one encoding. Construction raises StateFormatError (unsorted
    or repeated keys, a stored checkpoint of another log, beyond the limits).
    """

    checkpoints: tuple[tuple[str, str], ...] = ()
    """(origin, signed checkpoint note) of the last checkpoint accepted from each log."""
    installed: tuple[InstalledRelease, ...] = ()

    def __post_init__(self) -> None:
        if len(self.checkpoints) > MAX_LOGS:
            raise StateFormatError(f"state holds more than {MAX_LOGS} logs")
        if len(self.installed) > MAX_PACKAGES:
            raise StateFormatError(f"state holds more than {MAX_PACKAGES} packages")
        origins = [o for o, _ in self.checkpoints]
        if origins != sorted(set(origins)):
            raise StateFormatError("state checkpoints must be unique and sorted by origin")
        for origin, note in self.checkpoints:
            if not isinstance(note, str) or len(note) > MAX_NOTE:
                raise StateFormatError(f"checkpoint of {origin!r} must be a note of <= {MAX_NOTE}")
            if checkpoint_origin_of(note) != origin:
                raise StateFormatError(f"stored checkpoint for {origin!r} is of another log")
        packages = [r.package for r in self.installed]
        if packages != sorted(set(packages)):
            raise StateFormatError("state packages must be unique and sorted by name")

    def checkpoint(self, origin: str) -> str | None:
        """The last accepted checkpoint note for ``origin``, or None. Never raises."""
        return next((n for o, n in self.checkpoints if o == origin), None)

    def installed_release(self, package: str) -> InstalledRelease | None:
        """The release recorded as installed for ``package``, or None. Never raises."""
        return next((r for r in self.installed if r.package == package), None)

    def with_checkpoint(self, note: str) -> TrustedState:
        """This state with ``note`` as the accepted checkpoint of its log.

        Raises StateFormatError when ``note`` is not a well-formed checkpoint.
        The caller (the gate) has verified it and its consistency.
        """
        origin = checkpoint_origin_of(note)
        merged = dict(self.checkpoints)
        merged[origin] = note
        return replace(self, checkpoints=tuple(sorted(merged.items())))

    def with_installed(self, release: InstalledRelease) -> TrustedState:
        """This state with ``release`` recorded as its package's installed release.

        Raises StateFormatError only beyond the state's package limit.
        """
        merged = {r.package: r for r in self.installed}
        merged[release.package] = release
        return replace(self, installed=tuple(merged[p] for p in sorted(merged)))

    def to_dict(self) -> dict[str, Any]:
        """The rebuild-gate-state/v1 JSON object. Never raises."""
        return {
            "format": FORMAT,
            "checkpoints": dict(self.checkpoints),
            "installed": {r.package: r.to_dict() for r in self.installed},
        }

    def encode(self) -> bytes:
        """Compact, key-sorted JSON and a newline. Never raises."""
        return dump_json(self.to_dict()) + b"\n"


EMPTY_STATE: Final = TrustedState()


def parse_state(data: bytes) -> TrustedState:
    """Parse rebuild-gate-state/v1 bytes strictly. Raises StateFormatError."""
    try:
        doc = load_json(data, "gate state", MAX_STATE_SIZE)
    except FormatError as e:
        raise StateFormatError(str(e)) from None
    if not isinstance(doc, dict) or set(doc) != _TOP:
        raise StateFormatError(f"gate state must be an object with exactly {sorted(_TOP)}")
    if doc["format"] != FORMAT:
        raise StateFormatError(f"gate state format must be {FORMAT!r}")
    cps, inst = doc["checkpoints"], doc["installed"]
    if not isinstance(cps, dict) or not isinstance(inst, dict):
        raise StateFormatError("gate state checkpoints and installed must be objects")
    releases: list[InstalledRelease] = []
    for package, entry in inst.items():
        if not isinstance(entry, dict):
            raise StateFormatError(f"installed {package!r} must be an object")
        keys = set(entry)
        if not _INSTALLED <= keys <= _INSTALLED | _INSTALLED_OPTIONAL:
            raise StateFormatError(f"installed {package!r} has unexpected or missing fields")
        releases.append(
            InstalledRelease(
                package=package,
                version=entry["version"],
                sha256=entry["sha256"],
                accepted_at=entry["accepted_at"],
                downgrade_from=entry.get("downgrade_from"),
            )
        )
    for origin, note in cps.items():
        _text(origin, "checkpoint origin", 1024)
        if not isinstance(note, str):
            raise StateFormatError(f"checkpoint of {origin!r} must be a string")
    return TrustedState(
        tuple(sorted(cps.items())), tuple(sorted(releases, key=lambda r: r.package))
    )
