"""``sunsim sweep``: run a grid of scenarios with a progress bar and an ETA.

The sweep machinery (pydantic, pandas, the simulator) is imported by the handler, not here, so that
building the parser for ``sunsim --help`` loads none of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sunsim.analysis.options import EXECUTORS, TABLE_SUFFIXES
from sunsim.cli.argtypes import worker_count
from sunsim.cli.console import console, err_console


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sunsim.analysis.sweep import check_sweep_output, load_sweep, parts_dir, probe_address, run_sweep

    if args.out:  # cheap checks first: a bad path or address fails before the points are checked
        check_sweep_output(Path(args.out))
    if args.executor == "ray" and args.address:
        probe_address(args.address)
    sweep = load_sweep(args.sweep, args.set)
    out = Path(args.out) if args.out else Path("results") / "sweeps" / f"{sweep.spec.name}.csv"
    check_sweep_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    resumed = parts_dir(out).exists()
    failures = 0
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"sweep {sweep.spec.name} ({args.executor})", total=len(sweep.points))

        def progress(done, total, point, rows):
            nonlocal failures
            if point is None:
                if done:
                    console.print(f"resuming: {done} of {total} points already finished")
                bar.update(task, completed=done)
                return
            if any(r["status"] != "ok" for r in rows):
                failures += 1
                err_console.print(f"point {point.index} {point.params} seed {point.seed} failed: {rows[0]['error']}",
                                  highlight=False)
            bar.update(task, completed=done)

        table = run_sweep(sweep, out, executor=args.executor, workers=args.workers, address=args.address,
                          progress=progress)
    ok = int((table["status"] == "ok").sum())
    console.print(f"{len(sweep.points)} points ({'resumed, ' if resumed else ''}{ok} rows ok) -> {out}")
    if failures:
        err_console.print(f"{failures} point(s) failed; see the status and error columns of {out}")
        return 3
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of scenario variations (local processes or Ray)")
    p.add_argument("sweep", help="sweep YAML file (scenario, grid, seeds)")
    p.add_argument("--out", help=f"output table, {' or '.join(TABLE_SUFFIXES)} (default: results/sweeps/<name>.csv)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local worker processes (default) or a Ray cluster")
    p.add_argument("--workers", type=worker_count, help="local worker processes (default: all cores)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field for every point")
    p.set_defaults(func=cmd_sweep)
