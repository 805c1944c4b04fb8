"""Admitting a mid-run arrival for the next boundary on arrival changes nothing but the event count.

A paged decode GPU admits only at iteration boundaries. When a request arrives mid-run and will
be admitted at the next boundary, the worker either cuts the run there (the boundary admits it)
or, when the admission's blocks cannot end the run sooner, admits it at once for that boundary
and lets the run go on (``sunsim.sim.variant.ADMIT_AHEAD``). Both must give the same run: every
request's times, its preemptions and every GPU's peak blocks and timeline, under memory pressure too.
"""

from __future__ import annotations

import numpy as np
import pytest

import sunsim.sim.variant as variant_module
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload
from tests.conftest import make_scenario

TIMES = ("decode_admit_s", "kv_ready_s", "decode_start_s", "first_token_s", "finish_s")


def _both(monkeypatch, sc):
    stream = build_workload(sc)
    runs = {}
    for ahead in (False, True):
        monkeypatch.setattr(variant_module, "ADMIT_AHEAD", ahead)
        runs[ahead] = [simulate_variant(sc, v, stream, keep_timeline=True) for v in sc.variants]
    return runs[False], runs[True]


VARIANTS = [
    {"name": "dedicated", "mode": "dedicated", "workers": 1},
    {"name": "sun", "mode": "shared", "workers": 4},
    {"name": "multi-lora", "mode": "multi_lora", "workers": 4},
    {"name": "colocated", "mode": "colocated", "workers": 4},
]


@pytest.mark.parametrize("memory, preemption", [(0.9, "recompute"), (0.45, "recompute"), (0.45, "swap")])
def test_same_run_with_fewer_events(monkeypatch, memory, preemption):
    sc = make_scenario(hardware={"gpu": "h100", "memory_utilization": memory},
                       decode={"preemption": preemption}, variants=VARIANTS,
                       workload={"duration_s": 20, "rate": 60})
    cut, ahead = _both(monkeypatch, sc)
    for a, b in zip(cut, ahead):
        name = a.variant.name
        for field in TIMES:
            x, y = getattr(a.records, field), getattr(b.records, field)
            assert np.array_equal(np.isnan(x), np.isnan(y)), (name, field)
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-9, err_msg=f"{name}.{field}")
        assert np.array_equal(a.records.preemptions, b.records.preemptions), name
        assert [s.peak_blocks for s in a.decode_stats] == [s.peak_blocks for s in b.decode_stats], name
        assert [s.iterations for s in a.decode_stats] == [s.iterations for s in b.decode_stats], name
        for wa, wb in zip(a.decode_stats, b.decode_stats):  # every batch change, and the KV held from then on
            ta, tb = np.array(wa.timeline, dtype=float), np.array(wb.timeline, dtype=float)
            assert ta.shape == tb.shape and len(ta) > 1, name
            np.testing.assert_allclose(tb, ta, rtol=0, atol=1e-9, err_msg=f"{name} timeline")
        assert b.events < a.events, name  # the admissions made ahead saved their cuts
    if memory < 0.5:
        assert sum(int(r.records.preemptions.sum()) for r in cut) > 0  # the pressure was real
