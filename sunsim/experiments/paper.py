"""The paper's family of experiments: the base run and the skew, load and plan sweeps, the figures
drawn from them, and the findings on the headline table that say where sunsim and the paper differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sunsim.experiments.outputs import Outputs
from sunsim.experiments.wording import ok_rows, pct, range_text, served, span
from sunsim.report import markdown as report
from sunsim.report.markdown import RATE
from sunsim.report.style import keep_figure

#: Runs of the paper's family (``scenarios/experiments/<name>.yaml``), in the order they run.
PAPER_RUNS = ("paper",)
#: Sweeps of the paper's family, in the order they run.
PAPER_SWEEPS = ("skew", "load", "plan-skew")


def paper_figures(outputs: Outputs, fig_dir: Path) -> dict[str, str]:
    """The paper family's figures (PNG + SVG) in ``fig_dir``: stem -> caption, in the page's order."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    sw = {k: ok_rows(v) for k, v in outputs.sweeps.items()}
    figs: dict[str, str] = {}
    llama4 = sw["skew"][(sw["skew"]["model.preset"] == "llama-3.1-8b") & (sw["skew"]["model.tasks"].astype(str) == "4")]
    drop = ["model.preset", "model.tasks"]
    report.plot_throughput_vs_skew(llama4.drop(columns=drop), fig_dir / "throughput_vs_skew")
    figs["throughput_vs_skew"] = (f"Throughput per GPU vs skew (4 models, Llama-3.1-8B, {served(llama4)}, "
                                  f"{range_text(*span(llama4['decode_gpus']), '.0f')} decode GPUs)")
    report.plot_metric_vs_param(sw["skew"][sw["skew"]["variant"].isin(["dedicated", "sun"])
                                           & (sw["skew"]["model.preset"] == "llama-3.1-8b")].drop(columns="model.preset"),
                                "workload.popularity.s", "tpot_p90_s", fig_dir / "tpot_vs_skew_by_models",
                                title="TPOT p90 vs skew by number of task models")
    counts = sorted({int(m) for m in sw["skew"]["model.tasks"]})
    listed = ", ".join(map(str, counts[:-1])) + (" and " if len(counts) > 1 else "") + str(counts[-1])
    figs["tpot_vs_skew_by_models"] = f"TPOT p90 vs skew for {listed} task models (Llama-3.1-8B)"
    report.plot_decode_gpus_vs_param(sw["plan-skew"], out_base=fig_dir / "decode_gpus_vs_skew")
    plan = sw["plan-skew"]
    models = " and ".join(sorted({str(m) for m in plan.get("model.tasks", pd.Series([4]))}, key=int))
    figs["decode_gpus_vs_skew"] = (f"Decode GPUs needed to meet the SLO at {range_text(*span(plan['rate']), 'g')} req/s "
                                   f"vs skew, {models} models")
    report.plot_metric_vs_param(sw["plan-skew"], "workload.popularity.s", "goodput_rps_per_gpu",
                                fig_dir / "goodput_per_gpu_vs_skew", title="Goodput per GPU of each design's planned fleet vs skew")
    figs["goodput_per_gpu_vs_skew"] = (f"Goodput (the highest rate meeting the SLO attainment target) per GPU of each "
                                       f"design's own planned fleet ({range_text(*span(plan['goodput_gpus']), '.0f')} "
                                       "GPUs, prefill included) vs skew")
    report.plot_slo_vs_rate(sw["load"], fig_dir / "slo_vs_rate", target=0.9)
    outs = " and ".join(f"{v:g}" for v in sorted(sw["load"]["workload.output_tokens.mean"].unique()))
    figs["slo_vs_rate"] = f"SLO attainment vs request rate, mean outputs of {outs} tokens"
    report.plot_metric_vs_param(sw["load"], RATE, "tokens_per_s_per_decode_gpu", fig_dir / "throughput_vs_rate",
                                title="Throughput per decode GPU vs request rate")
    figs["throughput_vs_rate"] = f"Output tokens/s per decode GPU vs request rate, mean outputs of {outs} tokens"
    latency_cdfs(outputs.runs["paper"], fig_dir / "latency_cdfs")
    paper = pd.read_csv(outputs.runs["paper"] / "comparison.csv")
    figs["latency_cdfs"] = f"TTFT and TPOT distributions of the base experiment ({served(paper)})"
    return figs


