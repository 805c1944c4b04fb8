"""Figures read back from what was drawn: every point inside the visible limits, every legend entry a
series with pixels of its own on screen, labels in words, titles inside the figure, bounded width.

Each check reads the drawn axes, legends and pixels of figures the project's plotting functions made.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from sunsim.cli import main
from sunsim.report.markdown import (
    RATE,
    SKEW,
    load_run,
    plot_decode_gpus_vs_param,
    plot_latency_cdfs,
    plot_metric_vs_param,
    plot_plan_probes,
    plot_slo_vs_rate,
    plot_timeline,
)
from sunsim.report.style import DPI, param_label

ROOT = Path(__file__).resolve().parents[1]
#: Widest figure allowed, in pixels as saved.
MAX_WIDTH_PX = 2400
#: Legend entries that are keys to a marker's fill, not series.
KEYS = {"meets SLO", "misses SLO"}
DOTTED_KEY = re.compile(r"[A-Za-z_]\.[A-Za-z_]")


# --------------------------------------------------------------------------------------
# Reading a drawn figure
def legends(fig: Figure) -> list[Legend]:
    found = [ax.get_legend() for ax in fig.axes] + list(fig.legends)
    return [lg for lg in found if lg is not None]


def legend_entries(fig: Figure) -> list[str]:
    return [t.get_text() for lg in legends(fig) for t in lg.get_texts() if t.get_text() not in KEYS]


def series_artists(ax) -> dict[str, list]:
    """Per series label: the artists drawing it in ``ax`` (its line, and what carries its gid: bands, markers)."""
    out: dict[str, list] = {}
    for line in ax.lines:
        label = line.get_label()
        if not label.startswith("_") and len(line.get_xdata()):
            out.setdefault(label, []).append(line)
    for art in list(ax.collections) + list(ax.lines):
        gid = art.get_gid()
        if gid in out and art not in out[gid]:
            out[gid].append(art)
    return out


def drawn_series(fig: Figure) -> list[str]:
    return list(dict.fromkeys(label for ax in fig.axes if ax.get_visible() for label in series_artists(ax)))


def _display_points(art) -> np.ndarray:
    if isinstance(art, PathCollection) and len(art.get_offsets()):
        return art.get_offset_transform().transform(np.asarray(art.get_offsets(), float))
    if hasattr(art, "get_xydata"):
        xy = np.asarray(art.get_xydata(), float)
        xy = xy[np.isfinite(xy).all(axis=1)]
        return art.get_transform().transform(xy) if len(xy) else np.empty((0, 2))
    paths = [p.vertices for p in art.get_paths() if len(p.vertices)]
    if not paths:
        return np.empty((0, 2))
    xy = np.concatenate(paths)
    return art.get_transform().transform(xy[np.isfinite(xy).all(axis=1)])


def assert_data_inside_limits(fig: Figure) -> None:
    """Every point of every line, marker set and band lies inside the visible area of its axes."""
    fig.canvas.draw()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        box = ax.bbox
        for art in list(ax.lines) + list(ax.collections):
            pts = _display_points(art)
            assert np.isfinite(pts).all(), f"{art} has points the axes cannot show (log of <= 0?)"
            outside = ~((pts[:, 0] >= box.x0 - 1) & (pts[:, 0] <= box.x1 + 1)
                        & (pts[:, 1] >= box.y0 - 1) & (pts[:, 1] <= box.y1 + 1))
            assert not outside.any(), (
                f"panel {ax.get_title(loc='left')!r}: {int(outside.sum())} points of {art.get_label()!r} outside "
                f"xlim={ax.get_xlim()} ylim={ax.get_ylim()}")


def _pixels(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def assert_every_series_visible(fig: Figure, min_pixels: int = 10) -> None:
    """Hiding any one series changes pixels of its panel: no series lies wholly under the others."""
    base = _pixels(fig)
    fig.set_layout_engine("none")  # the layout is settled: hiding a series must not move anything
    height = base.shape[0]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        b = ax.bbox
        rows = slice(max(0, int(height - b.y1)), int(height - b.y0) + 1)
        cols = slice(max(0, int(b.x0)), int(b.x1) + 1)
        for label, arts in series_artists(ax).items():
            for a in arts:
                a.set_visible(False)
            changed = np.abs(_pixels(fig)[rows, cols] - base[rows, cols]).max(axis=2) > 80
            for a in arts:
                a.set_visible(True)
            assert changed.sum() >= min_pixels, \
                f"series {label!r} is hidden under others in panel {ax.get_title(loc='left')!r}"


def assert_legend_is_the_series(fig: Figure) -> None:
    """Legend entries are exactly the series drawn, once each, and no two look alike (marker, line style)."""
    entries, series = legend_entries(fig), drawn_series(fig)
    assert sorted(entries) == sorted(series), (entries, series)
    looks = []
    for lg in legends(fig):
        for handle, text in zip(lg.legend_handles, lg.get_texts()):
            if text.get_text() not in KEYS:
                looks.append((handle.get_marker(), handle.get_linestyle()))
    assert len(set(looks)) == len(looks), f"legend entries that look alike: {list(zip(entries, looks))}"


def texts_of(fig: Figure) -> list[str]:
    out = [fig.get_suptitle()]
    for ax in fig.axes:
        if ax.get_visible():
            out += [ax.get_xlabel(), ax.get_ylabel()] + [ax.get_title(loc=loc) for loc in ("left", "center", "right")]
    for lg in legends(fig):
        out += [t.get_text() for t in lg.get_texts()] + [lg.get_title().get_text()]
    return [t for t in out if t]


def assert_human_labels(fig: Figure) -> None:
    dotted = [t for t in texts_of(fig) if DOTTED_KEY.search(t)]
    assert not dotted, f"dotted scenario keys in labels: {dotted}"


def assert_titles_and_legends_inside(fig: Figure) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    w, h = fig.bbox.width, fig.bbox.height
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        if ax.get_visible():
            texts += [ax.title, ax._left_title, ax._right_title]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]
    boxes += [(f"legend {lg.get_title().get_text()!r}", lg.get_window_extent(renderer)) for lg in legends(fig)]
    for what, box in boxes:
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= w + 1 and box.y1 <= h + 1, \
            f"{what!r} is clipped: {box} outside the {w:.0f}x{h:.0f} figure"


def check_figure(fig: Figure, series: bool = True) -> None:
    assert_data_inside_limits(fig)
    assert_human_labels(fig)
    assert_titles_and_legends_inside(fig)
    if series:
        assert_legend_is_the_series(fig)
        assert_every_series_visible(fig)


# --------------------------------------------------------------------------------------
# Small tables shaped like the experiments' own
VARIANTS = ["dedicated", "dedicated-even", "dedicated-int4", "colocated", "multi-lora", "sun", "qsun"]


def plan_skew_table() -> pd.DataFrame:
    """Decode GPUs needed per skew for 4 and 8 task models: dedicated pools need a GPU per model (8-10 GPUs
    at 8 models) while the shared pool needs 4, and several variants tie exactly."""
    rows = []
    for tasks in (4, 8):
        for s in (0.0, 0.5, 1.0, 1.5, 2.0):
            for seed in (1, 2):
                extra = int(s >= 1.0) + int(s >= 1.5)
                need = {"dedicated": tasks + extra, "dedicated-even": tasks + extra, "dedicated-int4": tasks + extra,
                        "colocated": 6 if tasks == 4 else (np.nan if s == 0 else 7), "multi-lora": 4, "sun": 4,
                        "qsun": 4}
                rows += [{"point": len(rows), "seed": seed, "model.tasks": tasks, SKEW: s, "variant": v,
                          "min_decode_gpus": n, "rate": 240, "profile": "analytic-h100", "status": "ok"}
                         for v, n in need.items()]
    return pd.DataFrame(rows)


def load_table() -> pd.DataFrame:
    """SLO attainment vs rate for two output lengths: at 100 tokens every variant meets the SLO at every rate
    (six identical lines at 100%), at 400 they fall apart."""
    rows = []
    for mean in (100, 400):
        for rate in (60, 120, 240, 480):
            for seed in (1, 2):
                for k, v in enumerate(VARIANTS[:6]):
                    att = 1.0 if mean == 100 else min(1.0, 150 / rate * (1 + 0.1 * k))
                    rows.append({"point": len(rows), "seed": seed, "workload.output_tokens.mean": mean, RATE: rate,
                                 "variant": v, "slo_attainment": att, "tpot_p90_s": 0.01 + 0.001 * k * (mean == 400),
                                 "profile": "analytic-h100", "profile_kind": "analytic", "status": "ok"})
    return pd.DataFrame(rows)


def plan_probes_table() -> pd.DataFrame:
    """Probes of a plan where two variants probe the same counts with the same attainment."""
    rows = []
    for v, att in (("dedicated", [0.4, 0.8, 0.95, 1.0]), ("dedicated-even", [0.4, 0.8, 0.95, 1.0]),
                   ("sun", [0.85, 0.97, 1.0, 1.0])):
        for gpus, a in zip((2, 3, 4, 5), att):
            rows.append({"variant": v, "rate": 120.0, "decode_gpus": gpus, "slo_attainment": a,
                         "meets_slo": a >= 0.9, "profile": "analytic-h100"})
    return pd.DataFrame(rows)


def timeline_table(variants: int = 6, workers: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for v in range(variants):
        for w in range(workers):
            for t in np.linspace(0, 10, 60):
                rows.append({"variant": f"v{v}", "worker": w, "pool": "shared" if v % 2 else f"task{w}",
                             "time_s": t, "batch": int(rng.integers(0, 40)), "kv_fraction": rng.uniform(0, 0.9)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
def test_decode_gpus_vs_skew_shows_every_panel_whole() -> None:
    """The 8-model panel's dedicated pools (8-10 GPUs) must lie inside its y limits: a limit set inside the
    loop over panels with shared y axes once cut them off at the 4-model panel's top."""
    fig = plot_decode_gpus_vs_param(plan_skew_table(), SKEW)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2  # one panel per model count
    assert_data_inside_limits(fig)
    for ax in fig.axes:
        assert ax.get_ylim()[0] == 0  # counts from zero
    check_figure(fig)


