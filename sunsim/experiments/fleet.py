"""Fleet at scale on the results page (``plan-fleet``): the fleets dedicated pools, multi-LoRA, SUN, QSUN and
SUN with its decode pool on another GPU need for the SLO at 16 to 256 task models under a long tail, with a
prefill pool per model and with the prefill GPUs multiplexed, in GPUs and in dollars per hour.

That is the operator's question at scale: per-model prefill pools grow with the number of models whatever the
decode design, so what SUN saves on decode is only part of the bill until prefill is shared too. Every figure is
a planned fleet, prefill included, the most any seed needs (GPUs, dollars); dollars per hour price each role's
GPUs at that GPU's price (:mod:`sunsim.analysis.dollars`, written into the plan rows).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sunsim.experiments.wording import ok_rows, range_text, share_words

#: Its plan sweep: 16, 64 and 256 task models, prefill per model and multiplexed.
FLEET_SWEEPS = ("plan-fleet",)
#: Designs in the order the tables list them; the last one moves SUN's decode pool to another GPU.
DESIGNS = ("dedicated", "multi-lora", "sun", "qsun", "sun-h200")
MIXED = "sun-h200"
LABELS = {"dedicated": "dedicated", "multi-lora": "multi-LoRA", "sun": "SUN", "qsun": "QSUN (int4)",
          "sun-h200": "SUN, decode on H200"}
#: Index of the plans: task models, and whether the prefill GPUs are multiplexed.
KEYS = ["model.tasks", "multiplexed"]
PREFILL = {False: "a pool per model", True: "multiplexed"}


def multiplexed(plan: pd.DataFrame) -> pd.Series:
    """Per row, whether its prefill GPUs serve several models (``prefill.on_demand`` set, or
    ``prefill.models_per_gpu`` above 1); a table sweeping neither has a pool per model throughout."""
    mux = pd.Series(False, index=plan.index)
    if "prefill.on_demand" in plan:
        od = plan["prefill.on_demand"]
        mux |= od.notna() & (od.astype(str).str.strip() != "")
    if "prefill.models_per_gpu" in plan:
        mux |= plan["prefill.models_per_gpu"].fillna(1) > 1
    return mux


def plans(plan: pd.DataFrame) -> pd.DataFrame:
    """Per (models, multiplexed, design): GPUs in all, prefill and decode, and dollars, the most any seed needs."""
    plan = ok_rows(plan).assign(multiplexed=lambda d: multiplexed(d))
    usd_m = "usd_per_million_output_tokens"
    if usd_m not in plan:
        plan = plan.assign(**{usd_m: float("nan")})
    return plan.groupby([*KEYS, "variant"]).agg(
        total=("total_gpus", "max"), prefill=("prefill_gpus", "max"), decode=("min_decode_gpus", "max"),
        usd=("usd_per_hour", "max"), usd_m=(usd_m, "max")).reset_index()


def _designs(p: pd.DataFrame) -> list[str]:
    return [d for d in DESIGNS if d in set(p["variant"])]


def _money(x: float) -> str:
    return "-" if x != x else f"${x:,.0f}"


def fleet_table(p: pd.DataFrame) -> list[str]:
    """GPUs (prefill + decode) and dollars per hour of every design per (models, prefill)."""
    designs = _designs(p)
    lines = ["| models | prefill | " + " | ".join(LABELS[d] for d in designs) + " |",
             "|---|---|" + "---|" * len(designs)]
    by = p.set_index([*KEYS, "variant"])
    for key in p[KEYS].drop_duplicates().sort_values(KEYS).itertuples(index=False):
        cells = []
        for d in designs:
            r = by.loc[(*key, d)] if (*key, d) in by.index else None
            cells.append("-" if r is None else
                         f"{r.total:.0f} ({r.prefill:.0f} + {r.decode:.0f}) / {_money(r.usd)}")
        lines.append(f"| {key[0]} | {PREFILL[bool(key[1])]} | " + " | ".join(cells) + " |")
    return lines


def tokens_table(p: pd.DataFrame) -> list[str]:
    """Dollars per million output tokens at each fleet's goodput; empty when the plans measured no goodput."""
    if p["usd_m"].isna().all():
        return []
    designs = _designs(p)
    cost = p.pivot_table(index=KEYS, columns="variant", values="usd_m", dropna=False)
    lines = ["| models | prefill | " + " | ".join(LABELS[d] for d in designs) + " |",
             "|---|---|" + "---|" * len(designs)]
    for key in cost.index:
        cells = ["-" if cost.loc[key, d] != cost.loc[key, d] else f"${cost.loc[key, d]:.2f}" for d in designs]
        lines.append(f"| {key[0]} | {PREFILL[bool(key[1])]} | " + " | ".join(cells) + " |")
    return lines


