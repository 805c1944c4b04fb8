"""The README's speed tables quote the benchmark's own output kept beside them in results/speed/."""

from __future__ import annotations

import re

import pandas as pd

from tests.conftest import ROOT

MODES = {"dedicated": "dedicated", "shared": "shared", "shared int4": "shared-int4"}


def _speed_bullet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("- **Speed**")
    return text[start:text.index("\n## ", start)]


def _rows(text: str, first: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.strip().startswith(f"| {first}")]


def _number(cell: str) -> float:
    return float(re.sub(r"[^0-9.]", "", cell))


def test_speed_table_is_the_benchmark_csv():
    bench = pd.read_csv(ROOT / "results" / "speed" / "benchmark.csv")
    rows = [r for r in _rows(_speed_bullet(), "") if re.fullmatch(r"[0-9,]+(, streamed)?", r[0])]
    assert len(rows) == len(bench), "one README row per benchmark row"
    for cells, (_, b) in zip(rows, bench.iterrows()):
        assert int(cells[0].split(" ")[0].rstrip(",").replace(",", "")) == b["requests"]
        assert MODES[cells[1]] == b["mode"] and ("streamed" in cells[0]) == bool(b["streamed"])
        assert round(b["sim_wall_s"], 2) == _number(cells[2])
        assert round(b["requests_per_wall_s"], -2) == _number(cells[3])
        assert int(b["events"]) == _number(cells[4])
        assert round(b["peak_rss_mb"]) == _number(cells[5])


#: The README's paired measures -> their column in benchmarks/paired.py's table.
PAIRED_COLUMNS = {"simulation": 6, "whole process": 3}


def test_paired_ratios_are_the_paired_runs():
    paired = (ROOT / "results" / "speed" / "paired.md").read_text(encoding="utf-8")
    quoted = [r for r in _rows(_speed_bullet(), "") if re.match(r"[0-9a-f]{7} ", r[0])]
    sections = {part.split()[0]: part for part in paired.split("## --ref ")[1:]}
    assert {r[0].split(" ")[0] for r in quoted} == set(sections) and quoted
    assert len(quoted) == len(sections) * len(PAIRED_COLUMNS), "both measures of every earlier version"
    for ref_cell, measure, *ratios in quoted:
        ref = ref_cell.split(" ")[0]
        measured = {r[0]: r[PAIRED_COLUMNS[measure]] for r in _rows(sections[ref], "") if r[0] in MODES.values()}
        assert ratios == [measured[m] for m in MODES.values()], (ref, measure)


def test_profile_shares_quoted_are_the_profiles():
    """Each share the README gives for where the time goes is one of results/speed/profile.md's."""
    text = " ".join(_speed_bullet().split())  # (the README wraps its lines)
    where = text[text.index("Where the time goes now"):text.index("What makes it fast")]
    quoted = re.findall(r"([0-9]+\.[0-9])%", where)
    profile = (ROOT / "results" / "speed" / "profile.md").read_text(encoding="utf-8")
    shares = set(re.findall(r"\| ([0-9]+\.[0-9])% \|", profile))
    assert len(quoted) >= 8 and set(quoted) <= shares, set(quoted) - shares


def test_streamed_memory_quoted_in_the_streaming_section_is_the_benchmarks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quoted = re.search(r"requests of the speed benchmark's fleet peak at ([0-9,]+) MB RSS.*?simulation itself at "
                       r"([0-9,]+) MB", text, re.S)
    assert quoted, "the streaming section quotes the streamed row's memory"
    bench = pd.read_csv(ROOT / "results" / "speed" / "benchmark.csv")
    streamed = bench[bench["streamed"]].iloc[0]
    assert _number(quoted.group(1)) == round(streamed["peak_rss_mb"])
    assert _number(quoted.group(2)) == round(streamed["sim_peak_rss_mb"])


def test_instruction_counts_quoted_are_the_cachegrind_table():
    text = " ".join(_speed_bullet().split())
    quoted = re.search(r"cachegrind, ([0-9,]+) M against ([0-9,]+) M for dedicated", text)
    assert quoted, "the README quotes the dedicated instruction counts"
    paired = (ROOT / "results" / "speed" / "paired.md").read_text(encoding="utf-8")
    start = paired.index("## Instructions per simulation")
    table = paired[start:paired.index("\n## ", start + 1)]
    counts = {r[0]: r for r in _rows(table, "") if r[0] in MODES.values()}
    assert len(counts) == len(MODES)
    ref, new = _number(counts["dedicated"][1]), _number(counts["dedicated"][2])
    assert (_number(quoted.group(1)), _number(quoted.group(2))) == (new, ref)
    fewer = re.search(r"runs ([0-9]+)% to ([0-9]+)% fewer instructions", text)
    shares = [round(100 * (1 - _number(r[2]) / _number(r[1]))) for r in counts.values()]
    assert fewer and (int(fewer.group(1)), int(fewer.group(2))) == (min(shares), max(shares))
    for r in counts.values():
        assert r[3] == f"{_number(r[1]) / _number(r[2]):.2f}x"
