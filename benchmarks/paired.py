"""Paired speed ratio against an earlier revision: the same fleet benchmark, runs interleaved.

Each revision is checked out into a temporary worktree and runs its own ``benchmarks/run.py --child``
on the same request count and variant, alternating with this tree's run, so that both see the same
machine load. Reports per variant the median user CPU seconds of each side (whole child process:
workload, simulation, summary) and the median simulation wall time, and their ratios.

    python benchmarks/paired.py --ref 786c846 --size 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from worktree import ROOT, revision_tree


def child(tree: Path, size: int, variant: str, new_style: bool) -> dict:
    """One benchmark child of ``tree``; its user CPU from the rusage of children."""
    args = [sys.executable, str(tree / "benchmarks" / "run.py"), "--child", str(size), variant]
    if new_style:
        args.append("0")  # not streamed
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=tree, env={"PYTHONPATH": str(tree)})
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["cpu_s"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="the earlier revision (any git revision)")
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--modes", default="dedicated,shared,shared-int4")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with revision_tree(args.ref) as ref:
        ref_new = "streamed" in (ref / "benchmarks" / "run.py").read_text()
        print(f"| variant | {args.ref} user CPU s | this tree user CPU s | CPU ratio | {args.ref} sim wall s | "
              f"this tree sim wall s | sim ratio | events ({args.ref} / this tree) |")
        print("|---|---|---|---|---|---|---|---|")
        for mode in args.modes.split(","):
            runs: dict[str, list[dict]] = {"ref": [], "new": []}
            for _ in range(args.repeats):
                runs["ref"].append(child(ref, args.size, mode, ref_new))
                runs["new"].append(child(ROOT, args.size, mode, True))
            med = {k: {m: statistics.median(r[m] for r in v) for m in ("cpu_s", "sim_wall_s")}
                   for k, v in runs.items()}
            print(f"| {mode} | {med['ref']['cpu_s']:.2f} | {med['new']['cpu_s']:.2f} | "
                  f"{med['ref']['cpu_s'] / med['new']['cpu_s']:.2f}x | {med['ref']['sim_wall_s']:.2f} | "
                  f"{med['new']['sim_wall_s']:.2f} | {med['ref']['sim_wall_s'] / med['new']['sim_wall_s']:.2f}x | "
                  f"{runs['ref'][0]['events']:,} / {runs['new'][0]['events']:,} |", flush=True)


if __name__ == "__main__":
    main()
