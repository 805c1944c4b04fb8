"""The top README quotes the results page, never numbers of its own: one source for every figure."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A ratio or a share as the pages print them: "1.21x", "33%", "-4%", "95.5%".
FIGURE = re.compile(r"[-+]?\d+(?:\.\d+)?(?:x|%)")


def _experiments_bullet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("- **Experiments**")
    end = text.index("\n- **", start + 1)
    return text[start:end]


def test_readme_quotes_only_figures_the_results_page_has():
    results = (ROOT / "results" / "README.md").read_text(encoding="utf-8")
    quoted = FIGURE.findall(_experiments_bullet())
    assert quoted, "the README's experiments summary quotes no figure"
    missing = [f for f in quoted if f.lstrip("+") not in results]
    assert not missing, f"README figures not on results/README.md: {missing}"


def test_readme_names_the_profile_of_the_results_page():
    results = (ROOT / "results" / "README.md").read_text(encoding="utf-8")
    profile = re.search(r"Profile for every figure and table: \*\*([\w.-]+)\*\*", results).group(1)
    assert profile in _experiments_bullet()
