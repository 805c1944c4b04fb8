"""The end-to-end validation table of ``calibration/README.md``: sunsim's replay error and the peer tool's, row for
row on the same public measurements.

Inputs are the committed tables: ``per_row.csv`` of ``sunsim validate --measurements`` (kept under
``calibration/data/e2e_validation/``) and ``calibration/data/peer_estimates.csv`` (aiconfigurator's estimates of the
same rows). Only rows both answered are compared, so each line of the table holds the two tools to the same rows.

    python -m calibration.e2e_table [--ours DIR/per_row.csv] [--peer calibration/data/peer_estimates.csv]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data"
OURS = DATA / "e2e_validation" / "per_row.csv"
PEER = DATA / "peer_estimates.csv"
#: The set the target is stated on: dense models on H100/H200 (TP 1-8 is all the file holds for them).
TARGET_SYSTEMS = ("h100_sxm", "h200_sxm")


def joined(ours: Path = OURS, peer: Path = PEER) -> pd.DataFrame:
    """One row per measurement both tools answered: measured, sunsim's and the peer's TTFT and TPOT, with errors."""
    a = pd.read_csv(ours)
    b = pd.read_csv(peer)
    b = b[b["status"] == "ok"][["id", "peer_ttft_ms", "peer_tpot_ms"]]
    df = a.merge(b, on="id", how="inner")
    for what in ("ttft", "tpot"):
        df[f"sunsim_{what}_err"] = (df[f"simulated_{what}_ms"] / df[f"measured_{what}_ms"] - 1).abs()
        df[f"peer_{what}_err"] = (df[f"peer_{what}_ms"] / df[f"measured_{what}_ms"] - 1).abs()
    return df


def _mp(x: pd.Series) -> str:
    x = x.dropna()
    return f"{np.median(x):.1%} / {np.percentile(x, 90):.1%}" if len(x) else "-"


def _line(label: str, part: pd.DataFrame) -> str:
    return (f"| {label} | {len(part)} | {_mp(part['sunsim_tpot_err'])} | {_mp(part['peer_tpot_err'])} | "
            f"{_mp(part['sunsim_ttft_err'])} | {_mp(part['peer_ttft_err'])} |")


def table(df: pd.DataFrame) -> list[str]:
    """Markdown: the target set (fit and held-out rows apart), then every (model, system, backend, mode) group."""
    head = ["| rows | n | TPOT sunsim | TPOT peer | TTFT sunsim | TTFT peer |", "|---|---|---|---|---|---|"]
    target = df[df["system"].isin(TARGET_SYSTEMS)]
    lines = [*head, _line("**dense H100/H200, all**", target)]
    for subset in ("fit", "held out"):
        part = target[target["subset"] == subset]
        if len(part):
            lines.append(_line(f"dense H100/H200, {subset}", part))
    lines.append(_line("every row both answered", df))
    for key, part in df.groupby(["model", "system", "backend", "mode"], sort=True):
        lines.append(_line(" ".join(map(str, key)), part))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.e2e_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", type=Path, default=OURS)
    p.add_argument("--peer", type=Path, default=PEER)
    args = p.parse_args(argv)
    for path in (args.ours, args.peer):
        if not path.is_file():
            print(f"error: no file {str(path)!r}", file=sys.stderr)
            return 2
    df = joined(args.ours, args.peer)
    overhead = pd.read_csv(args.ours)["overhead_ms"].iloc[0]
    print(f"Median / p90 of |estimate / measured - 1| over the rows both tools answered; sunsim at "
          f"{overhead:g} ms engine overhead per iteration.\n")
    print("\n".join(table(df)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
