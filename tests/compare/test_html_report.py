"""The HTML report rendered by a real headless Chromium (Debian's chromium).

The DOM Chromium builds is what a person sees, so assertions are made on it:
verdict, causes table, environment, recipe, a working link to diffoscope's
HTML, and no script smuggled in through an attacker-chosen entry name.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rebuild.compare import compare, write_html_report
from tests.compare.builders import FILES, write_wheel

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (scripts/setup)"
)
_VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "wbr"})
EVIL_NAME = 'demo/<script>alert("x")</script>.py'


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )


class _Dom(HTMLParser):
    """Collects the rendered DOM: elements by id, table rows, links, scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: dict[str, list[str]] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.scripts = 0
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag not in _VOID:
            self.stack.append(a.get("id") or "")
        if a.get("id"):
            self.ids.setdefault(a["id"] or "", [])
            if tag == "table":
                self._table = a["id"]
        if tag == "tr" and self._table:
            self._row = []
        if tag in {"td", "th"} and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID and self.stack:
            self.stack.pop()
        if tag in {"td", "th"} and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None and self._table:
            self.rows.setdefault(self._table, []).append(self._row)
            self._row = None
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for i in self.stack:
            if i:
                self.ids[i].append(data)


@needs_chromium
def test_report_renders_verdict_causes_environment_and_diffoscope_link(tmp_path: Path) -> None:
    a = write_wheel(tmp_path / "a" / "demo-1.0-py3-none-any.whl")
    evil = {**FILES, EVIL_NAME: b"x = 1\n"}
    b = write_wheel(
        tmp_path / "b" / "demo-1.0-py3-none-any.whl", files=evil, date_time=(2024, 1, 1, 0, 0, 0)
    )
    reports = tmp_path / "reports"
    result = compare(a, b, report_dir=reports)
    page = write_html_report(
        reports / "verification.html",
        result,
        {
            "environment": {"name": "debian-bookworm-python", "lock digest": "sha256:" + "ab" * 32},
            "recipe": "[source]\ngit = 'https://example.invalid/demo.git'\n",
        },
    )
    proc = _chromium(tmp_path, "--dump-dom", page.as_uri())
    dom = _Dom()
    dom.feed(proc.stdout.decode())
    assert "".join(dom.ids["verdict"]).strip() == "MISMATCH"
    causes = [row[0] for row in dom.rows["causes"][1:]]
    assert causes == list(result.causes) == [f"added:{EVIL_NAME}", "timestamps"]
    assert ["name", "debian-bookworm-python"] in dom.rows["environment"]
    assert "example.invalid/demo.git" in "".join(dom.ids["recipe"])
    # The attacker-chosen name is text, never markup.
    assert dom.scripts == 0
    diffoscope_html = result.report("diffoscope-html")
    assert diffoscope_html is not None
    assert diffoscope_html.path.name in dom.links
    assert (page.parent / diffoscope_html.path.name).is_file()
    assert not any(link.startswith(("http:", "https:")) for link in dom.links)

    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_chromium
def test_report_of_identical_artifacts_says_reproduced(tmp_path: Path) -> None:
    a = write_wheel(tmp_path / "a.whl")
    b = write_wheel(tmp_path / "b.whl")
    page = write_html_report(tmp_path / "r.html", compare(a, b), {})
    dom = _Dom()
    dom.feed(_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode())
    assert "".join(dom.ids["verdict"]).strip() == "REPRODUCED"
    assert dom.rows["causes"][1][0].startswith("none")
