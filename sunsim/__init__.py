"""sunsim: a discrete-event simulator of disaggregated multi-model LLM serving.

It compares dedicated per-model decode pools with SUN shared decode pools (and QSUN, their
low-bit variant) on the same request stream, with step costs from an analytic roofline or
from real kernel timings (see ``calibration/``).

The small public API, for notebooks and scripts (each name loads its package on first use, so
``import sunsim`` loads neither pandas nor the simulator)::

    import sunsim
    run = sunsim.run("scenarios/default.yaml", overrides={"workload.duration_s": 60})
    run.comparison                           # one row per variant (pandas): comparison.csv
    run["sun"].requests                      # per-request records: requests.csv
    run["sun"].summary                       # summary.json, as a dict
    run.write("results/mine")                # the files `sunsim run --out results/mine` writes
    sunsim.plan("scenarios/default.yaml", seeds=1).summary       # plan_summary.csv
    sunsim.sweep("scenarios/sweeps/skew.yaml", workers=2)         # the sweep table

The lower-level names below (``load_scenario``, ``run_scenario``, ``plan_seeds``, ``run_sweep``...) are
what these calls are built from (:mod:`sunsim.api`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_API = {
    "run": "sunsim.api",
    "plan": "sunsim.api",
    "sweep": "sunsim.api",
    "Run": "sunsim.api",
    "VariantRun": "sunsim.api",
    "Plan": "sunsim.api",
    "load_scenario": "sunsim.scenario",
    "scenario_from_dict": "sunsim.scenario",
    "Scenario": "sunsim.scenario",
    "ScenarioError": "sunsim.scenario",
    "InputError": "sunsim.errors",
    "build_workload": "sunsim.workload.stream",
    "simulate_variant": "sunsim.sim.variant",
    "run_scenario": "sunsim.analysis.runner",
    "write_run": "sunsim.analysis.runner",
    "request_table": "sunsim.analysis.metrics",
    "summarize": "sunsim.analysis.metrics",
    "plan_seeds": "sunsim.analysis.planning",
    "load_sweep": "sunsim.analysis.sweep",
    "run_sweep": "sunsim.analysis.sweep",
    "write_report": "sunsim.report.markdown",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use, so ``import sunsim`` stays cheap (no pandas, no SimPy)."""
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'sunsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
