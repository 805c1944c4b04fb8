"""``sunsim experiments``: regenerate the committed experiments, their figures and results/README.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from sunsim.cli.argtypes import worker_count
from sunsim.errors import InputError
from sunsim.output import Output, claim_outputs


def cmd_experiments(args: argparse.Namespace) -> int:
    from sunsim.cli.console import console
    from sunsim.experiments import EXPERIMENTS, regenerate

    # Before hours of experiments, not after: the folder is new, empty or the experiments' own.
    claim_outputs("experiments", [Output(Path(args.out), "--out")],
                  [(f, "experiment scenario") for f in sorted(EXPERIMENTS.rglob("*")) if f.is_file()])
    if args.only and args.report_only:
        raise InputError("--only reruns named experiments; --report-only reruns none: give one of them")
    path = regenerate(Path(args.out), quick=args.quick, workers=args.workers,
                      say=lambda m: console.print(m, highlight=False), report_only=args.report_only,
                      only=args.only)
    console.print(f"wrote {path} and {Path(args.out) / 'report' / 'report.md'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiments", help="regenerate the committed experiments, figures and results/README.md")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--quick", action="store_true", help="short runs and small grids: a check of the pipeline")
    p.add_argument("--workers", type=worker_count, help="local worker processes for the sweeps (default: all cores)")
    p.add_argument("--report-only", action="store_true",
                   help="redraw figures, README and report from the results already in --out")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this experiment again (a run or sweep of scenarios/experiments/, repeatable); "
                        "the others are read from --out, and the page, figures and report are redrawn")
    p.set_defaults(func=cmd_experiments)