def _gpus(saved: pd.Series, noun: str = "GPUs") -> str:
    """``"33% fewer GPUs"``, ``"as many GPUs"``: shares of GPUs saved in words."""
    return f"{share_words(saved, same='as many')} {noun}"


def _dollars(saved: pd.Series) -> str:
    """``"33% less"``, ``"the same"``: shares of dollars saved in words."""
    return share_words(saved, "less", "more", same="the same")


def _pair(p: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Design ``a``'s plan beside ``b``'s per (models, multiplexed): columns ``total_a``, ``usd_b``, ..."""
    one = p[p["variant"] == a].set_index(KEYS)
    two = p[p["variant"] == b].set_index(KEYS)
    return pd.merge(one, two, left_index=True, right_index=True, suffixes=("_a", "_b")).sort_index()


def versus(p: pd.DataFrame, a: str, b: str) -> list[str]:
    """Design ``a`` against ``b``, per prefill setting: the share of GPUs and of dollars per hour it saves, and
    the counts at each size."""
    both = _pair(p, a, b)
    out = []
    for mux, rows in both.groupby(level="multiplexed"):
        parts = "; ".join(f"{k[0]} models: {r.total_a:.0f} against {r.total_b:.0f} GPUs, {_money(r.usd_a)} against "
                          f"{_money(r.usd_b)} per hour" for k, r in rows.iterrows())
        out.append(f"- **{LABELS[a]} against {LABELS[b]}**, prefill {PREFILL[bool(mux)]}: {LABELS[a]} needs "
                   f"{_gpus(1 - rows.total_a / rows.total_b)} (decode alone: "
                   f"{share_words(1 - rows.decode_a / rows.decode_b, same='as many')}) and costs "
                   f"{_dollars(1 - rows.usd_a / rows.usd_b)} per hour ({parts}).")
    return out


def multiplexing_finding(p: pd.DataFrame) -> list[str]:
    """What multiplexing the prefill GPUs saves per size: the prefill GPUs before and after (range over designs)
    and the share of each design's fleet and dollars."""
    per_model = p[~p["multiplexed"]].set_index(["model.tasks", "variant"])
    mux = p[p["multiplexed"]].set_index(["model.tasks", "variant"])
    both = pd.merge(per_model, mux, left_index=True, right_index=True, suffixes=("_own", "_mux"))
    if not len(both):
        return []
    parts = []
    for tasks, rows in both.groupby(level="model.tasks"):
        own = range_text(rows.prefill_own.min(), rows.prefill_own.max(), ".0f")
        shared = range_text(rows.prefill_mux.min(), rows.prefill_mux.max(), ".0f")
        parts.append(f"at {tasks} models prefill takes {shared} GPUs instead of {own}, "
                     f"{_gpus(1 - rows.total_mux / rows.total_own)} in all, {_dollars(1 - rows.usd_mux / rows.usd_own)}"
                     f" per hour")
    out = "- **Prefill multiplexing** (one shared prefill pool instead of a pool per model; ranges over the designs): "
    out += f"{'; '.join(parts)}."
    shared = mux.reset_index().pivot_table(index="model.tasks", columns="variant", values="prefill")
    if {"multi-lora", "sun"} <= set(shared.columns):
        sizes = ", ".join(str(t) for t in shared.index)
        out += (f" Multiplexed, multi-LoRA's prefill GPUs hold the base model once and load only adapters: "
                f"{', '.join(f'{n:.0f}' for n in shared['multi-lora'])} GPUs at {sizes} models, against "
                f"{', '.join(f'{n:.0f}' for n in shared['sun'])} for SUN's, which load whole prefill modules.")
    return [out]


def mixed_gpu_finding(p: pd.DataFrame) -> list[str]:
    """What moving SUN's decode pool to the mixed variant's GPU changes: decode GPUs and dollars per hour."""
    both = _pair(p, MIXED, "sun")
    if not len(both):
        return []
    parts = "; ".join(f"{k[0]} models, prefill {PREFILL[bool(k[1])]}: {r.decode_a:.0f} decode GPUs against "
                      f"{r.decode_b:.0f}, {_money(r.usd_a)} against {_money(r.usd_b)} per hour"
                      for k, r in both.iterrows())
    return [f"- **{LABELS[MIXED]}** (prefill stays on H100): against SUN on H100 it needs "
            f"{_gpus(1 - both.decode_a / both.decode_b, 'decode GPUs')} and costs "
            f"{_dollars(1 - both.usd_a / both.usd_b)} per hour ({parts})."]


def prices(p: pd.DataFrame) -> str:
    """The GPU-hour prices behind the dollars, read back from the plans: an all-H100 fleet's dollars over its
    GPUs, and the mixed variant's decode GPUs' share of the rest."""
    one = p[(p["variant"] != MIXED) & (p["total"] > 0)]
    if not len(one):
        return ""
    h100 = float((one["usd"] / one["total"]).median())
    text = f"H100 at ${h100:.3f} per GPU-hour"
    mixed = p[(p["variant"] == MIXED) & (p["decode"] > 0)]
    if len(mixed):
        h200 = float(((mixed["usd"] - mixed["prefill"] * h100) / mixed["decode"]).median())
        text += f", H200 at ${h200:.3f}"
    return text


def fleet_section(runs: dict[str, Path], sweeps: dict[str, pd.DataFrame]) -> list[str]:
    """The page's section on fleets at scale; empty when its plans are missing (older results)."""
    if "plan-fleet" not in sweeps:
        return []
    plan = sweeps["plan-fleet"]
    p = plans(plan)
    if not len(p):
        return []
    ok = ok_rows(plan)
    rate = range_text(ok["rate"].min(), ok["rate"].max(), "g")
    sizes = ", ".join(str(t) for t in sorted(p["model.tasks"].unique()))
    lines = ["## Fleet at scale", "",
             f"{sizes} task models under a long-tailed (Zipf) popularity at {rate} req/s in all (`fleet.yaml`, its "
             f"SLO): each design's fleet planned for the SLO, with a prefill pool per model and with the prefill "
             f"GPUs multiplexed (one shared pool loading prefill modules on demand). Cells: GPUs in all (prefill + "
             f"decode) / dollars per hour. Dollars per hour "
             f"price every GPU at its role's GPU ({prices(p)}; sunsim/costs/data/gpu_prices.csv). "
             f"{ok['seed'].nunique()} seed(s): a single seed's plan is a sample, not a bound.", "",
             *fleet_table(p), ""]
    tokens = tokens_table(p)
    if tokens:
        lines += ["Dollars per million output tokens, at the output tokens/s each planned fleet generates at its "
                  "goodput:", "", *tokens, ""]
    lines += [*versus(p, "sun", "dedicated"), *versus(p, "sun", "multi-lora"), *versus(p, "qsun", "sun"),
              *multiplexing_finding(p), *mixed_gpu_finding(p)]
    return [*lines, ""]
