"""The results page, ``results/README.md``: the headline table, the paper's claims against sunsim's,
the findings of both families of experiments and their figures.
"""

from __future__ import annotations

from pathlib import Path

from sunsim.experiments.aggregated import aggregated_section
from sunsim.experiments.beyond import (
    beyond_figures,
    interconnect_finding,
    routing_finding,
    run_findings,
    runs_table,
    short_outputs_finding,
    stronger_baselines_finding,
)
from sunsim.experiments.claims import STRONGER, claims, headline
from sunsim.experiments.fleet import fleet_section
from sunsim.experiments.outputs import Outputs
from sunsim.experiments.paper import (
    baselines_finding,
    fixed_layout_finding,
    paper_figures,
    pooling_finding,
    qsun_finding,
    qsun_load_finding,
    strongest_alternative_finding,
    tpot_finding,
)
from sunsim.experiments.paper_setting import paper_setting_section
from sunsim.experiments.quality import quality_table
from sunsim.experiments.wording import ok_rows, pct, range_text, span
from sunsim.output import write_text


def _setting(outputs: Outputs) -> dict:
    """The base experiment's numbers, read from the run beside the tables (its scenario.yaml)."""
    import yaml

    sc = yaml.safe_load((outputs.runs["paper"] / "scenario.yaml").read_text())
    wl = sc["workload"]
    return {"rate": wl["rate"], "prompt": wl["prompt_tokens"].get("mean"), "output": wl["output_tokens"].get("mean"),
            "ttft": sc["slo"]["ttft_s"], "tpot": sc["slo"]["tpot_s"], "target": sc["slo"].get("attainment", 0.9),
            "preset": sc["model"]["preset"], "gpu": sc["hardware"]["gpu"]}


def cost_sources(outputs: Outputs) -> list[str]:
    """Where QSUN's and multi-LoRA's costs come from, read from the base run's summaries and the LoRA data file."""
    import json

    from sunsim.costs import efficiency as eff
    from sunsim.costs.lora import LORA_DATA, LORA_SOURCE

    lines = []
    for variant, what in (("sun", "16-bit decode (SUN, dedicated)"), ("qsun", "QSUN's int4 decode")):
        path = outputs.runs["paper"] / variant / "summary.json"
        if path.exists():
            prof = json.loads(path.read_text())["profile"]
            lines.append(f"- {what}: **{prof['name']}** ({prof['kind']}; {prof.get('source', '')}). "
                         f"{prof.get('note', '')}.")
    losses = {r["use"].removeprefix("band-"): float(r["value"]) for r in eff.read_table(LORA_DATA)
              if r["use"].startswith("band-")}
    if losses:
        lines.append(f"- multi-LoRA adapters (rank 16): SGMV/BGMV shrink + expand per module group, priced in a band "
                     f"fitted to published serving measurements ({LORA_SOURCE}): the low and high ends lose "
                     f"{losses.get('low', float('nan')):.1%} and {losses.get('high', float('nan')):.1%} of throughput at "
                     "the reference configuration (H100, batch 64, 8 distinct adapters), the central band lies between. "
                     "The headline tables use the central band; the baselines run has both ends.")
    return lines


