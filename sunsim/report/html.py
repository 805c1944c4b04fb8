"""``sunsim report --html``: the report as ONE self-contained HTML file.

Everything is inside the file: tables as HTML tables, every figure as an inline base64 PNG, the scenario
of each run (or plan) as YAML in a collapsible block, a small stylesheet. No script and no external URL,
so it opens the same from an e-mail attachment, an artifact store or a laptop with no network.

The text comes from the same sections as ``report.md`` (:mod:`sunsim.report.markdown`), written in the
small Markdown subset that module produces: paragraphs, ``| tables |``, ``- lists``, ``**bold**``,
``_emphasis_`` and ``` `code` ```; this module turns exactly that subset into HTML, escaping everything else.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Protocol

import yaml

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-style: italic; font-size: 0.9em; }
code { background: #f5f5f5; padding: 0 0.2em; } pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
"""


class Section(Protocol):
    """What the HTML needs of a report section (``markdown._Section``)."""

    title: str
    intro: list[str]
    figures: list[tuple[str, str]]
    scenario: dict | None


def inline(text: str) -> str:
    """One line of the Markdown subset as HTML: code spans verbatim (escaped), then bold and emphasis."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick is a literal one
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{escape(part)}</code>")
            continue
        e = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escape(part))
        out.append(re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"<em>\1</em>", e))
    return "".join(out)


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def _table(lines: list[str]) -> str:
    head, rows = _cells(lines[0]), [_cells(r) for r in lines[2:]]
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows]
    return "\n".join(out + ["</tbody>", "</table>"])


def blocks(lines: Iterable[str]) -> str:
    """Markdown-subset lines as HTML blocks: tables, lists and paragraphs (a blank line ends a block)."""
    flat = [ln for text in lines for ln in str(text).split("\n")]
    out: list[str] = []
    i = 0
    while i < len(flat):
        line = flat[i].strip()
        if not line:
            i += 1
            continue
        j = i
        kind = "table" if line.startswith("|") else "list" if line.startswith("- ") else "p"
        while j < len(flat) and flat[j].strip() and (
                (kind == "table") == flat[j].strip().startswith("|")
                and (kind == "list") == flat[j].strip().startswith("- ")):
            j += 1
        group = [ln.strip() for ln in flat[i:j]]
        if kind == "table":
            out.append(_table(group))
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{inline(ln[2:])}</li>" for ln in group) + "</ul>")
        else:
            out.append("<p>" + "<br>\n".join(_line(ln) for ln in group) + "</p>")
        i = j
    return "\n".join(out)


def _line(line: str) -> str:
    """A paragraph line; one wrapped whole in ``_..._`` (a note) is emphasised whole, code spans and all."""
    if len(line) > 2 and line.startswith("_") and line.endswith("_"):
        return f"<em>{inline(line[1:-1])}</em>"
    return inline(line)


def _figure(fig_dir: Path, stem: str, caption: str, n: int) -> str:
    data = base64.b64encode((fig_dir / f"{stem}.png").read_bytes()).decode("ascii")
    return (f'<figure id="{escape(stem)}"><img src="data:image/png;base64,{data}" alt="{escape(stem)}">'
            f"<figcaption>Figure {n}: {inline(caption)}</figcaption></figure>")


def render_html(sections: list[Section], source: Path, skipped: list[Path], fig_dir: Path) -> str:
    """The whole report page; figures are read from ``fig_dir`` (``<stem>.png``, as the report drew them)."""
    body = ["<h1>sunsim report</h1>", f"<p>Source: <code>{escape(str(source))}</code>.</p>"]
    n = 0
    for sec in sections:
        body += ["<section>", f"<h2>{inline(sec.title)}</h2>", blocks(sec.intro)]
        if sec.scenario:
            body.append("<details><summary>Scenario (scenario.yaml)</summary><pre>"
                        + escape(yaml.safe_dump(sec.scenario, sort_keys=False)) + "</pre></details>")
        for stem, caption in sec.figures:
            n += 1
            body.append(_figure(fig_dir, stem, caption, n))
        body.append("</section>")
    if skipped:
        body += ["<section><h2>Not plotted</h2><p>Also found (not drawn):</p><ul>"]
        body += [f"<li><code>{escape(str(p))}</code></li>" for p in skipped] + ["</ul></section>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>sunsim report: {escape(str(source))}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
