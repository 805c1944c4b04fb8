"""``sunsim plan``: fewest GPUs per variant for an SLO, and goodput, with the frontier explored.

The planning itself is :func:`sunsim.api.plan` (what ``sunsim.plan`` is in Python); this module adds the
files, the tables and the progress lines. The planner, the scenario schema, pandas and rich's tables are
imported where they are used, not here, so that building the parser for ``sunsim --help`` loads none of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from sunsim.analysis.options import MAX_GPUS_LIMIT
from sunsim.cli.console import console, err_console
from sunsim.errors import InputError
from sunsim.names import check_name
from sunsim.output import Output, check_replaceable, claim_outputs, mark, publish, staging, write_table, write_text

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

#: The files ``plan`` writes into its output folder.
PLAN_FILES = ("plan.csv", "plan_summary.csv", "scenario.yaml")


def cmd_plan(args: argparse.Namespace) -> int:
    import yaml

    from sunsim.analysis.planning import check_max_gpus
    from sunsim.api import plan
    from sunsim.scenario import load_scenario, scenario_inputs

    overrides = list(args.set)
    if args.slo_ttft is not None:
        overrides.append(f"slo.ttft_s={args.slo_ttft}")
    if args.slo_tpot is not None:
        overrides.append(f"slo.tpot_s={args.slo_tpot}")
    if args.duration is not None:
        if not args.duration > 0:
            raise InputError(f"--duration must be a positive number of seconds, got {args.duration}")
        overrides.append(f"workload.duration_s={args.duration}")
    sc = load_scenario(args.scenario, overrides)
    target = args.attainment if args.attainment is not None else sc.slo.attainment
    if not 0 < target <= 1:
        raise InputError(f"--attainment must be in (0, 1], got {target}")
    check_max_gpus(args.max_gpus)
    out = Path(args.out) if args.out else Path("results") / check_name(sc.name, "name") / "plan"
    # Before any planning: a bad folder costs nothing, and no input or foreign file is ever replaced.
    claim_outputs("plan", [Output(out, "--out")], scenario_inputs(args.scenario, sc))
    check_replaceable(out, (), PLAN_FILES, "--out", command="plan")
    # With --json, stdout carries one JSON document and everything for people goes to stderr.
    show = err_console if args.json else console
    frontier_cols = ("variant", "seed", "rate", "prefill", "decode", "attainment", "worst model", "meets")
    frontier_rows = []

    def on_probe(row: dict) -> None:
        show.print(f"  probe {row['variant']} seed {row['seed']}: rate {row['rate']:g}, decode {row['decode_gpus']}, "
                   f"prefill {row['prefill_gpus']} -> attainment {row['slo_attainment']:.1%} "
                   f"(worst model {row['min_model_attainment']:.1%}) {'ok' if row['meets_slo'] else 'miss'}",
                   highlight=False)
        frontier_rows.append((row["variant"], str(row["seed"]), f"{row['rate']:g}", str(row["prefill_gpus"]),
                              str(row["decode_gpus"]), f"{row['slo_attainment']:.1%}",
                              f"{row['min_model_attainment']:.1%}", "yes" if row["meets_slo"] else "no"))

    def on_warning(msg: str) -> None:
        show.print(f"[yellow]warning:[/yellow] {msg}", highlight=False)

    planned = plan(sc, seeds=args.seeds, prefill=args.prefill, goodput=not args.no_goodput, attainment=target,
                   variants=args.variant, max_gpus=args.max_gpus, on_probe=on_probe, on_warning=on_warning)
    summary = planned.summary
    frontier = narrow_table(f"frontier explored (SLO TTFT<={sc.slo.ttft_s}s, TPOT<={sc.slo.tpot_s * 1e3:g}ms, "
                            f"attainment>={target:.0%} for every model)", frontier_cols, frontier_rows)
    show.print(frontier)
    base = next((b for b in summary["baseline"] if isinstance(b, str)), None)
    # per seed in plan_summary.csv (decode_gpus_by_seed); here the spread, so the table reads at 80 columns
    cols = ("variant", "decode", "per model", "seeds", f"vs {base or 'baseline'}", "prefill", "USD/h",
            *(() if args.no_goodput else ("goodput req/s", "req/s per GPU", "USD/M tok")))
    rows = []
    for r in summary.itertuples():
        goodput = () if args.no_goodput else (
            _number(r.goodput_rps, "{:.1f}"), _number(r.goodput_rps_per_gpu, "{:.2f}"),
            _number(r.usd_per_million_output_tokens, "{:.3f}"))
        rows.append((r.variant, str(r.min_decode_gpus), r.decode_counts,
                     f"{r.decode_gpus_seed_min}/{r.decode_gpus_seed_median:g}/{r.decode_gpus_seed_max}",
                     r.vs_baseline, str(r.prefill_gpus), _number(r.usd_per_hour, "{:,.2f}"), *goodput))
    result = narrow_table(f"plan for {sc.name} at {sc.workload.rate} req/s over seeds {summary['seeds'].iloc[0]} "
                          f"(profile {', '.join(dict.fromkeys(map(str, summary['profile'])))}); GPUs = the most any seed needs; seeds: decode GPUs "
                          "min/median/max over seeds"
                          + "; USD/h: every GPU of the fleet at its role's price"
                          + ("" if args.no_goodput else "; goodput on the planned fleet, worst seed; USD/M tok: USD/h "
                             "over the output tokens/s simulated at that goodput"), cols, rows)
    show.print(result)
    for note in sorted({n for n in summary["price_note"] if isinstance(n, str)}):
        on_warning(note)
    _write(out, {"plan.csv": planned.probes, "plan_summary.csv": summary},
           scenario=yaml.safe_dump(sc.model_dump(mode="json"), sort_keys=False))
    show.print(f"plan tables in {out}/")
    if args.json:
        rows = json.loads(summary.to_json(orient="records"))  # NaN -> null, numpy -> plain numbers
        print(json.dumps({"scenario": sc.name, "rate": sc.workload.rate, "attainment_target": target,
                          "out": str(out), "plan": rows}, indent=2))
    return 0


def narrow_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    """A table that reads at 80 columns: no vertical rules, and each column as wide as its longest word (header
    included), so cells wrap at spaces and no word is ever cut."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for i, col in enumerate(columns):
        words = [w for cell in [col, *(r[i] for r in rows)] for w in str(cell).split()]
        width = max(map(len, words), default=1)
        table.add_column(col, justify="left" if i == 0 else "right", min_width=width, max_width=width)
    for r in rows:
        table.add_row(*r)
    return table


