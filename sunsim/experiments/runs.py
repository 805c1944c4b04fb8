"""The committed experiments: run them all, draw the figures, write ``results/README.md``.

One command regenerates everything (``sunsim experiments``): the paper-family sweeps and
plans of ``scenarios/experiments/``, the scenarios beyond the paper, the full report, and
the headline table comparing SUN, QSUN and dedicated pools with the paper's claims.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sunsim.analysis.runner import run_scenario, write_run
from sunsim.analysis.sweep import Sweep, expand_points, load_sweep, run_sweep
from sunsim.errors import InputError
from sunsim.output import mark, publish, staging, write_text
from sunsim.report import markdown as report
from sunsim.report.markdown import RATE
from sunsim.scenario import load_scenario

EXPERIMENTS = Path(__file__).resolve().parents[1] / "scenarios" / "experiments"
RUNS = ("paper", "trace", "burst", "shift", "baselines")
#: Runs a page from older results may lack (their findings are left out).
OPTIONAL_RUNS = ("baselines",)
SWEEPS = ("skew", "load", "plan-skew", "routing", "interconnect", "short-outputs")
#: Sweeps a page from older results may lack (their findings are left out).
OPTIONAL = ("short-outputs",)
#: Scaled-down settings for a quick check of the whole pipeline (tests, smoke runs).
QUICK = ["workload.duration_s=15"]


@dataclass
class Outputs:
    runs: dict[str, Path]
    sweeps: dict[str, pd.DataFrame]


def run_all(out: Path, quick: bool = False, workers: int | None = None,
            say: Callable[[str], None] = print) -> Outputs:
    """Run every experiment into ``out`` (run folders and sweep tables)."""
    overrides = QUICK if quick else []
    runs = {}
    for name in RUNS:
        say(f"run {name}")
        sc = load_scenario(EXPERIMENTS / f"{name}.yaml", overrides)
        write_run(run_scenario(sc, keep_timeline=True), out / name)
        runs[name] = out / name
    sweeps = {}
    for name in SWEEPS:
        sweep = load_sweep(EXPERIMENTS / f"{name}.yaml", overrides)
        if quick:  # one seed, the first two values of each swept parameter
            spec = sweep.spec.model_copy(update={"seeds": sweep.spec.seeds[:1],
                                                 "grid": {k: v[:2] for k, v in sweep.spec.grid.items()}})
            sweep = Sweep(spec, sweep.base, sweep.base_dir, expand_points(spec))
        say(f"sweep {name}: {len(sweep.points)} points")
        table_path = out / "sweeps" / f"{name}.csv"
        table_path.parent.mkdir(parents=True, exist_ok=True)
        sweeps[name] = run_sweep(sweep, table_path, workers=workers,
                                 progress=lambda d, t, p, r, n=name: say(f"  {n}: {d}/{t}") if p is not None else None)
    return Outputs(runs, sweeps)


# --------------------------------------------------------------------------------------
def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def headline(sweeps: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per number of models and skew: decode GPUs each design needs and goodput per GPU (plan
    sweep), TPOT ratios (skew sweep, Llama-3.1-8B shape). Returns the table and the extremes."""
    plan = _ok(sweeps["plan-skew"]).copy()
    if "model.tasks" not in plan.columns:
        plan["model.tasks"] = 4
    plan["model.tasks"] = plan["model.tasks"].astype(str)
    index = ["model.tasks", "workload.popularity.s"]
    need = plan.pivot_table(index=index, columns="variant", values=["min_decode_gpus", "goodput_rps_per_gpu"])
    skew = _ok(sweeps["skew"])
    skew = skew[skew["model.preset"] == "llama-3.1-8b"].copy()
    skew["model.tasks"] = skew["model.tasks"].astype(str)
    tpot = skew.pivot_table(index=index, columns="variant", values="tpot_mean_s")
    met = skew.pivot_table(index=index, columns="variant", values="slo_attainment")
    rows = []
    for key in need.index:
        g = need.loc[key]
        row = {"models": key[0], "zipf_s": key[1]}
        for v in ("dedicated", "dedicated-even", *STRONGER, "sun", "qsun", "dedicated-int4"):
            row[f"decode_gpus_{v}"] = g.get(("min_decode_gpus", v), float("nan"))
            row[f"goodput_per_gpu_{v}"] = g.get(("goodput_rps_per_gpu", v), float("nan"))
        row.update(_strongest(row))
        row["sun_decode_gpus_saved"] = 1 - row["decode_gpus_sun"] / row["decode_gpus_dedicated"]
        row["sun_throughput_per_gpu_x"] = row["goodput_per_gpu_sun"] / row["goodput_per_gpu_dedicated"]
        row["sun_throughput_per_gpu_x_even"] = row["goodput_per_gpu_sun"] / row["goodput_per_gpu_dedicated-even"]
        row["qsun_throughput_per_gpu_x"] = row["goodput_per_gpu_qsun"] / row["goodput_per_gpu_dedicated"]
        if key in tpot.index:
            t = tpot.loc[key]
            row["sun_tpot_vs_dedicated"] = t["sun"] / t["dedicated"] - 1
            # TPOT is compared where both designs serve the load within the SLO.
            row["both_meet_slo"] = bool(min(met.loc[key, "sun"], met.loc[key, "dedicated"]) >= 0.9)
            row["qsun_tpot_speedup_over_sun"] = t["sun"] / t["qsun"] - 1
        rows.append(row)
    table = pd.DataFrame(rows)
    nan = float("nan")
    extremes = {
        "throughput_x_max": float(table["sun_throughput_per_gpu_x"].max()),
        "throughput_x_even_max": float(table["sun_throughput_per_gpu_x_even"].max()),
        "gpus_saved_max": float(table["sun_decode_gpus_saved"].max()),
        "tpot_diff_min": float(table.loc[table["both_meet_slo"].fillna(False).astype(bool),
                                         "sun_tpot_vs_dedicated"].min()) if "both_meet_slo" in table else nan,
        "tpot_diff_max": float(table.loc[table["both_meet_slo"].fillna(False).astype(bool),
                                         "sun_tpot_vs_dedicated"].max()) if "both_meet_slo" in table else nan,
        "qsun_speedup_mean": float(table["qsun_tpot_speedup_over_sun"].mean())
        if "qsun_tpot_speedup_over_sun" in table else nan,
    }
    return table, extremes


