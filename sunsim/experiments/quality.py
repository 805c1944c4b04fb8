"""The quality table of the results page: published accuracy figures for each design, cited, not modelled.

sunsim prices time, not accuracy. The designs it compares do not serve the same weights (dedicated pools and
colocation serve fully fine-tuned task models, SUN fine-tunes only the prefill module over a frozen shared decode
module, QSUN quantizes that decode module, multi-LoRA serves low-rank adapters over one base), so an operator
reading the throughput results needs what each gives up in quality beside them. Every figure, and every word
about a source, comes from ``data/quality.csv`` (one row per published figure or statement, each naming its
source and table); this module only checks and lays out those rows.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from sunsim.errors import InputError

QUALITY_FILE = Path(__file__).resolve().parent / "data" / "quality.csv"
COLUMNS = ("design", "comparison", "benchmark", "base_model", "metric", "value", "reference", "statement",
           "source", "where", "note")
#: Columns a row may not leave empty: what it is about and where it comes from.
REQUIRED = ("design", "comparison", "metric", "statement", "source", "where")
#: (heading, column) of the Markdown table, in order; ``source`` and ``where`` share one cell.
_LAYOUT = (("design", "design"), ("comparison", "comparison"), ("benchmark", "benchmark"),
           ("base model", "base_model"), ("metric", "metric"), ("value", "value"), ("reference", "reference"),
           ("statement", "statement"), ("source", "source"), ("note", "note"))
HEADING = "## Quality (published, not modelled)"


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line that is neither blank nor a ``#`` comment."""
    return [(i, ln) for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.strip() and not ln.startswith("#")]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def quality_rows(path: Path | str | None = None) -> list[dict[str, str]]:
    """The rows of the quality CSV (``data/quality.csv`` unless ``path``), each checked.

    Raises :class:`~sunsim.errors.InputError` naming the file, line and row when the header lacks a column, a row
    has too many or too few fields, leaves a required field (its source above all) empty, or gives a value or
    reference that is not a number.
    """
    path = Path(path) if path is not None else QUALITY_FILE
    numbered = _numbered_lines(path)
    if not numbered:
        raise InputError(f"{path}: no header and no rows")
    reader = csv.DictReader(text for _, text in numbered)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path}: header lacks column(s) {', '.join(missing)}")
    rows = []
    for (line, _), row in zip(numbered[1:], reader):
        name = f"{path.name} line {line} (design {row.get('design') or '?'}, {row.get('benchmark') or '?'})"
        if None in row or any(v is None for v in row.values()):
            raise InputError(f"{name}: {len(row.get(None) or [])} field(s) too many or some missing; "
                             f"expected the {len(reader.fieldnames)} columns of the header")
        empty = [c for c in REQUIRED if not row[c].strip()]
        if empty:
            raise InputError(f"{name}: no {', '.join(empty)}; every published figure must name its source and table")
        for col in ("value", "reference"):
            if row[col].strip() and not _is_number(row[col]):
                raise InputError(f"{name}: {col} {row[col]!r} is not a number (leave it empty for a statement)")
        rows.append({c: row[c].strip() for c in reader.fieldnames})
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "-"


def _sources(rows: list[dict[str, str]]) -> list[str]:
    return list(dict.fromkeys(r["source"] for r in rows))


def quality_table(rows: list[dict[str, str]] | None = None) -> str:
    """The results page's quality section: its heading, one computed sentence and the table, in Markdown."""
    rows = quality_rows() if rows is None else rows
    designs = list(dict.fromkeys(r["design"] for r in rows))
    sources = _sources(rows)
    numbers = sum(1 for r in rows if r["value"])
    sentence = (f"{len(rows)} rows from {len(sources)} sources ({', '.join(sources)}) cover {len(designs)} designs "
                f"({', '.join(designs)}): {numbers} give a published figure beside its reference (full fine-tuning or "
                f"FP16 weights, same source and setting), {len(rows) - numbers} only the source's statement. sunsim "
                "simulates none of this; it is cited so that the throughput results can be read against what each "
                "design gives up in quality (`sunsim/experiments/data/quality.csv`).")
    head = "| " + " | ".join(h for h, _ in _LAYOUT) + " |"
    rule = "|" + "---|" * len(_LAYOUT)
    body = []
    for r in rows:
        cells = [f"{r['source']}, {r['where']}" if col == "source" else r[col] for _, col in _LAYOUT]
        body.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join([HEADING, "", sentence, "", head, rule, *body, ""])
