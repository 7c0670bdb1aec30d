"""Which Debian mirror environment builds use: flag, environment, or apt config.

The mirror is never written into the project: it comes from ``--mirror``, the
``REBUILD_DEBIAN_MIRROR`` variable, or the host's own apt sources (deb822
``*.sources`` files and one-line ``*.list`` files), in that order. The
security archive is found the same way (``--security-mirror``,
``REBUILD_DEBIAN_SECURITY_MIRROR``, the apt source that serves
``SUITE-security``). This module reads files only; it never fetches.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from rebuild.envs.deb822 import parse_stanzas
from rebuild.errors import UsageError
from rebuild.fsio import read_text_bounded

APT_DIR = Path("/etc/apt")
_URL_RE = re.compile(r"^(https?|file)://[^\s]+$")


@dataclass(frozen=True)
class Mirrors:
    archive: str
    security: str | None
    origin: str  # where the archive mirror came from, for messages


@dataclass(frozen=True)
class _Source:
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]


def check_url(url: str, what: str) -> str:
    if not _URL_RE.match(url):
        raise UsageError(f"{what} {url!r} is not an http(s):// or file:// URL")
    return url.rstrip("/")


def _parse_deb822(text: str) -> list[_Source]:
    sources: list[_Source] = []
    for stanza in parse_stanzas(text, comments=True):
        fields = {k.lower(): " ".join(v.split()) for k, v in stanza.items()}
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        sources.append(
            _Source(
                tuple(fields.get("uris", "").split()),
                tuple(fields.get("suites", "").split()),
                tuple(fields.get("components", "").split()),
            )
        )
    return sources


def _parse_one_line(text: str) -> list[_Source]:
    sources: list[_Source] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        # Drop an options block: deb [arch=amd64 signed-by=...] URI SUITE COMP...
        line = re.sub(r"\[[^\]]*\]", " ", line)
        parts = line.split()
        if len(parts) >= 3:
            sources.append(_Source((parts[1],), (parts[2],), tuple(parts[3:])))
    return sources


def host_apt_sources(apt_dir: Path = APT_DIR) -> list[_Source]:
    found: list[_Source] = []
    main_list = apt_dir / "sources.list"
    if main_list.is_file():
        found += _parse_one_line(read_text_bounded(main_list, 1 << 20))
    d = apt_dir / "sources.list.d"
    if d.is_dir():
        for path in sorted(d.iterdir()):
            if path.suffix == ".sources":
                found += _parse_deb822(read_text_bounded(path, 1 << 20))
            elif path.suffix == ".list":
                found += _parse_one_line(read_text_bounded(path, 1 << 20))
    return found


def _from_apt(suite: str, apt_dir: Path) -> tuple[str | None, str | None]:
    archive = security = None
    for src in host_apt_sources(apt_dir):
        if "main" not in src.components:
            continue
        for uri in src.uris:
            if not _URL_RE.match(uri):
                continue
            if archive is None and suite in src.suites:
                archive = uri.rstrip("/")
            if security is None and f"{suite}-security" in src.suites:
                security = uri.rstrip("/")
    return archive, security


def resolve_mirrors(
    suite: str,
    mirror: str | None = None,
    security_mirror: str | None = None,
    apt_dir: Path = APT_DIR,
) -> Mirrors:
    """Find the Debian archive (and security archive) mirror for ``suite``."""
    apt_archive, apt_security = _from_apt(suite, apt_dir)
    if mirror:
        archive, origin = check_url(mirror, "--mirror"), "--mirror"
    elif os.environ.get("REBUILD_DEBIAN_MIRROR"):
        archive = check_url(os.environ["REBUILD_DEBIAN_MIRROR"], "REBUILD_DEBIAN_MIRROR")
        origin = "REBUILD_DEBIAN_MIRROR"
    elif apt_archive:
        archive, origin = apt_archive, f"apt sources in {apt_dir}"
    else:
        raise UsageError(
            f"no Debian mirror for {suite!r}: the host's apt sources in {apt_dir} name none; "
            "pass --mirror URL or set REBUILD_DEBIAN_MIRROR"
        )
    if security_mirror:
        security: str | None = check_url(security_mirror, "--security-mirror")
    elif os.environ.get("REBUILD_DEBIAN_SECURITY_MIRROR"):
        security = check_url(
            os.environ["REBUILD_DEBIAN_SECURITY_MIRROR"], "REBUILD_DEBIAN_SECURITY_MIRROR"
        )
    else:
        security = apt_security
    return Mirrors(archive=archive, security=security, origin=origin)


def render_sources(template: str, suite: str, mirrors: Mirrors) -> str:
    """Fill the apt sources template; a stanza for an unknown security mirror is dropped."""
    stanzas = re.split(r"\n\s*\n", template.strip())
    kept = [s for s in stanzas if "@SECURITY_MIRROR@" not in s or mirrors.security]
    text = "\n\n".join(kept) + "\n"
    text = text.replace("@MIRROR@", mirrors.archive).replace("@SUITE@", suite)
    return text.replace("@SECURITY_MIRROR@", mirrors.security or "")
