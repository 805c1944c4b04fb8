"""Shared look of every report figure: style, metric and parameter labels, axis helpers, saving.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never through pyplot:
no global figure registry to leak memory and no dependence on a display.
"""

from __future__ import annotations

import functools
import shutil
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
#: Widest figure (inches): 2,400 px at :data:`DPI`. Wider layouts wrap their panels into more rows.
MAX_WIDTH_IN = 16.0
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
    "workload.output_tokens.mean": "mean output tokens",
    "workload.prompt_tokens.mean": "mean prompt tokens",
    "model.tasks": "task models",
    "model.preset": "base model",
    "variants.routing": "decode routing policy",
    "prefill.routing": "prefill routing policy",
    "interconnect.bandwidth_GBps": "interconnect bandwidth (GB/s)",
    "interconnect.latency_us": "interconnect latency (µs)",
    "slo.tpot_s": "TPOT SLO (s)",
    "slo.ttft_s": "TTFT SLO (s)",
}
#: Short names (no unit) for panel titles and legend entries.
PARAM_NAMES: dict[str, str] = {
    SKEW: "skew s",
    RATE: "rate",
    "model.tasks": "task models",
    "workload.output_tokens.mean": "mean output tokens",
    "workload.prompt_tokens.mean": "mean prompt tokens",
}
#: Last key part -> (name suffix to drop, unit shown in parentheses).
_UNIT_SUFFIXES = [("_GBps", "GB/s"), ("_us", "µs"), ("_ms", "ms"), ("_s", "s"), ("workers", "GPUs"),
                  ("rate", "requests/s")]
#: Key parts that say little alone ("mean" of what?): the part before them is kept.
_GENERIC_PARTS = {"mean", "max", "min", "s", "sigma", "cv", "kind", "value", "n"}


def _readable_name(param: str) -> tuple[str, str | None]:
    """A scenario path as words and a unit, from its last part (with the one before when that part is generic)."""
    parts = param.split(".")
    last = parts[-1]
    unit = None
    for suffix, u in _UNIT_SUFFIXES:
        if last.endswith(suffix):
            unit = u
            if suffix.startswith("_"):
                last = last[: -len(suffix)]
            break
    words = last.replace("_", " ").strip()
    if len(parts) > 1 and (parts[-1] in _GENERIC_PARTS or not words):
        before = parts[-2].replace("_", " ")
        words = f"{words} {before}".strip() if parts[-1] in {"mean", "max", "min"} else f"{before} {words}".strip()
    return words, unit


def param_label(param: str) -> str:
    """Axis label for a swept scenario path: words and a unit, never the dotted key."""
    if param in PARAM_LABELS:
        return PARAM_LABELS[param]
    words, unit = _readable_name(param)
    return f"{words} ({unit})" if unit else words


def param_name(param: str) -> str:
    """A swept parameter's short name (panel titles, legend entries): words without the unit."""
    return PARAM_NAMES.get(param) or _readable_name(param)[0]


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


#: The files of every figure: a PNG to look at, an SVG to zoom into.
FIGURE_FORMATS = ("png", "svg")


def keep_figure(kept_base: Path, out_base: Path) -> bool:
    """Put the PNG and SVG drawn earlier at ``kept_base`` at ``out_base``, for a figure whose data is no longer
    at hand (the repository keeps no per-request tables or timelines); False, copying nothing, without both."""
    kept = [kept_base.with_name(f"{kept_base.name}.{ext}") for ext in FIGURE_FORMATS]
    if not all(p.is_file() for p in kept):
        return False
    out_base.parent.mkdir(parents=True, exist_ok=True)
    for src, ext in zip(kept, FIGURE_FORMATS):
        dst = out_base.with_name(f"{out_base.name}.{ext}")
        if dst.resolve() != src.resolve():
            shutil.copy2(src, dst)
    return True


def save_figure(fig: Figure, out_base: Path | None) -> list[Path]:
    """Fit the titles into the figure (:func:`fit_titles`), then write ``out_base.png`` and ``out_base.svg``
    (nothing when ``out_base`` is None)."""
    fit_titles(fig)
    if out_base is None:
        return []
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_name(f"{out_base.name}.{ext}") for ext in FIGURE_FORMATS]  # stems may hold dots
    with matplotlib.rc_context(STYLE):
        for p in paths:
            write_figure(fig, p, dpi=DPI, metadata=_NO_DATE.get(p.suffix, {}))
    return paths


def _title_texts(fig: Figure) -> list:
    texts = [getattr(fig, "_suptitle", None)]
    for ax in fig.axes:
        if ax.get_visible():
            texts += [ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None)]
    return [t for t in texts if t is not None and t.get_visible() and t.get_text()]


def fit_titles(fig: Figure, rounds: int = 6) -> None:
    """Wrap every title and suptitle that runs past the figure's edge until it fits.

    The figure is drawn (constrained layout places everything then), each title measured and, when it
    sticks out, its lines re-wrapped to the width left; wrapped titles take more height, which the
    layout gives them on the next draw.
    """
    with matplotlib.rc_context(STYLE):
        for _ in range(rounds):
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            width = fig.bbox.width
            changed = False
            for t in _title_texts(fig):
                box = t.get_window_extent(renderer)
                if box.x0 >= -0.5 and box.x1 <= width + 0.5:
                    continue
                left = max(box.x0, 0.0) if t.get_horizontalalignment() == "left" else 0.0
                room = width - left - 6.0
                lines = t.get_text().split("\n")
                chars = max(10, int(max(map(len, lines)) * room / max(box.width, 1.0) * 0.95))
                text = "\n".join(textwrap.fill(line, chars, break_long_words=True) for line in lines)
                if text == t.get_text():  # one word wider than the figure: smaller type
                    t.set_fontsize(t.get_fontsize() * 0.9)
                else:
                    t.set_text(text)
                changed = True
            if not changed:
                return


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


#: Marker shapes and line styles of series, so that no two legend entries look alike.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
LINESTYLES = ("-", "--", "-.", ":")


def graded(j: int, n: int) -> dict:
    """Marker size and line width falling with draw order: a series drawn over an identical one
    (or near it) leaves a rim of the earlier one showing."""
    f = j / (n - 1) if n > 1 else 0.0
    return {"ms": 9.0 - 4.5 * f, "lw": 2.4 - 1.3 * f}


def coinciding(series: list[tuple[np.ndarray, np.ndarray]], tol: float) -> bool:
    """Whether two of the series have points at the same x whose y differ by at most ``tol``."""
    seen: dict[float, list[float]] = {}
    for x, y in series:
        for xi, yi in zip(np.asarray(x, float), np.asarray(y, float)):
            if np.isfinite(yi):
                seen.setdefault(float(xi), []).append(float(yi))
    return any(len(ys) > 1 and np.min(np.diff(np.sort(ys))) <= tol for ys in seen.values())


def dodge_offsets(n: int, span: float) -> list[float]:
    """Sideways offsets of ``n`` series (centred on zero, about 1% of ``span`` apart), so that coinciding
    points sit side by side instead of on top of each other."""
    step = (span or 1.0) * min(0.012, 0.05 / max(n - 1, 1))
    return [(j - (n - 1) / 2) * step for j in range(n)]


def wrap(text: str, width: int = 18) -> str:
    return textwrap.fill(text, width, break_long_words=True)


def short(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v)
