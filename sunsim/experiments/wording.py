"""Sentences computed from the tables: every number and comparative word on the results page comes
from the data through these few helpers, so a changed table changes its sentence.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose run or plan finished (``status == "ok"``): a failed point has no figures to state."""
    return df[df["status"] == "ok"]


def span(values: Iterable[float]) -> tuple[float, float]:
    """(min, max) of the values that are numbers (NaN left out); NaN twice when none is."""
    v = [float(x) for x in values if x == x]
    return (min(v), max(v)) if v else (float("nan"), float("nan"))


def versus(a: Iterable[float], b: Iterable[float], higher_is_better: bool = True, tol: float = 0.0, within: str = "is within the spread of") -> str:
    """``"beats"``, ``"is within the spread of"`` or ``"loses to"``: ``a`` against ``b``.

    ``a`` and ``b`` are samples (seeds, configurations) of one figure; their min-max ranges,
    each widened by ``tol`` (relative), overlapping means the difference is within the spread."""
    (alo, ahi), (blo, bhi) = span(a), span(b)
    if alo * (1 - tol) <= bhi * (1 + tol) and blo * (1 - tol) <= ahi * (1 + tol):
        return within
    better = alo > bhi if higher_is_better else ahi < blo
    return "beats" if better else "loses to"


def range_text(lo: float, hi: float, fmt: str) -> str:
    """``"lo to hi"`` in ``fmt``, or one number when both print the same (never "3 to 3")."""
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}} to {hi:{fmt}}"


def share_words(saved: Iterable[float], less: str = "fewer", more: str = "more", same: str | None = None) -> str:
    """``"12% to 30% fewer"``, ``"5% more"``, or ``"from 10% fewer to 5% more"`` for shares saved (negative:
    more); ``less`` and ``more`` name the direction (``"less"`` for dollars), ``same`` (when given) replaces
    ``"0% fewer"`` where nothing differs."""
    lo, hi = span(saved)
    if same is not None and lo == hi == 0:
        return same
    if lo >= 0:
        return f"{range_text(lo, hi, '.0%')} {less}"
    if hi <= 0:
        return f"{range_text(-hi, -lo, '.0%')} {more}"
    return f"from {hi:.0%} {less} to {-lo:.0%} {more}"


def pct(x: float) -> str:
    """A signed whole percentage, ``-`` for a figure that is missing (NaN)."""
    return "-" if x != x else f"{x:+.0%}"


def served(df: pd.DataFrame) -> str:
    """The load the runs served, measured (not the rate asked for): captions state what happened."""
    return f"{df['requests_per_s'].mean():.0f} req/s completed"
