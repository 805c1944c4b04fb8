"""Instructions per simulation against an earlier revision, by valgrind's cachegrind: a measure the machine's
drift does not move, beside the paired wall times of ``benchmarks/paired.py``.

For each side and variant, one process simulates the fleet benchmark once and another three times (in
process, same workload); half the difference of their instruction counts is one steady simulation, without
start-up, imports or the first run's cache fills. Bytecode is compiled beforehand, address randomisation is
off and ``PYTHONHASHSEED=0``; a steady count repeats to within about 1%. Needs ``valgrind`` and ``setarch``.

    python benchmarks/instructions.py --ref 786c846 --size 10000
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from worktree import ROOT, revision_tree

#: One child: ``size`` requests of the fleet benchmark's ``variant``, simulated ``runs`` times in one process
#: (either package layout: the revisions before the sim package kept simulate_variant in sunsim.simulation).
CHILD = """
import sys
from sunsim.scenario import load_scenario
try:
    from sunsim.sim.variant import simulate_variant
    from sunsim.workload.stream import build_workload
except ImportError:
    from sunsim.simulation import simulate_variant
    from sunsim.workload import build_workload
size, variant, runs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sc = load_scenario("benchmarks/fleet.yaml", [f"workload.num_requests={size}"])
v = next(v for v in sc.variants if v.name == variant)
workload = build_workload(sc)
for _ in range(runs):
    simulate_variant(sc, v, workload)
"""


def instructions(tree: Path, size: int, variant: str, runs: int) -> int:
    """Instructions of one child process of ``tree`` running ``runs`` simulations."""
    env = {"PYTHONPATH": str(tree), "PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")}
    args = ["setarch", "-R", "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
            sys.executable, "-c", CHILD, str(size), variant, str(runs)]
    out = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"I\s+refs:\s+([0-9,]+)", out.stderr)
    if not found:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def steady(tree: Path, size: int, variant: str) -> float:
    """Millions of instructions of one steady simulation: (three runs - one run) / 2."""
    subprocess.run([sys.executable, "-c", CHILD, "100", variant, "1"], cwd=tree, check=True, capture_output=True,
                   env={"PYTHONPATH": str(tree)})  # compiles and caches the bytecode first
    return (instructions(tree, size, variant, 3) - instructions(tree, size, variant, 1)) / 2e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="the earlier revision (any git revision)")
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--modes", default="dedicated,shared,shared-int4")
    args = ap.parse_args()
    with revision_tree(args.ref) as ref:
        print(f"| variant | {args.ref} | this tree | ratio |")
        print("|---|---|---|---|")
        for mode in args.modes.split(","):
            old, new = steady(ref, args.size, mode), steady(ROOT, args.size, mode)
            print(f"| {mode} | {old:,.0f} | {new:,.0f} | {old / new:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
