"""Experiments beyond the paper: a real trace, bursty arrivals, a popularity shift (with rebalanced
dedicated pools among the stronger baselines), short outputs, decode routing and the interconnect.

Their figures and findings, and the table of every run's results that opens their section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sunsim.experiments.outputs import Outputs
from sunsim.experiments.wording import ok_rows, range_text, served, span, versus
from sunsim.report import markdown as report
from sunsim.report.style import keep_figure

#: Runs beyond the paper (``scenarios/experiments/<name>.yaml``), in the order they run.
BEYOND_RUNS = ("trace", "burst", "shift", "baselines")
#: Sweeps beyond the paper, in the order they run.
BEYOND_SWEEPS = ("routing", "interconnect", "short-outputs")


def beyond_figures(outputs: Outputs, fig_dir: Path) -> dict[str, str]:
    """The figures beyond the paper (PNG + SVG) in ``fig_dir``: stem -> caption, in the page's order."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    sw = {k: ok_rows(v) for k, v in outputs.sweeps.items()}
    figs: dict[str, str] = {}
    shift = report.load_run(outputs.runs["shift"])
    if shift.timeline is not None:
        report.plot_timeline(shift.timeline, fig_dir / "shift_timeline", profile=shift.profile)
    # (the repository keeps no timelines: without one, the figure drawn with the run stays)
    if shift.timeline is not None or keep_figure(outputs.runs["shift"].parent / "figures" / "shift_timeline",
                                                 fig_dir / "shift_timeline"):
        figs["shift_timeline"] = "Batch size and KV occupancy per decode worker when the hot model changes mid-run"
    routing = _routing_rows(sw["routing"]).rename(columns={POLICY: "variants.routing"})
    report.plot_metric_vs_param(routing, "variants.routing", "tpot_p90_s", fig_dir / "routing",
                                title=f"TPOT p90 by decode routing policy ({served(routing)})")
    figs["routing"] = f"Decode routing policies of the shared pool ({served(routing)})"
    report.plot_metric_vs_param(sw["interconnect"], "interconnect.bandwidth_GBps", "kv_wait_mean_s",
                                fig_dir / "kv_wait_vs_bandwidth", title="KV hand-off time vs interconnect bandwidth")
    figs["kv_wait_vs_bandwidth"] = "Mean first-token-to-KV-in-decode time vs interconnect bandwidth"
    return figs


def interconnect_finding(ic: pd.DataFrame, target: float = 0.9) -> str | None:
    """Where the KV hand-off starts to cost more than the whole TTFT, and where TPOT breaks."""
    ic = ok_rows(ic)
    ic = ic[ic["variant"] == "sun"].sort_values("interconnect.bandwidth_GBps")
    slow = ic[ic["kv_wait_mean_s"] > ic["ttft_mean_s"]]
    if not len(slow):
        return (f"- **interconnect**: the KV hand-off takes less than the TTFT at every bandwidth tried, from "
                f"{ic['interconnect.bandwidth_GBps'].min():g} GB/s up.") if len(ic) else None
    edge = float(slow["interconnect.bandwidth_GBps"].max())
    faster = ic[ic["interconnect.bandwidth_GBps"] > edge]
    above = f", less from {float(faster['interconnect.bandwidth_GBps'].min()):g} GB/s up" if len(faster) else \
        " (every bandwidth tried)"
    missing = ic[ic["slo_attainment"] < target]
    miss = (f"; the links queue and TPOT (which includes the hand-off) misses the SLO from "
            f"{float(missing['interconnect.bandwidth_GBps'].max()):g} GB/s down") if len(missing) else ""
    return (f"- **interconnect**: the KV hand-off (first token to KV in decode memory) takes longer than the whole "
            f"TTFT at {edge:g} GB/s per decode NIC and below{above} (`interconnect.csv`, columns "
            f"`kv_wait_mean_s` and `ttft_mean_s`){miss}.")


#: The grid column of the routing sweep that names the shared pool's policy.
POLICY = "variants.sun.routing"
#: Workload columns a routing sweep may vary (each combination is one workload).
WORKLOAD_KEYS = ("workload.rate", "workload.popularity.s", "workload.output_tokens.mean")


def _routing_rows(rt: pd.DataFrame) -> pd.DataFrame:
    """SUN's rows of the routing sweep (older sweeps set QSUN's policy too: the rows where both match)."""
    rt = ok_rows(rt)
    if "variants.qsun.routing" in rt:
        rt = rt[rt[POLICY] == rt["variants.qsun.routing"]].drop(columns="variants.qsun.routing")
    return rt[rt["variant"] == "sun"]


