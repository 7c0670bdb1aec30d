"""Survey: ``rebuild verify pypi:NAME==VERSION`` over a mechanically chosen set of releases.

Two steps, both printed for docs/reproducibility.md:

``select`` applies the selection rule and writes benchmarks/survey_releases.txt:
for each tool in TOOLS, pip resolves its installation on its own (``pip
install --dry-run --ignore-installed --only-binary :all: --report``, CPython
3.11, manylinux x86_64, pip's configured index); the union of the resolved
distributions is taken, each at the highest version any resolution picked;
a distribution is kept when that version's wheel is pure Python (``*-none-any``)
and the index also lists an sdist for it. Nothing is chosen by hand.

``run`` (the default) verifies every release in that file, one at a time,
and prints one line per release, a summary by backend, and a JSON document.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/reproducibility_survey.py select
    PYTHONPATH=$PWD .venv/bin/python benchmarks/reproducibility_survey.py run [NAME==VER ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

RELEASES = Path(__file__).with_name("survey_releases.txt")
# Well-known tools whose dependency closures make the set: notebooks, docs,
# formatting, testing, packaging, linting, automation, web frameworks,
# task queues, crawling, cloud CLIs.
TOOLS: tuple[str, ...] = (
    "jupyterlab",
    "sphinx",
    "black",
    "pytest",
    "mkdocs-material",
    "poetry",
    "hatch",
    "tox",
    "twine",
    "pre-commit",
    "pylint",
    "ansible-core",
    "httpie",
    "django",
    "flask",
    "celery",
    "scrapy",
    "awscli",
)


def select() -> int:
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    from rebuild.errors import RebuildError

    # The build requirements' target: CPython 3.11, manylinux x86_64, wheels only.
    from rebuild.sources.pypi import _TARGET_FLAGS, PackageIndex, locate_release

    picked: dict[str, tuple[Version, str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="survey-select-") as tmp:
        for tool in TOOLS:
            report = Path(tmp) / f"{tool}.json"
            cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
            cmd += ["--quiet", "--target", str(Path(tmp) / "t"), "--report", str(report)]
            proc = subprocess.run(
                [*cmd, *_TARGET_FLAGS, tool], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                print(f"{tool}: pip could not resolve it: {proc.stderr.strip()[-300:]}")
                continue
            for item in json.loads(report.read_text())["install"]:
                meta = item["metadata"]
                key = str(canonicalize_name(meta["name"]))
                version = Version(meta["version"])
                url = item["download_info"]["url"]
                if key not in picked or version > picked[key][0]:
                    picked[key] = (version, url, meta["name"])
    index = PackageIndex.from_pip()
    kept: list[str] = []
    for name in sorted(picked):
        version, url, display = picked[name]
        if not url.endswith("-none-any.whl"):
            continue
        try:
            locate_release(index, display, str(version))
        except RebuildError as e:
            print(f"{display}=={version}: left out: {e}")
            continue
        kept.append(f"{display}=={version}")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    header = [
        f"# Selected {stamp} by benchmarks/reproducibility_survey.py select (the rule is in",
        "# its docstring): pure-Python releases with an sdist from pip's resolution of",
        f"# {', '.join(TOOLS)}.",
    ]
    RELEASES.write_text("\n".join([*header, *kept]) + "\n", encoding="utf-8")
    print(f"{len(picked)} distributions resolved, {len(kept)} kept -> {RELEASES}")
    return 0


def _releases() -> list[str]:
    lines = RELEASES.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _generator(doc: dict[str, object], report_dir: Path) -> str | None:
    """The Generator line, from the result or (when the run stopped before the
    plan) from the published wheel it downloaded."""
    details = doc.get("details")
    gen = details.get("generator") if isinstance(details, dict) else None
    if isinstance(gen, str):
        return gen
    for wheel in sorted((report_dir / "upstream").glob("*.whl")):
        try:
            with zipfile.ZipFile(wheel) as z:
                name = next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL"))
                text = z.read(name)[:4096].decode("utf-8", "replace")
        except (OSError, zipfile.BadZipFile, StopIteration):
            continue
        for line in text.splitlines():
            if line.lower().startswith("generator:"):
                return line.split(":", 1)[1].strip()
    return None


def _backend(generator: str | None) -> str:
    if not generator or not generator.split():
        return "(none)"
    return generator.split("(")[0].split()[0].replace("_", "-")


def run(names: list[str]) -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="survey-") as tmp:
        for spec in names or _releases():
            t0 = time.monotonic()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "rebuild",
                    "verify",
                    f"pypi:{spec}",
                    "--json",
                    "--report-dir",
                    str(Path(tmp) / spec),
                    "--timeout",
                    "600",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.monotonic() - t0
            try:
                doc = json.loads(proc.stdout)
            except ValueError:
                doc = {"verdict": "error", "message": proc.stderr.strip()[-300:]}
            if "error" in doc and "verdict" not in doc:
                doc = {"verdict": "error", "message": doc["error"]["message"]}
            generator = _generator(doc, Path(tmp) / spec)
            row = {
                "package": spec,
                "generator": generator,
                "backend": _backend(generator),
                "verdict": doc.get("verdict"),
                "seconds": round(seconds, 1),
                "causes": doc.get("causes", [])[:6],
                "message": doc.get("message", "")[:300],
                "sde_rule": doc.get("source_date_epoch_rule"),
                "knobs": doc.get("details", {}).get("knobs"),
            }
            rows.append(row)
            print(
                f"{spec:34} {row['generator']!s:26} {row['verdict']!s:11} {seconds:6.1f}s "
                f"{'; '.join(row['causes'])[:200]} {row['message'][:200]}",
                flush=True,
            )
    by_backend: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        by_backend[str(r["backend"])][str(r["verdict"])] += 1
    print("\nbackend: reproduced / equivalent / mismatch / failed / error (total)")
    for backend, c in sorted(by_backend.items(), key=lambda kv: -sum(kv[1].values())):
        counts = " / ".join(
            str(c[v]) for v in ("reproduced", "equivalent", "mismatch", "failed", "error")
        )
        print(f"  {backend:20} {counts} ({sum(c.values())})")
    print(json.dumps(rows, indent=1))
    return 0


def main(argv: list[str]) -> int:
    if argv[1:2] == ["select"]:
        return select()
    args = argv[1:]
    if args[:1] == ["run"]:
        args = args[1:]
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
