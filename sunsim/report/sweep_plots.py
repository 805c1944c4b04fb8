"""Figures of sweep tables and plan tables: a metric against a swept parameter, planner results.

Each ``plot_*`` function draws one figure from a results table, saves it as PNG and SVG
when given ``out_base`` (a path without suffix) and returns the matplotlib ``Figure``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sunsim.errors import InputError
from sunsim.report.style import (
    LINESTYLES,
    MARKERS,
    METRICS,
    RATE,
    SKEW,
    SWEEP_META,
    coinciding,
    dodge_offsets,
    graded,
    log_axis,
    new_figure,
    param_label,
    param_name,
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
    parts = [f"{param_name(k)} = {short(v)}" for k, v in extra.items()]
    return variant if not parts else f"{variant}, " + ", ".join(parts)


#: More lines than this in one axes and a sweep's other parameters get a panel each.
MAX_LINES = 8


def _combo_key(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    return df[cols].astype(str).agg(" | ".join, axis=1) if cols else pd.Series("", index=df.index)


def _scaled(values, log: bool) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(v) if log else v


def _shift(x, offset: float, log: bool):
    """``x`` moved sideways by ``offset`` (in decades on a log axis)."""
    return x * 10.0 ** offset if log else x + offset


@styled
def plot_metric_vs_param(sweep: pd.DataFrame, param: str, metric: str, out_base: Path | None = None,
                         title: str | None = None, reference: float | None = None) -> Figure:
    """``metric`` against swept ``param``: one line per variant (and per value of other swept
    parameters), averaged over seeds with the min-max range shaded when there are several.

    When the other swept parameters would make more than :data:`MAX_LINES` lines, each of
    their combinations gets its own panel (small multiples) with one line per variant.
    Latencies spanning more than a decade are drawn on a log axis.

    Every series has its own marker and line style; when two series share a point, all are drawn
    side by side (a small sideways offset) with marker size and width falling in drawing order, so
    none hides another. Axis limits are set once all panels are drawn and hold every point.
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
    values = agg["mean"] * scale
    log_y = metric.endswith("_s") and values.min() > 0 and values.max() / values.min() > 20
    xs = agg["_x"]
    log_x = not agg.attrs.get("labels") and xs.min() > 0 and xs.max() / xs.min() >= 100
    variants = list(dict.fromkeys(agg["variant"]))
    # The series, in drawing order: per panel, a line per variant (and per other-parameter combination).
    drawn = [[(variant, key, part) for (variant, key), part
              in (agg if combo is None else agg[agg["_combo"] == combo]).groupby(
                  ["variant", "_combo"], sort=False, observed=True)] for combo in panels]
    series = list(dict.fromkeys((v, None if facet else key) for panel in drawn for v, key, _ in panel))
    y_all = _scaled(values, log_y)
    y_span = float(np.nanmax(y_all) - np.nanmin(y_all)) if np.isfinite(y_all).any() else 0.0
    ties = any(coinciding([(part["_x"], _scaled(part["mean"] * scale, log_y)) for _, _, part in panel],
                          0.01 * y_span) for panel in drawn)
    x_all = _scaled(xs, log_x)
    offsets = dodge_offsets(len(series), float(x_all.max() - x_all.min())) if ties else [0.0] * len(series)
    for k, panel in enumerate(drawn):
        ax = axes.flat[k]
        for variant, key, part in panel:
            j = series.index((variant, None if facet else key))
            look = graded(j, len(series)) if ties else {"ms": 5.5, "lw": 1.6}
            # Facets: marker and style per variant; one panel: marker per series, style per combination.
            ls = LINESTYLES[(variants.index(variant) if facet or len(combos) == 1 else combos.index(key))
                            % len(LINESTYLES)]
            extra = {} if facet else dict(zip(others, part[others].iloc[0]))
            name = _group_label(variant, extra)
            x = _shift(part["_x"], offsets[j], log_x)
            ax.plot(x, part["mean"] * scale, color=colors[variant], ls=ls, marker=MARKERS[j % len(MARKERS)],
                    label=name, gid=name, **look)
            if (part["n"] > 1).any():
                ax.fill_between(x, part["lo"] * scale, part["hi"] * scale, color=colors[variant], alpha=0.15,
                                lw=0, gid=name)
        if facet:
            ax.set_title(", ".join(f"{param_name(o)} = {short(v)}" for o, v in zip(others, panels[k].split(" | "))),
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
        # Set once, after every panel is drawn: the axes share y, and a limit set while drawing the first
        # panel would cut off the others' higher counts.
        top = max(float(pd.concat([agg["hi"], agg["mean"]]).max() * scale), reference * scale if reference else 0)
        for ax in axes.flat:
            ax.yaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(0, (top if math.isfinite(top) and top > 0 else 1.0) * 1.08)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1, :]:
        ax.set_xlabel(param_label(param))
    for ax in axes[:, 0]:
        ax.set_ylabel(label)
    seeds = int(sweep["seed"].nunique()) if "seed" in sweep.columns else 1
    note = f" (mean of {seeds} seeds, band = min-max)" if seeds > 1 else ""
    heading = (title or f"{label.split(' (')[0]} vs {param_name(param)}") + note
    if facet:
        fig.suptitle(f"{heading}\nprofile: {profile_label(sweep)}", x=0.01, ha="left")
        handles: dict[str, object] = {}
        for ax in axes.flat[:len(panels)]:  # every variant, even one missing from the first panel
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.legend(list(handles.values()), list(handles), title="variant", loc="outside right upper", frameon=False)
    else:
        set_title(axes[0, 0], heading, profile_label(sweep))
        place_legend(axes[0, 0], len(drawn[0]), "variant")
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
                                title=f"Decode GPUs needed vs {'popularity skew' if param == SKEW else param_name(param)}")


