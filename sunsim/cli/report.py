"""``sunsim report``: turn a results folder or table into figures and a Markdown report."""

from __future__ import annotations

import argparse
from pathlib import Path

from sunsim.cli.console import console
from sunsim.errors import InputError
from sunsim.output import Output, claim_outputs


def cmd_report(args: argparse.Namespace) -> int:
    """Draw the report with a live status line; input problems surface as InputError (exit code 2)."""
    from sunsim.report.markdown import (  # matplotlib loads only when a report is asked for
        default_report_folder,
        write_report,
    )

    source = Path(args.source)
    if not source.exists():
        raise InputError(f"RESULTS_DIR_OR_TABLE: {str(source)!r} does not exist")
    out = Path(args.out) if args.out else default_report_folder(source)
    claim_outputs("report", [Output(out, "--out")], [(source, "results")])
    with console.status("reading results...") as status:
        report = write_report(source, out, on_progress=status.update, html=args.html,
                              on_note=lambda msg: console.print(f"[yellow]note:[/] {msg}", highlight=False))
    figures = sorted((report.parent / "figures").glob("*.png"))
    console.print(f"report: {report} ({len(figures)} figures, PNG + SVG in {report.parent / 'figures'})")
    if args.html:
        console.print(f"HTML report (self-contained, figures inline): {report.with_name('report.html')}")
    return 0


def register(subparsers) -> None:
    """Add the ``report`` subcommand to the main ``sunsim`` parser."""
    p = subparsers.add_parser("report", help="plot a run folder, sweep or plan table (or a folder of them)",
                              description="Draw figures (PNG and SVG) and a report.md from sunsim results: "
                                          "a run folder, a sweep table, a plan table or a folder holding several.")
    p.add_argument("source", metavar="RESULTS_DIR_OR_TABLE", help="run folder, sweep/plan table, or a folder of them")
    p.add_argument("-o", "--out", metavar="DIR", help="report folder (default: <source folder>/report)")
    p.add_argument("--html", action="store_true",
                   help="also write report.html: one self-contained file (tables, inline figures, profile and "
                        "scenario; no external URLs)")
    p.set_defaults(func=cmd_report)