def routing_finding(rt: pd.DataFrame, target: float = 0.9) -> str | None:
    rt = _routing_rows(rt)
    if not len(rt):
        return None
    by = rt.groupby(POLICY)
    mean = by["tpot_p90_s"].mean().sort_values()
    best, worst = mean.index[0], mean.index[-1]
    rr = rt[rt[POLICY] == "round_robin"]["tpot_p90_s"]
    aware = [p for p in mean.index if p != "round_robin"]
    words = {p: versus(rt[rt[POLICY] == p]["tpot_p90_s"], rr, higher_is_better=False,
                       within="is within the seed spread of")
             for p in aware} if len(rr) else {}
    said = "; ".join(f"`{p}` {w} round robin" for p, w in words.items())
    met = by["slo_attainment"].min()
    holds = ("the SLO holds with all of them" if (met >= target).all() else
             "the SLO fails with all of them" if (met < target).all() else
             "the SLO fails with " + ", ".join(f"`{p}`" for p in met[met < target].index))
    rps = rt["requests_per_s"].mean()
    text = (f"- **routing** (shared pool, {rps:.0f} req/s completed): TPOT p90 from {mean.iloc[0] * 1e3:.1f} ms "
            f"(`{best}`) to {mean.iloc[-1] * 1e3:.1f} ms (`{worst}`), mean over seeds; on TPOT p90 {said}; {holds}.")
    return text + routing_across_workloads(rt)


def routing_across_workloads(rt: pd.DataFrame) -> str:
    """Which policy measures best across the sweep's workloads: per workload each policy's TPOT p90 (mean over
    seeds) over that workload's best, then the geometric mean of those ratios; '' for a single workload."""
    keys = [k for k in WORKLOAD_KEYS if k in rt and rt[k].nunique() > 1]
    if not keys:
        return ""
    from sunsim.scenario.serving import POOL_ROUTING

    tpot = rt.groupby([*keys, POLICY])["tpot_p90_s"].mean().unstack(POLICY)
    ratio = tpot.div(tpot.min(axis=1), axis=0)
    score = np.exp(np.log(ratio).mean()).sort_values()
    wins = (ratio == 1.0).sum()
    best = score.index[0]
    default = POOL_ROUTING
    listing = ", ".join(f"`{p}` {score[p]:.3f}" for p in score.index)
    verdict = (f"the scenario default (`{default}`) is that policy" if best == default else
               f"the scenario default (`{default}`) was not measured" if default not in score else
               f"the scenario default is `{default}` ({(score[default] - 1) * 100:+.1f}% against each workload's "
               f"best on average, against {(score[best] - 1) * 100:+.1f}% for `{best}`)")
    return (f" Across the {len(tpot)} workloads ({', '.join(keys)}), `{best}` measures best: the geometric mean of "
            f"each policy's TPOT p90 over the workload's best is {listing}; `{best}` is best in {int(wins[best])} of "
            f"{len(tpot)}; {verdict}.")


def short_outputs_finding(so: pd.DataFrame) -> str | None:
    """Short against long outputs on the same prompts and link: where a request's time after
    its first token goes (KV hand-off vs decode) and what is left of SUN's advantage."""
    so = ok_rows(so)
    col = "workload.output_tokens.value"
    if not len(so) or col not in so:
        return None
    so = so.copy()
    # TPOT x (outputs - 1) is the time from first token to finish, which holds the hand-off.
    so["after_first_s"] = so["tpot_mean_s"] * (so[col] - 1)
    so["kv_share"] = so["kv_wait_mean_s"] / so["after_first_s"]
    short, long_ = so[col].min(), so[col].max()
    s, g = so[so[col] == short], so[so[col] == long_]

    def gain(d: pd.DataFrame) -> pd.Series:
        p = d.pivot_table(index="seed", columns="variant", values="tpot_mean_s")
        return 1 - p["sun"] / p["dedicated"]

    gs, gl = gain(s), gain(g)
    trend = versus(gs, gl, within="is within the seed spread of").replace("beats", "is larger than").replace(
        "loses to", "is smaller than")
    ks, kl = span(s["kv_share"]), span(g["kv_share"])
    bs, bl = s["decode_mean_batch"].mean(), g["decode_mean_batch"].mean()
    limit = ("so the KV link, not decode compute, is what these pools spend a request's time on"
             if ks[0] > kl[1] and bs < bl else "decode compute still dominates")
    return (f"- **short outputs** (trace prompts, {short}-token outputs, `short-outputs.csv`): the KV hand-off takes "
            f"{range_text(*ks, '.0%')} of a request's time after its first token, against {range_text(*kl, '.0%')} with "
            f"{long_}-token outputs, and decode batches average {bs:.1f} requests against {bl:.1f}: {limit}. "
            f"SUN's mean-TPOT gain over dedicated pools ({range_text(*span(gs), '.1%')}) {trend} the "
            f"{long_}-token one ({range_text(*span(gl), '.1%')}).")


