"""C2SP tlog-policy: which logs and witnesses are trusted, and the quorum.

Parses the line-based policy text (``log``, ``witness``, ``group``,
``quorum``) strictly and within fixed limits, and evaluates the quorum over
the set of witness keys whose cosignatures were *already verified* (see
:mod:`verify.cosignature`). Each witness counts once however many lines it
signed; cosignatures by keys outside the policy are ignored; groups can only
name witnesses and groups defined before them, so cycles cannot exist.

Fail closed: a policy without a quorum line is an error. Accepting
checkpoints without any cosignature needs the explicit ``quorum none``.
This module never reads files: callers pass the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from verify.errors import KeyFormatError, PolicyError, ThresholdError
from verify.keys import ALG_COSIGNATURE_V1, ALG_ED25519, VerifierKey
from verify.parsing import parse_decimal, unsafe_character

MAX_POLICY_SIZE: Final = 256 * 1024
MAX_LINE_LENGTH: Final = 8 * 1024
# C2SP recommends supporting at least 32 of each; we allow 256.
MAX_LOGS: Final = 256
MAX_WITNESSES: Final = 256
MAX_GROUPS: Final = 256
MAX_GROUP_MEMBERS: Final = 256
QUORUM_NONE: Final = "none"
_WHITE_SPACE = re.compile(r"\s")  # exactly str.isspace()


@dataclass(frozen=True)
class PolicyLog:
    key: VerifierKey
    url: str | None = None

    @property
    def origin(self) -> str:
        """A log's key name is its checkpoint origin (tlog-policy). Never raises."""
        return self.key.name


@dataclass(frozen=True)
class PolicyWitness:
    name: str
    key: VerifierKey
    url: str | None = None


@dataclass(frozen=True)
class PolicyGroup:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class QuorumResult:
    """The outcome of a quorum evaluation, with the distinct witnesses counted."""

    satisfied: bool
    quorum: str
    witnesses: tuple[str, ...]  # policy names of the distinct witnesses that cosigned


