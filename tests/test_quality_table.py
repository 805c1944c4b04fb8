"""The quality table: published figures read from its CSV, every row cited, none typed in the code."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sunsim.errors import InputError
from sunsim.experiments import quality
from sunsim.experiments.quality import COLUMNS, HEADING, QUALITY_FILE, quality_rows, quality_table


def _csv_rows() -> list[dict[str, str]]:
    """The CSV read independently of the module (comment lines dropped)."""
    lines = [ln for ln in QUALITY_FILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return list(csv.DictReader(lines))


def _table_rows(md: str) -> list[list[str]]:
    """Body cells of the Markdown table (header and rule left out), pipes unescaped."""
    rows = []
    for ln in md.splitlines():
        if ln.startswith("| ") and not ln.startswith("| design |"):
            cells = ln.strip()[1:-1].replace("\\|", "\0").split("|")
            rows.append([c.strip().replace("\0", "|") for c in cells])
    return rows


def _write(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "quality.csv"
    with path.open("w", newline="") as f:
        f.write("# a comment line\n")
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return path


def test_the_data_file_is_package_data():
    assert QUALITY_FILE.is_file()
    assert '"experiments/data/*.csv"' in (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()


def test_a_row_per_csv_row_and_every_row_cited():
    rows = quality_rows()
    assert len(rows) == len(_csv_rows()) > 0
    md = quality_table()
    assert md.splitlines()[0] == HEADING
    assert len(_table_rows(md)) == len(rows)
    for r in rows:
        assert r["source"] and r["where"], r


def test_every_design_of_the_comparison_appears():
    designs = {r["design"] for r in quality_rows()}
    assert {"sun", "qsun", "multi-lora"} <= designs
    table_designs = {cells[0] for cells in _table_rows(quality_table())}
    assert {"sun", "qsun", "multi-lora"} <= table_designs


def test_values_in_the_markdown_equal_the_csvs():
    table = _table_rows(quality_table())
    assert len(table) == len(_csv_rows())
    for cells, r in zip(table, _csv_rows()):
        assert len(cells) == len(quality._LAYOUT)
        for (head, col), cell in zip(quality._LAYOUT, cells):
            want = f"{r['source']}, {r['where']}" if col == "source" else (r[col].strip() or "-")
            assert cell == want, (head, r["design"], r["benchmark"])


def test_the_sentence_counts_come_from_the_rows():
    rows = quality_rows()
    sentence = quality_table().splitlines()[2]
    designs = list(dict.fromkeys(r["design"] for r in rows))
    sources = list(dict.fromkeys(r["source"] for r in rows))
    assert sentence.startswith(f"{len(rows)} rows from {len(sources)} sources")
    assert f"cover {len(designs)} designs ({', '.join(designs)})" in sentence
    # A smaller set of rows gives a different sentence: nothing in it is fixed in the code.
    fewer = quality_table(rows[:3]).splitlines()[2]
    assert fewer.startswith("3 rows from ")


def test_numbers_are_only_in_the_csv():
    """The module holds no published figure: every numeric cell of the table is a CSV value."""
    source = Path(quality.__file__).read_text()
    for r in quality_rows():
        for col in ("value", "reference"):
            if r[col]:
                assert r[col] not in source, (col, r[col])


def test_a_row_without_a_source_is_refused(tmp_path):
    rows = _csv_rows()
    rows[1] = dict(rows[1], source="")
    path = _write(tmp_path, rows)
    with pytest.raises(InputError) as err:
        quality_rows(path)
    msg = str(err.value)
    assert "line 4" in msg and rows[1]["design"] in msg and "source" in msg


def test_a_row_without_its_table_or_with_a_non_number_is_refused(tmp_path):
    rows = _csv_rows()
    with pytest.raises(InputError, match="no where"):
        quality_rows(_write(tmp_path, [dict(rows[0], where=" ")]))
    with pytest.raises(InputError, match="not a number"):
        quality_rows(_write(tmp_path, [dict(rows[0], value="about 5")]))
    with pytest.raises(InputError, match="not a number"):
        quality_rows(_write(tmp_path, [dict(rows[0], reference="nan")]))


def test_a_header_missing_a_column_or_a_ragged_row_is_refused(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("design,value\nsun,\n")
    with pytest.raises(InputError, match="header lacks"):
        quality_rows(path)
    good = _write(tmp_path, _csv_rows()[:1])
    good.write_text(good.read_text() + "sun,extra\n")
    with pytest.raises(InputError, match="line 4"):
        quality_rows(good)
