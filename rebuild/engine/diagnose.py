"""Step 4b: explain a mismatch.

Hands the two artifacts to the comparison seam and returns its causes and
the digest of the stored report, which goes into the attestation. Decides
no verdict: by the time this runs the sha256s already differ.

Until the format-aware comparison lands, the real diffoscope is run with a
timeout and its text output is the stored report; the causes are the
archive members diffoscope names as differing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rebuild.errors import ToolError
from rebuild.fsio import atomic_write

DIFFOSCOPE_TIMEOUT = 300.0
MAX_REPORT = 16 * 1024 * 1024
MAX_CAUSES = 16


def explain(
    upstream: Path, rebuilt: Path, report_dir: Path
) -> tuple[list[str], Path, str, dict[str, Any]]:
    """Return (causes, report path, report sha256, details)."""
    exe = shutil.which("diffoscope")
    if exe is None:
        raise ToolError("diffoscope is not installed (scripts/setup installs it)")
    try:
        proc = subprocess.run(
            [
                exe,
                "--text",
                "-",
                "--no-progress",
                "--exclude-directory-metadata=recursive",
                str(upstream),
                str(rebuilt),
            ],
            capture_output=True,
            timeout=DIFFOSCOPE_TIMEOUT,
            check=False,
        )
        text = proc.stdout[:MAX_REPORT]
        status = f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"")[:MAX_REPORT] + b"\n[diffoscope timed out]\n"
        status = "timeout"
    report = report_dir / "diffoscope.txt"
    atomic_write(report, text)
    causes = _causes(text.decode("utf-8", "replace"))
    return causes, report, hashlib.sha256(text).hexdigest(), {"diffoscope": status}


_MEMBER = re.compile(r"^│?\s*├── (\S.*)$")


def _causes(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        m = _MEMBER.match(line)
        if m and "filetype" not in m.group(1) and not m.group(1).startswith("zipinfo"):
            out.append(f"content:{m.group(1).strip()}")
        elif "zipinfo" in line and "timestamps" not in out:
            out.append("zip metadata (timestamps/permissions)")
        if len(out) >= MAX_CAUSES:
            break
    return out or ["bytes differ"]