def test_slo_vs_rate_shows_every_legend_series() -> None:
    """Six variants at 100% attainment everywhere: each one still has pixels of its own."""
    fig = plot_slo_vs_rate(load_table(), target=0.9)
    check_figure(fig)
    assert len(legend_entries(fig)) == 6


def test_metric_in_one_panel_with_ties() -> None:
    """One panel (few lines), tied values, a swept key with no label of its own."""
    table = load_table()
    table = table[table["workload.output_tokens.mean"] == 100].drop(columns="workload.output_tokens.mean")
    table = table.rename(columns={RATE: "workload.burst_rate"})
    fig = plot_metric_vs_param(table, "workload.burst_rate", "slo_attainment", reference=0.9)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_xlabel() == "burst rate (requests/s)"
    check_figure(fig)


def test_long_title_is_wrapped_not_clipped() -> None:
    """A caller's long title over a categorical sweep (routing policies): the title wraps inside the figure."""
    rows = [{"point": i, "seed": seed, "variants.routing": pol, "variant": v, "tpot_p90_s": 0.011 + 0.001 * i + k * 0.002,
             "profile": "analytic-h100", "profile_kind": "analytic", "status": "ok"}
            for i, pol in enumerate(["round_robin", "least_loaded", "least_kv", "power_of_two"])
            for seed in (1, 2) for k, v in enumerate(["sun", "qsun"])]
    fig = plot_metric_vs_param(pd.DataFrame(rows), "variants.routing", "tpot_p90_s",
                               title="TPOT p90 by decode routing policy (321 req/s completed, 4 models, H100)")
    assert fig.axes[0].get_xlabel() == "decode routing policy"
    check_figure(fig)


