"""``sunsim run --json``: a run as one JSON object, in ``vllm bench serve``'s metric names.

For tools that already read vLLM's result JSON: per variant its GPU counts and the keys of the summary's
``vllm`` block (:mod:`sunsim.analysis.vllm_metrics`), plus the scenario, the profile and the SLO targets
that define goodput. Missing values are ``null``, never ``NaN`` (which is not JSON).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sunsim.analysis.runner import ScenarioRun
from sunsim.analysis.vllm_metrics import vllm_keys


def _clean(value):
    """NaN and infinities -> None; numpy scalars -> plain numbers (json.dumps refuses them)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_document(run: ScenarioRun, percentiles: tuple[float, ...], out: Path | None = None) -> str:
    """The JSON text of ``run``: scenario, profile, SLO, and per variant (by name, in run order) its metrics."""
    sc = run.scenario
    variants = {}
    for s in run.summaries:
        vllm = s["vllm"]
        variants[s["variant"]] = {"mode": s["mode"], "dtype": s["dtype"], "gpus": s["gpus"],
                                  **{k: vllm[k] for k in vllm_keys(percentiles)}}
    doc = {
        "scenario": sc.name,
        "profile": run.summaries[0]["profile"] if run.summaries else None,
        "gpu": sc.hardware.gpu,
        "num_prompts": len(run.stream),
        "percentiles": list(percentiles),
        "goodput_slo_ms": {"ttft": sc.slo.ttft_s * 1e3, "tpot": sc.slo.tpot_s * 1e3},
        "results": str(out) if out is not None else None,
        "variants": variants,
    }
    return json.dumps(_clean(doc), allow_nan=False)
