"""``sunsim report --html``: one self-contained page (tables, inline figures, profile and scenario), checked
by parsing it and by rendering it in headless Chromium (skipped, with the reason, where Chromium is absent)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sunsim.cli import main
from sunsim.report.html import blocks, inline

from .conftest import BASE, merge

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")


class _Page(HTMLParser):
    """Every tag with its attributes, and the text of table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_cell = tag in ("td", "th")
        if self._in_cell:
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("html")
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"workload": {"duration_s": 8}})))
    assert main(["run", str(path), "--out", str(tmp / "run")]) == 0
    assert main(["report", str(tmp / "run"), "--html"]) == 0
    return tmp / "run" / "report"


def test_inline_and_blocks_escape_and_convert_the_subset() -> None:
    assert inline("Run `a<b>_c`, **bold**, _em_, x_y_z") == \
        "Run <code>a&lt;b&gt;_c</code>, <strong>bold</strong>, <em>em</em>, x_y_z"
    html = blocks(["| a | b |", "|---|---|", "| 1 | x \\| y |", "", "- one", "- `two`", "\n_note with `code`_"])
    assert "<th>a</th><th>b</th>" in html and "<td>x | y</td>" in html
    assert "<ul><li>one</li><li><code>two</code></li></ul>" in html
    assert "<em>note with <code>code</code></em>" in html


def test_html_is_one_self_contained_file(report: Path) -> None:
    page = _parse(report / "report.html")
    figures = sorted((report / "figures").glob("*.png"))
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(figures) == 2 and len(imgs) == len(figures)  # the latency CDFs and the timeline, both inline
    for img, png in zip(sorted(imgs, key=lambda a: a["alt"]), figures):
        assert img["alt"] == png.stem
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix):]) == png.read_bytes()  # the very figure drawn
    # Nothing is fetched: no script, stylesheet link or frame, and no attribute points anywhere.
    assert not {t for t, _ in page.tags} & {"script", "link", "iframe", "object", "embed"}
    for _, attrs in page.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "srcset", "action", "poster"):
                assert value.startswith(("data:", "#")), (name, value[:80])
    text = (report / "report.html").read_text(encoding="utf-8")
    assert "url(" not in text and "@import" not in text


def test_html_shows_tables_profile_and_scenario(report: Path) -> None:
    page = _parse(report / "report.html")
    run = report.parent
    summary = json.loads((run / "sun" / "summary.json").read_text())
    text = (report / "report.html").read_text(encoding="utf-8")
    assert summary["profile"]["name"] in text and summary["profile"]["kind"] in text
    assert "Scenario (scenario.yaml)" in text and "duration_s: 8" in text
    comp = pd.read_csv(run / "comparison.csv")
    for v in comp["variant"]:
        assert v in page.cells
    assert "request goodput (req/s, vLLM)" in page.cells


def test_report_on_results_without_the_vllm_columns_still_works(report: Path, tmp_path) -> None:
    """Results written before the vLLM-named metrics: no such columns, no ``vllm`` block; old columns kept."""
    old = tmp_path / "old"
    shutil.copytree(report.parent, old, ignore=shutil.ignore_patterns("report"))
    comp = pd.read_csv(old / "comparison.csv")
    keep = [c for c in comp.columns if not re.search(r"_ms$|^request_|^output_throughput$", c)]
    comp[keep].to_csv(old / "comparison.csv", index=False)
    for summary in old.glob("*/summary.json"):
        data = json.loads(summary.read_text())
        data.pop("vllm")
        summary.write_text(json.dumps(data))
    assert main(["report", str(old), "--html"]) == 0
    page = _parse(old / "report" / "report.html")
    assert "request goodput (req/s, vLLM)" not in page.cells and "tok/s per GPU" in page.cells


def test_a_report_without_html_removes_an_earlier_page(report: Path, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(report.parent, run)
    assert (run / "report" / "report.html").is_file()
    assert main(["report", str(run)]) == 0
    assert (run / "report" / "report.md").is_file() and not (run / "report" / "report.html").exists()


#: Appended to a copy of the page: after the load event, how many images decoded with a size.
_PROBE = ("<script>window.addEventListener('load', () => { const im = [...document.images]; "
          "document.body.setAttribute('data-images', im.length); "
          "document.body.setAttribute('data-loaded', im.filter(i => i.complete && i.naturalWidth > 0).length); "
          "});</script>")


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install -y chromium): "
                                                  "the headless rendering check needs it")
def test_html_renders_in_headless_chromium(report: Path, tmp_path) -> None:
    page = tmp_path / "probe.html"
    page.write_text((report / "report.html").read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"))
    done = subprocess.run(
        [str(CHROMIUM), "--headless=new", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
         "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    n = len(list((report / "figures").glob("*.png")))
    assert f'data-images="{n}"' in dom and f'data-loaded="{n}"' in dom, dom[:500]
    assert dom.count("<img") == n and "<table>" in dom
    page_errors = [ln for ln in done.stderr.splitlines() if "Uncaught" in ln or ":CONSOLE" in ln]
    assert not page_errors, page_errors
