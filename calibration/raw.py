"""The raw timings CSV: one row per timed grid point, rewritten atomically after every point.

It is the resume log: a rerun skips every point whose key is already present.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sunsim.output import write_text as write_text_atomic

KEY = ("kind", "dtype", "batch", "seqlen", "lengths", "layers")
COLUMNS = (*KEY, "tokens", "kv_tokens", "sum_sq", "time_s", "median_s", "q25_s", "p10_s", "p90_s", "min_s", "max_s", "repeats",
           "calls_per_sample", "status", "kernel", "note")
_INTS = ("batch", "seqlen", "layers", "tokens", "kv_tokens", "sum_sq", "repeats", "calls_per_sample")
_FLOATS = ("time_s", "median_s", "q25_s", "p10_s", "p90_s", "min_s", "max_s")


def row_key(row: dict) -> tuple:
    return tuple(str(row.get(k, "")) for k in KEY)


def read_rows(path: Path) -> list[dict]:
    """Rows of an existing CSV with numeric columns parsed (missing values stay ``None``)."""
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            for k in _INTS:
                r[k] = int(r[k]) if r.get(k) not in (None, "") else None
            for k in _FLOATS:
                r[k] = float(r[k]) if r.get(k) not in (None, "") else None
            rows.append(r)
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS})
    write_text_atomic(path, buf.getvalue())


def ok_rows(rows: list[dict], kind: str, dtype: str | None = None) -> list[dict]:
    return [r for r in rows if r["kind"] == kind and r["status"] == "ok" and (dtype is None or r["dtype"] == dtype)]
