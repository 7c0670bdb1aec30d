"""A self-contained HTML report of one verification, for people.

Everything is inline (CSS in a <style> element, no scripts, no fonts, no
images, no external URLs) and a Content-Security-Policy forbids loading
anything, so the report can be opened from an untrusted mirror safely. Every
value from an artifact (entry names, details) is HTML-escaped: entry names
are attacker-chosen.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rebuild import __version__
from rebuild.compare._model import Comparison, ReportFile
from rebuild.compare._vocab import describe
from rebuild.fsio import atomic_write

MAX_ROWS = 500

_CSS = """
:root { --ok: #1a7f37; --bad: #cf222e; --muted: #57606a; --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       margin: 0; background: #fff; }
header { padding: 24px 32px; border-bottom: 1px solid var(--line); background: var(--bg); }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: var(--muted); }
main { padding: 8px 32px 40px; max-width: 1200px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
.verdict { display: inline-block; padding: 4px 12px; border-radius: 999px; color: #fff;
           font-weight: 600; letter-spacing: .03em; margin-right: 10px; }
.verdict.reproduced { background: var(--ok); }
.verdict.mismatch { background: var(--bad); }
.verdict.equivalent { background: #9a6700; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px;
         border-bottom: 1px solid var(--line); }
th { background: var(--bg); font-weight: 600; white-space: nowrap; }
td:first-child, th:first-child { white-space: nowrap; }
td.k { width: 220px; color: var(--muted); white-space: nowrap; }
code, .mono { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
              overflow-wrap: anywhere; }
.cause { font-weight: 600; min-width: 16em; }
td.num { text-align: right; width: 7em; }
td.entry { min-width: 14em; }
.explained { color: var(--muted); }
pre { background: var(--bg); border: 1px solid var(--line); padding: 10px; overflow: auto;
      font: 13px/1.4 ui-monospace, monospace; }
.note { background: #fff8c5; border: 1px solid #d4a72c; padding: 8px 12px; margin: 6px 0;
        border-radius: 6px; }
footer { color: var(--muted); font-size: 13px; padding: 0 32px 24px; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _kv_table(rows: Mapping[str, Any], ident: str) -> str:
    if not rows:
        return '<p class="muted">none given</p>'
    body = "".join(
        f'<tr><td class="k">{_e(k)}</td><td class="mono">{_e(_flat(v))}</td></tr>'
        for k, v in rows.items()
    )
    return f'<table id="{ident}"><tbody>{body}</tbody></table>'


def _flat(v: Any) -> str:
    if isinstance(v, str | int | float | bool) or v is None:
        return str(v)
    return json.dumps(v, sort_keys=True, default=str)


def _link(report: ReportFile, base: Path) -> str:
    try:
        href = os.path.relpath(report.path, base)
    except ValueError:
        href = report.path.resolve().as_uri()
    return f'<a href="{_e(href)}">{_e(report.path.name)}</a>'


def render_html_report(
    comparison: Comparison, context: Mapping[str, Any] | None = None, *, base: Path | None = None
) -> str:
    """The report as a string; links to stored reports are relative to ``base``."""
    ctx = dict(context or {})
    c = comparison
    base = base or Path.cwd()
    verdict = "reproduced" if c.identical else "equivalent" if c.equivalent else "mismatch"
    title = ctx.pop("title", None) or f"{c.expected.name} — {verdict}"
    env = ctx.pop("environment", {}) or {}
    recipe = ctx.pop("recipe", None)
    parts: list[str] = []
    parts.append(
        f"<header><h1>{_e(title)}</h1><p>"
        f'<span class="verdict {verdict}" id="verdict">{verdict.upper()}</span>'
        f"{_e(len(c.causes))} cause(s) · format {_e(c.format)} · compared in "
        f"{c.seconds:.2f} s</p></header><main>"
    )
    parts += _summary_section(c, verdict)
    parts += _causes_section(c)
    parts += _differences_section(c)
    parts.append("<h2>Environment</h2>")
    parts.append(
        _kv_table(env if isinstance(env, Mapping) else {"environment": env}, "environment")
    )
    parts.append("<h2>Recipe</h2>")
    if recipe is None:
        parts.append("<p>none given</p>")
    else:
        text = recipe if isinstance(recipe, str) else json.dumps(recipe, indent=2, sort_keys=True)
        parts.append(f'<pre id="recipe">{_e(text)}</pre>')
    if ctx:
        parts.append("<h2>Context</h2>")
        parts.append(_kv_table(ctx, "context"))
    parts += _reports_section(c, base)
    parts.append(f"</main><footer>rebuild {_e(__version__)} comparison report</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(parts)
        + "</body></html>\n"
    )


def _summary_section(c: Comparison, verdict: str) -> list[str]:
    """The verdict, both digests and, when equivalent, the normalization."""
    parts: list[str] = []
    parts.append("<h2>Summary</h2>")
    parts.append(
        _kv_table(
            {
                "verdict": verdict,
                "expected (published)": f"{c.expected.name} · {c.expected_size} bytes",
                "expected sha256": c.expected_sha256,
                "actual (rebuilt)": f"{c.actual.name} · {c.actual_size} bytes",
                "actual sha256": c.actual_sha256,
                "report digest (sha256)": c.report_sha256 or "(not stored)",
                **(
                    {
                        "normalized by": ", ".join(c.normalized.rules),
                        "normalized sha256 (both)": c.normalized.expected_sha256,
                    }
                    if c.equivalent and c.normalized is not None
                    else {}
                ),
            },
            "summary",
        )
    )
    return parts


def _causes_section(c: Comparison) -> list[str]:
    """One row per cause, with how many differences it explains; then the notes."""
    parts: list[str] = []
    parts.append(
        '<h2>Causes</h2><table id="causes"><thead><tr><th>cause</th><th>meaning</th>'
        "<th>differences</th></tr></thead><tbody>"
    )
    if not c.causes:
        parts.append(
            '<tr><td colspan="3">none: the artifacts are bit-for-bit identical</td></tr>'
            if c.identical
            else '<tr><td colspan="3">none classified</td></tr>'
        )
    for cause in c.causes:
        n = sum(1 for d in c.differences if d.cause() == cause)
        parts.append(
            f'<tr><td class="cause mono">{_e(cause)}</td><td>{_e(describe(cause))}</td>'
            f'<td class="num">{n}</td></tr>'
        )
    parts.append("</tbody></table>")
    for note in c.notes:
        parts.append(f'<p class="note">{_e(note)}</p>')
    return parts


def _differences_section(c: Comparison) -> list[str]:
    """The first MAX_ROWS differences (none: no section)."""
    parts: list[str] = []
    if c.differences:
        shown = c.differences[:MAX_ROWS]
        parts.append(
            f"<h2>Differences ({len(c.differences)}"
            f"{f', first {MAX_ROWS} shown' if len(c.differences) > MAX_ROWS else ''})</h2>"
            '<table id="differences"><thead><tr><th>kind</th><th>entry</th><th>detail</th>'
            "<th>expected</th><th>actual</th></tr></thead><tbody>"
        )
        for d in shown:
            cls = ' class="explained"' if d.explained_by_others else ""
            parts.append(
                f"<tr{cls}><td>{_e(d.kind)}{'/' + _e(d.side) if d.side else ''}</td>"
                f'<td class="mono entry">{_e(d.path or "(archive)")}</td><td>{_e(d.detail)}'
                f"{' — explained by the others' if d.explained_by_others else ''}</td>"
                f'<td class="mono">{_e(d.expected)}</td><td class="mono">{_e(d.actual)}</td></tr>'
            )
        parts.append("</tbody></table>")
    return parts


def _reports_section(c: Comparison, base: Path) -> list[str]:
    """The stored reports, linked relative to ``base``, and how diffoscope ran."""
    parts: list[str] = []
    parts.append(
        '<h2>Reports</h2><table id="reports"><thead><tr><th>kind</th>'
        "<th>file (named by its sha256)</th><th>bytes</th></tr></thead><tbody>"
    )
    if not c.reports:
        parts.append('<tr><td colspan="3">none stored</td></tr>')
    for r in c.reports:
        parts.append(
            f'<tr><td>{_e(r.kind)}</td><td class="mono">{_link(r, base)}</td>'
            f'<td class="num">{r.size}</td></tr>'
        )
    parts.append("</tbody></table>")
    if c.diffoscope is not None:
        run = c.diffoscope
        parts.append(
            f'<p id="diffoscope">diffoscope {_e(run.version or "")}: {_e(run.status)}'
            f"{', exit ' + str(run.exit_code) if run.exit_code is not None else ''}"
            f", {run.seconds:.1f} s</p>"
        )
    return parts


def write_html_report(
    path: Path, comparison: Comparison, context: Mapping[str, Any] | None = None
) -> Path:
    """Write the report to ``path`` atomically (links relative to its directory)."""
    path = Path(path)
    data = render_html_report(comparison, context, base=path.parent).encode()
    atomic_write(path, data)
    return path


def store_html_report(
    report_dir: Path, comparison: Comparison, context: Mapping[str, Any] | None = None
) -> ReportFile:
    """Store the report content-addressed (``<sha256>.html``) in ``report_dir``."""
    data = render_html_report(comparison, context, base=report_dir).encode()
    digest = hashlib.sha256(data).hexdigest()
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / f"{digest}.html"
    atomic_write(path, data)
    return ReportFile(kind="summary-html", path=path, sha256=digest, size=len(data))