# --------------------------------------------------------------------------------------
# Plan tables
@styled
def plot_plan_probes(plan: pd.DataFrame, out_base: Path | None = None, target: float | None = None) -> Figure:
    """SLO attainment of every simulated probe against its decode GPUs: how the planner found the minimum.
    Filled markers met the SLO, hollow ones did not; a line per variant (and per rate when several), each
    with its own marker and line style, drawn side by side where two variants probed the same point."""
    colors = variant_colors(plan["variant"])
    rates = plan["rate"].nunique() if "rate" in plan.columns else 1
    fig, ax = new_figure()
    keys = ["variant", "rate"] if rates > 1 else ["variant"]
    groups = [(key if isinstance(key, tuple) else (key,), part.sort_values("decode_gpus"))
              for key, part in plan.groupby(keys, sort=False)]
    n = len(groups)
    ties = coinciding([(part["decode_gpus"], part["slo_attainment"] * 100) for _, part in groups], 0.5)
    gpus = pd.to_numeric(plan["decode_gpus"], errors="coerce")
    offsets = dodge_offsets(n, max(float(gpus.max() - gpus.min()), 2.0) * 2) if ties else [0.0] * n
    handles = []
    for j, (key, part) in enumerate(groups):
        c = colors[key[0]]
        label = key[0] if rates == 1 else f"{key[0]} @ {key[1]:g} req/s"
        look = graded(j, n) if ties else {"ms": 6.0, "lw": 1.4}
        marker, ls = MARKERS[j % len(MARKERS)], LINESTYLES[j % len(LINESTYLES)]
        x, y = part["decode_gpus"] + offsets[j], part["slo_attainment"] * 100
        ax.plot(x, y, color=c, lw=look["lw"], ls=ls, label=label, gid=label)
        met = part["meets_slo"].astype(str).str.lower().isin(["true", "1", "1.0"])
        size = (look["ms"] + 1.0) ** 2
        ax.scatter(x[met], y[met], color=c, marker=marker, zorder=3 + 0.01 * j, s=size, gid=label)
        ax.scatter(x[~met], y[~met], facecolor="white", edgecolor=c, marker=marker, zorder=3 + 0.01 * j, s=size,
                   gid=label)
        handles.append(Line2D([], [], color=c, ls=ls, lw=look["lw"], marker=marker, label=label))
    if target is not None:
        ax.axhline(target * 100, color="0.35", ls="--", lw=1)
        ax.annotate(f"target {target:.0%}", (1.0, target * 100), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=9, color="0.35")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("decode GPUs (count)")
    ax.set_ylabel("SLO attainment (% of requests)")
    set_title(ax, "Planner probes: SLO attainment vs decode GPUs", profile_label(plan))
    handles += [
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
