"""Look up an imported aiconfigurator-core table profile (see ``calibration/aic_import.py``) at any shape.

The tables hold measured points only; a model's shapes fall between them (Llama-3.1-8B's gate_up has
n = 28672, the grid has 16384 and 51200). Every lookup is piecewise linear in each coordinate, in linear space,
so costs of the form ``a + b*x*y`` (a GEMM's bytes or FLOPs over n and k, decode attention over batch and
KV length) are reproduced exactly between grid points; outside the measured range the two end points are
extended linearly and the result says so (``Estimate.extrapolated``).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class TableMiss(KeyError):
    """The profile lacks the grid points a lookup needs (re-import with ``--full-grid`` or more models)."""


#: How far (relative) beyond the measured points a lookup may go and not count as extrapolated: decode tables
#: end at 2^i - 1 KV tokens, so a query at 2^i is one token past the last point.
SLACK = 0.01


@dataclass(frozen=True)
class Estimate:
    """A time in microseconds and whether any coordinate lay more than :data:`SLACK` outside the measured
    points."""

    us: float
    extrapolated: bool = False


def interp1(xs: Sequence[float], ys: Sequence[float], x: float) -> Estimate:
    """Piecewise-linear ``y(x)`` through sorted points; beyond them, the line through the two end points."""
    if not len(xs):
        raise TableMiss("no points to interpolate")
    if len(xs) == 1:
        return Estimate(float(ys[0]), abs(x - xs[0]) > SLACK * abs(xs[0]))
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return Estimate(float(ys[i]))
    outside = (i == 0 and x < xs[0] * (1 - SLACK)) or (i == len(xs) and x > xs[-1] * (1 + SLACK))
    lo = 0 if i == 0 else (len(xs) - 2 if i == len(xs) else i - 1)
    x0, x1, y0, y1 = xs[lo], xs[lo + 1], ys[lo], ys[lo + 1]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return Estimate(max(float(y), 0.0), outside)


def _bracket(grid: Sequence[int], x: float) -> list[int]:
    """The grid points a lookup at ``x`` combines (the same rule the importer kept points by)."""
    i = bisect.bisect_left(grid, x)
    if i < len(grid) and grid[i] == x:
        return [int(x)]
    if i == 0:
        return list(grid[:2])
    if i == len(grid):
        return list(grid[-2:])
    return [grid[i - 1], grid[i]]


def _combine(points: list[int], values: list[Estimate], x: float) -> Estimate:
    est = interp1(points, [v.us for v in values], x)
    return Estimate(est.us, est.extrapolated or any(v.extrapolated for v in values))


class AicTables:
    """The CSV tables of one imported profile folder, indexed for lookups."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.metadata: dict[str, Any] = json.loads((self.folder / "metadata.json").read_text(encoding="utf-8"))
        gemm = pd.read_csv(self.folder / "gemm.csv")
        self.gemm_formats = [c.removesuffix("_us") for c in gemm.columns if c.endswith("_us")]
        grid = self.metadata["tables"]["gemm.csv"]["grid"]
        self._n_grid, self._k_grid = list(grid["n_source"]), list(grid["k_source"])
        self._gemm: dict[tuple[str, int, int], tuple[list[int], list[float]]] = {}
        gemm = gemm.sort_values(["n", "k", "m"])
        keys = gemm[["n", "k", "m"]].to_numpy().tolist()
        for fmt in self.gemm_formats:
            for (n, k, m), us in zip(keys, gemm[f"{fmt}_us"].tolist()):
                if us == us:  # not NaN: measured in this format
                    ms, ys = self._gemm.setdefault((fmt, n, k), ([], []))
                    ms.append(m)
                    ys.append(us)
        self._attn = {name: self._attention(name, length) for name, length in
                      (("decode", "kv_len"), ("prefill", "seq_len"))
                      if (self.folder / f"attention_{name}.csv").exists()}

    def _attention(self, name: str, length: str) -> dict[tuple, dict[int, tuple[list[int], list[float]]]]:
        """{(kv_dtype, kv_heads, head_dim, heads): {batch: (lengths, times)}}."""
        columns = ["heads", "kv_heads", "head_dim", "batch", length]
        df = pd.read_csv(self.folder / f"attention_{name}.csv").sort_values(columns)
        keys = df[columns].to_numpy().tolist()
        out: dict[tuple, dict[int, tuple[list[int], list[float]]]] = {}
        for col in (c for c in df.columns if c.endswith("_us")):
            dtype = col.removeprefix("kv_").removesuffix("_us")
            for (h, kv, hd, b, n), us in zip(keys, df[col].tolist()):
                if us == us:
                    lengths, times = out.setdefault((dtype, kv, hd, h), {}).setdefault(b, ([], []))
                    lengths.append(n)
                    times.append(us)
        return out

    def gemm(self, fmt: str, m: float, n: int, k: int) -> Estimate:
        """Time of an (m x k) @ (k x n) GEMM in weight format ``fmt``: linear in m, bilinear in (n, k)."""
        if fmt not in self.gemm_formats:
            raise TableMiss(f"{self.folder.name}: no {fmt} GEMMs (formats: {', '.join(self.gemm_formats)})")
        ns, ks = _bracket(self._n_grid, n), _bracket(self._k_grid, k)
        per_n = []
        for a in ns:
            per_k = []
            for b in ks:
                if (fmt, a, b) not in self._gemm:
                    raise TableMiss(f"{self.folder.name}: no {fmt} GEMM at n={a}, k={b} (needed for n={n}, k={k}); "
                                    "re-import with --full-grid or add the model to DENSE_MODELS")
                ms, ys = self._gemm[(fmt, a, b)]
                per_k.append(interp1(ms, ys, m))
            per_k_est = _combine(ks, per_k, k)
            per_n.append(per_k_est)
        out = _combine(ns, per_n, n)
        beyond = not (self._n_grid[0] <= n <= self._n_grid[-1] and self._k_grid[0] <= k <= self._k_grid[-1])
        return Estimate(out.us, out.extrapolated or beyond)

    def attention(self, phase: str, batch: float, length: float, heads: int, kv_heads: int, head_dim: int,
                  kv_dtype: str = "bf16") -> Estimate:
        """Attention time of one layer: ``phase`` "decode" (length = KV tokens per sequence) or "prefill"
        (length = prompt tokens per sequence); linear in batch, length and heads."""
        table = self._attn.get(phase)
        if table is None:
            raise TableMiss(f"{self.folder.name}: no {phase} attention table")
        heads_grid = sorted(h for (d, kv, hd, h) in table if (d, kv, hd) == (kv_dtype, kv_heads, head_dim))
        if not heads_grid:
            raise TableMiss(f"{self.folder.name}: no {phase} attention with kv_heads={kv_heads}, "
                            f"head_dim={head_dim}, {kv_dtype} KV cache")
        per_h = []
        hs = _bracket(heads_grid, heads)
        for h in hs:
            by_batch = table[(kv_dtype, kv_heads, head_dim, h)]
            batches = sorted(by_batch)
            bs = _bracket(batches, batch)
            per_b = [interp1(*by_batch[b], length) for b in bs]
            per_h.append(_combine(bs, per_b, batch))
        return _combine(hs, per_h, heads)


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
