"""The README's "What the default scenario shows" table: the default scenario at several skews.

``python benchmarks/default_table.py [--skews 0 1 1.2 1.5 2]`` runs ``scenarios/default.yaml`` once per Zipf
exponent (``--set workload.popularity.s=S``, nothing written) and prints the Markdown table, so every number
in that README section comes from a run anyone can repeat.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sunsim.analysis.runner import run_scenario  # noqa: E402
from sunsim.scenario import load_scenario  # noqa: E402

HEAD = ("| Zipf s | variant | decode GPUs | tok/s per GPU (window) | TTFT p90 (s) | TPOT p50 / p90 (ms) | SLO attainment "
        "| decode busy mean / min | mean batch | preemptions | drain (s) |")


def rows(skew: float) -> list[str]:
    sc = load_scenario(ROOT / "scenarios" / "default.yaml", [f"workload.popularity.s={skew}"])
    run = run_scenario(sc)
    label = f"**{skew:g}** (default)" if skew == 1.2 else f"{skew:g}"
    out = []
    for s in run.summaries:
        u = s["decode_utilization"]
        out.append(f"| {label} | {s['variant']} | {s['gpus']['decode']} | "
                   f"{s['throughput']['output_tokens_per_s_per_gpu']:,.0f} | {s['ttft_s']['p90']:.3f} | "
                   f"{s['tpot_s']['p50'] * 1e3:.1f} / {s['tpot_s']['p90'] * 1e3:.1f} | {s['slo']['attainment']:.1%} | "
                   f"{u['mean_busy_fraction']:.2f} / {u['min_busy_fraction']:.2f} | {u['mean_batch']:.0f} | "
                   f"{s['preemptions']} | {s['drain_s']:.1f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--skews", type=float, nargs="+", default=[0, 1, 1.2, 1.5, 2])
    args = p.parse_args(argv)
    sc = load_scenario(ROOT / "scenarios" / "default.yaml")
    print(f"Profile: {sc.hardware.profile} ({sc.hardware.gpu})\n")
    print(HEAD)
    print("|---" * 11 + "|")
    for skew in args.skews:
        print("\n".join(rows(skew)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
