"""Fits over an imported aiconfigurator-core table profile (the lookups live in :mod:`sunsim.costs.tables`,
which the simulator's cost model reads; this module keeps the names the analysis scripts use)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sunsim.costs.tables import SLACK, Estimate, TableMiss, interp1
from sunsim.costs.tables import MeasuredTables as AicTables

__all__ = ["SLACK", "AicTables", "Estimate", "TableMiss", "interp1", "minimax_fit", "relative_fit"]


def relative_fit(groups: Sequence[int], x: Sequence[float], t: Sequence[float], per_group_slope: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of ``t ~ alpha[group] + beta * x`` (or ``beta[group]`` when ``per_group_slope``) in
    relative error; returns (coefficients: the alphas by sorted group, then the beta(s); relative residuals)."""
    keys = sorted(set(groups))
    col = np.array([keys.index(g) for g in groups])
    t_arr, x_arr = np.asarray(t, float), np.asarray(x, float)
    rows = np.arange(len(t_arr))
    a = np.zeros((len(t_arr), 2 * len(keys) if per_group_slope else len(keys) + 1))
    a[rows, col] = 1.0
    if per_group_slope:
        a[rows, len(keys) + col] = x_arr
    else:
        a[:, -1] = x_arr
    a /= t_arr[:, None]
    coef = np.linalg.lstsq(a, np.ones(len(t_arr)), rcond=None)[0]
    return coef, a @ coef - 1.0


def _ternary(f, lo: float, hi: float, steps: int = 100) -> float:
    """Minimiser of a convex function on [lo, hi]."""
    for _ in range(steps):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if f(m1) <= f(m2):
            hi = m2
        else:
            lo = m1
    return (lo + hi) / 2


def minimax_fit(groups: Sequence[int], x: Sequence[float], t: Sequence[float], beta_hi: float
                 ) -> tuple[float, float]:
    """The smallest possible max relative error of ``alpha[group] + beta * x`` and its beta in [0, beta_hi].

    For a fixed beta each group's alpha solves a 1-D minimax (bisection on where its largest positive and
    negative residuals balance); that optimum is convex in beta, so a ternary search over beta is exact."""
    keys = sorted(set(groups))
    width = max(list(groups).count(g) for g in keys)
    tm = np.full((len(keys), width), np.nan)
    xm = np.full((len(keys), width), np.nan)
    fill = dict.fromkeys(keys, 0)
    for g, xi, ti in zip(groups, x, t):
        r, c = keys.index(g), fill[g]
        tm[r, c], xm[r, c] = ti, xi
        fill[g] += 1
    inv = 1.0 / tm  # residual_i(alpha) = alpha * inv_i + (beta * x_i * inv_i - 1), increasing in alpha

    def worst(beta: float) -> float:
        b = beta * xm * inv - 1.0
        lo, hi = np.full(len(keys), -np.nanmax(tm)), np.full(len(keys), np.nanmax(tm))
        for _ in range(52):
            mid = (lo + hi) / 2
            r = mid[:, None] * inv + b
            balance = np.nanmax(r, axis=1) + np.nanmin(r, axis=1)
            hi, lo = np.where(balance > 0, mid, hi), np.where(balance > 0, lo, mid)
        r = ((lo + hi) / 2)[:, None] * inv + b
        return float(np.nanmax(np.abs(r)))

    beta = _ternary(worst, 0.0, beta_hi, steps=60)
    return beta, worst(beta)
