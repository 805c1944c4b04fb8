"""``workload.rate_curve``: a request rate that changes over time (a day's traffic), for Poisson arrivals.

Two shapes: a ``diurnal`` sinusoid around ``workload.rate`` (its mean), or a ``piecewise`` constant
rate read from a CSV file (columns ``time_s, rate``; the file's rows are checked when the run
starts, see :mod:`sunsim.workload.rate_curve`). Arrivals then form a non-homogeneous Poisson process.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sunsim.scenario.limits import MAX_DURATION_S, MAX_TIME_S, Float, PathText, StrictModel

#: Largest peak-to-trough ratio: beyond it the trough is indistinguishable from zero traffic.
MAX_PEAK_TO_TROUGH = 1e6


class Diurnal(StrictModel):
    """``rate(t) = workload.rate * (1 + a cos(2 pi (t - peak_at_s) / period_s))`` with
    ``a = (R - 1) / (R + 1)``, so that peak / trough = ``peak_to_trough`` = R and the mean over a period is
    ``workload.rate``."""

    kind: Literal["diurnal"]
    peak_to_trough: Float = Field(ge=1, le=MAX_PEAK_TO_TROUGH)
    #: When the rate peaks (simulated seconds from the start; repeats every period).
    peak_at_s: Float = Field(0.0, ge=0, le=MAX_TIME_S)
    #: Length of one cycle: a day by default.
    period_s: Float = Field(86400.0, gt=0, le=MAX_DURATION_S)

    @property
    def amplitude(self) -> float:
        """``a``: the peak's relative excess over the mean."""
        return (self.peak_to_trough - 1) / (self.peak_to_trough + 1)


class Piecewise(StrictModel):
    """A piecewise constant rate from a CSV file with columns ``time_s, rate`` (req/s): each row's rate holds
    from its ``time_s`` to the next row's, the last row's to the end. The first row is at ``time_s: 0``.

    With ``workload.rate`` the curve is a shape: its values are scaled so that the mean rate over
    ``workload.duration_s`` is ``workload.rate`` (a sweep over the rate keeps the day's shape); without it the
    file's rates are req/s as written. A relative path is relative to the scenario file."""

    kind: Literal["piecewise"]
    path: PathText


RateCurve = Annotated[Diurnal | Piecewise, Field(discriminator="kind")]
