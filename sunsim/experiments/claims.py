"""The headline and the paper's claims, computed from the plan and skew sweeps.

The headline table compares, per number of models and skew, each design on its own planned fleet: the
GPUs it needs (prefill + decode) and that fleet's goodput per GPU; the claims restate the paper's figures with sunsim's extremes and the min-max
interval over every run that gives them, so a claim is never judged on one lucky seed.
"""

from __future__ import annotations

import pandas as pd

from sunsim.experiments.wording import ok_rows, pct

#: The designs the plan sweep sizes, in the order the page lists them.
DESIGNS = ("dedicated", "colocated", "multi-lora", "sun", "qsun", "dedicated-int4")


def headline(sweeps: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per number of models and skew, each design on its own planned fleet (plan sweep): the GPUs it needs
    (prefill + decode, and decode alone; the most any seed needs, as a capacity plan must promise) and the
    goodput per GPU of that fleet (min-max over seeds); TPOT ratios at the fixed layout of the skew sweep
    (Llama-3.1-8B shape). Returns the table and the extremes."""
    plan = ok_rows(sweeps["plan-skew"]).copy()
    if "model.tasks" not in plan.columns:
        plan["model.tasks"] = 4
    plan["model.tasks"] = plan["model.tasks"].astype(str)
    index = ["model.tasks", "workload.popularity.s"]
    values = ["min_decode_gpus", "total_gpus", "goodput_rps_per_gpu"]
    hi = plan.pivot_table(index=index, columns="variant", values=values, aggfunc="max")
    lo = plan.pivot_table(index=index, columns="variant", values=values, aggfunc="min")
    skew = ok_rows(sweeps["skew"])
    skew = skew[skew["model.preset"] == "llama-3.1-8b"].copy()
    skew["model.tasks"] = skew["model.tasks"].astype(str)
    tpot = skew.pivot_table(index=index, columns="variant", values="tpot_mean_s")
    met = skew.pivot_table(index=index, columns="variant", values="slo_attainment")
    nan = float("nan")
    rows = []
    for key in hi.index:
        row: dict = {"models": key[0], "zipf_s": key[1]}
        for v in DESIGNS:
            row[f"decode_gpus_{v}"] = hi.loc[key].get(("min_decode_gpus", v), nan)
            row[f"total_gpus_{v}"] = hi.loc[key].get(("total_gpus", v), nan)
            row[f"goodput_per_gpu_{v}"] = lo.loc[key].get(("goodput_rps_per_gpu", v), nan)  # the worst seed
            row[f"goodput_per_gpu_{v}_max"] = hi.loc[key].get(("goodput_rps_per_gpu", v), nan)
        row.update(_strongest(row))
        row["sun_total_gpus_saved"] = 1 - row["total_gpus_sun"] / row["total_gpus_dedicated"]
        row["sun_decode_gpus_saved"] = 1 - row["decode_gpus_sun"] / row["decode_gpus_dedicated"]
        row["sun_throughput_per_gpu_x"] = row["goodput_per_gpu_sun"] / row["goodput_per_gpu_dedicated"]
        row["qsun_throughput_per_gpu_x"] = row["goodput_per_gpu_qsun"] / row["goodput_per_gpu_dedicated"]
        if key in tpot.index:
            t = tpot.loc[key]
            row["sun_tpot_vs_dedicated"] = t["sun"] / t["dedicated"] - 1
            # TPOT is compared where both designs serve the load within the SLO.
            row["both_meet_slo"] = bool(min(met.loc[key, "sun"], met.loc[key, "dedicated"]) >= 0.9)
            row["qsun_tpot_speedup_over_sun"] = t["sun"] / t["qsun"] - 1
            row["qsun_tpot_reduction"] = 1 - t["qsun"] / t["sun"]
        rows.append(row)
    table = pd.DataFrame(rows)
    ok = table["both_meet_slo"].fillna(False).astype(bool) if "both_meet_slo" in table else None
    extremes = {
        "throughput_x_max": float(table["sun_throughput_per_gpu_x"].max()),
        "gpus_saved_max": float(table["sun_decode_gpus_saved"].max()),
        "total_gpus_saved_max": float(table["sun_total_gpus_saved"].max()),
        "tpot_diff_min": float(table.loc[ok, "sun_tpot_vs_dedicated"].min()) if ok is not None else nan,
        "tpot_diff_max": float(table.loc[ok, "sun_tpot_vs_dedicated"].max()) if ok is not None else nan,
        "qsun_reduction_mean": float(table["qsun_tpot_reduction"].mean()) if "qsun_tpot_reduction" in table else nan,
    }
    return table, extremes


#: 16-bit designs an operator could run instead of SUN (QSUN's quantization is a separate effect).
ALTERNATIVES = ("dedicated", "colocated", "multi-lora")


#: The alternatives that share GPUs between models without SUN.
STRONGER = ("colocated", "multi-lora")


def _strongest(row: dict) -> dict:
    """The alternative with the highest goodput per GPU, and the one needing the fewest GPUs (prefill +
    decode), in one headline row, with SUN's standing against each."""
    nan = float("nan")
    good = {v: row.get(f"goodput_per_gpu_{v}", nan) for v in ALTERNATIVES}
    good = {v: x for v, x in good.items() if x == x}
    need = {v: row.get(f"total_gpus_{v}", nan) for v in ALTERNATIVES}
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
        out["sun_gpus_saved_vs_fewest"] = 1 - row["total_gpus_sun"] / need[fewest] if need[fewest] > 0 else nan
    return out


def claims(sweeps: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """The paper's claims restated: per claim, sunsim's extreme and its min-max interval over
    every run that gives the figure (grid configurations x seeds), with a verdict word."""
    plan = ok_rows(sweeps["plan-skew"]).copy()
    if "model.tasks" not in plan.columns:
        plan["model.tasks"] = 4
    key = ["model.tasks", "workload.popularity.s", "seed"]
    p = plan.pivot_table(index=key, columns="variant", values=["goodput_rps_per_gpu", "min_decode_gpus"])
    x = (p[("goodput_rps_per_gpu", "sun")] / p[("goodput_rps_per_gpu", "dedicated")]).dropna()
    saved = (1 - p[("min_decode_gpus", "sun")] / p[("min_decode_gpus", "dedicated")]).dropna()
    skew = ok_rows(sweeps["skew"])
    skew = skew[skew["model.preset"] == "llama-3.1-8b"]
    k2 = ["model.tasks", "workload.popularity.s", "seed"]
    t = skew.pivot_table(index=k2, columns="variant", values="tpot_mean_s")
    met = skew.pivot_table(index=k2, columns="variant", values="slo_attainment")
    both = (met["sun"] >= 0.9) & (met["dedicated"] >= 0.9)
    tdiff = (t["sun"] / t["dedicated"] - 1)[both].dropna()
    qx = (t["sun"] / t["qsun"] - 1).dropna()
    qr = (1 - t["qsun"] / t["sun"]).dropna()
    n = len(plan[["model.tasks", "workload.popularity.s"]].drop_duplicates())
    seeds = plan["seed"].nunique()

    def runs(s: pd.Series, what: str) -> str:
        return f"{len(s)} {what}"

    rows = []
    if len(x):
        word = "exceeds" if x.max() > 2.0 * 1.05 else "matches" if x.max() >= 2.0 * 0.95 else "falls short of"
        rows.append(("up to 2.0x throughput per GPU",
                     f"up to {x.max():.2f}x goodput per GPU over dedicated pools, each on its own planned fleet (min-max "
                     f"{x.min():.2f}x to {x.max():.2f}x over {runs(x, 'plans')}: {n} configurations x {seeds} "
                     f"seed(s)); {word} the paper"))
    if len(tdiff):
        lo, hi = tdiff.min(), tdiff.max()
        word = ("holds" if max(abs(lo), abs(hi)) <= 0.05 else
                "holds with SUN faster" if hi <= 0.05 else "does not hold")
        rows.append(("TPOT within 5%", f"SUN's mean TPOT differs from dedicated's by {pct(lo)} to {pct(hi)} "
                     f"(min-max over {runs(tdiff, 'runs')} where both meet the SLO); {word}"))
    if len(saved):
        word = "exceeds" if saved.max() > 0.5 + 0.025 else "matches" if saved.max() >= 0.5 - 0.025 else "falls short of"
        rows.append(("up to 50% fewer decode GPUs",
                     f"up to {saved.max():.0%} fewer (min-max {saved.min():.0%} to {saved.max():.0%} over "
                     f"{runs(saved, 'plans')}); {word} the paper"))
    if len(qr):
        word = "exceeds" if qr.min() > 0.45 * 1.1 else "matches" if qr.max() >= 0.45 * 0.9 else "falls short of"
        rows.append(("QSUN: TPOT reduced by up to 45%",
                     f"QSUN's mean TPOT is {qr.median():.0%} lower than SUN's (median; min-max {qr.min():.0%} to "
                     f"{qr.max():.0%} over {runs(qr, 'runs')}; a {1 + qx.median():.2f}x speed-up); {word} the paper"))
    return rows
