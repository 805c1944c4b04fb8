"""Aggregated serving on the results page: SUN and QSUN against aggregated dedicated pools and aggregated
multi-LoRA on planned fleets (``plan-aggregated``), and, for one model, disaggregated against aggregated serving
(``plan-one-model``), the question an operator asks before SUN: should I disaggregate at all?

Every figure is a fleet planned for the same SLO, counted in GPUs with prefill included (an aggregated GPU does
both), the most any seed needs; goodput per GPU is the worst seed's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sunsim.experiments.wording import ok_rows, range_text, share_words

#: The fixed-layout run of the family (every design on the same GPUs).
AGGREGATED_RUNS = ("aggregated",)
#: Its plan sweeps: the multi-model fleet and the one-model question.
AGGREGATED_SWEEPS = ("plan-aggregated", "plan-one-model")
#: Designs of plan-aggregated in the order the table lists them.
DESIGNS = ("dedicated", "aggregated", "aggregated-lora", "sun", "qsun")
LABELS = {"dedicated": "dedicated (disaggregated)", "aggregated": "aggregated dedicated",
          "aggregated-lora": "aggregated multi-LoRA", "sun": "SUN", "qsun": "QSUN"}


def _plans(plan: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per configuration and design: GPUs (the most any seed needs) and goodput per GPU (the worst seed's)."""
    plan = ok_rows(plan)
    return plan.groupby([*keys, "variant"]).agg(total_gpus=("total_gpus", "max"), prefill_gpus=("prefill_gpus", "max"),
                                                goodput=("goodput_rps_per_gpu", "min")).reset_index()


def _fewer(a: float, b: float) -> str:
    """How a fleet of ``a`` GPUs compares with one of ``b``, in words and share."""
    if a == b:
        return "as many GPUs as"
    return f"{1 - a / b:.0%} fewer GPUs than" if a < b else f"{a / b - 1:.0%} more GPUs than"


def fleet_table(plan: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    """The planned fleets of every design per (models, skew) as a Markdown table, and the pivot behind it."""
    keys = ["model.tasks", "workload.popularity.s"]
    p = _plans(plan, keys)
    gpus = p.pivot_table(index=keys, columns="variant", values="total_gpus")
    good = p.pivot_table(index=keys, columns="variant", values="goodput")
    designs = [d for d in DESIGNS if d in gpus.columns]
    lines = ["| models | Zipf s | " + " | ".join(f"{LABELS[d]}: GPUs / goodput per GPU" for d in designs) + " |",
             "|---|---|" + "---|" * len(designs)]
    for key in gpus.index:
        cells = [f"{gpus.loc[key, d]:.0f} / {good.loc[key, d]:.2f}" for d in designs]
        lines.append(f"| {key[0]} | {key[1]:g} | " + " | ".join(cells) + " |")
    return lines, gpus


def sun_vs_aggregated(gpus: pd.DataFrame) -> list[str]:
    """SUN's planned fleet against each aggregated design, configuration by configuration, in GPUs."""
    out = []
    for other in ("aggregated-lora", "aggregated"):
        if not {"sun", other} <= set(gpus.columns):
            continue
        saved = 1 - gpus["sun"] / gpus[other]
        parts = "; ".join(f"{k[0]} models at Zipf {k[1]:g}: {gpus.loc[k, 'sun']:.0f} against {gpus.loc[k, other]:.0f}"
                          for k in gpus.index)
        out.append(f"- **SUN against {LABELS[other]}**: SUN needs {share_words(saved)} GPUs ({parts}).")
        if "qsun" in gpus.columns:
            out.append(f"  QSUN needs {share_words(1 - gpus['qsun'] / gpus[other])} GPUs than {LABELS[other]}.")
    return out


def prefill_share(plan: pd.DataFrame) -> list[str]:
    """How much of SUN's planned fleet is per-model prefill pools, the part aggregated designs do not pay apart."""
    p = _plans(plan, ["model.tasks", "workload.popularity.s"])
    sun = p[p["variant"] == "sun"]
    if not len(sun):
        return []
    parts = "; ".join(f"{r['model.tasks']} models at Zipf {r['workload.popularity.s']:g}: {r.prefill_gpus:.0f} of "
                      f"{r.total_gpus:.0f}" for _, r in sun.iterrows())
    return [f"- **SUN's prefill pools**: of SUN's planned GPUs, per-model prefill pools take {parts}; "
            "its shared decode pool is the rest."]


def one_model_finding(plan: pd.DataFrame) -> list[str]:
    """Disaggregated against aggregated serving for one model, per rate: the GPUs each needs for the SLO."""
    p = _plans(plan, ["workload.rate"])
    gpus = p.pivot_table(index="workload.rate", columns="variant", values="total_gpus")
    pre = p.pivot_table(index="workload.rate", columns="variant", values="prefill_gpus")
    if not {"disaggregated", "aggregated"} <= set(gpus.columns):
        return []
    parts = []
    for rate in gpus.index:
        d, a = gpus.loc[rate, "disaggregated"], gpus.loc[rate, "aggregated"]
        parts.append(f"at {rate:g} req/s disaggregated serving needs {d:.0f} GPUs ({pre.loc[rate, 'disaggregated']:.0f} "
                     f"prefill + {d - pre.loc[rate, 'disaggregated']:.0f} decode), {_fewer(d, a)} aggregated serving's "
                     f"{a:.0f}")
    wins = int((gpus["disaggregated"] < gpus["aggregated"]).sum())
    ties = int((gpus["disaggregated"] == gpus["aggregated"]).sum())
    return [f"- **Disaggregate at all?** (one model, `one-model.yaml`): {'; '.join(parts)}. Disaggregation needs fewer "
            f"GPUs at {wins}, as many at {ties}, more at {len(gpus) - wins - ties} of {len(gpus)} rates."]


def aggregated_section(runs: dict[str, Path], sweeps: dict[str, pd.DataFrame]) -> list[str]:
    """The page's section on aggregated serving; empty when its plans are missing (older results)."""
    if "plan-aggregated" not in sweeps:
        return []
    plan = sweeps["plan-aggregated"]
    table, gpus = fleet_table(plan)
    rate = range_text(*(lambda r: (r.min(), r.max()))(ok_rows(plan)["rate"]), "g")
    seeds = ok_rows(plan)["seed"].nunique()
    lines = ["## Aggregated serving", "",
             f"Aggregated designs run prefill and decode on the same GPUs (vLLM V1's continuous batching with chunked "
             f"prefill): `aggregated` gives each model its own pool, `aggregated-lora` serves every task as a rank-16 "
             f"adapter on one pool, which is how vLLM serves many fine-tunes today. Each design's fleet is planned "
             f"for the SLO at {rate} req/s ({seeds} seed(s); GPUs: the most any seed needs, prefill included; "
             f"goodput per GPU: the worst seed's):", "", *table, "", *sun_vs_aggregated(gpus),
             *prefill_share(plan)]
    if "plan-one-model" in sweeps:
        lines += one_model_finding(sweeps["plan-one-model"])
    return [*lines, ""]
