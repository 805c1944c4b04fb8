"""Shared look of every report figure: style, metric and parameter labels, axis helpers, saving.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never through pyplot:
no global figure registry to leak memory and no dependence on a display.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sunsim.analysis.schema import FIELDS
from sunsim.output import write_figure

SKEW = "workload.popularity.s"
RATE = "workload.rate"

#: Readable defaults for every figure (applied per figure, global rcParams stay untouched).
STYLE: dict = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",  # keep SVG text as text: smaller and searchable
    "svg.hashsalt": "sunsim",  # element ids from a fixed salt: the same figure gives the same bytes
}
DPI = 150
#: Figures carry no creation date, so a figure drawn twice from the same data is byte-identical.
_NO_DATE = {".svg": {"Date": None}, ".pdf": {"CreationDate": None}}

#: Metric column -> (axis label with unit, scale applied to the stored value), from the results schema.
METRICS: dict[str, tuple[str, float]] = {f.column: (f.label, f.scale) for f in FIELDS if f.metric}
#: Metrics drawn against every swept parameter, in this order.
KEY_METRICS = ["tokens_per_s_per_gpu", "slo_attainment", "tpot_p90_s", "ttft_p90_s", "min_decode_gpus"]
#: Sweep-table columns that are not swept parameters.
SWEEP_META = {"point", "seed", "variant", "status", "error"}

PARAM_LABELS: dict[str, str] = {
    SKEW: "popularity skew, Zipf s (higher = more skewed)",
    RATE: "request rate (requests/s)",
    "workload.duration_s": "workload duration (s)",
    "model.tasks": "task models",
    "slo.tpot_s": "TPOT SLO (s)",
    "slo.ttft_s": "TTFT SLO (s)",
}
_UNIT_SUFFIXES = [("_GBps", "GB/s"), ("_us", "µs"), ("_s", "s"), ("workers", "GPUs"), ("tokens", "tokens"),
                  ("rate", "requests/s")]


def param_label(param: str) -> str:
    """Axis label for a swept scenario path, with a unit guessed from its last part."""
    if param in PARAM_LABELS:
        return PARAM_LABELS[param]
    last = param.rsplit(".", 1)[-1]
    for suffix, unit in _UNIT_SUFFIXES:
        if last.endswith(suffix):
            return f"{param} ({unit})"
    return param


def styled(fn: Callable) -> Callable:
    """Draw inside :data:`STYLE` so every figure looks the same whoever calls it."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def new_figure(width: float = 7.5, height: float = 4.8, **subplots) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


def save_figure(fig: Figure, out_base: Path | None) -> list[Path]:
    """Write ``out_base.png`` and ``out_base.svg`` (nothing when ``out_base`` is None)."""
    if out_base is None:
        return []
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_name(f"{out_base.name}.{ext}") for ext in ("png", "svg")]  # stems may hold dots
    with matplotlib.rc_context(STYLE):
        for p in paths:
            write_figure(fig, p, dpi=DPI, metadata=_NO_DATE.get(p.suffix, {}))
    return paths


def profile_label(df: pd.DataFrame | None) -> str:
    """The profile(s) behind a table, e.g. ``analytic-h100 (analytic)``, for titles and captions."""
    if df is None or "profile" not in df.columns:
        return "profile not recorded"
    cols = ["profile", "profile_kind"] if "profile_kind" in df.columns else ["profile"]
    pairs = df[cols].dropna(subset=["profile"]).drop_duplicates().itertuples(index=False)
    names = [f"{p[0]} ({p[1]})" if len(p) > 1 and isinstance(p[1], str) and p[1] else str(p[0]) for p in pairs]
    return ", ".join(names) if names else "profile not recorded"


def variant_colors(variants: Iterable[str]) -> dict[str, str]:
    """Stable colours: the same variant has the same colour in every figure of a report."""
    return {v: f"C{i % 10}" for i, v in enumerate(dict.fromkeys(variants))}


def set_title(ax, text: str, profile: str) -> None:
    ax.set_title(f"{text}\nprofile: {profile}", loc="left")


def place_legend(ax, n_entries: int, title: str | None = None) -> None:
    """Legend inside for a few lines, outside on the right when there are many."""
    if n_entries <= 5:
        ax.legend(title=title, loc="best", frameon=False)
    else:
        ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


class ReadableLogLocator(matplotlib.ticker.LogLocator):
    """Major ticks at 1-2-5 over a short range, at every decade over a longer one and at every few decades
    beyond, so that the labels never run into each other whatever the data span."""

    #: Most decades shown with 1-2-5 ticks (about 8 labels, which fit a 5-inch axis side by side).
    MAX_DECADES_125 = 2.5

    def __init__(self) -> None:
        super().__init__(subs=(1.0, 2.0, 5.0))

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:
        lo, hi = sorted((vmin, vmax))
        decades = np.log10(hi / lo) if lo > 0 else np.inf
        if decades <= self.MAX_DECADES_125:
            self.set_params(subs=(1.0, 2.0, 5.0), numticks=15)
        else:  # whole decades; past numticks LogLocator labels every second (third, ...) one
            self.set_params(subs=(1.0,), numticks=8)
        return super().tick_values(vmin, vmax)


def log_axis(axis, set_scale: Callable) -> None:
    """Log scale with plain numbers (0.01, 0.1, 1, 10) and unlabelled minor ticks, which would overlap."""
    set_scale("log")
    axis.set_major_locator(ReadableLogLocator())
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def wrap(text: str, width: int = 18) -> str:
    return textwrap.fill(text, width, break_long_words=True)


def short(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v)
