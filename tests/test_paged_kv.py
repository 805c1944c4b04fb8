"""Paged KV memory in the cluster: preemption conserves requests and tokens, never exceeds memory."""

from __future__ import annotations

import numpy as np
import pytest

from sunsim.analysis.metrics import request_table, summarize
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload

from .conftest import make_scenario


def _tight(preemption: str):
    # Little KV memory, long outputs: running requests outgrow the blocks they were admitted with.
    return make_scenario(
        hardware={"memory_utilization": 0.3},
        decode={"kv_policy": "paged", "preemption": preemption, "watermark": 0.01},
        workload={"rate": 40, "duration_s": 20,
                  "output_tokens": {"kind": "lognormal", "mean": 600, "sigma": 0.5, "max": 2048}},
        variants=[{"name": "sun", "mode": "shared", "workers": 2}],
    )


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_preemption_conserves_requests_and_tokens(preemption):
    sc = _tight(preemption)
    stream = build_workload(sc)
    res = simulate_variant(sc, sc.variants[0], stream, keep_timeline=True)
    df = request_table(res)
    summary = summarize(res, df)
    assert summary["decode_utilization"]["preemptions"] > 0  # else this proves nothing
    assert summary["preemptions"] == int(df["preemptions"].sum()) == sum(w.preemptions for w in res.decode_workers)
    assert df["finish_s"].notna().all()
    assert sum(w.tokens for w in res.decode_workers) == int((stream.output_tokens - 1).sum())
    for w in res.decode_workers:
        assert w.peak_blocks <= w.capacity_blocks
        held = np.array([kv for _, _, kv in w.timeline])
        assert held.max() <= w.capacity_blocks * w.block
        assert w.restore_s > 0 if w.preemptions else w.restore_s == 0
        assert w.admitted == w.batch == w.load == 0 and not w.waiting  # all drained
    # A preempted request still emits every token: its TPOT includes the lost time, never below a step.
    d = df[df["preemptions"] > 0]
    assert (d["finish_s"] > d["decode_start_s"]).all()


def test_paged_holds_less_than_reservation():
    """Reservation keeps prompt + the whole output from admission; paging holds only what exists."""
    peaks = {}
    for policy in ("reserve", "paged"):
        sc = make_scenario(decode={"kv_policy": policy}, workload={"rate": 40},
                           variants=[{"name": "sun", "mode": "shared", "workers": 2}])
        res = simulate_variant(sc, sc.variants[0], build_workload(sc), keep_timeline=True)
        peaks[policy] = max(max(kv for _, _, kv in w.timeline) for w in res.decode_workers)
    assert peaks["paged"] < peaks["reserve"]


def test_unplaceable_request_is_a_clear_error(tmp_path):
    from sunsim.scenario import ScenarioError

    sc = make_scenario(hardware={"memory_utilization": 0.3}, decode={"watermark": 0.97},
                       variants=[{"name": "sun", "mode": "shared", "workers": 2}])
    with pytest.raises(ScenarioError, match="decode.watermark"):
        simulate_variant(sc, sc.variants[0], build_workload(sc))