def run_findings(runs: dict[str, Path], target: float = 0.9) -> list[str]:
    """Per extra run: how SUN compares with dedicated pools on TPOT p90 and SLO attainment."""
    lines = []
    what = {"trace": "the Azure conversation trace's lengths and arrivals",
            "burst": "bursty gamma arrivals", "shift": "the hot model changes mid-run"}
    for name, desc in what.items():
        if name not in runs:
            continue
        comp = pd.read_csv(runs[name] / "comparison.csv").set_index("variant")
        if not {"sun", "dedicated"} <= set(comp.index):
            continue
        sun, ded = comp.loc["sun"], comp.loc["dedicated"]
        word = versus([sun["tpot_p90_s"]], [ded["tpot_p90_s"]], higher_is_better=False, tol=0.005,
                      within="is within 1% of")
        slo = ("both meet the SLO" if min(sun["slo_attainment"], ded["slo_attainment"]) >= target else
               f"SLO attainment {sun['slo_attainment']:.1%} (SUN) vs {ded['slo_attainment']:.1%} (dedicated)")
        lines.append(f"- **{name}** ({desc}, {sun['requests_per_s']:.0f} req/s completed): SUN's TPOT p90 "
                     f"({sun['tpot_p90_s'] * 1e3:.1f} ms) {word} dedicated pools' ({ded['tpot_p90_s'] * 1e3:.1f} ms); "
                     f"{slo}.")
    return lines


#: Variants of the baselines run, in the order its finding names them.
BASELINE_VARIANTS = {"dedicated": "static dedicated pools'", "dedicated-rebalance": "rebalanced dedicated pools'",
                     "colocated": "colocated models'", "multi-lora": "multi-LoRA's (central cost band)",
                     "multi-lora-low": "multi-LoRA's at the low end of its band",
                     "multi-lora-high": "multi-LoRA's at the high end", "qsun": "QSUN's"}


def stronger_baselines_finding(runs: dict[str, Path]) -> str | None:
    """SUN's decode TPOT p90 against each baseline of the baselines run (same stream, same decode GPUs)."""
    if "baselines" not in runs or not (runs["baselines"] / "comparison.csv").exists():
        return None
    comp = pd.read_csv(runs["baselines"] / "comparison.csv").set_index("variant")
    if "sun" not in comp.index:
        return None
    sun = comp.loc["sun"]
    parts = []
    for name, label in BASELINE_VARIANTS.items():
        if name in comp.index:
            row = comp.loc[name]
            word = versus([sun["tpot_p90_s"]], [row["tpot_p90_s"]], higher_is_better=False, tol=0.005,
                          within="is within 1% of")
            parts.append(f"{word} {label} ({row['tpot_p90_s'] * 1e3:.1f} ms, SLO attainment "
                         f"{row['slo_attainment']:.1%})")
    if not parts:
        return None
    return (f"- **Stronger baselines** (same stream, same decode GPUs): SUN's TPOT p90 ({sun['tpot_p90_s'] * 1e3:.1f} ms, "
            f"SLO attainment {sun['slo_attainment']:.1%}) " + "; ".join(parts) + ".")


def runs_table(runs: dict[str, Path]) -> str:
    """Every run's headline metrics per variant, the base run's included for reference."""
    rows = ["| experiment | variant | tok/s per GPU | TTFT p90 (s) | TPOT p50 / p90 (ms) | SLO attainment |",
            "|---|---|---|---|---|---|"]
    for name, path in runs.items():
        comp = pd.read_csv(path / "comparison.csv")
        for r in comp.itertuples():
            rows.append(f"| {name} | {r.variant} | {r.tokens_per_s_per_gpu:,.0f} | {r.ttft_p90_s:.3f} | "
                        f"{r.tpot_p50_s * 1e3:.1f} / {r.tpot_p90_s * 1e3:.1f} | {r.slo_attainment:.1%} |")
    return "\n".join(rows)
