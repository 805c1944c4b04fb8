"""Plotted reports of sunsim results: run folders, sweep tables and plan tables.

Each ``plot_*`` function draws one figure from a results table, saves it as PNG and SVG
when given ``out_base`` (a path without suffix) and returns the matplotlib ``Figure``.
:func:`write_report` recognises what a path holds, draws every figure that fits and writes
a ``report.md`` embedding them, so a results folder becomes a readable document in one step.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never through pyplot:
no global figure registry to leak memory and no dependence on a display.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .errors import InputError
from .output import write_figure, write_text

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
}
DPI = 150

#: Metric column -> (axis label with unit, scale applied to the stored value).
METRICS: dict[str, tuple[str, float]] = {
    "tokens_per_s_per_gpu": ("output tokens/s per GPU", 1.0),
    "tokens_per_s_per_decode_gpu": ("output tokens/s per decode GPU", 1.0),
    "output_tokens_per_s": ("output tokens/s", 1.0),
    "requests_per_s": ("finished requests/s", 1.0),
    "ttft_p50_s": ("TTFT p50 (s)", 1.0),
    "ttft_p90_s": ("TTFT p90 (s)", 1.0),
    "tpot_mean_s": ("TPOT mean (ms)", 1e3),
    "tpot_p50_s": ("TPOT p50 (ms)", 1e3),
    "tpot_p90_s": ("TPOT p90 (ms)", 1e3),
    "e2e_p50_s": ("end-to-end latency p50 (s)", 1.0),
    "ttft_mean_s": ("TTFT mean (s)", 1.0),
    "kv_wait_mean_s": ("first token to KV in decode memory, mean (s)", 1.0),
    "kv_wait_p90_s": ("first token to KV in decode memory, p90 (s)", 1.0),
    "slo_attainment": ("SLO attainment (% of requests)", 100.0),
    "decode_busy_mean": ("decode busy fraction, mean (%)", 100.0),
    "decode_mean_batch": ("mean decode batch (requests)", 1.0),
    "min_decode_gpus": ("decode GPUs needed", 1.0),
    "goodput_rps": ("goodput (requests/s)", 1.0),
    "goodput_rps_per_gpu": ("goodput per GPU (requests/s)", 1.0),
}
#: Metrics drawn against every swept parameter, in this order.
KEY_METRICS = ["tokens_per_s_per_gpu", "slo_attainment", "tpot_p90_s", "ttft_p90_s", "min_decode_gpus"]
#: Sweep-table columns that are not swept parameters.
_SWEEP_META = {"point", "seed", "variant", "status", "error"}

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
MAX_RUNS = 12  # run folders drawn from one folder scan; more are listed but not plotted
MAX_TABLE_ROWS = 60


def param_label(param: str) -> str:
    """Axis label for a swept scenario path, with a unit guessed from its last part."""
    if param in PARAM_LABELS:
        return PARAM_LABELS[param]
    last = param.rsplit(".", 1)[-1]
    for suffix, unit in _UNIT_SUFFIXES:
        if last.endswith(suffix):
            return f"{param} ({unit})"
    return param


def _styled(fn: Callable) -> Callable:
    """Draw inside :data:`STYLE` so every figure looks the same whoever calls it."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def _new_figure(width: float = 7.5, height: float = 4.8, **subplots) -> tuple[Figure, object]:
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
            write_figure(fig, p, dpi=DPI)
    return paths


def profile_label(df: pd.DataFrame | None) -> str:
    """The profile(s) behind a table, e.g. ``analytic-h100 (analytic)``, for titles and captions."""
    if df is None or "profile" not in df.columns:
        return "profile not recorded"
    cols = ["profile", "profile_kind"] if "profile_kind" in df.columns else ["profile"]
    pairs = df[cols].dropna(subset=["profile"]).drop_duplicates().itertuples(index=False)
    names = [f"{p[0]} ({p[1]})" if len(p) > 1 and isinstance(p[1], str) and p[1] else str(p[0]) for p in pairs]
    return ", ".join(names) if names else "profile not recorded"


def _variant_colors(variants: Iterable[str]) -> dict[str, str]:
    """Stable colours: the same variant has the same colour in every figure of a report."""
    return {v: f"C{i % 10}" for i, v in enumerate(dict.fromkeys(variants))}


def _title(ax, text: str, profile: str) -> None:
    ax.set_title(f"{text}\nprofile: {profile}", loc="left")


def _legend(ax, n_entries: int, title: str | None = None) -> None:
    """Legend inside for a few lines, outside on the right when there are many."""
    if n_entries <= 5:
        ax.legend(title=title, loc="best", frameon=False)
    else:
        ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


# --------------------------------------------------------------------------------------
# Sweep tables
def swept_params(df: pd.DataFrame, varying_only: bool = True) -> list[str]:
    """Swept parameters: the scenario-path columns (dotted names) of a sweep table."""
    params = [c for c in df.columns if "." in c and c not in _SWEEP_META]
    if varying_only:
        params = [c for c in params if df[c].astype(str).nunique() > 1]
    return params