def latency_cdfs(run_dir: Path, fig_base: Path) -> None:
    """The base run's latency CDFs, drawn from its per-request tables; a run folder with none (the repository
    keeps no per-request data) keeps the figure drawn with the run, else the error says what is missing."""
    run = report.load_run(run_dir)
    if run.requests or not keep_figure(run_dir.parent / "figures" / fig_base.name, fig_base):
        report.plot_latency_cdfs(run, fig_base)


def pooling_finding(table: pd.DataFrame) -> str:
    """How SUN's goodput-per-GPU ratio over dedicated pools (each on its planned fleet) moves with skew and model count."""
    parts = []
    for models, g in table.groupby("models", sort=True):
        g = g.sort_values("zipf_s")
        lo, hi = g.iloc[0], g.iloc[-1]
        trend = ("grows" if hi["sun_throughput_per_gpu_x"] > lo["sun_throughput_per_gpu_x"] * 1.02 else
                 "shrinks" if hi["sun_throughput_per_gpu_x"] < lo["sun_throughput_per_gpu_x"] * 0.98 else "stays level")
        parts.append(f"with {models} models it {trend} from {lo['sun_throughput_per_gpu_x']:.2f}x at Zipf "
                     f"{lo['zipf_s']:g} to {hi['sun_throughput_per_gpu_x']:.2f}x at Zipf {hi['zipf_s']:g}")
    return ("- **Pooling**: SUN's goodput per GPU over dedicated pools, each on its own planned fleet: "
            + "; ".join(parts) + ".")


def _fixed(skew: pd.DataFrame) -> pd.DataFrame:
    """The skew sweep's Llama-3.1-8B rows (every design on the same fixed decode layout), medians over seeds."""
    skew = ok_rows(skew)
    skew = skew[skew["model.preset"] == "llama-3.1-8b"] if "model.preset" in skew else skew
    keys = ["model.tasks", "workload.popularity.s", "variant"]
    return skew.groupby(keys, as_index=False)[["slo_attainment", "tokens_per_s_per_gpu", "tpot_p90_s",
                                               "decode_gpus"]].median()


def baselines_finding(skew: pd.DataFrame) -> str:
    """The even split against the traffic-sized one on the fixed layout, per number of models, at the highest skew."""
    fx = _fixed(skew)
    top = fx[fx["workload.popularity.s"] == fx["workload.popularity.s"].max()]
    parts = []
    for models, g in top.groupby("model.tasks"):
        v = g.set_index("variant")
        if {"dedicated", "dedicated-even"} <= set(v.index):
            even, sized = v.loc["dedicated-even"], v.loc["dedicated"]
            parts.append(f"{models} models: {even['slo_attainment']:.1%} of requests in SLO evenly split against "
                         f"{sized['slo_attainment']:.1%} sized to traffic ({even['tokens_per_s_per_gpu']:,.0f} against "
                         f"{sized['tokens_per_s_per_gpu']:,.0f} tok/s per GPU)")
    return (f"- **Two dedicated baselines** (fixed layout, Zipf {top['workload.popularity.s'].max():g}): "
            + "; ".join(parts) + ".") if parts else "- **Two dedicated baselines**: no fixed-layout rows."


def zipf_shares(models: int, s: float) -> list[float]:
    """Traffic shares of ``models`` models under Zipf popularity with exponent ``s`` (hottest first)."""
    w = [1.0 / (k ** s) for k in range(1, models + 1)]
    return [x / sum(w) for x in w]


