"""The ``sunsim`` command line: run scenarios, sweeps and plans; calibrate; report."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from sunsim import __version__
from sunsim.analysis.options import RUN_EXECUTORS
from sunsim.analysis.schema import COMPARISON_ROWS
from sunsim.cli.argtypes import worker_count
from sunsim.cli.console import console, err_console
from sunsim.errors import InputError, Terminated
from sunsim.names import check_name
from sunsim.output import Output, claim_outputs

if TYPE_CHECKING:
    from rich.table import Table


def comparison_table(comparison, title: str) -> Table:
    """The rich side-by-side table of variants (one column each), rows from the results schema."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    rows = comparison.to_dict("records")
    for r in rows:
        table.add_column(r["variant"], justify="right")
    for label, columns, fmt, scale in COMPARISON_ROWS:
        table.add_row(label, *[" / ".join(_fmt(fmt, r[c], scale) for c in columns) for r in rows])
    return table


def _fmt(fmt: str, v, scale: float = 1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return fmt.format(v * scale if scale != 1 else v)


# --------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the schema and the simulator (pydantic, numpy, pandas) would make every
    # ``sunsim --help`` and ``sunsim --version`` pay for them.
    from sunsim.analysis.runner import check_run_output, run_scenario, select_variants, write_run
    from sunsim.analysis.vllm_metrics import parse_percentiles
    from sunsim.scenario import load_scenario, scenario_inputs

    percentiles = parse_percentiles(args.percentiles)
    sc = load_scenario(args.scenario, args.set)
    # --json alone writes nothing: the JSON on stdout is the result. Otherwise the default folder applies.
    out = Path(args.out) if args.out else None if args.json else Path("results") / check_name(sc.name, "name")
    # Every output is checked before simulating: a bad path costs nothing and clobbers nothing.
    outputs = [Output(out, "--out")] if out is not None else []
    if args.trace_out:
        outputs.append(Output(Path(args.trace_out), "--trace-out", "file"))
    claim_outputs("run", outputs, scenario_inputs(args.scenario, sc))
    if out is not None:
        check_run_output(out, [v.name for v in select_variants(sc, args.variant)])
    show = err_console if args.json else console  # with --json, stdout carries one JSON document only
    if args.stream:
        return _stream_run(args, sc, out, percentiles)
    with show.status("simulating...") as status:
        def progress(v, i, n):
            status.update(f"simulating variant {v.name} ({i + 1}/{n})")

        run = run_scenario(sc, args.variant, keep_timeline=not args.no_timeline or bool(args.trace_out),
                           on_variant=progress, percentiles=percentiles, executor=args.executor,
                           workers=args.workers, address=args.address)
    if args.trace_out:  # before the results are published: a failure leaves neither half
        from sunsim.report.trace import write_chrome_trace

        write_chrome_trace(run, Path(args.trace_out))
    written = write_run(run, out, args.format or "csv") if out is not None else []
    if args.json:
        from sunsim.analysis.run_document import run_document

        print(run_document(run, percentiles, out))
        if out is not None:
            err_console.print(f"results in {out}/ ({', '.join(p.name for p in written)})", highlight=False)
        return 0
    _print_comparison(run, out, written)
    return 0


def _stream_run(args: argparse.Namespace, sc, out: Path | None, percentiles: tuple[float, ...]) -> int:
    """``sunsim run --stream``: rows to disk as requests finish (see analysis.runner.stream_scenario)."""
    from sunsim.analysis.runner import select_variants, stream_disk, stream_scenario

    refused = [flag for flag, on in (("--json", args.json), ("--trace-out", args.trace_out),
                                     ("--executor", args.executor != "inline"),
                                    ("--format csv", args.format == "csv")) if on]
    if refused or sc.cells is not None:
        what = ", ".join(refused) if refused else "a scenario with cells"
        raise InputError(f"--stream: not with {what} (a streaming run writes requests.parquet per variant, in this "
                         f"process, without a timeline)")
    if out is None:
        raise InputError("--stream: give --out, the folder the rows are written to as the run goes")
    console.print(f"streaming {stream_disk(sc, len(select_variants(sc, args.variant)), out)}", highlight=False)
    with console.status("simulating...") as status:
        def progress(v, i, n):
            status.update(f"simulating variant {v.name} ({i + 1}/{n}), rows to {out / v.name / 'requests.parquet'}")

        run, written = stream_scenario(sc, out, args.variant, progress, percentiles)
    _print_comparison(run, out, written)
    return 0


def _print_comparison(run, out: Path | None, written: list[Path]) -> None:
    sc = run.scenario
    prof = run.summaries[0]["profile"]
    title = (f"{sc.name}: {len(run.stream)} requests, {len(sc.model.tasks)} models on {sc.shape.name}, "
             f"{sc.hardware.gpu}; profile {prof['name']} ({prof['kind']}, {prof['device']}); "
             f"SLO TTFT<={sc.slo.ttft_s}s TPOT<={sc.slo.tpot_s * 1e3:g}ms")
    console.print(comparison_table(run.comparison, title))
    for note in dict.fromkeys(s["cost"]["note"] for s in run.summaries if s["cost"]["note"]):
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    console.print(f"results in {out}/ ({', '.join(p.name for p in written)})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sunsim",
        description="Discrete-event simulator of disaggregated multi-model LLM serving: "
                    "dedicated decode pools vs SUN shared decode pools (and QSUN).",
    )
    parser.add_argument("--version", action="version", version=f"sunsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a scenario: every variant on the same requests")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--out", help="results folder (default: results/<scenario name>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field, e.g. --set workload.rate=30 (repeatable)")
    run.add_argument("--variant", action="append", metavar="NAME", help="run only this variant (repeatable)")
    run.add_argument("--format", choices=["csv", "parquet"], help="per-request table format (default csv; --stream: parquet)")
    run.add_argument("--no-timeline", action="store_true",
                     help="skip the per-worker batch/KV timeline (saves memory on very large runs)")
    run.add_argument("--trace-out", metavar="FILE", help="also write a Chrome/Perfetto trace (JSON) of the run")
    run.add_argument("--percentiles", default="99", metavar="Q,Q,...",
                     help="percentiles of the vLLM-named latency metrics (p{q}_ttft_ms...), each 0 < q < 100; "
                          "default 99, as vllm bench serve")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object (per variant the vLLM-named metrics and GPU counts) on stdout; "
                          "writes no files unless --out is given")
    run.add_argument("--executor", choices=RUN_EXECUTORS, default="inline",
                     help="where each (cell, variant) runs: this process, one after another (default), local "
                          "worker processes, or a Ray cluster; the results are the same")
    run.add_argument("--workers", type=worker_count, help="local worker processes (default: all cores)")
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    run.add_argument("--stream", action="store_true",
                     help="streaming memory: draw requests in blocks and write each variant's requests.parquet as "
                          "requests finish, so memory follows the requests in flight (runs of 10^7+ requests); "
                          "summaries stay exact; no timeline")
    run.set_defaults(func=cmd_run)

    for register in _extensions():
        register(sub)
    return parser


def _extensions() -> list[Callable]:
    """Subcommands living in their own modules (sweeps, planning, reports, calibration).

    Each module defines its parser at import and its work in handlers that import what they need, so that
    building the whole parser (``sunsim --help``) loads no pandas, pyarrow, pydantic schema or numpy."""
    from calibration import cli as calibration_cli
    from sunsim.cli import experiments as experiments_cli
    from sunsim.cli import plan as plan_cli
    from sunsim.cli import report as report_cli
    from sunsim.cli import sweep as sweep_cli

    return [sweep_cli.register, plan_cli.register, experiments_cli.register, report_cli.register,
            calibration_cli.register]


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Bad input exits 2 with its message; a bug keeps its traceback.

    SIGTERM is turned into an exception for the duration, so staging folders and worker
    processes are cleaned up exactly as after Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _on_sigterm(_terminate)
    try:
        return args.func(args)
    except InputError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    except BrokenPipeError:  # the reader left (`sunsim cost ... | head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the exit's flush must not fail again)
        return 128 + signal.SIGPIPE
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        where = f" writing {exc.filename!r}" if exc.filename else ""
        err_console.print(f"[bold red]error:[/] {escape(exc.strerror or str(exc))}{escape(where)}; nothing was "
                          "published (every output is complete or absent)", highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Terminated:
        err_console.print("terminated")
        return 128 + signal.SIGTERM
    finally:
        _on_sigterm(previous)


#: Failures of the storage under an output (full disk, quota, read-only): the user's to fix, exit 2.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def _terminate(signum, frame) -> None:
    raise Terminated()


def _on_sigterm(handler):
    """Install a SIGTERM handler (main thread only; elsewhere signals cannot be handled); return the old one."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, TypeError):  # not the main thread, or no previous Python-level handler to restore
        return None


if __name__ == "__main__":
    sys.exit(main())
