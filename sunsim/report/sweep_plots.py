"""Figures of sweep tables and plan tables: a metric against a swept parameter, planner results.

Each ``plot_*`` function draws one figure from a results table, saves it as PNG and SVG
when given ``out_base`` (a path without suffix) and returns the matplotlib ``Figure``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sunsim.errors import InputError
from sunsim.report.style import (
    METRICS,
    RATE,
    SKEW,
    SWEEP_META,
    log_axis,
    new_figure,
    param_label,
    place_legend,
    profile_label,
    save_figure,
    set_title,
    short,
    styled,
    variant_colors,
    wrap,
)


# --------------------------------------------------------------------------------------
# Sweep tables
def swept_params(df: pd.DataFrame, varying_only: bool = True) -> list[str]:
    """Swept parameters: the scenario-path columns (dotted names) of a sweep table."""
    params = [c for c in df.columns if "." in c and c not in SWEEP_META]
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
    parts = [f"{k.rsplit('.', 1)[-1]}={short(v)}" for k, v in extra.items()]
    return variant if not parts else f"{variant}, " + ", ".join(parts)


#: More lines than this in one axes and a sweep's other parameters get a panel each.
MAX_LINES = 8


def _combo_key(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    return df[cols].astype(str).agg(" | ".join, axis=1) if cols else pd.Series("", index=df.index)


@styled
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
    colors = variant_colors(sweep["variant"])
    agg["_combo"] = _combo_key(agg, others)
    combos = list(dict.fromkeys(agg["_combo"]))
    facet = len(combos) > 1 and agg.groupby(["variant", "_combo"], observed=True).ngroups > MAX_LINES
    panels = combos if facet else [None]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    if facet:
        fig, axes = new_figure(4.0 * ncols + 2.2, 3.0 * nrows + 1.0, nrows=nrows, ncols=ncols, squeeze=False,
                                sharex=True, sharey=True)
    else:
        fig, axes = new_figure(squeeze=False)
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
            ax.set_title(", ".join(f"{o.rsplit('.', 1)[-1]}={short(v)}" for o, v in zip(others, combo.split(" | "))),
                         fontsize=10, loc="left")
        if reference is not None:
            ax.axhline(reference * scale, color="0.35", ls="--", lw=1)
        if agg.attrs.get("labels"):
            ax.set_xticks(range(len(agg.attrs["labels"])), [wrap(s) for s in agg.attrs["labels"]])
            ax.set_xlim(-0.5, len(agg.attrs["labels"]) - 0.5)
        if log_y:
            log_axis(ax.yaxis, ax.set_yscale)
        if log_x:
            log_axis(ax.xaxis, ax.set_xscale)
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
        set_title(axes[0, 0], heading, profile_label(sweep))
        place_legend(axes[0, 0], n, "variant")
    save_figure(fig, out_base)
    return fig


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
@styled
def plot_plan_probes(plan: pd.DataFrame, out_base: Path | None = None, target: float | None = None) -> Figure:
    """SLO attainment of every simulated probe against its decode GPUs: how the planner found the minimum.
    Filled markers met the SLO, hollow ones did not; a line per variant (and per rate when several)."""
    colors = variant_colors(plan["variant"])
    rates = plan["rate"].nunique() if "rate" in plan.columns else 1
    fig, ax = new_figure()
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
    set_title(ax, "Planner probes: SLO attainment vs decode GPUs", profile_label(plan))
    handles = ax.get_legend_handles_labels()[0] + [
        Line2D([], [], marker="o", ls="", color="0.3", label="meets SLO"),
        Line2D([], [], marker="o", ls="", mfc="white", mec="0.3", label="misses SLO")]
    ax.legend(handles=handles, loc="lower right" if n <= 4 else "upper left",
              bbox_to_anchor=None if n <= 4 else (1.01, 1.0), frameon=False)
    save_figure(fig, out_base)
    return fig


@styled
def plot_decode_gpus_needed(summary: pd.DataFrame, out_base: Path | None = None) -> Figure:
    """Decode GPUs each variant needs to meet the SLO (one plan): bars labelled with the count."""
    colors = variant_colors(summary["variant"])
    fig, ax = new_figure(6.5, 4.5)
    vals = pd.to_numeric(summary["min_decode_gpus"], errors="coerce")
    bars = ax.bar(summary["variant"].astype(str), vals.fillna(0), color=[colors[v] for v in summary["variant"]])
    labels = ["not met" if math.isnan(v) else f"{v:g}" for v in vals]
    ax.bar_label(bars, labels=labels, padding=3)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, max(1.0, float(vals.max(skipna=True) or 0)) * 1.18)
    ax.set_xlabel("variant")
    ax.set_ylabel("decode GPUs needed (count)")
    ax.grid(axis="x", visible=False)
    set_title(ax, "Decode GPUs needed to meet the SLO", profile_label(summary))
    save_figure(fig, out_base)
    return fig