def fixed_layout_finding(skew: pd.DataFrame) -> str | None:
    """The fixed-layout stress test and why its ratios pass the paper's: every design gets the same decode GPUs,
    dedicated split by traffic share with at least one per model, so the hottest model's pool caps what
    dedicated serves at (its GPUs / all GPUs) / (its share) of what one shared pool serves."""
    from sunsim.scenario import split_by_share

    fx = _fixed(skew)
    top = fx[fx["workload.popularity.s"] == fx["workload.popularity.s"].max()]
    parts = []
    for models, g in top.groupby("model.tasks"):
        v = g.set_index("variant")
        if not {"dedicated", "sun"} <= set(v.index):
            continue
        s, gpus = float(g["workload.popularity.s"].iloc[0]), int(v.loc["sun", "decode_gpus"])
        shares = zipf_shares(int(models), s)
        pools = split_by_share(gpus, np.array(shares))
        k = max(range(len(shares)), key=lambda i: shares[i] / pools[i])  # the pool that saturates first
        bound = shares[k] * gpus / pools[k]
        ded, sun = v.loc["dedicated"], v.loc["sun"]
        parts.append(f"{models} models on {gpus} decode GPUs: the model with the most traffic per GPU of its pool "
                     f"carries {shares[k]:.1%} of the traffic on {pools[k]} of them, so its pool saturates at "
                     f"1/{bound:.2f} of the load one shared pool of the same GPUs carries (measured: dedicated "
                     f"{ded['slo_attainment']:.1%} in SLO, TPOT p90 {ded['tpot_p90_s'] * 1e3:.0f} ms; SUN "
                     f"{sun['slo_attainment']:.1%}, {sun['tpot_p90_s'] * 1e3:.0f} ms)")
    if not parts:
        return None
    return (f"- **Fixed-layout stress test** (the skew sweep, every design on the same decode GPUs, Zipf "
            f"{top['workload.popularity.s'].max():g}): " + "; ".join(parts) + ". Ratios of this kind, "
            "not the planned fleets above, are where goodput ratios far past the paper's 2.0x come from: a layout "
            "fixed before the skew is known starves the hot model's pool.")


def strongest_alternative_finding(table: pd.DataFrame, tol: float = 0.02) -> str:
    """Where SUN still wins against the strongest alternative of each configuration, by how much, and where not."""
    x = table.dropna(subset=["sun_x_strongest"])
    if not len(x):
        return "- **Against the strongest alternative**: no plan gives goodput for the alternatives."
    wins = x[x["sun_x_strongest"] > 1 + tol]
    ties = x[(x["sun_x_strongest"] >= 1 - tol) & (x["sun_x_strongest"] <= 1 + tol)]
    losses = x[x["sun_x_strongest"] < 1 - tol]
    who = x["strongest_goodput"].value_counts()
    named = ", ".join(f"{v} in {n}" for v, n in who.items())

    def where(d: pd.DataFrame) -> str:
        return "; ".join(f"{r.models} models at Zipf {r.zipf_s:g} ({r.sun_x_strongest:.2f}x vs {r.strongest_goodput})"
                         for r in d.itertuples())

    parts = [f"- **Against the strongest alternative** (the highest goodput per GPU, each on its own planned fleet, "
             f"among dedicated, colocated and multi-LoRA; it is {named} of {len(x)} configurations): SUN's goodput per GPU is "
             f"{range_text(x['sun_x_strongest'].min(), x['sun_x_strongest'].max(), '.2f')}x of it. SUN wins by more than "
             f"{tol:.0%} in {len(wins)}"]
    if len(wins):
        parts.append(f" (most at {where(wins.nlargest(1, 'sun_x_strongest'))})")
    parts.append(f", is within {tol:.0%} in {len(ties)}")
    if len(ties):
        parts.append(f" ({where(ties)})")
    parts.append(f" and loses in {len(losses)}")
    if len(losses):
        parts.append(f" ({where(losses)})")
    saved = table["sun_gpus_saved_vs_fewest"].dropna()
    if len(saved):
        parts.append(f". In GPUs needed (prefill + decode), SUN saves {range_text(saved.min(), saved.max(), '.0%')} "
                     "against the alternative needing the fewest")
    return "".join(parts) + "."


