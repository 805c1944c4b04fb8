"""Plotted reports of sunsim results: run folders, sweep tables and plan tables.

:func:`write_report` recognises what a path holds (:mod:`.report_load`), draws every figure
that fits (:mod:`.report_plots`, :mod:`.report_run_plots`) and writes a ``report.md``
embedding them, so a results folder becomes a readable document in one step. The figure
and loading functions are re-exported here, so ``from sunsim.report.markdown import ...`` reaches them all.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sunsim.errors import InputError
from sunsim.output import check_replaceable, mark, publish, staging, write_text
from sunsim.report.html import render_html
from sunsim.report.load import PlanData, RunData, SweepData, load_run, load_sources, run_name
from sunsim.report.run_plots import plot_latency_cdfs, plot_timeline
from sunsim.report.style import KEY_METRICS, METRICS, RATE, SKEW, keep_figure, param_label, profile_label, short
from sunsim.report.sweep_plots import (
    plot_decode_gpus_needed,
    plot_decode_gpus_vs_param,
    plot_metric_vs_param,
    plot_plan_probes,
    plot_slo_vs_rate,
    plot_throughput_vs_skew,
    swept_params,
)

__all__ = [
    "RATE", "SKEW", "PlanData", "RunData", "SweepData", "load_run", "load_sources", "plot_decode_gpus_needed",
    "plot_decode_gpus_vs_param", "plot_latency_cdfs", "plot_metric_vs_param", "plot_plan_probes",
    "plot_slo_vs_rate", "plot_throughput_vs_skew", "plot_timeline", "write_report",
]

MAX_RUNS = 12  # run folders drawn from one folder scan; more are listed but not plotted
MAX_TABLE_ROWS = 60
HTML = "report.html"


# --------------------------------------------------------------------------------------
# The report
@dataclass
class _Section:
    title: str
    intro: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file stem, caption)
    scenario: dict | None = None  # shown whole in the HTML report


class _Drawer:
    """Draws figures into the staging folder and numbers them for the report."""

    def __init__(self, fig_dir: Path, on_progress: Callable[[str], None] | None,
                 on_note: Callable[[str], None] | None = None, kept: Path | None = None):
        self.fig_dir = fig_dir
        self.kept = kept  # figures drawn earlier, for data no longer at hand
        self.on_progress = on_progress or (lambda _msg: None)
        self.on_note = on_note or (lambda msg: print(f"note: {msg}", file=sys.stderr))
        self.used: set[str] = set()

    def skip(self, section: _Section, note: str, printed: str) -> None:
        """A figure that cannot be drawn: a line in the report, and said aloud rather than left out silently."""
        section.intro.append(f"\n_{note}_")
        self.on_note(printed)

    def keep_or_skip(self, section: _Section, stem: str, caption: str, note: str, printed: str) -> None:
        """A figure whose data is not here: the one drawn earlier from it, when kept, else :meth:`skip`."""
        slug = _slug(stem)
        if self.kept is not None and slug not in self.used and keep_figure(self.kept / slug, self.fig_dir / slug):
            self.used.add(slug)
            section.figures.append((slug, f"{caption} (Drawn when the run was made: its data is not kept here.)"))
            self.on_note(f"{slug}: its data is not here: kept the figure drawn earlier")
        else:
            self.skip(section, note, printed)

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


def _numbers(df: pd.DataFrame, col: str, scale: float = 1.0) -> pd.Series | None:
    """A number column scaled to its unit (None when absent). The loader refuses text in number columns;
    this never multiplies a string anyway (``"1" * 100`` is a hundred ones, not a percentage)."""
    return pd.to_numeric(df[col], errors="coerce") * scale if col in df.columns else None


def _run_section(run: RunData, drawer: _Drawer, base: Path) -> _Section:
    name = run_name(run)
    where = _rel(run.path, base)
    sec = _Section(f"Run `{name}`" + (f" ({where})" if where != "." else ""), scenario=run.scenario or None)
    slo_ttft, slo_tpot = run.slo
    slo = f"; SLO TTFT <= {slo_ttft:g} s, TPOT <= {slo_tpot * 1e3:g} ms" if slo_ttft and slo_tpot else ""
    sec.intro += [f"Profile: **{run.profile}**{slo}.", ""]
    c = run.comparison.copy()
    table = pd.DataFrame({
        "variant": c["variant"], "mode": c.get("mode"), "dtype": c.get("dtype"),
        "GPUs prefill/decode": c.get("prefill_gpus").astype(str) + "/" + c.get("decode_gpus").astype(str)
        if {"prefill_gpus", "decode_gpus"} <= set(c.columns) else None,
        "tok/s per GPU": _numbers(c, "tokens_per_s_per_gpu"),
        "tok/s per decode GPU": _numbers(c, "tokens_per_s_per_decode_gpu"),
        "TTFT p90 (s)": _numbers(c, "ttft_p90_s"),
        "TPOT p90 (ms)": _numbers(c, "tpot_p90_s", 1e3),
        "SLO attainment (%)": _numbers(c, "slo_attainment", 100.0),
        "request goodput (req/s, vLLM)": _numbers(c, "request_goodput"),  # absent from older results
        "profile": c.get("profile"),
    }).dropna(axis=1, how="all")
    sec.intro += _md_table(table)
    stem = name if name == run.path.name else f"{name}-{run.path.name}"
    cdf_caption = (f"TTFT and TPOT CDFs per variant of run `{name}`; dashed lines are the SLO targets; unfinished "
                   f"requests never reach a value. Profile: {run.profile}.")
    if run.missing_requests:
        files = ", ".join(f"`{p.parent.name}/{p.name}`" for p in run.missing_requests)
        note = f"Missing {files}: latency CDF figure skipped (it needs every variant's per-request table)."
        printed = f"{', '.join(map(str, run.missing_requests))} missing: latency CDF figure of run `{name}` skipped"
        if run.requests:
            drawer.skip(sec, note, printed)
        else:  # none at all: a run folder as the repository keeps it
            drawer.keep_or_skip(sec, f"{stem}-latency-cdf", cdf_caption, note, printed)
    elif run.requests:
        drawer.draw(sec, f"{stem}-latency-cdf", cdf_caption, plot_latency_cdfs, run)
    timeline_caption = (f"Batch size and KV-cache occupancy of every decode worker over time (a line per worker, "
                        f"coloured by pool), run `{name}`. Profile: {run.profile}.")
    if run.timeline is not None and len(run.timeline):
        drawer.draw(sec, f"{stem}-timeline", timeline_caption, plot_timeline, run.timeline, profile=run.profile)
    else:
        drawer.keep_or_skip(sec, f"{stem}-timeline", timeline_caption,
                            "No decode timeline (timeline.csv) in this run folder: worker figure skipped.",
                            f"{run.path}: no timeline.csv: worker figure of run `{name}` skipped")
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
                     + (f"; fixed: {', '.join(f'{k}={short(v)}' for k, v in fixed.items())}." if fixed else "."))
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
            drawer.draw(sec, f"{sw.path.stem}-decode-gpus-vs-{p}", f"Decode GPUs needed to meet the SLO vs "
                        f"{param_label(p)}, a line per variant.{note} Profile: {prof}.", plot_decode_gpus_vs_param,
                        ok, p)
            done.add((p, "min_decode_gpus"))
    for p in params:
        for m in KEY_METRICS:
            if m in ok.columns and (p, m) not in done and ok[m].notna().any():
                drawer.draw(sec, f"{sw.path.stem}-{m}-vs-{p}", f"{METRICS[m][0]} vs {param_label(p)}, a line per "
                            f"variant.{note} Profile: {prof}.", plot_metric_vs_param, ok, p, m)
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
    sec = _Section(f"Plan `{_rel(plan.path, base)}`", scenario=plan.scenario or None)
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
                 on_progress: Callable[[str], None] | None = None,
                 on_note: Callable[[str], None] | None = None, source_label: str | None = None,
                 html: bool = False, kept_figures: Path | None = None) -> Path:
    """Draw every figure that fits ``source`` (a run folder, a sweep/plan table or a folder of them) and
    write ``report.md`` with figures under ``figures/``. Inputs are loaded and checked first and output is
    staged then moved into place, so a bad input raises ValueError and writes nothing. A figure skipped
    for want of data gets a line in the report and a call of ``on_note`` (default: printed to stderr).
    ``source_label`` is what the report names as its source (default: ``source``; results built in a
    staging folder name where they are published). With ``html``, ``report.html`` is written beside it: the
    same report in one self-contained file (:mod:`sunsim.report.html`). ``kept_figures``: the figures of an
    earlier report of the same source, kept for runs whose per-request tables or timelines are no longer there
    (the repository keeps neither). Returns report.md."""
    source = Path(source)
    found = load_sources(source)
    runs = [f for f in found if isinstance(f, (RunData, Path))]
    skipped = [p for p in runs[MAX_RUNS:] if isinstance(p, Path)]
    runs = [r if isinstance(r, RunData) else load_run(r) for r in runs[:MAX_RUNS]]
    sweeps = [f for f in found if isinstance(f, SweepData)]
    plans = [f for f in found if isinstance(f, PlanData)]
    base = source if source.is_dir() else source.parent
    out_dir = Path(out_dir) if out_dir else default_report_folder(source)

    def build(stage: Path) -> str:
        drawer = _Drawer(stage / "figures", on_progress, on_note, kept_figures)
        sections = [_run_section(r, drawer, base) for r in runs]
        sections += [_sweep_section(s, drawer, base) for s in sweeps]
        sections += [_plan_section(p, drawer, base) for p in plans]
        if len(plans) > 1 and (across := _plans_vs_skew(plans, drawer)) is not None:
            sections.append(across)
        (stage / "figures").mkdir(exist_ok=True)
        label = Path(source_label) if source_label else source
        if html:
            write_text(stage / HTML, render_html(sections, label, skipped, stage / "figures"))
        return _render(sections, label, skipped)

    _write_staged(out_dir, build)
    if not html:  # an earlier --html report's page would describe figures no longer there
        (out_dir / HTML).unlink(missing_ok=True)
    return out_dir / "report.md"


def default_report_folder(source: Path) -> Path:
    """``<folder>/report`` beside (or inside) what is reported on."""
    return (source if source.is_dir() else source.parent) / "report"


def _write_staged(out_dir: Path, build: Callable[[Path], str]) -> None:
    """Every write of a report: ``build`` draws figures into a staging folder inside ``out_dir`` and returns
    the Markdown; only a complete report is moved into place, and a failure leaves nothing behind.

    ``out_dir`` is a report folder (new, empty, or marked by an earlier report; the project's one output
    rule); the report replaces its own entries (``report.md`` and its marked ``figures/``).
    """
    check_replaceable(out_dir, ("figures",), ("report.md", HTML), "--out", command="report")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot write the report there ({exc.strerror})") from None
    with staging(out_dir) as stage:
        md = build(stage)
        (stage / "figures").mkdir(exist_ok=True)
        mark(stage / "figures", {"command": "report"})
        write_text(stage / "report.md", md)
        mark(stage, {"command": "report"})
        publish(stage, out_dir, require_marker=True)