#: 16-bit designs an operator could run instead of SUN (QSUN's quantization is a separate effect).
ALTERNATIVES = ("dedicated", "dedicated-even", "colocated", "multi-lora")
#: The alternatives that share GPUs between models without SUN.
STRONGER = ("colocated", "multi-lora")


def _strongest(row: dict) -> dict:
    """The alternative with the highest goodput per GPU, and the one needing the fewest decode GPUs,
    in one headline row, with SUN's standing against each."""
    nan = float("nan")
    good = {v: row.get(f"goodput_per_gpu_{v}", nan) for v in ALTERNATIVES}
    good = {v: x for v, x in good.items() if x == x}
    need = {v: row.get(f"decode_gpus_{v}", nan) for v in ALTERNATIVES}
    need = {v: x for v, x in need.items() if x == x}
    out: dict = {"strongest_goodput": None, "sun_x_strongest": nan, "fewest_gpus": None,
                 "sun_gpus_saved_vs_fewest": nan}
    if good:
        best = max(good, key=lambda v: good[v])
        out["strongest_goodput"] = best
        out["sun_x_strongest"] = row["goodput_per_gpu_sun"] / good[best] if good[best] > 0 else nan
    if need:
        fewest = min(need, key=lambda v: need[v])
        out["fewest_gpus"] = fewest
        out["sun_gpus_saved_vs_fewest"] = 1 - row["decode_gpus_sun"] / need[fewest] if need[fewest] > 0 else nan
    return out


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:+.0%}"


