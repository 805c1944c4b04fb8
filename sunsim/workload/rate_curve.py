"""A time-varying request rate, for the non-homogeneous Poisson arrivals it gives.

Arrivals are drawn (in :mod:`sunsim.workload.stream`) by thinning (Lewis and Shedler, 1979): a homogeneous Poisson stream at the
curve's peak rate, each point kept with probability ``rate(t) / peak``. The kept points are exactly a
Poisson process of intensity ``rate(t)``, and the draw is a few numpy calls per chunk of candidates:
no Python work per request. The curve's integral (:meth:`RateCurveFn.cumulative`) gives the expected
number of requests, for the size check and for tests.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sunsim.scenario import Diurnal, Piecewise, ScenarioError, WorkloadSpec
from sunsim.scenario.limits import MAX_RATE, MAX_TIME_S

FIELD = "workload.rate_curve.path"
#: A rate file longer than this many rows is taken for a wrong file (a day at 1 s steps is 86,400).
MAX_CURVE_ROWS = 1_000_000


@dataclass(frozen=True)
class RateCurveFn:
    """``rate(t)`` in req/s: a diurnal sinusoid (``period_s`` set) or a piecewise constant curve."""

    times: np.ndarray  # piecewise: each segment's start (first 0); diurnal: empty
    rates: np.ndarray  # piecewise: each segment's rate; diurnal: empty
    mean: float = 0.0  # diurnal: the mean rate
    amplitude: float = 0.0  # diurnal: a
    peak_at_s: float = 0.0
    period_s: float = 0.0  # 0: piecewise

    def rate(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        if self.period_s:
            return self.mean * (1 + self.amplitude * np.cos(2 * np.pi * (t - self.peak_at_s) / self.period_s))
        return self.rates[np.searchsorted(self.times, t, side="right") - 1]

    @property
    def peak(self) -> float:
        return self.mean * (1 + self.amplitude) if self.period_s else float(self.rates.max())

    def cumulative(self, t: np.ndarray | float) -> np.ndarray:
        """``Lambda(t)``, the integral of the rate from 0 to ``t``: the expected arrivals by ``t``."""
        t = np.asarray(t, dtype=float)
        if self.period_s:
            w = 2 * np.pi / self.period_s
            return self.mean * (t + self.amplitude / w * (np.sin(w * (t - self.peak_at_s)) - np.sin(-w * self.peak_at_s)))
        ends = np.concatenate([self.times[1:], [np.inf]])
        done = np.concatenate([[0.0], np.cumsum(self.rates[:-1] * np.diff(self.times))])  # Lambda at each start
        k = np.searchsorted(self.times, t, side="right") - 1
        return done[k] + self.rates[k] * (np.minimum(t, ends[k]) - self.times[k])


def curve_for(wl: WorkloadSpec) -> RateCurveFn:
    """The workload's rate curve, as req/s (a piecewise file scaled to ``workload.rate`` when given)."""
    rc = wl.rate_curve
    if isinstance(rc, Diurnal):
        assert wl.rate is not None  # the schema requires the mean
        return RateCurveFn(np.zeros(0), np.zeros(0), wl.rate, rc.amplitude, rc.peak_at_s, rc.period_s)
    assert isinstance(rc, Piecewise)
    times, rates = read_curve(rc.path)
    fn = RateCurveFn(times, rates)
    if wl.rate is not None:
        assert wl.duration_s is not None  # the schema requires it to scale by
        total = float(fn.cumulative(wl.duration_s))
        if total <= 0:
            raise ScenarioError(f"{FIELD}: the curve's rate is 0 over all of workload.duration_s "
                                f"({wl.duration_s:g} s), so it cannot be scaled to workload.rate {wl.rate:g}")
        fn = RateCurveFn(times, rates * (wl.rate * wl.duration_s / total))
    if wl.duration_s is None and fn.rates[-1] == 0:
        raise ScenarioError(f"{FIELD}: the last row's rate is 0, so workload.num_requests may never be reached; "
                            f"give workload.duration_s")
    return fn


def read_curve(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A piecewise rate file's segment starts and rates, every row checked (memoised per file version)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ScenarioError(f"{FIELD}: cannot read {path!r} ({exc.strerror})") from None
    return _read(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _read(path: str, _size: int, _mtime: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ScenarioError(f"{FIELD}: cannot read {path!r} as CSV ({exc})") from None
    if not rows:
        raise ScenarioError(f"{FIELD}: {path!r} is empty; it needs a header 'time_s,rate' and rows")
    header = [h.strip() for h in rows[0]]
    if header.count("time_s") != 1 or header.count("rate") != 1:
        raise ScenarioError(f"{FIELD}: {path!r}: the header must name the columns time_s and rate once each, "
                            f"got {header}")
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if not body:
        raise ScenarioError(f"{FIELD}: {path!r} has a header but no rows")
    if len(body) > MAX_CURVE_ROWS:
        raise ScenarioError(f"{FIELD}: {path!r} has {len(body):,} rows, more than {MAX_CURVE_ROWS:,}")
    it, ir = header.index("time_s"), header.index("rate")
    times, rates = np.empty(len(body)), np.empty(len(body))
    i = 0
    for line, r in enumerate(rows[1:], start=2):  # the header is row 1, as a spreadsheet counts
        if not any(c.strip() for c in r):
            continue
        t = _number(r, it, "time_s", line, path, 0, MAX_TIME_S)
        v = _number(r, ir, "rate", line, path, 0, MAX_RATE)
        if i == 0 and t != 0:
            raise ScenarioError(f"{FIELD}: {path!r} row {line}, column time_s: the first row must be at 0, got {t:g}")
        if i > 0 and t <= times[i - 1]:
            raise ScenarioError(f"{FIELD}: {path!r} row {line}, column time_s: {t:g} is not after the row before "
                                f"({times[i - 1]:g}); times must increase")
        times[i], rates[i] = t, v
        i += 1
    if rates.max() <= 0:
        raise ScenarioError(f"{FIELD}: {path!r}: every rate is 0, so no request would arrive")
    return times, rates


def _number(row: list[str], col: int, name: str, line: int, path: str, lo: float, hi: float) -> float:
    """One cell as a finite number within [lo, hi], or an error naming the file's row and column."""
    text = row[col].strip() if col < len(row) else ""
    try:
        v = float(text)
    except ValueError:
        raise ScenarioError(f"{FIELD}: {path!r} row {line}, column {name}: expected a number, got {text!r}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ScenarioError(f"{FIELD}: {path!r} row {line}, column {name}: {text} is outside [{lo:g}, {hi:g}]")
    return v