def _numeric_axis(values: pd.Series) -> tuple[pd.Series, list[str] | None]:
    """Numbers stay numbers; anything else (task lists, names) becomes evenly spaced categories."""
    num = pd.to_numeric(values, errors="coerce")
    if num.notna().all():
        return num.astype(float), None
    labels = list(dict.fromkeys(values.astype(str)))
    return values.astype(str).map({lab: i for i, lab in enumerate(labels)}).astype(float), labels


def aggregate_seeds(df: pd.DataFrame, x: str, y: str, by: list[str]) -> pd.DataFrame:
    """Mean, min and max of ``y`` over seeds (and repeated points) for each ``by`` group and ``x``."""
    part = df[by + [x, y]].copy()
    part[y] = pd.to_numeric(part[y], errors="coerce")
    part = part.dropna(subset=[y])
    part["_x"], labels = _numeric_axis(part[x])
    if "variant" in by:  # keep the variants in table order (dedicated, sun, qsun), not alphabetical
        part["variant"] = pd.Categorical(part["variant"], categories=list(dict.fromkeys(part["variant"])))
    out = (part.groupby(by + ["_x"], sort=True, dropna=False, observed=True)[y]
           .agg(mean="mean", lo="min", hi="max", n="count").reset_index())
    out.attrs["labels"] = labels
    return out


def _group_label(variant: str, extra: dict) -> str:
    parts = [f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in extra.items()]
    return variant if not parts else f"{variant}, " + ", ".join(parts)


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v)


#: More lines than this in one axes and a sweep's other parameters get a panel each.
MAX_LINES = 8


def _combo_key(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    return df[cols].astype(str).agg(" | ".join, axis=1) if cols else pd.Series("", index=df.index)


@_styled
def plot_metric_vs_param(sweep: pd.DataFrame, param: str, metric: str, out_base: Path | None = None,
                         title: str | None = None, reference: float | None = None) -> Figure:
    """``metric`` against swept ``param``: one line per variant (and per value of other swept
    parameters), averaged over seeds with the min-max range shaded when there are several.

    When the other swept parameters would make more than :data:`MAX_LINES` lines, each of
    their combinations gets its own panel (small multiples) with one line per variant.
    Latencies spanning more than a decade are drawn on a log axis.
    """
    if param not in sweep.columns or metric not in sweep.columns:
        raise InputError(f"sweep table lacks {param!r} or {metric!r}")
    others = [p for p in swept_params(sweep) if p != param]
    agg = aggregate_seeds(sweep, param, metric, ["variant"] + others)
    label, scale = METRICS.get(metric, (metric, 1.0))
    colors = _variant_colors(sweep["variant"])
    agg["_combo"] = _combo_key(agg, others)
    combos = list(dict.fromkeys(agg["_combo"]))
    facet = len(combos) > 1 and agg.groupby(["variant", "_combo"], observed=True).ngroups > MAX_LINES
    panels = combos if facet else [None]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    if facet:
        fig, axes = _new_figure(4.0 * ncols + 2.2, 3.0 * nrows + 1.0, nrows=nrows, ncols=ncols, squeeze=False,
                                sharex=True, sharey=True)
    else:
        fig, axes = _new_figure(squeeze=False)
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P"]
    values = agg["mean"] * scale
    log_y = metric.endswith("_s") and values.min() > 0 and values.max() / values.min() > 20
    xs = agg["_x"]
    log_x = not agg.attrs.get("labels") and xs.min() > 0 and xs.max() / xs.min() >= 100
    # Whole-number metrics (GPU counts) often tie: nudge each variant sideways so none hides another.
    variants = list(dict.fromkeys(agg["variant"]))
    span = float(agg["_x"].max() - agg["_x"].min()) or 1.0
    dodge = {v: (i - (len(variants) - 1) / 2) * 0.012 * span for i, v in enumerate(variants)} \
        if metric == "min_decode_gpus" else dict.fromkeys(variants, 0.0)
    n = 0
    for k, combo in enumerate(panels):
        ax = axes.flat[k]
        part_all = agg if combo is None else agg[agg["_combo"] == combo]
        for (variant, key), part in part_all.groupby(["variant", "_combo"], sort=False, observed=True):
            style = 0 if facet else combos.index(key)
            extra = {} if facet else dict(zip(others, part[others].iloc[0]))
            ax.plot(part["_x"] + dodge[variant], part["mean"] * scale, color=colors[variant], ls=styles[style % 4],
                    marker=markers[style % len(markers)], ms=5, label=_group_label(variant, extra))
            if (part["n"] > 1).any():
                ax.fill_between(part["_x"], part["lo"] * scale, part["hi"] * scale, color=colors[variant],
                                alpha=0.15, lw=0)
            n += 1 if k == 0 else 0
        if facet:
            ax.set_title(", ".join(f"{o.rsplit('.', 1)[-1]}={_short(v)}" for o, v in zip(others, combo.split(" | "))),
                         fontsize=10, loc="left")
        if reference is not None:
            ax.axhline(reference * scale, color="0.35", ls="--", lw=1)
        if agg.attrs.get("labels"):
            ax.set_xticks(range(len(agg.attrs["labels"])), [_wrap(s) for s in agg.attrs["labels"]])
            ax.set_xlim(-0.5, len(agg.attrs["labels"]) - 0.5)
        if log_y:
            _log_axis(ax.yaxis, ax.set_yscale)
        if log_x:
            _log_axis(ax.xaxis, ax.set_xscale)
        if metric == "min_decode_gpus":  # counts: whole numbers, from zero so ratios read true
            ax.yaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1, :]:
        ax.set_xlabel(param_label(param))
    for ax in axes[:, 0]:
        ax.set_ylabel(label)
    seeds = int(sweep["seed"].nunique()) if "seed" in sweep.columns else 1
    note = f" (mean of {seeds} seeds, band = min-max)" if seeds > 1 else ""
    heading = (title or f"{label.split(' (')[0]} vs {param}") + note
    if facet:
        fig.suptitle(f"{heading}\nprofile: {profile_label(sweep)}", x=0.01, ha="left")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, title="variant", loc="outside right upper", frameon=False)
    else:
        _title(axes[0, 0], heading, profile_label(sweep))
        _legend(axes[0, 0], n, "variant")
    save_figure(fig, out_base)
    return fig


