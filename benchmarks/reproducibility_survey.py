"""Survey: run ``rebuild verify pypi:NAME==VERSION`` over well-known pure-Python wheels.

Prints one line per package (backend, verdict, seconds, causes) and a JSON
summary; docs/reproducibility.md records the figures. Needs the host to
reach pip's configured index and the python-3.11 environment built.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/reproducibility_survey.py [NAME==VER ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES: tuple[str, ...] = (
    # hatchling
    "attrs==24.2.0",
    "urllib3==2.2.3",
    "platformdirs==4.3.6",
    "filelock==3.16.1",
    "jsonschema==4.23.0",
    "iniconfig==2.0.0",
    "pygments==2.18.0",
    "httpx==0.27.2",
    # flit_core
    "idna==3.10",
    "packaging==24.1",
    "tomli==2.0.1",
    "typing_extensions==4.12.2",
    "pyparsing==3.1.4",
    "wheel==0.44.0",
    "markdown-it-py==3.0.0",
    # poetry-core
    "poetry-core==1.9.0",
    "tomlkit==0.13.2",
    "cleo==2.1.0",
    "crashtest==0.4.1",
    "rich==13.8.1",
    # pdm-backend
    "typer==0.12.5",
    "fastapi==0.115.0",
    "unearth==0.17.2",
    "pdm-backend==2.3.3",
    # setuptools
    "six==1.16.0",
    "requests==2.32.3",
    "certifi==2024.8.30",
    "pytz==2024.2",
    "decorator==5.1.1",
    "toml==0.10.2",
    "click==8.1.7",
    "pluggy==1.5.0",
    "sniffio==1.3.1",
    "setuptools==75.1.0",
)


def main(argv: list[str]) -> int:
    names = argv[1:] or list(PACKAGES)
    rows = []
    with tempfile.TemporaryDirectory(prefix="survey-") as tmp:
        for spec in names:
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
            row = {
                "package": spec,
                "backend": doc.get("details", {}).get("generator"),
                "verdict": doc.get("verdict"),
                "seconds": round(seconds, 1),
                "causes": doc.get("causes", [])[:6],
                "message": doc.get("message", "")[:300],
                "sde_rule": doc.get("source_date_epoch_rule"),
            }
            rows.append(row)
            print(
                f"{spec:28} {row['backend']!s:26} {row['verdict']!s:11} {seconds:6.1f}s "
                f"{'; '.join(row['causes'])[:200]} {row['message'][:200]}",
                flush=True,
            )
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
