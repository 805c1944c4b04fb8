"""``sunsim validate --measurements FILE.csv``: replay published end-to-end benchmarks with a progress bar,
then print the per-group error table and the reasons rows could not be replayed.

The replay (pandas, the simulator) is imported by the handler, so ``sunsim --help`` loads none of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sunsim.cli.console import console
from sunsim.errors import InputError


def _model_configs(items: list[str]) -> dict[str, str]:
    configs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path.endswith(".json"):
            raise InputError(f"--model-config {item!r}: expected MODEL=path/to/config.json")
        if not Path(path).is_file():
            raise InputError(f"--model-config {item!r}: no file {path!r}")
        configs[name] = path
    return configs


def cmd_validate_measurements(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from sunsim.analysis.e2e_validate import (
        claim_validate_output,
        parse_fit_on,
        reason_counts,
        validate_measurements,
        write_validation,
    )
    from sunsim.analysis.measurements import parse_columns

    out = args.out or Path("results") / "validate-measurements"
    columns = parse_columns(args.columns)
    configs = _model_configs(args.model_config)
    fit_on = parse_fit_on(args.fit_on)
    claim_validate_output(out, args.measurements)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("replaying", total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=f"replaying {what}" if what else "done")

        per_row, groups, not_expr = validate_measurements(args.measurements, columns, args.limit, configs,
                                                          progress=progress, overhead_ms=args.overhead_ms,
                                                          fit_on=fit_on)
    written = write_validation(out, per_row, groups, not_expr)
    overhead = f"; engine overhead {per_row['overhead_ms'].iloc[0]:g} ms per iteration" if len(per_row) else ""
    fitted = f" (fitted on {', '.join(f'{k}={v}' for k, v in fit_on.items())})" if fit_on else ""
    table = Table(title=f"{args.measurements}: {len(per_row)} rows replayed, {len(not_expr)} not expressible"
                        f"{overhead}{fitted}", title_justify="left")
    for col in ("model", "system", "backend", "mode", "subset", "rows", "TTFT |err| median / p90",
                "TPOT |err| median / p90"):
        table.add_column(col, justify="right" if col not in ("model", "system", "backend", "mode", "subset") else "left")
    for g in groups.itertuples():
        table.add_row(str(g.model), str(g.system), str(g.backend), str(g.mode), str(g.subset), str(g.rows),
                      f"{g.ttft_median_abs_rel_error:.1%} / {g.ttft_p90_abs_rel_error:.1%}",
                      f"{g.tpot_median_abs_rel_error:.1%} / {g.tpot_p90_abs_rel_error:.1%}")
    console.print(table)
    reasons = Table(title="not expressible", title_justify="left")
    reasons.add_column("reason")
    reasons.add_column("rows", justify="right")
    for r in reason_counts(not_expr).itertuples():
        reasons.add_row(str(r.reason), str(r.rows))
    console.print(reasons)
    console.print(f"results in {out}/ ({', '.join(p.name for p in written)})")
    return 0
