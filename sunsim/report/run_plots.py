"""Figures of one run folder: latency CDFs per variant and the decode workers' timeline."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sunsim.errors import InputError
from sunsim.report.load import RunData, load_run, require_columns, run_name
from sunsim.report.style import (
    LINESTYLES,
    MARKERS,
    MAX_WIDTH_IN,
    STYLE,
    graded,
    log_axis,
    new_figure,
    save_figure,
    styled,
    variant_colors,
)


def _cdf_points(values: np.ndarray, total: int, max_points: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF over ``total`` requests (those without a value never reach it), thinned for small files."""
    x = np.sort(values[np.isfinite(values)])
    y = np.arange(1, len(x) + 1) / max(total, 1)
    if len(x) > max_points:
        idx = np.unique(np.linspace(0, len(x) - 1, max_points).astype(int))
        x, y = x[idx], y[idx]
    return x, y


@styled
def plot_latency_cdfs(run: RunData | Path, out_base: Path | None = None) -> Figure:
    """TTFT and TPOT CDFs (one line per variant) with the SLO targets marked.
    Unfinished requests count as never meeting any latency, so a curve tops out at the finished share."""
    run = run if isinstance(run, RunData) else load_run(Path(run))
    if not run.requests:
        raise InputError(f"{run.path}: no per-variant requests tables to draw latency CDFs from")
    if run.missing_requests:  # a curve left out would read as a variant that was never run
        raise InputError(f"{', '.join(map(str, run.missing_requests))}: missing: cannot draw every variant's "
                         f"latency CDF")
    colors = variant_colors(run.comparison["variant"].astype(str))
    fig, (ax_ttft, ax_tpot) = new_figure(11, 4.6, ncols=2)
    n = len(run.requests)
    for k, (v, df) in enumerate(run.requests.items()):
        # Identical curves (the same prefill in every variant) all stay visible: each has its own dashes and
        # marker, widths fall with drawing order, and the markers of successive curves are staggered.
        look = graded(k, n)
        style = {"color": colors.get(v), "label": v, "gid": v, "ls": LINESTYLES[k % len(LINESTYLES)],
                 "lw": look["lw"] + 0.2, "marker": MARKERS[k % len(MARKERS)], "ms": look["ms"] * 0.7,
                 "markevery": (0.03 + 0.07 * k / max(n, 1), 0.07)}
        ttft = df["ttft_s"].to_numpy(dtype=float)
        ax_ttft.plot(*_cdf_points(ttft, len(ttft)), **style)
        multi = df[df["output_tokens"] > 1]
        tpot = multi["tpot_s"].to_numpy(dtype=float) * 1e3
        ax_tpot.plot(*_cdf_points(tpot, len(tpot)), **style)
    slo_ttft, slo_tpot = run.slo
    for ax, slo, scale, unit, name in ((ax_ttft, slo_ttft, 1.0, "s", "TTFT"), (ax_tpot, slo_tpot, 1e3, "ms", "TPOT")):
        log_axis(ax.xaxis, ax.set_xscale)
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
    # Outside the axes: inside, it would cover a curve or the SLO label whatever the corner.
    ax_tpot.legend(title="variant", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"Latency CDFs: {run_name(run)}; profile: {run.profile}", x=0.01, ha="left",
                 fontsize=STYLE["axes.titlesize"])
    save_figure(fig, out_base)
    return fig


def _binned_mean(t: np.ndarray, v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-weighted mean of a step function (value ``v[i]`` from ``t[i]``) over each bin.
    Averaging rather than sampling keeps short bursts visible after thinning."""
    dt = np.diff(np.append(t, max(edges[-1], t[-1])))
    cum = np.concatenate([[0.0], np.cumsum(v * dt)])
    knots = np.append(t, t[-1] + dt[-1])
    area = np.interp(edges, knots, cum, left=0.0, right=cum[-1])
    return np.diff(area) / np.diff(edges)


#: Width of one variant's column of the timeline, and the most columns side by side within the width cap.
TIMELINE_COL_IN = 3.6
TIMELINE_MAX_COLS = max(1, int((MAX_WIDTH_IN - 1.0) // TIMELINE_COL_IN))


@styled
def plot_timeline(timeline: pd.DataFrame, out_base: Path | None = None, profile: str = "profile not recorded",
                  bins: int = 400) -> Figure:
    """Per decode worker batch size (top) and KV occupancy (bottom) over time; one column per variant,
    a line per worker coloured by its pool. Values are time-weighted means over ``bins`` intervals.
    More variants than fit within :data:`MAX_WIDTH_IN` wrap into further rows of panels."""
    require_columns(timeline, {"variant", "worker", "pool", "time_s", "batch", "kv_fraction"}, Path("timeline"),
             "a decode timeline")
    variants = list(dict.fromkeys(timeline["variant"]))
    end = float(timeline["time_s"].max()) or 1.0
    edges = np.linspace(0.0, end, bins + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    pools = list(dict.fromkeys(timeline["pool"].astype(str)))
    pool_color = {p: f"C{i % 10}" for i, p in enumerate(pools)}
    ncols = min(len(variants), TIMELINE_MAX_COLS)
    blocks = -(-len(variants) // ncols)
    fig, grid = new_figure(TIMELINE_COL_IN * ncols + 1.0, 6.4 * blocks, nrows=2 * blocks, ncols=ncols, sharex=True,
                           squeeze=False)
    batch_axes, kv_axes = grid[0::2].ravel(), grid[1::2].ravel()
    for ax in batch_axes[1:]:
        ax.sharey(batch_axes[0])
    for ax in kv_axes[1:]:
        ax.sharey(kv_axes[0])
    for j, v in enumerate(variants):
        axes = (batch_axes[j], kv_axes[j])
        part = timeline[timeline["variant"] == v]
        for (_, pool), w in part.sort_values("time_s").groupby(["worker", "pool"], sort=True):
            t = w["time_s"].to_numpy(float)
            for ax, col, scale in ((axes[0], "batch", 1.0), (axes[1], "kv_fraction", 100.0)):
                ax.plot(mids, _binned_mean(t, w[col].to_numpy(float), edges) * scale,
                        color=pool_color[str(pool)], lw=1.0, alpha=0.85)
        axes[0].set_title(v, loc="left")
        axes[1].set_xlabel("simulated time (s)")
        axes[0].tick_params(labelbottom=True)
        shown = list(dict.fromkeys(part["pool"].astype(str)))
        workers = part["worker"].nunique()
        handles = [Line2D([], [], color=pool_color[p], lw=2, label=p) for p in shown]
        axes[1].legend(handles=handles, title=f"pool ({workers} workers)", loc="upper center",
                       bbox_to_anchor=(0.5, -0.28), ncol=min(len(shown), 3), frameon=False, fontsize=9)
        if j % ncols == 0:
            axes[0].set_ylabel("decode batch (requests)")
            axes[1].set_ylabel("KV cache occupied (%)")
        else:
            for ax in axes:
                ax.tick_params(labelleft=False)
    for ax in list(batch_axes[len(variants):]) + list(kv_axes[len(variants):]):
        ax.set_visible(False)
    # Limits once everything is drawn: from zero, up to the highest value of any panel sharing the axis.
    batch_axes[0].set_ylim(bottom=0)
    kv_axes[0].set_ylim(bottom=0)
    fig.suptitle(f"Decode workers over time (mean per {end / bins:.2g} s); profile: {profile}", x=0.01, ha="left",
                 fontsize=STYLE["axes.titlesize"])
    save_figure(fig, out_base)
    return fig