@dataclass(frozen=True)
class Policy:
    """A validated tlog-policy. ``quorum`` is a name or ``"none"``."""

    logs: tuple[PolicyLog, ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: tuple[PolicyGroup, ...]
    quorum: str

    def __post_init__(self) -> None:
        if len(self.logs) > MAX_LOGS or len(self.witnesses) > MAX_WITNESSES:
            raise PolicyError("policy lists too many logs or witnesses")
        if len(self.groups) > MAX_GROUPS:
            raise PolicyError("policy defines too many groups")
        seen_logs: set[bytes] = set()
        for log in self.logs:
            if log.key.algorithm != ALG_ED25519:
                raise PolicyError(f"log key {log.key.name} must be an Ed25519 (0x01) note key")
            if log.key.public_key in seen_logs:
                raise PolicyError(f"duplicate log key {log.key.name}")
            seen_logs.add(log.key.public_key)
        defined: set[str] = set()
        seen_witnesses: set[bytes] = set()
        for w in self.witnesses:
            _check_name(w.name)
            if w.name in defined:
                raise PolicyError(f"name {w.name!r} defined twice")
            if w.key.algorithm != ALG_COSIGNATURE_V1:
                raise PolicyError(f"witness {w.name} key must be a cosignature/v1 (0x04) key")
            if w.key.public_key in seen_witnesses:
                raise PolicyError(f"duplicate witness key for {w.name}")
            seen_witnesses.add(w.key.public_key)
            defined.add(w.name)
        for g in self.groups:
            _check_name(g.name)
            if g.name in defined:
                raise PolicyError(f"name {g.name!r} defined twice")
            if not 1 <= len(g.members) <= MAX_GROUP_MEMBERS:
                raise PolicyError(f"group {g.name} needs 1..{MAX_GROUP_MEMBERS} members")
            if len(set(g.members)) != len(g.members):
                raise PolicyError(f"group {g.name} lists a member twice")
            for m in g.members:
                if m not in defined:
                    # Only earlier names: this is what rules out cycles.
                    raise PolicyError(f"group {g.name} names {m!r}, not defined before it")
            if not 1 <= g.threshold <= len(g.members):
                raise PolicyError(f"group {g.name} threshold must be in 1..{len(g.members)}")
            defined.add(g.name)
        if self.quorum != QUORUM_NONE and self.quorum not in defined:
            raise PolicyError(f"quorum names {self.quorum!r}, which is not defined")

    def log_keys(self, origin: str | None = None) -> tuple[VerifierKey, ...]:
        """Log keys, all or only those for ``origin``. Never raises."""
        return tuple(lg.key for lg in self.logs if origin is None or lg.origin == origin)

    def witness_keys(self) -> tuple[VerifierKey, ...]:
        """Every witness's cosignature key, in policy order. Never raises."""
        return tuple(w.key for w in self.witnesses)

    def evaluate(self, cosigners: Iterable[VerifierKey]) -> QuorumResult:
        """Evaluate the quorum given the keys of verified cosignatures.

        Never raises: an unmet quorum is ``satisfied=False``.
        """
        keys = set(cosigners)
        witnessed: dict[str, bool] = {}
        counted: list[str] = []
        for w in self.witnesses:
            witnessed[w.name] = w.key in keys
            if witnessed[w.name]:
                counted.append(w.name)
        # Groups only reference earlier definitions, so one pass in order
        # evaluates every group after all of its members.
        for g in self.groups:
            witnessed[g.name] = sum(witnessed[m] for m in g.members) >= g.threshold
        ok = True if self.quorum == QUORUM_NONE else witnessed[self.quorum]
        return QuorumResult(ok, self.quorum, tuple(counted))

    def require_quorum(self, cosigners: Iterable[VerifierKey]) -> QuorumResult:
        """Like :meth:`evaluate` but raises ThresholdError when not satisfied."""
        result = self.evaluate(cosigners)
        if not result.satisfied:
            got = ", ".join(result.witnesses) or "no trusted witness"
            raise ThresholdError(f"witness quorum {self.quorum!r} not met (cosigned by: {got})")
        return result

    def encode(self) -> str:
        """Canonical policy text (one line per definition, quorum last). Never raises."""
        out = [_opt(f"log {lg.key.encode()}", lg.url) for lg in self.logs]
        out += [_opt(f"witness {w.name} {w.key.encode()}", w.url) for w in self.witnesses]
        for g in self.groups:
            k = "all" if g.threshold == len(g.members) and len(g.members) > 1 else str(g.threshold)
            out.append(f"group {g.name} {k} {' '.join(g.members)}")
        out.append(f"quorum {self.quorum}")
        return "\n".join(out) + "\n"


def _opt(line: str, url: str | None) -> str:
    return line if url is None else f"{line} {url}"


def _check_name(name: str) -> None:
    if not name or name == QUORUM_NONE:
        raise PolicyError(f"invalid witness or group name {name!r}")
    # Names are single tokens: no white space of any kind (NBSP included),
    # nothing invisible or reordering (C1 controls, bidi overrides).
    if _WHITE_SPACE.search(name) or unsafe_character(name) is not None:
        raise PolicyError(f"invalid witness or group name {name!r}")


def _check_chars(text: str) -> None:
    for i, ch in enumerate(text):
        if (ch < "\x20" and ch not in "\t\n") or ch == "\x7f":
            raise PolicyError(f"policy contains control character 0x{ord(ch):02x} at {i}")


def _parse_key(text: str, lineno: int) -> VerifierKey:
    try:
        return VerifierKey.parse(text)
    except KeyFormatError as e:
        raise PolicyError(f"line {lineno}: bad verifier key: {e}") from None


def _parse_threshold(text: str, n: int, lineno: int) -> int:
    if text == "all":
        return n
    if text == "any":
        return 1
    what = f"line {lineno}: group threshold (all, any or k)"
    return parse_decimal(text, what, PolicyError, maximum=MAX_GROUP_MEMBERS)


class _Lines:
    """The definitions read so far; one method per keyword, each given one line's fields."""

    def __init__(self) -> None:
        self.logs: list[PolicyLog] = []
        self.witnesses: list[PolicyWitness] = []
        self.groups: list[PolicyGroup] = []
        self.defined: set[str] = set()
        self.quorum: str | None = None

    def _check_new_name(self, name: str, lineno: int) -> None:
        _check_name(name)
        if name in self.defined:
            raise PolicyError(f"line {lineno}: name {name!r} defined twice")

    def log(self, args: list[str], lineno: int) -> None:
        if not 1 <= len(args) <= 2:
            raise PolicyError(f"line {lineno}: expected 'log <vkey> [<url>]'")
        self.logs.append(PolicyLog(_parse_key(args[0], lineno), args[1] if len(args) > 1 else None))
        if len(self.logs) > MAX_LOGS:
            raise PolicyError(f"more than {MAX_LOGS} logs")

    def witness(self, args: list[str], lineno: int) -> None:
        if not 2 <= len(args) <= 3:
            raise PolicyError(f"line {lineno}: expected 'witness <name> <vkey> [<url>]'")
        self._check_new_name(args[0], lineno)
        key = _parse_key(args[1], lineno)
        self.witnesses.append(PolicyWitness(args[0], key, args[2] if len(args) > 2 else None))
        self.defined.add(args[0])
        if len(self.witnesses) > MAX_WITNESSES:
            raise PolicyError(f"more than {MAX_WITNESSES} witnesses")

    def group(self, args: list[str], lineno: int) -> None:
        if len(args) < 3:
            raise PolicyError(f"line {lineno}: expected 'group <name> <k|any|all> <names>...'")
        name, k_text, members = args[0], args[1], tuple(args[2:])
        self._check_new_name(name, lineno)
        for m in members:
            if m == QUORUM_NONE:
                raise PolicyError(f"line {lineno}: 'none' cannot be a group member")
            if m not in self.defined:
                raise PolicyError(
                    f"line {lineno}: group {name} names {m!r}, not defined on an earlier line"
                )
        if len(members) > MAX_GROUP_MEMBERS:
            raise PolicyError(f"line {lineno}: group has too many members")
        k = _parse_threshold(k_text, len(members), lineno)
        if not 1 <= k <= len(members):
            raise PolicyError(f"line {lineno}: threshold {k} not in 1..{len(members)}")
        self.groups.append(PolicyGroup(name, k, members))
        self.defined.add(name)
        if len(self.groups) > MAX_GROUPS:
            raise PolicyError(f"more than {MAX_GROUPS} groups")

    def set_quorum(self, args: list[str], lineno: int) -> None:
        if len(args) != 1:
            raise PolicyError(f"line {lineno}: expected 'quorum <name|none>'")
        if self.quorum is not None:
            raise PolicyError(f"line {lineno}: a policy has exactly one quorum line")
        if args[0] != QUORUM_NONE and args[0] not in self.defined:
            raise PolicyError(f"line {lineno}: quorum names {args[0]!r}, not defined earlier")
        self.quorum = args[0]


def parse_policy(data: str | bytes) -> Policy:
    """Parse tlog-policy text strictly; raises PolicyError for anything else.

    Non-ASCII must be UTF-8 (stricter than C2SP's opaque octets, so names
    compare the same everywhere in this program). Fields are separated by
    ASCII spaces and tabs only; ``#`` starts a comment line.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_POLICY_SIZE:
            raise PolicyError("policy too large")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError("policy is not UTF-8") from None
    if len(data) > MAX_POLICY_SIZE:
        raise PolicyError("policy too large")
    _check_chars(data)
    lines = _Lines()
    keywords = {
        "log": lines.log,
        "witness": lines.witness,
        "group": lines.group,
        "quorum": lines.set_quorum,
    }
    for lineno, raw in enumerate(data.split("\n"), start=1):
        if len(raw) > MAX_LINE_LENGTH:
            raise PolicyError(f"line {lineno}: too long")
        # The separators are ASCII space and tab only: str.split() would also
        # split on NBSP, U+0085 or U+2028, which a reader of the file may not see.
        fields = [f for f in raw.replace("\t", " ").split(" ") if f]
        if not fields or fields[0].startswith("#"):
            continue
        handle = keywords.get(fields[0])
        if handle is None:
            raise PolicyError(f"line {lineno}: unknown keyword {fields[0]!r}")
        handle(fields[1:], lineno)
    if lines.quorum is None:
        raise PolicyError("policy has no quorum line (use 'quorum none' to require no witnesses)")
    return Policy(tuple(lines.logs), tuple(lines.witnesses), tuple(lines.groups), lines.quorum)
