"""rebuild-policy/v1: whom an updater trusts, and how many must agree.

A TOML document (docs/formats.md) names, per package, the maintainer keys that
sign releases, the rebuilder keys whose attestations count, the threshold
*k* of distinct rebuilders that must agree, and the accepted verdicts; at the
top level, the C2SP tlog-policy file naming the audit log, its witnesses and
their quorum, and the maximum checkpoint age. Delivery settings (artifact and
bundle size caps, a health check, mirrors, the log's tile sources) live here
too so one file configures an updater.

Parsing fails closed: unknown fields, duplicate keys, wrong types, an empty
rebuilder or maintainer set, k outside 1..n, one public key listed twice (by
public key, whatever its name), a rebuilder who is also a maintainer of the
same package, a verdict other than ``reproduced`` or ``equivalent``, a
tlog-policy without a log or with ``quorum none`` (a checkpoint nobody
cosigned cannot be dated, so freshness could not be checked) are all
:class:`~verify.errors.PolicyError`. This module never reads files: the
caller passes the policy's bytes and a loader for the tlog-policy's bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from verify.bundle import MAX_BUNDLE_SIZE
from verify.errors import KeyFormatError, PolicyError
from verify.keys import ALG_ED25519, VerifierKey
from verify.parsing import exact_fields, load_toml
from verify.tlog_policy import QUORUM_NONE, Policy
from verify.tlog_policy import parse_policy as parse_tlog_policy

FORMAT: Final = "rebuild-policy/v1"
MAX_POLICY_SIZE: Final = 256 * 1024
MAX_PACKAGES: Final = 1024
MAX_KEYS: Final = 256
MAX_MIRRORS: Final = 64
MAX_LOG_SOURCES: Final = 64
MAX_URL: Final = 2048
MAX_NAME: Final = 256
MAX_CHECKPOINT_AGE: Final = 366 * 86400
MAX_ARTIFACT_CAP: Final = 1 << 40
DEFAULT_MAX_ARTIFACT_BYTES: Final = 256 << 20
DEFAULT_MAX_BUNDLE_BYTES: Final = 4 << 20
MAX_HEALTH_ARGS: Final = 64
MAX_HEALTH_ARG: Final = 4096
# Verdicts an updater may accept. ``equivalent`` (identical after documented
# normalisations) is accepted only where a policy lists it explicitly.
ACCEPTABLE_VERDICTS: Final = ("reproduced", "equivalent")
DEFAULT_VERDICTS: Final = ("reproduced",)
HEALTH_CHECK_PLACEHOLDERS: Final = ("{release_dir}", "{artifact}")

_TOP_FIELDS: Final = {
    "format",
    "tlog_policy",
    "max_checkpoint_age",
    "package",
    "mirrors",
    "logs",
}
_TOP_REQUIRED: Final = {"format", "tlog_policy", "max_checkpoint_age", "package"}
_PKG_FIELDS: Final = {
    "name",
    "maintainers",
    "rebuilders",
    "threshold",
    "verdicts",
    "max_artifact_bytes",
    "max_bundle_bytes",
    "health_check",
}
_PKG_REQUIRED: Final = {"name", "maintainers", "rebuilders", "threshold"}
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")

TlogPolicyLoader = Callable[[str], bytes]
"""Returns the bytes of the tlog-policy named by the policy's ``tlog_policy``."""


