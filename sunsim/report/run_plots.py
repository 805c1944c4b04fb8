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
from sunsim.report.style import STYLE, log_axis, new_figure, save_figure, styled, variant_colors


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


@styled
def plot_timeline(timeline: pd.DataFrame, out_base: Path | None = None, profile: str = "profile not recorded",
                  bins: int = 400) -> Figure:
    """Per decode worker batch size (top) and KV occupancy (bottom) over time; one column per variant,
    a line per worker coloured by its pool. Values are time-weighted means over ``bins`` intervals."""
    require_columns(timeline, {"variant", "worker", "pool", "time_s", "batch", "kv_fraction"}, Path("timeline"),
             "a decode timeline")
    variants = list(dict.fromkeys(timeline["variant"]))
    end = float(timeline["time_s"].max()) or 1.0
    edges = np.linspace(0.0, end, bins + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    pools = list(dict.fromkeys(timeline["pool"].astype(str)))
    pool_color = {p: f"C{i % 10}" for i, p in enumerate(pools)}
    fig, axes = new_figure(3.9 * len(variants) + 1.0, 6.4, nrows=2, ncols=len(variants), sharex=True,
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
