"""hardware.iteration_overhead_ms: every decode and mixed iteration pays the given overhead instead of the
profile's assumed one; prefill batches keep theirs. Checked on the cost model and on a one-request run."""

from __future__ import annotations

import pytest

from sunsim.costs import catalog
from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import gpu
from sunsim.costs.model import DECODE_STEP_OVERHEAD_S
from sunsim.costs.overhead import with_overhead
from sunsim.scenario import ScenarioError, scenario_from_dict


def test_the_overhead_replaces_the_assumed_one_per_iteration():
    base = catalog.make_cost_model(gpu("h100"), PRESETS["llama-3.1-8b"], "bf16", catalog.load("vllm-h100"))
    cost = with_overhead(base, 2.0)
    delta = 2e-3 - DECODE_STEP_OVERHEAD_S
    for batch in (1, 64):
        a0, b0 = base.decode_coeffs(batch)
        a1, b1 = cost.decode_coeffs(batch)
        assert a1 == pytest.approx(a0 + delta) and b1 == b0
    chunks = [(512, 0), (256, 1024)]
    assert cost.mixed_time(8, 8 * 600, chunks) == pytest.approx(base.mixed_time(8, 8 * 600, chunks) + delta)
    assert cost.prefill_time(1024, 1024 ** 2) == base.prefill_time(1024, 1024 ** 2)
    assert "engine overhead 2 ms per iteration" in cost.info.note
    assert with_overhead(base, None) is base


def _one_request(overhead: float | None) -> float:
    from sunsim.analysis.runner import run_scenario

    sc = scenario_from_dict({
        "name": "one", "seed": 1, "model": {"preset": "llama-3.1-8b", "tasks": 1},
        "hardware": {"gpu": "h100", **({} if overhead is None else {"iteration_overhead_ms": overhead})},
        "workload": {"num_requests": 1, "rate": 1.0, "prompt_tokens": {"kind": "fixed", "value": 512},
                     "output_tokens": {"kind": "fixed", "value": 65}},
        "variants": [{"name": "sun", "mode": "shared", "workers": 1}]})
    return run_scenario(sc).summaries[0]["tpot_s"]["mean"]


def test_a_lone_requests_tpot_moves_by_the_overhead_change():
    """64 decode steps of one request: each step, hence TPOT, is longer by exactly the change."""
    assert _one_request(3.0) - _one_request(None) == pytest.approx(3e-3 - DECODE_STEP_OVERHEAD_S, rel=1e-6)


def test_bad_overheads_are_refused_naming_the_field():
    with pytest.raises(ScenarioError, match="iteration_overhead_ms"):
        scenario_from_dict({"name": "x", "model": {"preset": "llama-3.1-8b"}, "hardware": {"iteration_overhead_ms": -1},
                            "workload": {"num_requests": 1, "rate": 1.0},
                            "variants": [{"name": "sun", "mode": "shared", "workers": 1}]})