def write_readme(outputs: Outputs, out: Path, profile: str) -> Path:
    """``results/README.md``: headline, claims, findings and figures, every number computed
    from ``outputs`` so the page cannot drift from its tables."""
    table, _ = headline(outputs.sweeps)
    figs = paper_figures(outputs, out / "figures") | beyond_figures(outputs, out / "figures")
    st = _setting(outputs)
    plan = ok_rows(outputs.sweeps["plan-skew"])
    decode = range_text(*span(ok_rows(outputs.sweeps["skew"])["decode_gpus"]), ".0f")
    seeds = plan["seed"].nunique()
    lines = [
        "# sunsim experiments", "",
        "Regenerate everything here with one command: `sunsim experiments`",
        "(`sunsim experiments --report-only` redraws figures, tables and this page from the tables already here,",
        "keeping the figures drawn from per-request tables and timelines, which the repository does not keep;",
        "`--only NAME` reruns one experiment).",
        "Every number and comparison on this page is computed from the tables beside it.",
        f"Profile for every figure and table: **{profile}**; `--set hardware.profile=NAME|PATH` uses another",
        "(`analytic`, a shipped table profile, or a calibrated one: see `calibration/README.md`). Cost sources:", "",
        *cost_sources(outputs), "",
        "## Headline: planned fleets", "",
        f"Task models on the {st['preset']} shape, {st['gpu']} GPUs, {range_text(*span(plan['rate']), 'g')} req/s "
        f"Poisson, prompts ~{st['prompt']:g} and outputs ~{st['output']:g} tokens, SLO TTFT <= {st['ttft']:g} s and "
        f"TPOT <= {st['tpot'] * 1e3:g} ms for {st['target']:.0%} of requests. For each design `sunsim plan` finds the "
        "fewest prefill GPUs per model and decode GPUs per pool meeting the SLO (every model's requests) on each of "
        f"{seeds} seed(s); the counts are the most any seed needs, as a capacity plan must promise. Goodput is the "
        "highest rate that planned fleet still serves within the SLO, per GPU of it (prefill included; the worst "
        "seed). TPOT columns come from the fixed-layout runs of the skew sweep (every design on the same "
        f"{decode} decode GPUs), where both designs serve the same load.", "",
        "| models | Zipf s | total GPUs (prefill + decode): dedicated / SUN / QSUN | decode GPUs: dedicated / SUN / QSUN "
        "| SUN saves (total / decode) | goodput per GPU (req/s): dedicated / SUN / QSUN | SUN x dedicated "
        "| SUN TPOT vs dedicated | QSUN TPOT reduction vs SUN |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    alt_lines = [
        "", "Against the alternatives that share GPUs without SUN (`colocated`: two models' decode weights per GPU, "
        "per-model batches; `multi-lora`: one base model serving every task as a rank-16 adapter), each on its own "
        "planned fleet: the alternative with the highest goodput per GPU and the one needing the fewest GPUs "
        "(prefill + decode) among dedicated, colocated and multi-LoRA:", "",
        "| models | Zipf s | goodput per GPU: colocated / multi-LoRA / SUN | strongest alternative | SUN x it "
        "| total GPUs: colocated / multi-LoRA / SUN | fewest-GPU alternative | SUN saves vs it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        good = " / ".join(f"{r[f'goodput_per_gpu_{v}']:.2f}" for v in (*STRONGER, "sun"))
        need = " / ".join(f"{r[f'total_gpus_{v}']:.0f}" for v in (*STRONGER, "sun"))
        alt_lines.append(f"| {r['models']} | {r['zipf_s']:g} | {good} | {r['strongest_goodput']} | "
                         f"{r['sun_x_strongest']:.2f}x | {need} | {r['fewest_gpus']} | "
                         f"{r['sun_gpus_saved_vs_fewest']:.0%} |")
    nan = float("nan")
    designs = ("dedicated", "sun", "qsun")
    for r in table.to_dict("records"):
        total = " / ".join(f"{r[f'total_gpus_{v}']:.0f}" for v in designs)
        dec = " / ".join(f"{r[f'decode_gpus_{v}']:.0f}" for v in designs)
        goodput = " / ".join(range_text(r[f"goodput_per_gpu_{v}"], r[f"goodput_per_gpu_{v}_max"], ".2f") for v in designs)
        tpot = pct(r.get("sun_tpot_vs_dedicated", nan))
        if r.get("both_meet_slo") is False:
            tpot += " (one design misses the SLO)"
        red = r.get("qsun_tpot_reduction", nan)
        lines.append(f"| {r['models']} | {r['zipf_s']:g} | {total} | {dec} | {r['sun_total_gpus_saved']:.0%} / "
                     f"{r['sun_decode_gpus_saved']:.0%} | {goodput} | {r['sun_throughput_per_gpu_x']:.2f}x | {tpot} | "
                     f"{'-' if red != red else f'{red:.0%}'} |")
    lines += alt_lines
    lines += [
        "", f"Against the paper's claims (intervals: min-max over the runs that give each figure; the plans have "
        f"{seeds} seed(s) per configuration):", "",
        "| claim (paper) | sunsim (this profile) |", "|---|---|",
        *[f"| {claim} | {ours} |" for claim, ours in claims(outputs.sweeps)],
        "", "Where they differ, from the same tables:", "",
        pooling_finding(table), strongest_alternative_finding(table), tpot_finding(table),
        qsun_finding(table), *filter(None, [qsun_load_finding(outputs.sweeps["load"])]),
        baselines_finding(outputs.sweeps["skew"]), *filter(None, [fixed_layout_finding(outputs.sweeps["skew"])]), "",
    ]
    for stem, caption in figs.items():
        lines += [f"![{caption}](figures/{stem}.png)", "", f"*{caption}; profile {profile}.* "
                  f"([SVG](figures/{stem}.svg))", ""]
    found = [interconnect_finding(outputs.sweeps["interconnect"], st["target"]),
             routing_finding(outputs.sweeps["routing"], st["target"])]
    if "short-outputs" in outputs.sweeps:
        found.append(short_outputs_finding(outputs.sweeps["short-outputs"]))
    lines += [*paper_setting_section(outputs.runs, outputs.sweeps), *aggregated_section(outputs.runs, outputs.sweeps),
              *fleet_section(outputs.runs, outputs.sweeps),
              quality_table(), ""]
    lines += [
        "## Beyond the paper", "",
        runs_table(outputs.runs), "",
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
