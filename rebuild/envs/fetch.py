"""Fetch the ``.deb`` files a lock pins from Debian mirrors into the package store.

A lock entry names a ``.deb`` by its path below an archive's root (apt's
``Filename:``) and pins its sha256 and size, so any Debian mirror, or a
snapshot archive of any later date, can serve it and no index or signature
is needed to trust it: a download is kept only when its bytes are the
pinned ones (:meth:`PackageStore.add`). Packages already in the store are
not fetched at all, so an environment whose packages are stored builds with
no mirror.

Refusals: bytes that differ from the pin are a :class:`DigestMismatchError`
naming the package and both digests (never "try the next mirror": a mirror
serving other bytes under a pinned name is an attack or a broken mirror, and
either must be seen); a package that no mirror serves and the store lacks is
a :class:`PackagesUnavailableError` naming every such package.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rebuild.envs.definition import LockedPackage
from rebuild.envs.mirror import Mirrors
from rebuild.envs.store import PackageStore, file_chunks
from rebuild.errors import OperationalError

Progress = Callable[[str], None]

TIMEOUT_S = 60
JOBS = 4
# How many packages an error message names before "and N more".
_SHOWN = 10


class PackagesUnavailableError(OperationalError):
    """Pinned packages are neither in the package store nor on any mirror."""

    def __init__(self, missing: list[tuple[LockedPackage, str]], store: PackageStore):
        self.missing = missing
        shown = "; ".join(f"{p.name}={p.version} ({why})" for p, why in missing[:_SHOWN])
        more = f"; and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        super().__init__(
            f"{len(missing)} pinned package(s) are not in the package store {store.root} and "
            f"no mirror serves them: {shown}{more}. The mirror has moved on past this lock: "
            "import the environment's packages (rebuild env import FILE), point --mirror "
            "(and --security-mirror) at a snapshot archive from the lock's date, or re-lock "
            "(rebuild env lock NAME: a new identity)"
        )


@dataclass(frozen=True)
class FetchReport:
    """What :func:`ensure_in_store` found and did."""

    total: int  # distinct packages asked for
    in_store: int  # already stored
    fetched: int  # downloaded and stored now
    bytes_fetched: int
    seconds: float

    def to_json(self) -> dict[str, int | float]:
        return {
            "packages": self.total,
            "in_store": self.in_store,
            "fetched": self.fetched,
            "bytes_fetched": self.bytes_fetched,
            "seconds": round(self.seconds, 2),
        }


class _NotThere(Exception):
    """The mirror answered that it has no such file (404, 410, no such local file)."""


def _candidates(package: LockedPackage, mirrors: Mirrors) -> list[str]:
    """URLs that may serve the package, most likely first.

    Security updates live in the security archive's ``pool/updates/``; the
    rest in the main archive. Both are tried: the digest, not the source,
    decides.
    """
    bases = [mirrors.archive]
    if mirrors.security:
        bases.append(mirrors.security)
        if package.filename.startswith("pool/updates/"):
            bases.reverse()
    return [f"{base.rstrip('/')}/{package.filename}" for base in bases]


def _download(url: str, package: LockedPackage, store: PackageStore) -> None:
    # Mirror URLs are http(s):// or file:// (mirror.check_url); either may
    # serve the archive, since the pinned digest decides, not the transport.
    request = urllib.request.Request(url, headers={"User-Agent": "rebuild-env-fetch"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            store.add(package, file_chunks(response, package.size), url)
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise _NotThere(f"{url}: HTTP {e.code}") from None
        raise OSError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, FileNotFoundError):
            raise _NotThere(f"{url}: no such file") from None
        raise OSError(f"{url}: {e.reason}") from None


def _fetch_one(package: LockedPackage, mirrors: Mirrors, store: PackageStore) -> str | None:
    """Fetch one package; None when stored, else why no mirror could serve it."""
    reasons: list[str] = []
    for url in _candidates(package, mirrors):
        try:
            _download(url, package, store)
            return None
        except _NotThere as e:
            reasons.append(str(e))
        except (OSError, TimeoutError) as e:
            reasons.append(str(e) or type(e).__name__)
    return "; ".join(reasons) or "no mirror"


def ensure_in_store(
    packages: Iterable[LockedPackage],
    store: PackageStore,
    mirrors_for: Callable[[], Mirrors] | None,
    progress: Progress = lambda _: None,
) -> FetchReport:
    """Make sure the store holds every package's pinned ``.deb``, fetching what it lacks.

    ``mirrors_for`` is only called when something must be fetched, so a
    build whose packages are all stored needs no mirror. Raises
    :class:`DigestMismatchError` for a download that is not the pinned
    bytes and :class:`PackagesUnavailableError` when packages remain missing.
    """
    started = time.monotonic()
    wanted = {p.sha256: p for p in packages}
    missing = store.missing(wanted.values())
    if not missing:
        return FetchReport(len(wanted), len(wanted), 0, 0, time.monotonic() - started)
    if mirrors_for is None:
        raise PackagesUnavailableError([(p, "no mirror given") for p in missing], store)
    mirrors = mirrors_for()
    total = sum(p.size for p in missing)
    progress(f"fetching {len(missing)} packages ({total / 1e6:.1f} MB) from {mirrors.archive}")
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        outcomes = list(pool.map(lambda p: _fetch_one(p, mirrors, store), missing))
    unavailable = [(p, why) for p, why in zip(missing, outcomes, strict=True) if why is not None]
    if unavailable:
        raise PackagesUnavailableError(unavailable, store)
    return FetchReport(
        len(wanted), len(wanted) - len(missing), len(missing), total, time.monotonic() - started
    )