def _log_axis(axis, set_scale: Callable) -> None:
    """Log scale with plain numbers (0.01, 0.1, 1, 10) and unlabelled minor ticks, which would overlap."""
    set_scale("log")
    axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _wrap(text: str, width: int = 18) -> str:
    return textwrap.fill(text, width, break_long_words=True)


def plot_throughput_vs_skew(sweep: pd.DataFrame, out_base: Path | None = None) -> Figure:
    """Output tokens/s per GPU (all GPUs) against popularity skew, one line per variant."""
    return plot_metric_vs_param(sweep, SKEW, "tokens_per_s_per_gpu", out_base,
                                title="Throughput per GPU vs popularity skew")


def plot_slo_vs_rate(sweep: pd.DataFrame, out_base: Path | None = None, target: float | None = None) -> Figure:
    """SLO attainment against request rate, one line per variant; ``target`` draws the goodput bar."""
    return plot_metric_vs_param(sweep, RATE, "slo_attainment", out_base, title="SLO attainment vs request rate",
                                reference=target)


def plot_decode_gpus_vs_param(table: pd.DataFrame, param: str = SKEW, out_base: Path | None = None) -> Figure:
    """Decode GPUs needed to meet the SLO (``min_decode_gpus``) against ``param``, one line per variant."""
    return plot_metric_vs_param(table, param, "min_decode_gpus", out_base,
                                title=f"Decode GPUs needed vs {'popularity skew' if param == SKEW else param}")


# --------------------------------------------------------------------------------------
# Plan tables
@_styled
def plot_plan_probes(plan: pd.DataFrame, out_base: Path | None = None, target: float | None = None) -> Figure:
    """SLO attainment of every simulated probe against its decode GPUs: how the planner found the minimum.
    Filled markers met the SLO, hollow ones did not; a line per variant (and per rate when several)."""
    colors = _variant_colors(plan["variant"])
    rates = plan["rate"].nunique() if "rate" in plan.columns else 1
    fig, ax = _new_figure()
    keys = ["variant", "rate"] if rates > 1 else ["variant"]
    n = 0
    for key, part in plan.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        part = part.sort_values("decode_gpus")
        c = colors[key[0]]
        label = key[0] if rates == 1 else f"{key[0]} @ {key[1]:g} req/s"
        ax.plot(part["decode_gpus"], part["slo_attainment"] * 100, color=c, lw=1.2, label=label)
        met = part["meets_slo"].astype(str).str.lower().isin(["true", "1", "1.0"])
        ax.scatter(part["decode_gpus"][met], part["slo_attainment"][met] * 100, color=c, zorder=3, s=30)
        ax.scatter(part["decode_gpus"][~met], part["slo_attainment"][~met] * 100, facecolor="white",
                   edgecolor=c, zorder=3, s=30)
        n += 1
    if target is not None:
        ax.axhline(target * 100, color="0.35", ls="--", lw=1)
        ax.annotate(f"target {target:.0%}", (1.0, target * 100), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=9, color="0.35")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("decode GPUs (count)")
    ax.set_ylabel("SLO attainment (% of requests)")
    _title(ax, "Planner probes: SLO attainment vs decode GPUs", profile_label(plan))
    handles = ax.get_legend_handles_labels()[0] + [
        Line2D([], [], marker="o", ls="", color="0.3", label="meets SLO"),
        Line2D([], [], marker="o", ls="", mfc="white", mec="0.3", label="misses SLO")]
    ax.legend(handles=handles, loc="lower right" if n <= 4 else "upper left",
              bbox_to_anchor=None if n <= 4 else (1.01, 1.0), frameon=False)
    save_figure(fig, out_base)
    return fig


