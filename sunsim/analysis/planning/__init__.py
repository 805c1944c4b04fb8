"""Capacity planning: the fewest GPUs that meet the SLO, and goodput, found with the simulator.

:mod:`~sunsim.analysis.planning.search` plans one seed (probes, doubling then bisection per pool,
goodput); :mod:`~sunsim.analysis.planning.reachable` rejects an SLO no number of GPUs meets before
any probe; :mod:`~sunsim.analysis.planning.seeds` plans several seeds and answers the layout that
met the SLO on all of them, with its spread.
"""

from sunsim.analysis.planning.reachable import check_reachable
from sunsim.analysis.planning.search import (
    MAX_GPUS_LIMIT,
    Planner,
    Probe,
    VariantPlan,
    check_max_gpus,
    plan,
    plan_rows,
)
from sunsim.analysis.planning.seeds import (
    MIN_REQUESTS_PER_MODEL,
    SeededPlan,
    baseline_of,
    plan_seeds,
    ranges_overlap,
    request_warnings,
    seeded_rows,
)

__all__ = [
    "MAX_GPUS_LIMIT", "MIN_REQUESTS_PER_MODEL", "Planner", "Probe", "SeededPlan", "VariantPlan", "baseline_of",
    "check_max_gpus", "check_reachable", "plan", "plan_rows", "plan_seeds", "ranges_overlap", "request_warnings",
    "seeded_rows",
]
