"""Deterministic table writing: fixed number format, sorted unique rows, plain JSON values.

Re-importing the same package version must give byte-identical files, so numbers go through CPython's
correctly rounded formatting (the same text on every platform) and nothing depends on dict or file order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibration.aic_source import AicImportError


def format_us(value: float | None, digits: int) -> str:
    """A time with ``digits`` significant digits in positional notation ('' when missing). CPython's
    correctly rounded float formatting makes this exact and platform-independent, so re-imports are
    byte-identical."""
    if value is None or value != value:
        return ""
    text = f"{value:.{digits}g}"
    return format(Decimal(text), "f") if "e" in text else text


def cell_text(value: Any, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("booleans are not table cells")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_us(float(value), digits)
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\n\r'):
        raise AicImportError(f"table cell {text!r} would need CSV quoting")
    return text


def column_text(values: Sequence[Any], digits: int) -> list[str]:
    """One column's cells; plain floats and ints (nearly every cell) take a fast path with the same result."""
    kinds = set(map(type, values))
    if kinds <= {float}:
        spec = f".{digits}g"
        text = [format(v, spec) if v == v else "" for v in values]
        return [format(Decimal(t), "f") if "e" in t else t for t in text]
    if kinds <= {int}:
        return list(map(str, values))
    return [cell_text(v, digits) for v in values]


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int) -> int:
    """Write rows (already sorted) with ``\\n`` line ends; returns the row count."""
    rows = list(rows)
    columns = [column_text(col, digits) for col in zip(*rows)] if rows else []
    lines = [",".join(header)] + list(map(",".join, zip(*columns)))
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return len(rows)


def isin(df: pd.DataFrame, columns: list[str], keys: set[tuple[int, ...]]) -> np.ndarray:
    """Mask of the rows whose ``columns`` form one of ``keys``."""
    if not keys:
        return np.zeros(len(df), dtype=bool)
    return pd.MultiIndex.from_frame(df[columns].astype("int64")).isin(sorted(keys))


def wide_rows(wide: pd.DataFrame, columns: Sequence[str]) -> list[list[Any]]:
    """Rows of a pivoted table: its integer index levels, then ``columns`` converted from ms to µs."""
    keys = wide.index.to_frame(index=False).to_numpy(dtype=np.int64).tolist()
    values = (wide[list(columns)].to_numpy(dtype=np.float64) * 1000.0).tolist()
    return [k + v for k, v in zip(keys, values)]


def dedupe(df: pd.DataFrame, key: list[str], kernel: str | None = "kernel_source") -> tuple[pd.DataFrame, dict]:
    """One row per ``key``: repeated measurements of one kernel become their median; where different kernels
    share a key (none do in 0.12.0) the first kernel by name is kept. Returns the counts for metadata."""
    group = key + ([kernel] if kernel else [])
    sizes = df.groupby(group, sort=True).size()
    med = df.groupby(group, sort=True, as_index=False)["latency"].median()
    med = med.sort_values(group, kind="mergesort")
    before = len(med)
    med = med.drop_duplicates(key, keep="first")
    return med, {"repeats_merged_by_median": int((sizes - 1).sum()), "other_kernels_dropped": before - len(med)}


def kernels(df: pd.DataFrame, by: str, names: dict[str, str], span: str) -> dict[str, dict[str, Any]]:
    """Per output column, the kernels behind its rows with their row counts and the ``span`` column's range."""
    out: dict[str, dict[str, Any]] = {}
    for (key, kernel), g in sorted(df.groupby([by, "kernel_source"]), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        out.setdefault(names.get(key, key), {})[str(kernel)] = {
            "rows": int(len(g)), f"{span}_min": int(g[span].min()), f"{span}_max": int(g[span].max())}
    return out