@_styled
def plot_decode_gpus_needed(summary: pd.DataFrame, out_base: Path | None = None) -> Figure:
    """Decode GPUs each variant needs to meet the SLO (one plan): bars labelled with the count."""
    colors = _variant_colors(summary["variant"])
    fig, ax = _new_figure(6.5, 4.5)
    vals = pd.to_numeric(summary["min_decode_gpus"], errors="coerce")
    bars = ax.bar(summary["variant"].astype(str), vals.fillna(0), color=[colors[v] for v in summary["variant"]])
    labels = ["not met" if math.isnan(v) else f"{v:g}" for v in vals]
    ax.bar_label(bars, labels=labels, padding=3)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, max(1.0, float(vals.max(skipna=True) or 0)) * 1.18)
    ax.set_xlabel("variant")
    ax.set_ylabel("decode GPUs needed (count)")
    ax.grid(axis="x", visible=False)
    _title(ax, "Decode GPUs needed to meet the SLO", profile_label(summary))
    save_figure(fig, out_base)
    return fig


# --------------------------------------------------------------------------------------
# Run folders
@dataclass
class RunData:
    """What a ``sunsim run`` folder holds, loaded."""

    path: Path
    comparison: pd.DataFrame
    summaries: dict[str, dict] = field(default_factory=dict)
    requests: dict[str, pd.DataFrame] = field(default_factory=dict)
    timeline: pd.DataFrame | None = None  # tidy, with a ``variant`` column
    scenario: dict = field(default_factory=dict)

    @property
    def slo(self) -> tuple[float | None, float | None]:
        slo = self.scenario.get("slo") or next(iter(self.summaries.values()), {}).get("slo") or {}
        return slo.get("ttft_s"), slo.get("tpot_s")

    @property
    def profile(self) -> str:
        """Profile name, kind and device (summary.json knows the device; the table does not)."""
        names = []
        for s in self.summaries.values():
            p = s.get("profile") or {}
            names.append(f"{p.get('name')} ({p.get('kind')}, {p.get('device')})")
        names = list(dict.fromkeys(names))
        return ", ".join(names) if names else profile_label(self.comparison)


def _read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet table; a clear ValueError when it cannot be read."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except ImportError as exc:
        raise InputError(f"{path}: reading Parquet needs pyarrow ({exc})") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read table ({exc})") from None


def _variant_file(vdir: Path, stem: str) -> Path | None:
    for suffix in (".csv", ".parquet"):
        if (vdir / f"{stem}{suffix}").is_file():
            return vdir / f"{stem}{suffix}"
    return None


def load_run(path: Path) -> RunData:
    """Load a run folder (``comparison.csv`` plus per-variant folders); missing per-variant files are skipped."""
    path = Path(path)
    comp = _read_table(path / "comparison.csv")
    _require(comp, {"variant", "tokens_per_s_per_gpu"}, path / "comparison.csv", "a run's comparison table")
    run = RunData(path, comp)
    if (path / "scenario.yaml").is_file():
        run.scenario = yaml.safe_load((path / "scenario.yaml").read_text()) or {}
    timelines = []
    for v in comp["variant"].astype(str):
        vdir = path / v
        if (vdir / "summary.json").is_file():
            run.summaries[v] = json.loads((vdir / "summary.json").read_text())
        if (req := _variant_file(vdir, "requests")) is not None:
            run.requests[v] = _read_table(req)
        if (tl := _variant_file(vdir, "timeline")) is not None:
            timelines.append(_read_table(tl).assign(variant=v))
    if timelines:
        run.timeline = pd.concat(timelines, ignore_index=True)
    return run


def _require(df: pd.DataFrame, cols: set[str], path: Path, what: str) -> None:
    missing = sorted(cols - set(df.columns))
    if missing:
        raise InputError(f"{path}: not {what}: missing column(s) {', '.join(missing)}")