@dataclass(frozen=True)
class PackagePolicy:
    """Trust for one package: who signs releases, who rebuilds, how many must agree.

    Construction validates every field and raises PolicyError (see the module
    docstring for the rules).
    """

    name: str
    maintainers: tuple[VerifierKey, ...]
    rebuilders: tuple[VerifierKey, ...]
    threshold: int
    verdicts: tuple[str, ...] = DEFAULT_VERDICTS
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    health_check: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        where = f"package {self.name!r}"
        _check_name(self.name, "package name")
        _check_keys(self.maintainers, f"{where}: maintainers")
        _check_keys(self.rebuilders, f"{where}: rebuilders")
        maintainer_pubs = {k.public_key for k in self.maintainers}
        for k in self.rebuilders:
            if k.public_key in maintainer_pubs:
                raise PolicyError(
                    f"{where}: rebuilder {k.name}+{k.key_id} is also a maintainer; a "
                    "maintainer cannot independently attest their own release"
                )
        if type(self.threshold) is not int or not 1 <= self.threshold <= len(self.rebuilders):
            raise PolicyError(
                f"{where}: threshold must be an integer in 1..{len(self.rebuilders)} "
                "(the number of rebuilders)"
            )
        if not self.verdicts:
            raise PolicyError(f"{where}: verdicts must not be empty")
        for v in self.verdicts:
            if v not in ACCEPTABLE_VERDICTS:
                raise PolicyError(
                    f"{where}: verdict {v!r} cannot be accepted (only "
                    f"{', '.join(ACCEPTABLE_VERDICTS)})"
                )
        if len(set(self.verdicts)) != len(self.verdicts):
            raise PolicyError(f"{where}: verdicts lists a verdict twice")
        _check_int(self.max_artifact_bytes, f"{where}: max_artifact_bytes", 1, MAX_ARTIFACT_CAP)
        _check_int(self.max_bundle_bytes, f"{where}: max_bundle_bytes", 1, MAX_BUNDLE_SIZE)
        if self.health_check is not None:
            _check_health_check(self.health_check, f"{where}: health_check")


@dataclass(frozen=True)
class UpdatePolicy:
    """A validated rebuild-policy/v1 with its tlog-policy.

    Construction raises PolicyError (no package, duplicate names, a bad
    maximum age, a tlog-policy without a log or with ``quorum none``, bad
    mirrors or tile sources). The query methods never raise.
    """

    tlog: Policy
    tlog_policy_path: str
    max_checkpoint_age: int
    packages: tuple[PackagePolicy, ...]
    mirrors: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()
    """Where the log's tlog-tiles can be read (the log, or copies of its tiles):
    untrusted sources for consistency proofs the bundle lacks."""

    def __post_init__(self) -> None:
        if not self.packages:
            raise PolicyError("policy lists no [[package]]")
        if len(self.packages) > MAX_PACKAGES:
            raise PolicyError(f"policy lists more than {MAX_PACKAGES} packages")
        names = [p.name for p in self.packages]
        dup = _first_duplicate(names)
        if dup is not None:
            raise PolicyError(f"package {dup!r} is listed twice")
        _check_int(self.max_checkpoint_age, "max_checkpoint_age", 1, MAX_CHECKPOINT_AGE)
        if not self.tlog.logs:
            raise PolicyError(f"tlog_policy {self.tlog_policy_path}: lists no log")
        if self.tlog.quorum == QUORUM_NONE:
            raise PolicyError(
                f"tlog_policy {self.tlog_policy_path}: 'quorum none' cannot be used by an "
                "updater: without cosignatures a checkpoint's age cannot be checked"
            )
        for name, urls, limit in (
            ("mirrors", self.mirrors, MAX_MIRRORS),
            ("logs", self.logs, MAX_LOG_SOURCES),
        ):
            if len(urls) > limit:
                raise PolicyError(f"{name}: more than {limit}")
            for i, url in enumerate(urls):
                _check_url(url, f"{name}[{i}]")
            dup = _first_duplicate(urls)
            if dup is not None:
                raise PolicyError(f"{name}: {dup!r} is listed twice")

    def package(self, name: str) -> PackagePolicy | None:
        """The package's policy, or None when the policy does not list it. Never raises."""
        return next((p for p in self.packages if p.name == name), None)

    def maintained_by(self, key: VerifierKey) -> tuple[str, ...]:
        """Names of the packages ``key`` is a maintainer of (for reporting). Never raises."""
        return tuple(
            p.name
            for p in self.packages
            if any(m.public_key == key.public_key for m in p.maintainers)
        )

    def all_maintainers(self) -> tuple[VerifierKey, ...]:
        """Every maintainer key of every package, each public key once. Never raises."""
        return _unique(k for p in self.packages for k in p.maintainers)


