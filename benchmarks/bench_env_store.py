"""What the package store costs an environment build, and what an export weighs.

Builds every environment with ``--force`` twice: cold, into an empty package
store (every ``.deb`` fetched from the mirror, hashed into the store), then
warm, from the now-full store (no mirror request). For each build it prints
the phases, timed from the build's own progress messages: fetching into the
store, staging verified copies (hash + copy), the install itself
(debootstrap from the local repository, or apt-get install of the files),
the final docker build and the lock check. Then it exports each environment
(size, time) and imports it into another empty store (time).

Rebuilds the images of the current locks (they are replaced, not removed).
Needs root (debootstrap) and the mirror for the cold round.
Usage: python -m benchmarks.bench_env_store [--warm-only]
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

from rebuild.envs.archive import export_environment, import_environment
from rebuild.envs.definition import build_order, list_definitions
from rebuild.envs.images import build_environment
from rebuild.envs.mirror import Mirrors, resolve_mirrors
from rebuild.envs.store import PackageStore

PHASES = (
    ("fetching", "fetch into store"),
    ("staging", "stage (hash+copy)"),
    ("debootstrap", "debootstrap"),
    ("installing", "apt-get install"),
    ("Step", "docker build (files, labels)"),
    ("checking", "check vs lock"),
)


class Clock:
    """Attributes wall time to the phase named by the latest progress message."""

    def __init__(self) -> None:
        self.phase = "start"
        self.since = time.perf_counter()
        self.spent: dict[str, float] = {}

    def __call__(self, message: str) -> None:
        for prefix, label in PHASES:
            if message.startswith(prefix) and label != self.phase:
                self._switch(label)
                return

    def _switch(self, label: str) -> None:
        now = time.perf_counter()
        self.spent[self.phase] = self.spent.get(self.phase, 0.0) + now - self.since
        self.phase, self.since = label, now

    def done(self) -> dict[str, float]:
        self._switch("end")
        return self.spent


def build_all(store: PackageStore, label: str) -> None:
    @functools.cache
    def mirrors() -> Mirrors:
        return resolve_mirrors("bookworm")

    total = 0.0
    for d in build_order(list_definitions()):
        clock = Clock()
        started = time.perf_counter()
        o = build_environment(d, mirrors, clock, force=True, store=store)
        seconds = time.perf_counter() - started
        total += seconds
        spent = clock.done()
        fetch = o.packages
        assert fetch is not None
        phases = "  ".join(f"{k} {v:.1f}s" for k, v in spent.items() if k not in ("start",))
        print(
            f"{label:5s} {d.name:16s} {seconds:6.1f} s  packages {fetch.total:3d} "
            f"(stored {fetch.in_store:3d}, fetched {fetch.fetched:3d}, "
            f"{fetch.bytes_fetched / 1e6:5.1f} MB)  {phases}"
        )
    print(f"{label:5s} {'all':16s} {total:6.1f} s")


def exports(store: PackageStore, tmp: Path) -> None:
    for name in list_definitions():
        out = tmp / f"{name}.tar"
        started = time.perf_counter()
        report = export_environment(name, out, store, None)
        exported = time.perf_counter() - started
        target = PackageStore(tmp / f"import-{name}")
        started = time.perf_counter()
        import_environment(out, target)
        imported = time.perf_counter() - started
        print(
            f"export {name:16s} {report.size / 1e6:6.1f} MB ({report.packages} packages)  "
            f"export {exported:5.2f} s  import into an empty store {imported:5.2f} s"
        )


def main() -> None:
    warm_only = "--warm-only" in sys.argv[1:]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:  # large files: not /tmp
        store = PackageStore(Path(tmp) / "store")
        if not warm_only:
            build_all(store, "cold")
        else:
            store = PackageStore()
        build_all(store, "warm")
        files, size = store.usage()
        print(f"store: {files} files, {size / 1e6:.1f} MB")
        exports(store, Path(tmp))


if __name__ == "__main__":
    main()