def _figures(outputs: Outputs, fig_dir: Path) -> dict[str, str]:
    """The README's figures (PNG + SVG) -> relative stems."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    sw = {k: _ok(v) for k, v in outputs.sweeps.items()}
    figs: dict[str, str] = {}

    def rps(df: pd.DataFrame) -> str:  # the load the runs served, measured
        return f"{df['requests_per_s'].mean():.0f} req/s completed"
    llama4 = sw["skew"][(sw["skew"]["model.preset"] == "llama-3.1-8b") & (sw["skew"]["model.tasks"].astype(str) == "4")]
    drop = ["model.preset", "model.tasks"]
    report.plot_throughput_vs_skew(llama4.drop(columns=drop), fig_dir / "throughput_vs_skew")
    figs["throughput_vs_skew"] = (f"Throughput per GPU vs skew (4 models, Llama-3.1-8B, {rps(llama4)}, "
                                  f"{_range(*_span(llama4['decode_gpus']), '.0f')} decode GPUs)")
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
    figs["decode_gpus_vs_skew"] = (f"Decode GPUs needed to meet the SLO at {_range(*_span(plan['rate']), 'g')} req/s "
                                   f"vs skew, {models} models")
    report.plot_metric_vs_param(sw["plan-skew"], "workload.popularity.s", "goodput_rps_per_gpu",
                                fig_dir / "goodput_per_gpu_vs_skew", title=f"Goodput per GPU vs skew ({_range(*_span(plan['goodput_gpus']), '.0f')}-GPU fleet)")
    figs["goodput_per_gpu_vs_skew"] = "Goodput (the highest rate meeting the SLO attainment target) per GPU vs skew"
    report.plot_slo_vs_rate(sw["load"], fig_dir / "slo_vs_rate", target=0.9)
    outs = " and ".join(f"{v:g}" for v in sorted(sw["load"]["workload.output_tokens.mean"].unique()))
    figs["slo_vs_rate"] = f"SLO attainment vs request rate, mean outputs of {outs} tokens"
    report.plot_metric_vs_param(sw["load"], RATE, "tokens_per_s_per_decode_gpu", fig_dir / "throughput_vs_rate",
                                title="Throughput per decode GPU vs request rate")
    figs["throughput_vs_rate"] = f"Output tokens/s per decode GPU vs request rate, mean outputs of {outs} tokens"
    report.plot_latency_cdfs(outputs.runs["paper"], fig_dir / "latency_cdfs")
    paper = pd.read_csv(outputs.runs["paper"] / "comparison.csv")
    figs["latency_cdfs"] = f"TTFT and TPOT distributions of the base experiment ({rps(paper)})"
    shift = report.load_run(outputs.runs["shift"])
    if shift.timeline is not None:
        report.plot_timeline(shift.timeline, fig_dir / "shift_timeline", profile=shift.profile)
        figs["shift_timeline"] = "Batch size and KV occupancy per decode worker when the hot model changes mid-run"
    routing = sw["routing"].copy()
    routing["routing"] = [r["variants.sun.routing"] if r["variant"] == "sun" else r["variants.qsun.routing"]
                          for _, r in routing.iterrows()]
    routing = routing[routing["variants.sun.routing"] == routing["variants.qsun.routing"]]
    routing = routing.drop(columns=["variants.sun.routing", "variants.qsun.routing"])
    routing = routing.rename(columns={"routing": "variants.routing"})
    report.plot_metric_vs_param(routing, "variants.routing", "tpot_p90_s", fig_dir / "routing",
                                title=f"TPOT p90 by decode routing policy ({rps(routing)})")
    figs["routing"] = f"Decode routing policies of the shared pool ({rps(routing)})"
    report.plot_metric_vs_param(sw["interconnect"], "interconnect.bandwidth_GBps", "kv_wait_mean_s",
                                fig_dir / "kv_wait_vs_bandwidth", title="KV hand-off time vs interconnect bandwidth")
    figs["kv_wait_vs_bandwidth"] = "Mean first-token-to-KV-in-decode time vs interconnect bandwidth"
    return figs


def _setting(outputs: Outputs) -> dict:
    """The base experiment's numbers, read from the run beside the tables (its scenario.yaml)."""
    import yaml

    sc = yaml.safe_load((outputs.runs["paper"] / "scenario.yaml").read_text())
    wl = sc["workload"]
    return {"rate": wl["rate"], "prompt": wl["prompt_tokens"].get("mean"), "output": wl["output_tokens"].get("mean"),
            "ttft": sc["slo"]["ttft_s"], "tpot": sc["slo"]["tpot_s"], "target": sc["slo"].get("attainment", 0.9),
            "preset": sc["model"]["preset"], "gpu": sc["hardware"]["gpu"]}


