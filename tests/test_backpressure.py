"""Prefilled KV parked on prefill GPUs is bounded by their memory."""

from __future__ import annotations

import numpy as np

from sunsim.analysis.metrics import request_table, summarize
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload

from .conftest import make_scenario


def _skewed(kv_bound: bool):
    # Zipf 2: the hot model's one decode GPU (with little KV memory) cannot keep up with its prefill GPUs.
    return make_scenario(
        hardware={"memory_utilization": 0.28},
        prefill={"workers": 2, "kv_bound": kv_bound},
        workload={"rate": 150, "duration_s": 15, "popularity": {"kind": "zipf", "s": 2.0}},
        variants=[{"name": "d", "mode": "dedicated", "workers": 1}],
    )


def test_unbounded_prefill_would_park_more_than_its_memory():
    sc = _skewed(False)
    res = simulate_variant(sc, sc.variants[0], build_workload(sc))
    from sunsim.sim.variant import kv_capacity_tokens

    cap = kv_capacity_tokens(sc, sc.shape, "bf16", "prefill")
    assert max(w.peak_held_tokens for w in res.prefill_workers) > 1.5 * cap


def test_back_pressure_bounds_prefill_memory_and_conserves_requests():
    sc = _skewed(True)
    stream = build_workload(sc)
    res = simulate_variant(sc, sc.variants[0], stream)
    cap = res.prefill_kv_capacity_tokens
    assert cap is not None
    for w in res.prefill_workers:
        assert w.peak_held_tokens <= cap
        assert w.held_tokens == 0  # everything handed over at the end
    hot = [w for w, m in zip(res.prefill_workers, res.prefill_pool_of) if m == "a"]
    assert max(w.peak_held_tokens for w in hot) > 0.9 * cap  # the bound was reached
    assert sum(w.stalled_s for w in hot) > 0
    df = request_table(res)
    assert df["finish_s"].notna().all()
    summary = summarize(res, df)
    parked = df["decode_admit_s"] - df["first_token_s"]
    d = df[df["output_tokens"] > 1]
    assert (d["parked_s"] >= 0).all()
    np.testing.assert_allclose(summary["parked_s"]["mean"], parked.mean())
    assert summary["per_model"]["a"]["parked_s"]["mean"] > summary["per_model"]["d"]["parked_s"]["mean"]
    # Stalls move the wait from parked KV to the prefill queue: TTFT of the hot model grows.
    assert (d["kv_ready_s"] >= d["decode_admit_s"]).all()
