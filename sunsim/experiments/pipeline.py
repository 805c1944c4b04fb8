"""The committed experiments end to end: run them all, draw the figures, write ``results/README.md``.

One command regenerates everything (``sunsim experiments``): the paper-family sweeps and plans of
``scenarios/experiments/``, the scenarios beyond the paper, the full report, and the headline table
comparing SUN, QSUN and dedicated pools with the paper's claims.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from sunsim.analysis.runner import run_scenario, write_run
from sunsim.analysis.sweep import Sweep, expand_points, load_sweep, run_sweep
from sunsim.errors import InputError
from sunsim.experiments.aggregated import AGGREGATED_RUNS, AGGREGATED_SWEEPS
from sunsim.experiments.beyond import BEYOND_RUNS, BEYOND_SWEEPS
from sunsim.experiments.fleet import FLEET_SWEEPS
from sunsim.experiments.outputs import Outputs
from sunsim.experiments.paper import PAPER_RUNS, PAPER_SWEEPS
from sunsim.experiments.paper_setting import PAPER_SETTING_RUNS, PAPER_SETTING_SWEEPS
from sunsim.experiments.readme import write_readme
from sunsim.output import mark, publish, staging
from sunsim.report import markdown as report
from sunsim.scenario import load_scenario

#: The committed experiment scenarios and sweeps (the repository's ``scenarios/experiments/``).
EXPERIMENTS = Path(__file__).resolve().parents[2] / "scenarios" / "experiments"
#: Every run, the paper's family first: the order they run in and the page lists them in.
RUNS = PAPER_RUNS + PAPER_SETTING_RUNS + AGGREGATED_RUNS + BEYOND_RUNS
#: Runs a page from older results may lack (their findings are left out).
OPTIONAL_RUNS = ("baselines", *PAPER_SETTING_RUNS, *AGGREGATED_RUNS)
#: Every sweep, the paper's family first.
SWEEPS = PAPER_SWEEPS + PAPER_SETTING_SWEEPS + AGGREGATED_SWEEPS + FLEET_SWEEPS + BEYOND_SWEEPS
#: Sweeps a page from older results may lack (their findings are left out).
OPTIONAL = ("short-outputs", *PAPER_SETTING_SWEEPS, *AGGREGATED_SWEEPS, *FLEET_SWEEPS)
#: Scaled-down settings for a quick check of the whole pipeline (tests, smoke runs).
QUICK = ["workload.duration_s=15"]


def check_only(only: list[str] | None) -> None:
    """Refuse an ``--only`` name that is no experiment, naming the ones there are."""
    unknown = [n for n in only or [] if n not in RUNS + SWEEPS]
    if unknown:
        raise InputError(f"--only: no experiment {', '.join(map(repr, unknown))} (runs: {', '.join(RUNS)}; "
                         f"sweeps: {', '.join(SWEEPS)})")


def run_all(out: Path, quick: bool = False, workers: int | None = None,
            say: Callable[[str], None] = print, only: list[str] | None = None) -> Outputs:
    """Run every experiment into ``out`` (run folders and sweep tables), or only the ones named in ``only``."""
    overrides = QUICK if quick else []
    runs = {}
    for name in (n for n in RUNS if only is None or n in only):
        say(f"run {name}")
        sc = load_scenario(EXPERIMENTS / f"{name}.yaml", overrides)
        write_run(run_scenario(sc, keep_timeline=True), out / name)
        runs[name] = out / name
    sweeps = {}
    for name in (n for n in SWEEPS if only is None or n in only):
        sweep = load_sweep(EXPERIMENTS / f"{name}.yaml", overrides)
        if quick:  # one seed, the first two values of each swept parameter
            spec = sweep.spec.model_copy(update={"seeds": sweep.spec.seeds[:1],
                                                 "grid": {k: v[:2] for k, v in sweep.spec.grid.items()}})
            sweep = Sweep(spec, sweep.base, sweep.base_dir, expand_points(spec), sweep.path, sweep.base_file)
        say(f"sweep {name}: {len(sweep.points)} points")
        table_path = out / "sweeps" / f"{name}.csv"
        table_path.parent.mkdir(parents=True, exist_ok=True)
        sweeps[name] = run_sweep(sweep, table_path, workers=workers,
                                 progress=lambda d, t, p, r, n=name: say(f"  {n}: {d}/{t}") if p is not None else None)
    return Outputs(runs, sweeps)


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
               say: Callable[[str], None] = print, report_only: bool = False, only: list[str] | None = None) -> Path:
    """Everything: experiments, README with headline and figures, full report. With ``only``, just those runs
    and sweeps are run again; the others are read from ``out`` and the page, figures and report redrawn."""
    check_only(only)
    out.mkdir(parents=True, exist_ok=True)
    if only:
        kept = load_outputs(out)  # before any work: the rest must be there
        with staging(out) as stage:
            fresh = run_all(stage, quick, workers, say, only)
            for name in kept.sweeps:
                if name not in fresh.sweeps:  # the sweeps folder is published whole: carry the kept tables
                    (stage / "sweeps").mkdir(exist_ok=True)
                    shutil.copy2(out / "sweeps" / f"{name}.csv", stage / "sweeps" / f"{name}.csv")  # byte for byte
            outputs = Outputs(kept.runs | fresh.runs, kept.sweeps | fresh.sweeps)
            profile = str(outputs.sweeps["skew"]["profile"].dropna().iloc[0])
            say("figures and README")
            write_readme(outputs, stage, profile)
            publish(stage, out, require_marker=False)
        with staging(out) as stage:  # the report reads every run and sweep, the kept ones too
            report.write_report(out, stage / "report", kept_figures=out / "report" / "figures")
            publish(stage, out, require_marker=False)
        return out / "README.md"
    if report_only:
        outputs = load_outputs(out)
        profile = str(outputs.sweeps["skew"]["profile"].dropna().iloc[0])
        say("figures and README")
        write_readme(outputs, out, profile)
        with staging(out) as stage:  # the report folder is the experiments' own: replaced whole
            report.write_report(out, stage / "report", kept_figures=out / "report" / "figures")
            publish(stage, out, require_marker=False)
        return out / "README.md"
    with staging(out) as stage:
        outputs = run_all(stage, quick, workers, say)
        profile = str(outputs.sweeps["skew"]["profile"].dropna().iloc[0])
        say("figures and README")
        write_readme(outputs, stage, profile)
        report.write_report(stage, stage / "report", source_label=str(out))
        mark(stage, {"command": "experiments"})
        publish(stage, out, require_marker=False)
    return out / "README.md"