def tpot_finding(table: pd.DataFrame) -> str:
    """SUN's mean TPOT against dedicated pools', only where both meet the SLO (elsewhere
    the one that misses it is not serving the same load)."""
    if "both_meet_slo" not in table:
        return "- **TPOT**: no configuration of the skew sweep matches the plan sweep."
    ok = table[table["both_meet_slo"].fillna(False).astype(bool)]
    if not len(ok):
        return "- **TPOT**: in no configuration do both designs meet the SLO."
    d = ok["sun_tpot_vs_dedicated"]
    word = ("the same as (within 1%)" if d.abs().max() <= 0.01 else "lower than" if d.max() < -0.01 else
            "the same as or lower than" if d.max() <= 0.01 else "higher than" if d.min() > 0.01 else
            "the same as or higher than" if d.min() >= -0.01 else "lower or higher, by configuration, than")
    return (f"- **TPOT** (fixed layout): in the {len(ok)} configurations where both meet the SLO, SUN's mean TPOT is "
            f"{word} dedicated pools' ({pct(d.min())} to {pct(d.max())}).")


def qsun_finding(table: pd.DataFrame) -> str:
    """What QSUN's int4 decode buys over SUN: a lower TPOT (the paper's measure, with the speed-up beside it), and
    fewer GPUs where the plans say so."""
    r = table["qsun_tpot_reduction"].dropna() if "qsun_tpot_reduction" in table else pd.Series(dtype=float)
    q = table["qsun_tpot_speedup_over_sun"].dropna() if "qsun_tpot_speedup_over_sun" in table else pd.Series(dtype=float)
    fewer = int((table["total_gpus_qsun"] < table["total_gpus_sun"]).sum())
    same = int((table["total_gpus_qsun"] == table["total_gpus_sun"]).sum())
    speed = (f"QSUN's mean TPOT is {range_text(r.min(), r.max(), '.0%')} lower than SUN's at the fixed layout (the "
             f"paper: up to 45%), a {range_text(1 + q.min(), 1 + q.max(), '.2f')}x speed-up") if len(r) else "no TPOT data"
    return (f"- **QSUN** (int4 decode on this profile): {speed}; it needs fewer GPUs than SUN in {fewer}, "
            f"as many in {same}, of {len(table)} planned configurations.")


def qsun_load_finding(load: pd.DataFrame) -> str | None:
    """QSUN in the paper's measure, the TPOT reduction ``1 - TPOT_qsun / TPOT_sun`` (and the speed-up), at the
    load sweep's lightest rate (small batches, as a latency measurement sees it) and its heaviest rate at which
    both designs still meet the SLO, per output length; medians over seeds of the TPOT p50."""
    load = ok_rows(load)
    load = load[load["variant"].isin(["sun", "qsun"])]
    if not len(load):
        return None
    key = ["workload.output_tokens.mean", RATE]
    tpot = load.pivot_table(index=key, columns="variant", values="tpot_p50_s", aggfunc="median")
    met = load.pivot_table(index=key, columns="variant", values="slo_attainment", aggfunc="min")
    batch = load.pivot_table(index=key, columns="variant", values="decode_mean_batch", aggfunc="median") \
        if "decode_mean_batch" in load else None
    parts = []
    for out, g in tpot.groupby(level=0):
        ok = g[(met.loc[g.index, "sun"] >= 0.9) & (met.loc[g.index, "qsun"] >= 0.9)]
        for label, idx in (("light load", g.index[0]), ("under load", ok.index[-1] if len(ok) else None)):
            if idx is None:
                continue
            sun, q = g.loc[idx, "sun"], g.loc[idx, "qsun"]
            b = f", mean decode batch {batch.loc[idx, 'sun']:.0f} / {batch.loc[idx, 'qsun']:.0f}" if batch is not None else ""
            parts.append(f"{out:g}-token outputs, {label} ({idx[1]:g} req/s{b}): TPOT p50 {sun * 1e3:.1f} -> "
                         f"{q * 1e3:.1f} ms, {1 - q / sun:.0%} lower ({sun / q:.2f}x)")
    return ("- **QSUN in the paper's measure** (TPOT reduction 1 - TPOT_QSUN / TPOT_SUN, load sweep, SUN / QSUN): "
            + "; ".join(parts) + ".") if parts else None