def _number(value, fmt: str) -> str:
    """A table cell: ``-`` for a missing or NaN value."""
    return "-" if value is None or value != value else fmt.format(value)


def _write(out: Path, tables: dict[str, pd.DataFrame], scenario: str) -> None:
    """All files staged, then published together: a failure (a full disk) leaves none of them."""
    out.mkdir(parents=True, exist_ok=True)
    with staging(out) as stage:
        for name, df in tables.items():
            write_table(df, stage / name, float_format="%.6g")
        write_text(stage / "scenario.yaml", scenario)
        mark(stage, {"command": "plan"})
        publish(stage, out)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="fewest decode (and prefill) GPUs per variant meeting an SLO; goodput")
    p.add_argument("scenario", help="scenario YAML file (its load is what must be served)")
    p.add_argument("--slo-ttft", type=float, help="TTFT target, s (default: the scenario's)")
    p.add_argument("--slo-tpot", type=float, help="TPOT target, s (default: the scenario's)")
    p.add_argument("--attainment", type=float, help="share of requests meeting both targets (default 0.9)")
    p.add_argument("--variant", action="append", metavar="NAME", help="plan only this variant (repeatable)")
    p.add_argument("--prefill", action="store_true", help="also size prefill GPUs (on TTFT): per model, or one total when prefill GPUs are shared (prefill.models_per_gpu > 1, prefill.on_demand)")
    p.add_argument("--no-goodput", action="store_true", help="skip the goodput search")
    p.add_argument("--json", action="store_true",
                   help="print the plan (one row per variant) as JSON on stdout; progress and tables go to stderr")
    p.add_argument("--max-gpus", type=int, default=256,
                   help=f"give up past this many GPUs per pool (1 to {MAX_GPUS_LIMIT}; default 256)")
    p.add_argument("--seeds", type=int, default=3,
                   help="plan on this many seeds (the scenario's seed, +1, ...); the answer meets the SLO on all")
    p.add_argument("--duration", type=float, help="simulated seconds of traffic per probe (default: the scenario's)")
    p.add_argument("--out", help="folder for plan.csv and plan_summary.csv (default results/<scenario>/plan)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a scenario field")
    p.set_defaults(func=cmd_plan)

