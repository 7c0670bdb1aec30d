"""The diffoscope seam: run the real diffoscope as a subprocess, bounded.

It decides nothing about the verdict; it only produces reports for people.
It must never hang (wall-clock timeout, the whole process group is killed),
never produce unbounded output (diffoscope's own size caps plus a read cap),
never use unbounded memory or disk on a decompression bomb (it runs under
``prlimit(1)``: address space and file size caps, inherited by every tool it
starts; its scratch directory is its TMPDIR and is measured while it runs,
the group killed past the disk cap), and never turn "diffoscope is missing"
into a failed comparison: that is a note, and the format-aware diagnosis
still answers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rebuild.compare._limits import DEFAULT_LIMITS, InflationLimits
from rebuild.compare._model import DiffoscopeRun, DiffoscopeStatus

DEFAULT_DIFFOSCOPE = "/usr/bin/diffoscope"
DEFAULT_TIMEOUT = 300.0
# diffoscope's own report caps (bytes / lines) and our cap on what we read back.
MAX_REPORT_SIZE = 16 << 20
MAX_DIFF_BLOCK_LINES = 1024
READ_CAP = 32 << 20
SUPPORTED_JSON_VERSIONS = frozenset({1})
# diffoscope says this in a comment when a tool it wants is not installed.
MISSING_TOOL_MARKER = "not available in path"


@dataclass(frozen=True)
class DiffoscopeOutput:
    run: DiffoscopeRun
    json_report: bytes | None
    html_report: bytes | None
    text_report: bytes | None
    missing_tools: tuple[str, ...]


# The scratch directory is walked this often and at most this far while diffoscope runs.
DISK_POLL = 0.25
_SYSTEM_BIN = ("/usr/bin", "/bin")
MAX_SCAN_FILES = 200_000


def _disk_used(root: Path) -> int:
    """Bytes allocated below ``root``; past MAX_SCAN_FILES files, more than any cap."""
    total = 0
    seen = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            seen += 1
            if seen > MAX_SCAN_FILES:
                return 1 << 62
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except OSError:
                continue
    return total


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "TMPDIR"}}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["LC_ALL"] = "C.UTF-8"
    env["TZ"] = "UTC"
    return env


def diffoscope_version(executable: str, timeout: float = 30.0) -> str | None:
    """``diffoscope --version`` (e.g. ``240``), or None when it cannot run."""
    try:
        proc = subprocess.run(
            [executable, "--version"],
            capture_output=True,
            timeout=timeout,
            env=_env(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    words = proc.stdout.decode("utf-8", "replace").split()
    return words[-1] if words else None


def _read_capped(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            data = f.read(READ_CAP + 1)
    except OSError:
        return None
    return data[:READ_CAP] if data else None


def _missing_tools(node: object, found: set[str], depth: int = 0) -> None:
    # diffoscope nests details; walk them (bounded) for its missing-tool comments.
    if depth > 64 or len(found) > 32:
        return
    if isinstance(node, dict):
        for c in node.get("comments", []) or []:
            if isinstance(c, str) and MISSING_TOOL_MARKER in c:
                found.add(c.strip()[:200])
        for d in node.get("details", []) or []:
            _missing_tools(d, found, depth + 1)


def _watch(
    proc: subprocess.Popen[bytes], scratch: Path, timeout: float, limits: InflationLimits
) -> str | None:
    """Wait for diffoscope; kill its group past the timeout or the disk cap.

    Returns None when it exited by itself, else "timeout" or "disk"."""
    deadline = time.monotonic() + max(0.1, timeout)
    stopped = None
    while True:
        try:
            proc.wait(timeout=max(0.01, min(DISK_POLL, deadline - time.monotonic())))
            return None
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            stopped = "timeout"
        elif _disk_used(scratch) > limits.diffoscope_disk:
            stopped = "disk"
        if stopped is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return stopped


def run_diffoscope(
    expected: Path,
    actual: Path,
    *,
    executable: str = DEFAULT_DIFFOSCOPE,
    timeout: float = DEFAULT_TIMEOUT,
    limits: InflationLimits = DEFAULT_LIMITS,
) -> DiffoscopeOutput:
    """Run diffoscope on two files; never raises for tool trouble (see ``run.status``)."""
    start = time.monotonic()

    def unrun(status: DiffoscopeStatus, version: str | None, note: str) -> DiffoscopeOutput:
        return _no_report(status, version, None, time.monotonic() - start, note)

    version = diffoscope_version(executable)
    if version is None:
        return unrun(
            "missing",
            None,
            f"diffoscope is not available ({executable} cannot be run); "
            "format-aware diagnosis only",
        )
    prlimit = _prlimit()
    if prlimit is None:
        # Fail closed: without its caps a bomb could take the machine's memory and disk.
        return unrun(
            "refused",
            version,
            "diffoscope was not run: prlimit(1) (util-linux) is missing, and it does not run "
            "without its memory and file size limits",
        )
    with tempfile.TemporaryDirectory(prefix="rebuild-diffoscope-") as tmp:
        out = Path(tmp)
        (out / "tmp").mkdir()
        argv = _argv(prlimit, executable, out, (expected, actual), timeout=timeout, limits=limits)
        proc = _spawn(argv, out)
        stopped = _watch(proc, out, timeout - (time.monotonic() - start), limits)
        if stopped == "timeout":
            return unrun(
                "timeout",
                version,
                f"diffoscope did not finish within {timeout:g} s; it was stopped",
            )
        if stopped == "disk":
            return unrun(
                "limit",
                version,
                f"diffoscope was stopped: it wrote more than {limits.diffoscope_disk} bytes "
                "to its scratch directory",
            )
        seconds = time.monotonic() - start
        wrote_json = (out / "report.json").is_file()
        if proc.returncode not in (0, 1) or not wrote_json:
            note = _failure_note(out, proc.returncode, wrote_json, limits)
            return _no_report("failed", version, proc.returncode, seconds, note)
        json_report = _read_capped(out / "report.json")
        html_report = _read_capped(out / "report.html")
        text_report = _read_capped(out / "report.txt")
    fmt, missing, json_note = _summarise_json(json_report)
    return DiffoscopeOutput(
        DiffoscopeRun("ran", version, proc.returncode, fmt, seconds, json_note),
        json_report,
        html_report,
        text_report,
        tuple(sorted(missing)),
    )


def _no_report(
    status: DiffoscopeStatus,
    version: str | None,
    returncode: int | None,
    seconds: float,
    note: str,
) -> DiffoscopeOutput:
    """The output of a diffoscope that was not run, was stopped or failed: no report."""
    return DiffoscopeOutput(
        DiffoscopeRun(status, version, returncode, None, seconds, note), None, None, None, ()
    )


def _prlimit() -> str | None:
    """util-linux's prlimit, also when PATH was narrowed to hide diffoscope's helpers."""
    return shutil.which("prlimit", path=os.pathsep.join([os.environ.get("PATH", ""), *_SYSTEM_BIN]))


def _spawn(argv: list[str], out: Path) -> subprocess.Popen[bytes]:
    """Start diffoscope in ``out`` with its private TMPDIR.

    A new session, so a timeout kills diffoscope and every tool it started.
    stderr goes to a file, so a chatty diffoscope cannot grow our memory.
    """
    with (out / "stderr.txt").open("wb") as errf:
        return subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=errf,
            env={**_env(), "TMPDIR": str(out / "tmp")},
            cwd=out,
            start_new_session=True,
        )


def _argv(
    prlimit: str,
    executable: str,
    out: Path,
    files: tuple[Path, Path],
    *,
    timeout: float,
    limits: InflationLimits,
) -> list[str]:
    """diffoscope under prlimit's caps, writing its three reports into ``out``."""
    expected, actual = files
    return [
        prlimit,
        f"--as={limits.diffoscope_memory}",
        f"--fsize={limits.max_inflated}",
        "--",
        executable,
        "--json",
        str(out / "report.json"),
        "--html",
        str(out / "report.html"),
        "--text",
        str(out / "report.txt"),
        "--text-color",
        "never",
        "--max-report-size",
        str(MAX_REPORT_SIZE),
        "--max-text-report-size",
        str(MAX_REPORT_SIZE),
        "--max-page-size",
        str(MAX_REPORT_SIZE),
        "--max-diff-block-lines",
        str(MAX_DIFF_BLOCK_LINES),
        # diffoscope's own soft limit, so it can still write partial reports.
        "--timeout",
        str(max(1, int(timeout * 0.8))),
        "--",
        # diffoscope runs in a scratch directory: give it absolute paths.
        str(expected.resolve()),
        str(actual.resolve()),
    ]