def interconnect_finding(ic: pd.DataFrame, target: float = 0.9) -> str | None:
    """Where the KV hand-off starts to cost more than the whole TTFT, and where TPOT breaks."""
    ic = _ok(ic)
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


def write_readme(outputs: Outputs, out: Path, profile: str) -> Path:
    table, _ = headline(outputs.sweeps)
    figs = _figures(outputs, out / "figures")
    st = _setting(outputs)
    plan = _ok(outputs.sweeps["plan-skew"])
    fleet = _range(*_span(plan["goodput_gpus"]), ".0f")
    prefill = _range(*_span(plan["prefill_gpus"]), ".0f")
    decode = _range(*_span(_ok(outputs.sweeps["skew"])["decode_gpus"]), ".0f")
    lines = [
        "# sunsim experiments", "",
        "Regenerate everything here with one command: `sunsim experiments`",
        "(`sunsim experiments --report-only` redraws figures, tables and this page from the tables already here).",
        "Every number and comparison on this page is computed from the tables beside it.",
        f"Profile for every figure and table: **{profile}**. `--set hardware.profile=PATH` uses a measured one",
        "(see `calibration/README.md`).", "",
        "## Headline", "",
        f"Task models on the {st['preset']} shape, {st['gpu']} GPUs, {st['rate']:g} req/s Poisson, prompts "
        f"~{st['prompt']:g} and outputs ~{st['output']:g} tokens, SLO TTFT <= {st['ttft']:g} s and TPOT <= "
        f"{st['tpot'] * 1e3:g} ms for {st['target']:.0%} of requests. Dedicated decode pools are sized to each "
        "model's traffic share (at least one GPU each); `dedicated-even` splits the same GPUs equally. Decode GPUs "
        f"needed come from `sunsim plan` at {_range(*_span(plan['rate']), 'g')} req/s; goodput (the highest rate "
        f"with {st['target']:.0%} of requests in SLO) is measured on a {fleet}-GPU fleet with {prefill} prefill "
        f"GPUs, {decode} of them decode GPUs in the run sweeps.", "",
        "| models | Zipf s | decode GPUs needed: dedicated / SUN / QSUN / dedicated-int4 | SUN saves | goodput per GPU "
        "(req/s): dedicated / dedicated-even / SUN / QSUN | SUN x (vs dedicated / vs even) | SUN TPOT vs dedicated "
        "| QSUN TPOT speed-up over SUN |",
        "|---|---|---|---|---|---|---|---|",
    ]
    alt_lines = [
        "", "Against the stronger alternatives that share GPUs without SUN (`colocated`: two models' decode weights per "
        "GPU, per-model batches; `multi-lora`: one base model serving every task as a rank-16 adapter), per "
        "configuration: the alternative with the highest goodput per GPU and the one needing the fewest decode GPUs "
        "among dedicated, dedicated-even, colocated and multi-LoRA:", "",
        "| models | Zipf s | goodput per GPU: colocated / multi-LoRA / SUN | strongest alternative | SUN x it "
        "| decode GPUs: colocated / multi-LoRA / SUN | fewest-GPU alternative | SUN saves vs it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        good = " / ".join(f"{r[f'goodput_per_gpu_{v}']:.2f}" for v in (*STRONGER, "sun"))
        need = " / ".join(f"{r[f'decode_gpus_{v}']:.0f}" for v in (*STRONGER, "sun"))
        alt_lines.append(f"| {r['models']} | {r['zipf_s']:g} | {good} | {r['strongest_goodput']} | "
                         f"{r['sun_x_strongest']:.2f}x | {need} | {r['fewest_gpus']} | "
                         f"{r['sun_gpus_saved_vs_fewest']:.0%} |")
    nan = float("nan")
    for r in table.to_dict("records"):
        gpus = " / ".join(f"{r[f'decode_gpus_{v}']:.0f}" for v in ("dedicated", "sun", "qsun", "dedicated-int4"))
        goodput = " / ".join(f"{r[f'goodput_per_gpu_{v}']:.2f}" for v in ("dedicated", "dedicated-even", "sun", "qsun"))
        tpot = _pct(r.get("sun_tpot_vs_dedicated", nan))
        if r.get("both_meet_slo") is False:
            tpot += " (one design misses the SLO)"
        lines.append(f"| {r['models']} | {r['zipf_s']:g} | {gpus} | {r['sun_decode_gpus_saved']:.0%} | {goodput} | "
                     f"{r['sun_throughput_per_gpu_x']:.2f}x / {r['sun_throughput_per_gpu_x_even']:.2f}x | {tpot} | "
                     f"{_pct(r.get('qsun_tpot_speedup_over_sun', nan))} |")
    lines += alt_lines
    seeds = plan["seed"].nunique()
    lines += [
        "", f"Against the paper's claims (intervals: min-max over the runs that give each figure; the plans have "
        f"{seeds} seed(s) per configuration):", "",
        "| claim (paper) | sunsim (this profile) |", "|---|---|",
        *[f"| {claim} | {ours} |" for claim, ours in claims(outputs.sweeps)],
        "", "Where they differ, from the same tables:", "",
        pooling_finding(table), baselines_finding(table), strongest_alternative_finding(table), tpot_finding(table),
        qsun_finding(table), "",
    ]
    for stem, caption in figs.items():
        lines += [f"![{caption}](figures/{stem}.png)", "", f"*{caption}; profile {profile}.* "
                  f"([SVG](figures/{stem}.svg))", ""]
    found = [interconnect_finding(outputs.sweeps["interconnect"], st["target"]),
             routing_finding(outputs.sweeps["routing"], st["target"])]
    if "short-outputs" in outputs.sweeps:
        found.append(short_outputs_finding(outputs.sweeps["short-outputs"]))
    lines += [
        "## Beyond the paper", "",
        _runs_table(outputs.runs), "",
        *run_findings(outputs.runs, st["target"]),
        *filter(None, [stronger_baselines_finding(outputs.runs)]),
        *[f for f in found if f],
        "", "## Files", "",
        "- `sweeps/*.csv`: one row per (grid point, variant); `plan-skew.csv` holds the plans.",
        "- `<experiment>/`: per-variant `summary.json` and `comparison.csv`, and the scenario.",
        "- `report/report.md`: every figure `sunsim report` draws for these results.", "",
    ]
    path = out / "README.md"
    write_text(path, "\n".join(lines))
    return path


# --------------------------------------------------------------------------------------
# Sentences computed from the tables: every number and comparative word comes from the data.
# --------------------------------------------------------------------------------------
def _span(values) -> tuple[float, float]:
    v = [float(x) for x in values if x == x]
    return (min(v), max(v)) if v else (float("nan"), float("nan"))


def versus(a, b, higher_is_better: bool = True, tol: float = 0.0, within: str = "is within the spread of") -> str:
    """``"beats"``, ``"is within the spread of"`` or ``"loses to"``: ``a`` against ``b``.

    ``a`` and ``b`` are samples (seeds, configurations) of one figure; their min-max ranges,
    each widened by ``tol`` (relative), overlapping means the difference is within the spread."""
    (alo, ahi), (blo, bhi) = _span(a), _span(b)
    if alo * (1 - tol) <= bhi * (1 + tol) and blo * (1 - tol) <= ahi * (1 + tol):
        return within
    better = alo > bhi if higher_is_better else ahi < blo
    return "beats" if better else "loses to"


def _range(lo: float, hi: float, fmt: str) -> str:
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}} to {hi:{fmt}}"


