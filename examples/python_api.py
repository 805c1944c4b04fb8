"""Run the default scenario from Python and look at the results as pandas tables.

    python examples/python_api.py            # 10 simulated seconds
    python examples/python_api.py 5          # or as many as given

``sunsim.run`` is ``sunsim run`` without the files: every variant on the same request stream, in memory.
``run.write(folder)`` would write exactly what ``sunsim run --out folder`` writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import sunsim

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "default.yaml"


def main(duration_s: float = 10.0) -> sunsim.Run:
    run = sunsim.run(SCENARIO, overrides={"workload.duration_s": duration_s})
    # comparison.csv: one row per variant; transposed so that the variants are the columns.
    print(run.comparison.set_index("variant").T.to_string())
    sun = run["sun"]  # one variant: its requests.csv as a DataFrame and its summary.json as a dict
    print(f"\nsun: {len(sun.requests)} requests, {sun.summary['requests']['finished']} finished, "
          f"TPOT p90 {sun.summary['tpot_s']['p90'] * 1e3:.1f} ms")
    return run


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