# -- checks -------------------------------------------------------------------


def _first_duplicate(items: Iterable[object]) -> object | None:
    seen: set[object] = set()
    for x in items:
        if x in seen:
            return x
        seen.add(x)
    return None


def _unique(keys: Iterable[VerifierKey]) -> tuple[VerifierKey, ...]:
    out: dict[bytes, VerifierKey] = {}
    for k in keys:
        out.setdefault(k.public_key, k)
    return tuple(out.values())


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise PolicyError(f"{what} must be a string of 1..{MAX_NAME} characters")
    if any(ch.isspace() or ch < "\x20" or ch == "\x7f" for ch in value):
        raise PolicyError(f"{what} {value!r} must not contain white space or control characters")
    return value


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise PolicyError(f"{what} must be an integer in {low}..{high}")
    return value


def _check_keys(keys: Sequence[VerifierKey], what: str) -> None:
    if not keys:
        raise PolicyError(f"{what} must list at least one key")
    if len(keys) > MAX_KEYS:
        raise PolicyError(f"{what}: more than {MAX_KEYS} keys")
    seen: dict[bytes, VerifierKey] = {}
    for k in keys:
        if k.algorithm != ALG_ED25519:
            raise PolicyError(f"{what}: {k.name}+{k.key_id} must be an Ed25519 (0x01) key")
        other = seen.get(k.public_key)
        if other is not None:
            raise PolicyError(
                f"{what}: the same public key is listed twice "
                f"({other.name}+{other.key_id} and {k.name}+{k.key_id})"
            )
        seen[k.public_key] = k