def _cdf_points(values: np.ndarray, total: int, max_points: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF over ``total`` requests (those without a value never reach it), thinned for small files."""
    x = np.sort(values[np.isfinite(values)])
    y = np.arange(1, len(x) + 1) / max(total, 1)
    if len(x) > max_points:
        idx = np.unique(np.linspace(0, len(x) - 1, max_points).astype(int))
        x, y = x[idx], y[idx]
    return x, y


@_styled
def plot_latency_cdfs(run: RunData | Path, out_base: Path | None = None) -> Figure:
    """TTFT and TPOT CDFs (one line per variant) with the SLO targets marked.
    Unfinished requests count as never meeting any latency, so a curve tops out at the finished share."""
    run = run if isinstance(run, RunData) else load_run(Path(run))
    if not run.requests:
        raise InputError(f"{run.path}: no per-variant requests tables to draw latency CDFs from")
    colors = _variant_colors(run.comparison["variant"].astype(str))
    fig, (ax_ttft, ax_tpot) = _new_figure(11, 4.6, ncols=2)
    for k, (v, df) in enumerate(run.requests.items()):
        # Distinct dashes and widths keep identical curves (same prefill in every variant) all visible.
        style = {"color": colors.get(v), "label": v, "ls": ["-", "--", ":", "-."][k % 4], "lw": 2.6 - 0.5 * (k % 3)}
        ttft = df["ttft_s"].to_numpy(dtype=float)
        ax_ttft.plot(*_cdf_points(ttft, len(ttft)), **style)
        multi = df[df["output_tokens"] > 1]
        tpot = multi["tpot_s"].to_numpy(dtype=float) * 1e3
        ax_tpot.plot(*_cdf_points(tpot, len(tpot)), **style)
    slo_ttft, slo_tpot = run.slo
    for ax, slo, scale, unit, name in ((ax_ttft, slo_ttft, 1.0, "s", "TTFT"), (ax_tpot, slo_tpot, 1e3, "ms", "TPOT")):
        _log_axis(ax.xaxis, ax.set_xscale)
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_xlabel(f"{name} ({unit}, log scale)")
        ax.set_ylabel("requests at or below (%)")
        if slo:
            ax.axvline(slo * scale, color="0.3", ls="--", lw=1)
            ax.annotate(f"SLO {slo * scale:g} {unit}", (slo * scale, 0.03), xytext=(4, 0),
                        textcoords="offset points", fontsize=9, color="0.3")
    ax_ttft.set_title("TTFT (arrival to first token)", loc="left")
    ax_tpot.set_title("TPOT (time per output token)", loc="left")
    ax_tpot.legend(title="variant", loc="lower right", frameon=False)
    fig.suptitle(f"Latency CDFs: {_run_name(run)}; profile: {run.profile}", x=0.01, ha="left",
                 fontsize=STYLE["axes.titlesize"])
    save_figure(fig, out_base)
    return fig


def _run_name(run: RunData) -> str:
    return str(run.scenario.get("name") or run.path.name)


def _binned_mean(t: np.ndarray, v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-weighted mean of a step function (value ``v[i]`` from ``t[i]``) over each bin.
    Averaging rather than sampling keeps short bursts visible after thinning."""
    dt = np.diff(np.append(t, max(edges[-1], t[-1])))
    cum = np.concatenate([[0.0], np.cumsum(v * dt)])
    knots = np.append(t, t[-1] + dt[-1])
    area = np.interp(edges, knots, cum, left=0.0, right=cum[-1])
    return np.diff(area) / np.diff(edges)


@_styled
def plot_timeline(timeline: pd.DataFrame, out_base: Path | None = None, profile: str = "profile not recorded",
                  bins: int = 400) -> Figure:
    """Per decode worker batch size (top) and KV occupancy (bottom) over time; one column per variant,
    a line per worker coloured by its pool. Values are time-weighted means over ``bins`` intervals."""
    _require(timeline, {"variant", "worker", "pool", "time_s", "batch", "kv_fraction"}, Path("timeline"),
             "a decode timeline")
    variants = list(dict.fromkeys(timeline["variant"]))
    end = float(timeline["time_s"].max()) or 1.0
    edges = np.linspace(0.0, end, bins + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    pools = list(dict.fromkeys(timeline["pool"].astype(str)))
    pool_color = {p: f"C{i % 10}" for i, p in enumerate(pools)}
    fig, axes = _new_figure(3.9 * len(variants) + 1.0, 6.4, nrows=2, ncols=len(variants), sharex=True,
                            sharey="row", squeeze=False)
    for j, v in enumerate(variants):
        part = timeline[timeline["variant"] == v]
        for (_, pool), w in part.sort_values("time_s").groupby(["worker", "pool"], sort=True):
            t = w["time_s"].to_numpy(float)
            for i, col, scale in ((0, "batch", 1.0), (1, "kv_fraction", 100.0)):
                axes[i, j].plot(mids, _binned_mean(t, w[col].to_numpy(float), edges) * scale,
                                color=pool_color[str(pool)], lw=1.0, alpha=0.85)
        axes[0, j].set_title(v, loc="left")
        axes[1, j].set_xlabel("simulated time (s)")
        shown = list(dict.fromkeys(part["pool"].astype(str)))
        workers = part["worker"].nunique()
        handles = [Line2D([], [], color=pool_color[p], lw=2, label=p) for p in shown]
        axes[1, j].legend(handles=handles, title=f"pool ({workers} workers)", loc="upper center",
                          bbox_to_anchor=(0.5, -0.28), ncol=min(len(shown), 3), frameon=False, fontsize=9)
    axes[0, 0].set_ylabel("decode batch (requests)")
    axes[1, 0].set_ylabel("KV cache occupied (%)")
    axes[1, 0].set_ylim(bottom=0)
    axes[0, 0].set_ylim(bottom=0)
    fig.suptitle(f"Decode workers over time (mean per {end / bins:.2g} s); profile: {profile}", x=0.01, ha="left",
                 fontsize=STYLE["axes.titlesize"])
    save_figure(fig, out_base)
    return fig


# --------------------------------------------------------------------------------------
# Recognising inputs
@dataclass
class SweepData:
    path: Path
    table: pd.DataFrame  # all rows
    ok: pd.DataFrame  # rows with status == "ok"


@dataclass
class PlanData:
    path: Path  # the plan.csv
    probes: pd.DataFrame
    summary: pd.DataFrame | None = None
    scenario: dict = field(default_factory=dict)

    @property
    def target(self) -> float | None:
        return (self.scenario.get("slo") or {}).get("attainment")

    def needed(self) -> pd.DataFrame:
        """Per variant: the fewest decode GPUs that met the SLO (from the summary when there is one)."""
        if self.summary is not None and "min_decode_gpus" in self.summary.columns:
            return self.summary
        met = self.probes[self.probes["meets_slo"].astype(str).str.lower().isin(["true", "1", "1.0"])]
        need = met.groupby("variant", sort=False)["decode_gpus"].min()
        out = pd.DataFrame({"variant": list(dict.fromkeys(self.probes["variant"]))})
        out["min_decode_gpus"] = out["variant"].map(need)
        if "profile" in self.probes.columns:
            out["profile"] = out["variant"].map(self.probes.groupby("variant")["profile"].first())
        return out


SWEEP_NEEDS = {"point", "variant"}
PLAN_NEEDS = {"variant", "rate", "decode_gpus", "slo_attainment", "meets_slo"}
_EXPECTED = ("a run folder (with comparison.csv), a sweep table (.csv/.parquet with columns point, variant and "
             "metrics such as tokens_per_s_per_gpu), a plan table (plan.csv) or a folder holding some of them")


def _load_table_source(path: Path) -> SweepData | PlanData:
    """A table file is a sweep table or a plan table; anything else is rejected with what is missing."""
    if path.suffix not in (".csv", ".parquet"):
        raise InputError(f"{path}: not a table (.csv or .parquet); expected {_EXPECTED}")
    if path.name == "comparison.csv":
        raise InputError(f"{path}: this is a run's comparison table; pass its folder {path.parent} instead")
    df = _read_table(path)
    if PLAN_NEEDS <= set(df.columns):
        return _load_plan(path, df)
    _require(df, SWEEP_NEEDS, path, "a sweep table (or a plan table)")
    measured = [m for m in METRICS if m in df.columns]
    if not measured:
        raise InputError(f"{path}: not a sweep table: no metric columns (expected some of {', '.join(METRICS)})")
    ok = df[df["status"].astype(str) == "ok"] if "status" in df.columns else df
    return SweepData(path, df, ok.reset_index(drop=True))


def _load_plan(path: Path, probes: pd.DataFrame) -> PlanData:
    plan = PlanData(path, probes)
    summary = path.with_name("plan_summary.csv")
    if summary.is_file():
        plan.summary = _read_table(summary)
    if (sc := path.with_name("scenario.yaml")).is_file():
        plan.scenario = yaml.safe_load(sc.read_text()) or {}
    return plan


def _scan_folder(root: Path, max_depth: int = 3) -> list[Path | SweepData | PlanData]:
    """Run folders, plan folders and sweep tables under ``root`` (report outputs and hidden folders skipped)."""
    found: list[Path | SweepData | PlanData] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # depth-bounded, so links cannot loop
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (here / d / "report.md").exists()
                             and depth < max_depth)
        if "comparison.csv" in filenames:
            found.append(here)  # loaded later, only if within MAX_RUNS
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            if name.endswith((".csv", ".parquet")) and name != "plan_summary.csv":
                try:
                    found.append(_load_table_source(here / name))
                except ValueError:
                    continue  # other tables in the folder are not ours to judge
    return found


def load_sources(source: Path) -> list[RunData | SweepData | PlanData | Path]:
    """Everything a report can be drawn from; ValueError naming the path when there is nothing."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder; expected {_EXPECTED}")
    if source.is_file():
        return [_load_table_source(source)]
    if (source / "comparison.csv").is_file():
        return [load_run(source)]
    found = _scan_folder(source)
    if not found:
        raise InputError(f"{source}: nothing to report: found no run folder, sweep table or plan table; "
                         f"expected {_EXPECTED}")
    return found


# --------------------------------------------------------------------------------------
# The report
@dataclass
class _Section:
    title: str
    intro: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file stem, caption)


class _Drawer:
    """Draws figures into the staging folder and numbers them for the report."""

    def __init__(self, fig_dir: Path, on_progress: Callable[[str], None] | None):
        self.fig_dir = fig_dir
        self.on_progress = on_progress or (lambda _msg: None)
        self.used: set[str] = set()

    def draw(self, section: _Section, stem: str, caption: str, fn: Callable, *args, **kwargs) -> None:
        stem = self._unique(_slug(stem))
        self.on_progress(f"drawing {stem}")
        fig = fn(*args, out_base=self.fig_dir / stem, **kwargs)
        fig.clear()  # free the memory now; the files are written
        section.figures.append((stem, caption))

    def _unique(self, stem: str) -> str:
        base, i = stem, 2
        while stem in self.used:
            stem, i = f"{base}-{i}", i + 1
        self.used.add(stem)
        return stem


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "figure"


def _md_table(df: pd.DataFrame) -> list[str]:
    """A Markdown table (no extra dependency): numbers formatted compactly, missing values as '-'."""
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, (float, np.floating)):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return lines


def _rel(path: Path, base: Path) -> str:
    for p, b in ((path, base), (path.resolve(), base.resolve())):
        try:
            return str(p.relative_to(b))
        except ValueError:
            continue
    return str(path)


def _run_section(run: RunData, drawer: _Drawer, base: Path) -> _Section:
    name = _run_name(run)
    where = _rel(run.path, base)
    sec = _Section(f"Run `{name}`" + (f" ({where})" if where != "." else ""))
    slo_ttft, slo_tpot = run.slo
    slo = f"; SLO TTFT <= {slo_ttft:g} s, TPOT <= {slo_tpot * 1e3:g} ms" if slo_ttft and slo_tpot else ""
    sec.intro += [f"Profile: **{run.profile}**{slo}.", ""]
    c = run.comparison.copy()
    table = pd.DataFrame({
        "variant": c["variant"], "mode": c.get("mode"), "dtype": c.get("dtype"),
        "GPUs prefill/decode": c.get("prefill_gpus").astype(str) + "/" + c.get("decode_gpus").astype(str)
        if {"prefill_gpus", "decode_gpus"} <= set(c.columns) else None,
        "tok/s per GPU": c["tokens_per_s_per_gpu"], "tok/s per decode GPU": c.get("tokens_per_s_per_decode_gpu"),
        "TTFT p90 (s)": c.get("ttft_p90_s"),
        "TPOT p90 (ms)": c["tpot_p90_s"] * 1e3 if "tpot_p90_s" in c.columns else None,
        "SLO attainment (%)": c["slo_attainment"] * 100 if "slo_attainment" in c.columns else None,
        "profile": c.get("profile"),
    }).dropna(axis=1, how="all")
    sec.intro += _md_table(table)
    stem = name if name == run.path.name else f"{name}-{run.path.name}"
    if run.requests:
        drawer.draw(sec, f"{stem}-latency-cdf", f"TTFT and TPOT CDFs per variant of run `{name}`; dashed lines are "
                    f"the SLO targets; unfinished requests never reach a value. Profile: {run.profile}.",
                    plot_latency_cdfs, run)
    if run.timeline is not None and len(run.timeline):
        drawer.draw(sec, f"{stem}-timeline", f"Batch size and KV-cache occupancy of every decode worker over "
                    f"time (a line per worker, coloured by pool), run `{name}`. Profile: {run.profile}.",
                    plot_timeline, run.timeline, profile=run.profile)
    else:
        sec.intro.append("\n_No decode timeline (timeline.csv) in this run folder: worker figure skipped._")
    return sec


def _sweep_section(sw: SweepData, drawer: _Drawer, base: Path) -> _Section:
    ok, prof = sw.ok, profile_label(sw.ok)
    sec = _Section(f"Sweep `{_rel(sw.path, base)}`")
    errors = len(sw.table) - len(ok)
    params = swept_params(ok)
    fixed = {p: ok[p].iloc[0] for p in swept_params(ok, varying_only=False) if p not in params} if len(ok) else {}
    seeds = int(ok["seed"].nunique()) if "seed" in ok.columns else 1
    sec.intro.append(f"Profile: **{prof}**. {len(sw.table)} rows, {len(ok)} ok, {errors} failed; "
                     f"{seeds} seed{'s' if seeds > 1 else ''} per point. Swept: {', '.join(params) or 'nothing varies'}"
                     + (f"; fixed: {', '.join(f'{k}={_short(v)}' for k, v in fixed.items())}." if fixed else "."))
    if errors and "error" in sw.table.columns:
        msgs = sw.table.loc[sw.table["status"].astype(str) != "ok", "error"].dropna().astype(str).unique()[:5]
        sec.intro += ["", "Failed points (first messages):"] + [f"- `{m[:200]}`" for m in msgs]
    if ok.empty:
        sec.intro.append("\n_No successful rows: nothing to plot._")
        return sec
    sec.intro += [""] + _sweep_table(ok, params)
    note = f" Mean over {seeds} seeds; the band is the min-max range." if seeds > 1 else ""
    done: set[tuple[str, str]] = set()
    if SKEW in params and "tokens_per_s_per_gpu" in ok.columns:
        drawer.draw(sec, f"{sw.path.stem}-throughput-vs-skew", f"Output tokens/s per GPU (prefill + decode GPUs) vs "
                    f"popularity skew, a line per variant.{note} Profile: {prof}.", plot_throughput_vs_skew, ok)
        done.add((SKEW, "tokens_per_s_per_gpu"))
    if RATE in params and "slo_attainment" in ok.columns:
        drawer.draw(sec, f"{sw.path.stem}-slo-vs-rate", f"SLO attainment vs request rate, a line per variant.{note} "
                    f"Profile: {prof}.", plot_slo_vs_rate, ok)
        done.add((RATE, "slo_attainment"))
    if "min_decode_gpus" in ok.columns:
        for p in ([SKEW] if SKEW in params else params[:1]):
            drawer.draw(sec, f"{sw.path.stem}-decode-gpus-vs-{p}", f"Decode GPUs needed to meet the SLO vs {p}, a "
                        f"line per variant.{note} Profile: {prof}.", plot_decode_gpus_vs_param, ok, p)
            done.add((p, "min_decode_gpus"))
    for p in params:
        for m in KEY_METRICS:
            if m in ok.columns and (p, m) not in done and ok[m].notna().any():
                drawer.draw(sec, f"{sw.path.stem}-{m}-vs-{p}", f"{METRICS[m][0]} vs {p}, a line per variant.{note} "
                            f"Profile: {prof}.", plot_metric_vs_param, ok, p, m)
    return sec


def _sweep_table(ok: pd.DataFrame, params: list[str]) -> list[str]:
    """Seed-averaged key metrics per grid point and variant (capped so the report stays readable)."""
    cols = [m for m in KEY_METRICS if m in ok.columns]
    agg = ok.groupby(params + ["variant"], sort=True, dropna=False)[cols].mean().reset_index()
    for m in cols:
        label, scale = METRICS[m]
        agg[m] = agg[m] * scale
        agg = agg.rename(columns={m: label})
    lines = _md_table(agg.head(MAX_TABLE_ROWS))
    if len(agg) > MAX_TABLE_ROWS:
        lines.append(f"\n_{len(agg) - MAX_TABLE_ROWS} more rows not shown._")
    return lines


def _plan_section(plan: PlanData, drawer: _Drawer, base: Path) -> _Section:
    needed = plan.needed()
    prof = profile_label(needed if "profile" in needed.columns else plan.probes)
    sec = _Section(f"Plan `{_rel(plan.path, base)}`")
    sec.intro.append(f"Profile: **{prof}**. {len(plan.probes)} simulated probes.")
    sec.intro += [""] + _md_table(needed)
    stem = plan.path.parent.name or "plan"
    drawer.draw(sec, f"{stem}-decode-gpus-needed", f"Decode GPUs each variant needs to meet the SLO. Profile: {prof}.",
                plot_decode_gpus_needed, needed)
    drawer.draw(sec, f"{stem}-plan-probes", f"SLO attainment of each simulated probe vs its decode GPUs (filled: met "
                f"the SLO). Profile: {prof}.", plot_plan_probes, plan.probes, target=plan.target)
    return sec


def _plans_vs_skew(plans: list[PlanData], drawer: _Drawer) -> _Section | None:
    """Several plans that differ in skew (read from their scenario.yaml) make one decode-GPUs-vs-skew figure."""
    rows = []
    for plan in plans:
        s = ((plan.scenario.get("workload") or {}).get("popularity") or {}).get("s")
        if s is None:
            return None
        rows.append(plan.needed().assign(**{SKEW: s}))
    table = pd.concat(rows, ignore_index=True)
    if len(plans) < 2 or table[SKEW].nunique() < 2:
        return None
    sec = _Section("Plans across skew")
    prof = profile_label(table)
    drawer.draw(sec, "plans-decode-gpus-vs-skew", f"Decode GPUs needed vs popularity skew, one plan per skew. "
                f"Profile: {prof}.", plot_decode_gpus_vs_param, table, SKEW)
    return sec


def _render(sections: list[_Section], source: Path, skipped: list[Path]) -> str:
    out = ["# sunsim report", "", f"Source: `{source}`.", ""]
    n = 0
    for sec in sections:
        out += [f"## {sec.title}", ""] + sec.intro + [""]
        for stem, caption in sec.figures:
            n += 1
            out += [f"![{stem}](figures/{stem}.png)", "",
                    f"*Figure {n}: {caption}* ([SVG](figures/{stem}.svg))", ""]
    if skipped:
        out += ["## Not plotted", "", f"Only the first {MAX_RUNS} run folders are drawn; also found:"]
        out += [f"- `{p}`" for p in skipped] + [""]
    return "\n".join(out)


def write_report(source: Path | str, out_dir: Path | str | None = None,
                 on_progress: Callable[[str], None] | None = None) -> Path:
    """Draw every figure that fits ``source`` (a run folder, a sweep/plan table or a folder of them) and
    write ``report.md`` with figures under ``figures/``. Inputs are loaded and checked first and output is
    staged then moved into place, so a bad input raises ValueError and writes nothing. Returns report.md."""
    source = Path(source)
    found = load_sources(source)
    runs = [f for f in found if isinstance(f, (RunData, Path))]
    skipped = [p for p in runs[MAX_RUNS:] if isinstance(p, Path)]
    runs = [r if isinstance(r, RunData) else load_run(r) for r in runs[:MAX_RUNS]]
    sweeps = [f for f in found if isinstance(f, SweepData)]
    plans = [f for f in found if isinstance(f, PlanData)]
    base = source if source.is_dir() else source.parent
    out_dir = Path(out_dir) if out_dir else base / "report"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".report-staging-", dir=out_dir.parent))
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot write the report there ({exc.strerror})") from None
    try:
        drawer = _Drawer(stage / "figures", on_progress)
        sections = [_run_section(r, drawer, base) for r in runs]
        sections += [_sweep_section(s, drawer, base) for s in sweeps]
        sections += [_plan_section(p, drawer, base) for p in plans]
        if len(plans) > 1 and (across := _plans_vs_skew(plans, drawer)) is not None:
            sections.append(across)
        (stage / "figures").mkdir(exist_ok=True)
        write_text(stage / "report.md", _render(sections, source, skipped))
        _move_into_place(stage, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out_dir / "report.md"


def _move_into_place(stage: Path, out_dir: Path) -> None:
    """Replace the report's own entries (report.md, figures/) and leave anything else in ``out_dir`` alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(stage.iterdir(), key=lambda p: p.name != "figures"):  # figures first, report.md last
        target = out_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
