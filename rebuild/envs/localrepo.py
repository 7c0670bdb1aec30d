"""Stage a lock's ``.deb`` files from the package store, as files or as a repository.

A build installs only staged copies, each hashed against the lock while it
was copied (:meth:`PackageStore.copy_out`). For the base environment the
copies are also written up as a one-suite Debian repository (``Packages``
and ``Release``, hashes from the lock) so debootstrap installs exactly the
locked versions from a ``file://`` URL with no network.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from rebuild.envs.definition import LockedPackage
from rebuild.envs.store import PackageStore
from rebuild.errors import ToolError

POOL = "pool"
_CONTROL_TIMEOUT_S = 60


def staged_name(package: LockedPackage) -> str:
    # Debian's own pool naming (no epoch: debootstrap reads '%3a' as a URL
    # escape). A lock holds one version per name and architecture, so the
    # names are unique.
    version = package.version.partition(":")[2] or package.version
    return f"{package.name}_{version}_{package.architecture}.deb"


def stage(packages: list[LockedPackage], store: PackageStore, root: Path) -> list[Path]:
    """Copy ``packages`` from the store into ``root/pool``, verifying each one."""
    pool = root / POOL
    pool.mkdir(parents=True, exist_ok=True)
    staged = []
    for p in sorted(packages):
        dest = pool / staged_name(p)
        store.copy_out(p, dest)
        staged.append(dest)
    return staged


def _control(deb: Path) -> str:
    """The control stanza of a ``.deb`` (``dpkg-deb --field``)."""
    try:
        proc = subprocess.run(
            ["dpkg-deb", "--field", str(deb)],
            capture_output=True,
            timeout=_CONTROL_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise ToolError("dpkg-deb is not installed; run scripts/setup") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"dpkg-deb --field {deb.name} did not finish") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise ToolError(f"dpkg-deb cannot read {deb.name}: {err}")
    return proc.stdout.decode("utf-8", "replace").rstrip("\n")


def write_repository(
    root: Path, packages: list[LockedPackage], suite: str, architecture: str
) -> None:
    """Write ``dists/SUITE`` for the staged ``packages`` in ``root/pool``.

    The index's sizes and hashes are the lock's (the staged copies were
    proven to match them); debootstrap checks every file against them again.
    """
    stanzas = []
    for p in sorted(packages):
        name = staged_name(p)
        control = _control(root / POOL / name)
        stanzas.append(f"{control}\nFilename: {POOL}/{name}\nSize: {p.size}\nSHA256: {p.sha256}\n")
    # Every stanza ends with a blank line, the last one too: debootstrap
    # drops a final stanza without it.
    index = "\n".join(stanzas).encode("utf-8") + b"\n"
    component = root / "dists" / suite / "main" / f"binary-{architecture}"
    component.mkdir(parents=True, exist_ok=True)
    (component / "Packages").write_bytes(index)
    release = (
        "Origin: rebuild package store\n"
        f"Suite: {suite}\nCodename: {suite}\n"
        f"Architectures: {architecture}\nComponents: main\n"
        "SHA256:\n"
        f" {hashlib.sha256(index).hexdigest()} {len(index)} main/binary-{architecture}/Packages\n"
    )
    (root / "dists" / suite / "Release").write_text(release, encoding="utf-8")