def _check_url(url: object, what: str) -> str:
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise PolicyError(f"{what} must be a URL of at most {MAX_URL} characters")
    if any(ch.isspace() or ch < "\x20" or ch == "\x7f" for ch in url):
        raise PolicyError(f"{what} {url!r} must not contain white space or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise PolicyError(f"{what} {url!r} is not a URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise PolicyError(f"{what} {url!r} must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise PolicyError(f"{what} {url!r} must not carry credentials")
    if parts.query or parts.fragment:
        raise PolicyError(f"{what} {url!r} must not have a query or fragment")
    return url


def _check_health_check(argv: Sequence[str], what: str) -> None:
    if not argv or len(argv) > MAX_HEALTH_ARGS:
        raise PolicyError(f"{what} must be an argv list of 1..{MAX_HEALTH_ARGS} strings")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str) or len(arg) > MAX_HEALTH_ARG:
            raise PolicyError(f"{what}[{i}] must be a string of at most {MAX_HEALTH_ARG} chars")
        if "\x00" in arg:
            raise PolicyError(f"{what}[{i}] contains a NUL byte")
        rest = _PLACEHOLDER.sub(
            lambda m: "" if m.group(0) in HEALTH_CHECK_PLACEHOLDERS else "\x00", arg
        )
        if "\x00" in rest or "{" in rest or "}" in rest:
            raise PolicyError(
                f"{what}[{i}] {arg!r}: the only placeholders are "
                f"{' and '.join(HEALTH_CHECK_PLACEHOLDERS)}, and braces are not allowed otherwise"
            )
    if not argv[0]:
        raise PolicyError(f"{what}[0] (the program) must not be empty")


# -- parsing ------------------------------------------------------------------


def _fields(doc: dict[str, Any], what: str, allowed: set[str], required: set[str]) -> None:
    exact_fields(doc, what, allowed, required, PolicyError)


def _string_list(value: object, what: str, limit: int) -> list[str]:
    if not isinstance(value, list):
        raise PolicyError(f"{what} must be a list of strings")
    if len(value) > limit:
        raise PolicyError(f"{what}: more than {limit} entries")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise PolicyError(f"{what}[{i}] must be a string")
    return value


def _key_list(value: object, what: str) -> tuple[VerifierKey, ...]:
    keys: list[VerifierKey] = []
    for i, text in enumerate(_string_list(value, what, MAX_KEYS)):
        if text != text.strip():
            raise PolicyError(f"{what}[{i}]: verifier key has surrounding white space")
        try:
            keys.append(VerifierKey.parse(text))
        except KeyFormatError as e:
            raise PolicyError(f"{what}[{i}]: {e}") from None
    return tuple(keys)


def _package(doc: object, index: int) -> PackagePolicy:
    what = f"[[package]] {index + 1}"
    if not isinstance(doc, dict):
        raise PolicyError(f"{what} must be a table")
    _fields(doc, what, _PKG_FIELDS, _PKG_REQUIRED)
    name = _check_name(doc["name"], f"{what} name")
    what = f"{what} ({name})"
    verdicts = doc.get("verdicts", list(DEFAULT_VERDICTS))
    health = doc.get("health_check")
    return PackagePolicy(
        name=name,
        maintainers=_key_list(doc["maintainers"], f"{what} maintainers"),
        rebuilders=_key_list(doc["rebuilders"], f"{what} rebuilders"),
        threshold=doc["threshold"],
        verdicts=tuple(_string_list(verdicts, f"{what} verdicts", len(ACCEPTABLE_VERDICTS) + 1)),
        max_artifact_bytes=doc.get("max_artifact_bytes", DEFAULT_MAX_ARTIFACT_BYTES),
        max_bundle_bytes=doc.get("max_bundle_bytes", DEFAULT_MAX_BUNDLE_BYTES),
        health_check=(
            None
            if health is None
            else tuple(_string_list(health, f"{what} health_check", MAX_HEALTH_ARGS))
        ),
    )


def parse_policy(data: bytes, load_tlog_policy: TlogPolicyLoader) -> UpdatePolicy:
    """Parse rebuild-policy/v1 bytes; fetch the tlog-policy's bytes through the loader.

    ``load_tlog_policy`` gets the ``tlog_policy`` value exactly as written (a
    caller reading files resolves a relative path against the policy file's
    directory). Raises PolicyError for anything malformed, ambiguous or
    unsafe, including a malformed tlog-policy. Whatever ``load_tlog_policy``
    raises propagates unchanged.
    """
    if not isinstance(data, bytes):
        raise PolicyError("policy must be given as bytes")
    doc = load_toml(data, "policy", MAX_POLICY_SIZE, PolicyError)
    _fields(doc, "policy", _TOP_FIELDS, _TOP_REQUIRED)
    if doc["format"] != FORMAT:
        raise PolicyError(f"format must be {FORMAT!r}")
    tlog_path = doc["tlog_policy"]
    if not isinstance(tlog_path, str) or not tlog_path or len(tlog_path) > 4096:
        raise PolicyError("tlog_policy must be a non-empty path string")
    if "\x00" in tlog_path:
        raise PolicyError("tlog_policy contains a NUL byte")
    packages = doc["package"]
    if not isinstance(packages, list) or not packages:
        raise PolicyError("policy must have at least one [[package]] table")
    if len(packages) > MAX_PACKAGES:
        raise PolicyError(f"policy lists more than {MAX_PACKAGES} packages")
    parsed = tuple(_package(p, i) for i, p in enumerate(packages))
    mirrors = tuple(_string_list(doc.get("mirrors", []), "mirrors", MAX_MIRRORS))
    logs = tuple(_string_list(doc.get("logs", []), "logs", MAX_LOG_SOURCES))
    try:
        tlog = parse_tlog_policy(load_tlog_policy(tlog_path))
    except PolicyError as e:
        raise PolicyError(f"tlog_policy {tlog_path}: {e}") from None
    return UpdatePolicy(
        tlog=tlog,
        tlog_policy_path=tlog_path,
        max_checkpoint_age=doc["max_checkpoint_age"],
        packages=parsed,
        mirrors=mirrors,
        logs=logs,
    )