def test_plan_probes_show_tied_variants() -> None:
    fig = plot_plan_probes(plan_probes_table(), target=0.9)
    check_figure(fig)


def test_timeline_width_is_bounded() -> None:
    """Six variants side by side made a 3,660 px figure: panels wrap into rows instead."""
    fig = plot_timeline(timeline_table(6), profile="analytic-h100")
    assert fig.get_figwidth() * DPI <= MAX_WIDTH_PX, fig.get_figwidth() * DPI
    check_figure(fig, series=False)
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_visible()]
    assert [f"v{i}" for i in range(6)] == [t for t in titles if t]  # every variant still has its panels


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "default"
    assert main(["run", str(ROOT / "scenarios" / "default.yaml"), "--out", str(out),
                 "--set", "workload.duration_s=10"]) == 0
    return out


def test_run_figures(run_dir: Path) -> None:
    """The latency CDFs (identical TTFT curves: the same prefill in every variant) and the timeline of a run."""
    run = load_run(run_dir)
    check_figure(plot_latency_cdfs(run))
    fig = plot_timeline(run.timeline, profile=run.profile)
    assert fig.get_figwidth() * DPI <= MAX_WIDTH_PX
    check_figure(fig, series=False)


@pytest.mark.parametrize("key, label", [
    ("workload.rate", "request rate (requests/s)"),
    (SKEW, "popularity skew, Zipf s (higher = more skewed)"),
    ("workload.duration_s", "workload duration (s)"),
    ("interconnect.bandwidth_GBps", "interconnect bandwidth (GB/s)"),
    ("workload.output_tokens.mean", "mean output tokens"),
    ("decode.max_batch", "max batch"),
    ("prefill.workers", "workers (GPUs)"),
    ("workload.burst_rate", "burst rate (requests/s)"),
])
def test_param_labels_are_words(key: str, label: str) -> None:
    assert param_label(key) == label