def _failure_note(out: Path, returncode: int, wrote_json: bool, limits: InflationLimits) -> str:
    """Why diffoscope failed: its exit status and the last line of its stderr (4 KiB read)."""
    with (out / "stderr.txt").open("rb") as tail_f:
        tail_f.seek(0, os.SEEK_END)
        tail_f.seek(max(0, tail_f.tell() - 4096))
        err = tail_f.read()
    text = err.decode("utf-8", "replace")
    tail = text.strip().splitlines()[-1:] or ["no message"]
    what = "" if wrote_json else ", no report written"
    note = f"diffoscope failed (exit {returncode}{what}): {tail[0][:300]}"
    if "MemoryError" in text or "File too large" in text:
        note += (
            f" (it runs with {limits.diffoscope_memory} bytes of address space and "
            f"files of at most {limits.max_inflated} bytes)"
        )
    return note


def _summarise_json(json_report: bytes | None) -> tuple[int | None, set[str], str | None]:
    """The JSON report's format version, the tools diffoscope lacked, and a note on either."""
    fmt: int | None = None
    missing: set[str] = set()
    json_note: str | None = None
    if json_report is not None:
        try:
            doc = json.loads(json_report)
            raw = doc.get("diffoscope-json-version") if isinstance(doc, dict) else None
            fmt = raw if isinstance(raw, int) else None
            _missing_tools(doc, missing)
        except (ValueError, RecursionError):
            json_note = "diffoscope's JSON report could not be parsed; kept as is"
        if fmt is not None and fmt not in SUPPORTED_JSON_VERSIONS:
            json_note = f"diffoscope JSON format version {fmt} is unknown here; kept as is"
    if missing:
        lacked = "diffoscope lacked tools: " + " | ".join(sorted(missing))
        json_note = f"{json_note}; {lacked}" if json_note else lacked
    return fmt, missing, json_note