def claims(sweeps: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """The paper's claims restated: per claim, sunsim's extreme and its min-max interval over
    every run that gives the figure (grid configurations x seeds), with a verdict word."""
    plan = _ok(sweeps["plan-skew"]).copy()
    if "model.tasks" not in plan.columns:
        plan["model.tasks"] = 4
    key = ["model.tasks", "workload.popularity.s", "seed"]
    p = plan.pivot_table(index=key, columns="variant", values=["goodput_rps_per_gpu", "min_decode_gpus"])
    x = (p[("goodput_rps_per_gpu", "sun")] / p[("goodput_rps_per_gpu", "dedicated")]).dropna()
    saved = (1 - p[("min_decode_gpus", "sun")] / p[("min_decode_gpus", "dedicated")]).dropna()
    skew = _ok(sweeps["skew"])
    skew = skew[skew["model.preset"] == "llama-3.1-8b"]
    k2 = ["model.tasks", "workload.popularity.s", "seed"]
    t = skew.pivot_table(index=k2, columns="variant", values="tpot_mean_s")
    met = skew.pivot_table(index=k2, columns="variant", values="slo_attainment")
    both = (met["sun"] >= 0.9) & (met["dedicated"] >= 0.9)
    tdiff = (t["sun"] / t["dedicated"] - 1)[both].dropna()
    qx = (t["sun"] / t["qsun"] - 1).dropna()
    n = len(plan[["model.tasks", "workload.popularity.s"]].drop_duplicates())
    seeds = plan["seed"].nunique()

    def runs(s: pd.Series, what: str) -> str:
        return f"{len(s)} {what}"

    rows = []
    if len(x):
        word = "exceeds" if x.max() > 2.0 * 1.05 else "matches" if x.max() >= 2.0 * 0.95 else "falls short of"
        rows.append(("up to 2.0x throughput per GPU",
                     f"up to {x.max():.2f}x goodput per GPU over traffic-sized dedicated pools (min-max "
                     f"{x.min():.2f}x to {x.max():.2f}x over {runs(x, 'plans')}: {n} configurations x {seeds} "
                     f"seed(s)); {word} the paper"))
    if len(tdiff):
        lo, hi = tdiff.min(), tdiff.max()
        word = ("holds" if max(abs(lo), abs(hi)) <= 0.05 else
                "holds with SUN faster" if hi <= 0.05 else "does not hold")
        rows.append(("TPOT within 5%", f"SUN's mean TPOT differs from dedicated's by {_pct(lo)} to {_pct(hi)} "
                     f"(min-max over {runs(tdiff, 'runs')} where both meet the SLO); {word}"))
    if len(saved):
        word = "exceeds" if saved.max() > 0.5 + 0.025 else "matches" if saved.max() >= 0.5 - 0.025 else "falls short of"
        rows.append(("up to 50% fewer decode GPUs",
                     f"up to {saved.max():.0%} fewer (min-max {saved.min():.0%} to {saved.max():.0%} over "
                     f"{runs(saved, 'plans')}); {word} the paper"))
    if len(qx):
        word = "exceeds" if qx.min() > 0.45 * 1.1 else "matches" if qx.max() >= 0.45 * 0.9 else "falls short of"
        rows.append(("QSUN about 45% faster decode",
                     f"QSUN's mean TPOT {qx.median():.0%} faster than SUN's (median; min-max {qx.min():.0%} to "
                     f"{qx.max():.0%} over {runs(qx, 'runs')}); {word} the paper"))
    return rows


def pooling_finding(table: pd.DataFrame) -> str:
    """How SUN's goodput-per-GPU ratio over traffic-sized pools moves with skew and model count."""
    parts = []
    for models, g in table.groupby("models", sort=True):
        g = g.sort_values("zipf_s")
        lo, hi = g.iloc[0], g.iloc[-1]
        trend = ("grows" if hi["sun_throughput_per_gpu_x"] > lo["sun_throughput_per_gpu_x"] * 1.02 else
                 "shrinks" if hi["sun_throughput_per_gpu_x"] < lo["sun_throughput_per_gpu_x"] * 0.98 else "stays level")
        parts.append(f"with {models} models it {trend} from {lo['sun_throughput_per_gpu_x']:.2f}x at Zipf "
                     f"{lo['zipf_s']:g} to {hi['sun_throughput_per_gpu_x']:.2f}x at Zipf {hi['zipf_s']:g}")
    return "- **Pooling**: SUN's goodput per GPU over traffic-sized dedicated pools: " + "; ".join(parts) + "."


def baselines_finding(table: pd.DataFrame) -> str:
    """The even split against the traffic-sized one at the highest skew."""
    top = table[table["zipf_s"] == table["zipf_s"].max()]
    even, sized = top["goodput_per_gpu_dedicated-even"], top["goodput_per_gpu_dedicated"]
    word = versus(even, sized)
    return (f"- **Two baselines**: at Zipf {table['zipf_s'].max():g} the even split (`dedicated-even`, "
            f"{_range(*_span(even), '.2f')} req/s per GPU) {word} pools sized to traffic "
            f"({_range(*_span(sized), '.2f')} req/s per GPU) across model counts.")


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

    parts = [f"- **Against the strongest alternative** (the highest goodput per GPU among dedicated, dedicated-even, "
             f"colocated and multi-LoRA; it is {named} of {len(x)} configurations): SUN's goodput per GPU is "
             f"{_range(x['sun_x_strongest'].min(), x['sun_x_strongest'].max(), '.2f')}x of it. SUN wins by more than "
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
        parts.append(f". In decode GPUs needed, SUN saves {_range(saved.min(), saved.max(), '.0%')} against the "
                     "alternative needing the fewest")
    return "".join(parts) + "."


def tpot_finding(table: pd.DataFrame) -> str:
    if "both_meet_slo" not in table:
        return "- **TPOT**: no configuration of the skew sweep matches the plan sweep."
    ok = table[table["both_meet_slo"].fillna(False).astype(bool)]
    if not len(ok):
        return "- **TPOT**: in no configuration do both designs meet the SLO."
    d = ok["sun_tpot_vs_dedicated"]
    word = ("the same within 1%" if d.abs().max() <= 0.01 else "lower" if d.max() < -0.01 else
            "the same or lower" if d.max() <= 0.01 else "higher" if d.min() > 0.01 else
            "the same or higher" if d.min() >= -0.01 else "lower or higher by configuration")
    return (f"- **TPOT**: in the {len(ok)} configurations where both meet the SLO, SUN's mean TPOT is {word} than "
            f"dedicated pools' ({_pct(d.min())} to {_pct(d.max())}).")


def qsun_finding(table: pd.DataFrame) -> str:
    q = table["qsun_tpot_speedup_over_sun"].dropna() if "qsun_tpot_speedup_over_sun" in table else pd.Series()
    fewer = int((table["decode_gpus_qsun"] < table["decode_gpus_sun"]).sum())
    same = int((table["decode_gpus_qsun"] == table["decode_gpus_sun"]).sum())
    speed = f"QSUN's TPOT is {_range(q.min(), q.max(), '.0%')} faster than SUN's" if len(q) else "no TPOT data"
    return (f"- **QSUN** (int4 decode on this profile): {speed}; it needs fewer decode GPUs than SUN in {fewer}, "
            f"as many in {same}, of {len(table)} planned configurations.")


def routing_finding(rt: pd.DataFrame, target: float = 0.9) -> str | None:
    rt = _ok(rt)
    rt = rt[(rt["variants.sun.routing"] == rt["variants.qsun.routing"]) & (rt["variant"] == "sun")]
    if not len(rt):
        return None
    by = rt.groupby("variants.sun.routing")
    mean = by["tpot_p90_s"].mean().sort_values()
    best, worst = mean.index[0], mean.index[-1]
    rr = rt[rt["variants.sun.routing"] == "round_robin"]["tpot_p90_s"]
    aware = [p for p in mean.index if p != "round_robin"]
    words = {p: versus(rt[rt["variants.sun.routing"] == p]["tpot_p90_s"], rr, higher_is_better=False,
                       within="is within the seed spread of")
             for p in aware} if len(rr) else {}
    said = "; ".join(f"`{p}` {w} round robin" for p, w in words.items())
    met = by["slo_attainment"].min()
    holds = ("the SLO holds with all of them" if (met >= target).all() else
             "the SLO fails with all of them" if (met < target).all() else
             "the SLO fails with " + ", ".join(f"`{p}`" for p in met[met < target].index))
    rps = rt["requests_per_s"].mean()
    return (f"- **routing** (shared pool, {rps:.0f} req/s completed): TPOT p90 from {mean.iloc[0] * 1e3:.1f} ms "
            f"(`{best}`) to {mean.iloc[-1] * 1e3:.1f} ms (`{worst}`), mean over seeds; on TPOT p90 {said}; {holds}.")


def short_outputs_finding(so: pd.DataFrame) -> str | None:
    """Short against long outputs on the same prompts and link: where a request's time after
    its first token goes (KV hand-off vs decode) and what is left of SUN's advantage."""
    so = _ok(so)
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
    ks, kl = _span(s["kv_share"]), _span(g["kv_share"])
    bs, bl = s["decode_mean_batch"].mean(), g["decode_mean_batch"].mean()
    limit = ("so the KV link, not decode compute, is what these pools spend a request's time on"
             if ks[0] > kl[1] and bs < bl else "decode compute still dominates")
    return (f"- **short outputs** (trace prompts, {short}-token outputs, `short-outputs.csv`): the KV hand-off takes "
            f"{_range(*ks, '.0%')} of a request's time after its first token, against {_range(*kl, '.0%')} with "
            f"{long_}-token outputs, and decode batches average {bs:.1f} requests against {bl:.1f}: {limit}. "
            f"SUN's mean-TPOT gain over dedicated pools ({_range(*_span(gs), '.1%')}) {trend} the "
            f"{long_}-token one ({_range(*_span(gl), '.1%')}).")


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
                     "colocated": "colocated models'", "multi-lora": "multi-LoRA's", "qsun": "QSUN's"}


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


def _runs_table(runs: dict[str, Path]) -> str:
    rows = ["| experiment | variant | tok/s per GPU | TTFT p90 (s) | TPOT p50 / p90 (ms) | SLO attainment |",
            "|---|---|---|---|---|---|"]
    for name, path in runs.items():
        comp = pd.read_csv(path / "comparison.csv")
        for r in comp.itertuples():
            rows.append(f"| {name} | {r.variant} | {r.tokens_per_s_per_gpu:,.0f} | {r.ttft_p90_s:.3f} | "
                        f"{r.tpot_p50_s * 1e3:.1f} / {r.tpot_p90_s * 1e3:.1f} | {r.slo_attainment:.1%} |")
    return "\n".join(rows)


def load_outputs(out: Path) -> Outputs:
    """The outputs of an earlier ``run_all`` into ``out``."""
    missing = [str(out / n) for n in RUNS if n not in OPTIONAL_RUNS and not (out / n / "comparison.csv").exists()]
    missing += [str(out / "sweeps" / f"{n}.csv") for n in SWEEPS
                if n not in OPTIONAL and not (out / "sweeps" / f"{n}.csv").exists()]
    if missing:
        raise InputError(f"--report-only: no experiment results at {', '.join(missing)}; run `sunsim experiments`")
    return Outputs({n: out / n for n in RUNS if (out / n / "comparison.csv").exists()},
                   {n: pd.read_csv(out / "sweeps" / f"{n}.csv") for n in SWEEPS if (out / "sweeps" / f"{n}.csv").exists()})


def regenerate(out: Path, quick: bool = False, workers: int | None = None,
               say: Callable[[str], None] = print, report_only: bool = False) -> Path:
    """Everything: experiments, README with headline and figures, full report."""
    out.mkdir(parents=True, exist_ok=True)
    if report_only:
        outputs = load_outputs(out)
        profile = str(outputs.sweeps["skew"]["profile"].dropna().iloc[0])
        say("figures and README")
        write_readme(outputs, out, profile)
        with staging(out) as stage:  # the report folder is the experiments' own: replaced whole
            report.write_report(out, stage / "report")
            publish(stage, out, require_marker=False)
        return out / "README.md"
    with staging(out) as stage:
        outputs = run_all(stage, quick, workers, say)
        profile = str(outputs.sweeps["skew"]["profile"].dropna().iloc[0])
        say("figures and README")
        write_readme(outputs, stage, profile)
        report.write_report(stage, stage / "report")
        mark(stage, {"command": "experiments"})
        publish(stage, out, require_marker=False)
    return out / "README.md"
