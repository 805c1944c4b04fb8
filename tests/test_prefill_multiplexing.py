"""Shared prefill GPUs: several models' prefill modules packed per GPU, or loaded on demand.

Times are checked against the cost model's own ``prefill_time`` sums and the load formula
(weight bytes / load bandwidth), memory against the GPU's usable bytes, and large runs by conservation.
"""

from __future__ import annotations

import numpy as np
import pytest

from sunsim.analysis.metrics import request_table, summarize
from sunsim.costs.hardware import GIB
from sunsim.costs.hardware import gpu as gpu_spec
from sunsim.scenario import ScenarioError, scenario_from_dict
from sunsim.sim.layout import PREFILL_DTYPE, cost_model, load_profile
from sunsim.sim.variant import check_variant, simulate_variant
from sunsim.workload.stream import RequestStream, build_workload

from .conftest import BASE, merge


def _scenario(prefill: dict, tasks=("a", "b"), **patch):
    data = merge(BASE, {"model": {"preset": "llama-3.1-8b", "tasks": list(tasks)}, "prefill": prefill,
                        "variants": [{"name": "sun", "mode": "shared", "workers": 1}], **patch})
    data["prefill"] = {"max_batch_tokens": 8192, **prefill}  # replace, not merge: no per-model default left
    return scenario_from_dict(data)


def _stream(arrival, model, prompt, tasks=("a", "b")) -> RequestStream:
    """Requests with one output token: each finishes at its prefill, so only prefill is timed."""
    n = len(arrival)
    return RequestStream(np.asarray(arrival, float), np.asarray(model, np.int32), np.asarray(prompt, np.int64),
                         np.ones(n, np.int64), tuple(tasks))


def _run(sc, stream):
    """The scenario's first variant on ``stream`` under its own profile (the one ``_prefill_time`` prices)."""
    return simulate_variant(sc, sc.variants[0], stream, load_profile(sc))


def _prefill_time(sc, *prompts: int) -> float:
    cost = cost_model(sc, load_profile(sc), PREFILL_DTYPE, "prefill")
    p = np.array(prompts)
    return cost.prefill_time(int(p.sum()), int(np.dot(p, p)), len(p))


def _weight_bytes(sc) -> float:
    return sc.shape.weight_bytes(PREFILL_DTYPE)


def _kv_tokens(sc, extra_modules: int) -> int:
    """KV tokens of one prefill GPU by hand: usable memory minus its resident modules and the reserve."""
    hw = sc.hardware
    free = gpu_spec(hw.gpu).memory_bytes * hw.memory_utilization - (1 + extra_modules) * _weight_bytes(sc) \
        - hw.reserve_gib * GIB
    block = sc.decode.block_tokens
    return int(free // sc.shape.kv_bytes(sc.prefill.kv_dtype)) // block * block


# -- (a) packed: K models per GPU -------------------------------------------------------------------------
def test_packed_gpu_batches_one_model_at_a_time_fcfs_by_oldest_head():
    sc = _scenario({"workers": 1, "models_per_gpu": 2})
    # a at 0 runs alone; b1 (0.001), a2, a3, b4 queue meanwhile. b's head is older than a's, so b runs next,
    # taking its whole queue (b1 and b4) in one batch; then a's (a2, a3).
    prompt = [1000, 2000, 500, 700, 300]
    stream = _stream([0.0, 0.001, 0.002, 0.003, 0.004], [0, 1, 0, 0, 1], prompt)
    res = _run(sc, stream)
    rec = res.records
    d1 = _prefill_time(sc, 1000)
    d2 = _prefill_time(sc, 2000, 300)
    d3 = _prefill_time(sc, 500, 700)
    assert d1 > 0.004  # everything else arrived while the first batch ran
    np.testing.assert_allclose(rec.prefill_start_s, [0.0, d1, d1 + d2, d1 + d2, d1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.first_token_s, [d1, d1 + d2, d1 + d2 + d3, d1 + d2 + d3, d1 + d2],
                               rtol=0, atol=1e-9)
    # batches (requests sharing a start) never mix models
    for start in np.unique(rec.prefill_start_s):
        assert len(set(stream.model[rec.prefill_start_s == start].tolist())) == 1
    assert res.prefill_workers[0].batches == 3
    assert res.prefill_pool_of == ["a+b"]


def test_packed_gpu_kv_bound_loses_one_models_weights():
    one = _scenario({"workers": {"a": 1, "b": 1}})
    two = _scenario({"workers": 1, "models_per_gpu": 2})
    stream = _stream([0.0], [0], [100])
    r1 = _run(one, stream)
    r2 = _run(two, stream)
    assert r1.prefill_kv_capacity_tokens == _kv_tokens(one, 0)
    assert r2.prefill_kv_capacity_tokens == _kv_tokens(two, 1)
    per_token = one.shape.kv_bytes("bf16")
    lost = (r1.prefill_kv_capacity_tokens - r2.prefill_kv_capacity_tokens) * per_token
    assert abs(lost - _weight_bytes(one)) <= 2 * one.decode.block_tokens * per_token


def test_packed_placement_spreads_the_popular_models_and_routes_to_hosts():
    tasks = [f"m{i}" for i in range(6)]
    sc = _scenario({"workers": 6, "models_per_gpu": 2}, tasks=tasks,
                   workload={"rate": 60, "duration_s": 5, "popularity": {"kind": "zipf", "s": 1.5}})
    res = _run(sc, build_workload(sc))
    hosts = res.prefill_serves
    assert sum("m0" in h for h in hosts) >= 2  # the hottest model gets replicas
    assert all(sum(t in h for h in hosts) >= 1 for t in tasks)
    df = request_table(res)
    for w, m in zip(df["prefill_worker"], df["model"]):
        assert m in hosts[int(w)]
    assert summarize(res, df)["per_model"]["m0"]["gpus"]["prefill"] == sum("m0" in h for h in hosts)


# -- (b) on demand: LRU of resident prefill modules -------------------------------------------------------
def test_on_demand_loads_before_the_batch_and_evicts_lru():
    sc = _scenario({"workers": 1, "on_demand": {"resident": 1, "load_GBps": 64}})
    load = _weight_bytes(sc) / 64e9
    assert load > 0.1  # 8B bf16 over PCIe 5: a quarter second
    # a0 at 0 waits for a's load; a1 arrives during it and joins the batch; b2 evicts a; a3 loads a again.
    prompt = [1000, 600, 800, 400]
    stream = _stream([0.0, load / 2, 2.0, 4.0], [0, 0, 1, 0], prompt)
    res = _run(sc, stream)
    rec = res.records
    np.testing.assert_allclose(rec.prefill_start_s, [load, load, 2.0 + load, 4.0 + load], rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.first_token_s, [load + _prefill_time(sc, 1000, 600)] * 2
                               + [2.0 + load + _prefill_time(sc, 800), 4.0 + load + _prefill_time(sc, 400)],
                               rtol=0, atol=1e-9)
    st = res.prefill_stats[0]
    assert st.loads == 3
    assert st.load_s == pytest.approx(3 * load, abs=1e-9)
    summary = summarize(res)
    assert summary["prefill_loads"]["loads"] == 3
    assert summary["prefill_workers"][0]["loads"] == 3
    assert summary["prefill_workers"][0]["load_s"] == pytest.approx(3 * load, abs=1e-9)


def test_on_demand_two_resident_keeps_both():
    sc = _scenario({"workers": 1, "on_demand": {"resident": 2, "load_GBps": 7}})
    load = _weight_bytes(sc) / 7e9
    stream = _stream([0.0, 10.0, 20.0], [0, 1, 0], [1000, 800, 400])
    res = _run(sc, stream)
    np.testing.assert_allclose(res.records.prefill_start_s, [load, 10.0 + load, 20.0], rtol=0, atol=1e-9)
    assert res.prefill_stats[0].loads == 2


def test_on_demand_routing_prefers_a_gpu_holding_the_model():
    sc = _scenario({"workers": 2, "on_demand": {"resident": 1, "load_GBps": 64}})
    # a0 -> GPU 0 (tie: the first); b1 -> GPU 1 (GPU 0 would need b loaded after its work);
    # a2 -> GPU 0, where a is resident, rather than loading it again on GPU 1.
    stream = _stream([0.0, 0.001, 0.002], [0, 1, 0], [1000, 1000, 1000])
    res = _run(sc, stream)
    assert res.records.prefill_worker.tolist() == [0, 1, 0]
    assert sum(s.loads for s in res.prefill_stats) == 2


# -- (d) 256 models: conservation ------------------------------------------------------------------------
@pytest.mark.parametrize("prefill", [{"workers": 16, "on_demand": {"resident": 4}},
                                     {"workers": 64, "models_per_gpu": 4}])
def test_256_models_conserve_requests_and_tokens(prefill):
    sc = _scenario(prefill, tasks=[f"t{i}" for i in range(256)],
                   workload={"rate": 200, "duration_s": 4, "popularity": {"kind": "zipf", "s": 1.0}},
                   variants=[{"name": "sun", "mode": "shared", "workers": 8}], sim={"drain_s": 120})
    stream = build_workload(sc)
    res = _run(sc, stream)
    df = request_table(res)
    assert df["finish_s"].notna().all()  # every request served
    assert (df["first_token_s"] >= df["prefill_start_s"]).all()
    assert (df["prefill_start_s"] >= df["arrival_s"]).all()
    # every prefill GPU handed all its KV over; its batches held every prompt once
    for w in res.prefill_workers:
        assert w.held_tokens == 0 and w.load == 0 and w.kv_load == 0
    assert sum(s.batches for s in res.prefill_stats) <= len(stream)
    decode_tokens = sum(s.tokens for s in res.decode_stats)
    assert decode_tokens == int((stream.output_tokens - 1).sum())
    for w, m in zip(df["prefill_worker"], df["model"]):
        assert m in res.prefill_serves[int(w)]
    summary = summarize(res, df)
    assert summary["requests"]["finished"] == len(stream)
    assert summary["gpus"]["prefill"] == prefill["workers"]
    if "on_demand" in prefill:
        load = _weight_bytes(sc) / 64e9
        loads = summary["prefill_loads"]["loads"]
        assert loads >= len(set(stream.model.tolist()))  # each model with traffic loaded somewhere
        assert summary["prefill_loads"]["load_s"] == pytest.approx(loads * load, rel=1e-9)


# -- (e) schema ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefill, words", [
    ({"workers": 2, "models_per_gpu": 2, "on_demand": {"resident": 1}}, ["on_demand", "models_per_gpu"]),
    ({"workers": {"a": 1, "b": 1}, "models_per_gpu": 2}, ["prefill.workers", "total"]),
    ({"workers": 1, "models_per_gpu": 3}, ["prefill.models_per_gpu", "at most"]),
    ({"workers": 1, "models_per_gpu": 2}, ["prefill.workers", "cannot host"]),
    ({"workers": 0, "on_demand": {"resident": 1}}, ["prefill.workers", "at least 1"]),
    ({"workers": 1, "on_demand": {"resident": 5}}, ["prefill.on_demand.resident", "at most"]),
    ({"workers": 1, "on_demand": {"resident": 0}}, ["resident"]),
    ({"workers": 1, "on_demand": {"resident": 1, "load_GBps": 0}}, ["load_GBps"]),
    ({"workers": 1, "on_demand": {"resident": 1, "load": 3}}, ["load", "Extra"]),
])
def test_schema_errors_name_the_field(prefill, words):
    tasks = ["a", "b", "c", "d"] if prefill.get("models_per_gpu") == 2 and prefill["workers"] == 1 else ["a", "b"]
    with pytest.raises(ScenarioError) as err:
        _scenario(prefill, tasks=tasks)
    msg = str(err.value)
    for w in words:
        assert w in msg, msg


def test_too_many_resident_modules_leave_no_kv_memory():
    # five 16 GB llama-3.1-8b prefill modules do not fit beside a KV cache on an 80 GB H100
    sc = _scenario({"workers": 1, "models_per_gpu": 5}, tasks=["a", "b", "c", "d", "e"])
    stream = _stream([0.0], [0], [100], tasks=("a", "b", "c", "d", "e"))
    with pytest.raises(ScenarioError, match="prefill.models_per_gpu: 5 resident prefill modules"):
        check_variant(sc, sc.variants[0], stream, load_profile(sc))


# -- planning: one total for a shared prefill pool ---------------------------------------------------------
@pytest.mark.parametrize("prefill, least, rate", [({"workers": 1, "on_demand": {"resident": 2}}, 1, 60),
                                                  ({"workers": 2, "models_per_gpu": 2}, 2, 200)])
def test_plan_sizes_the_shared_prefill_total(prefill, least, rate):
    from sunsim.analysis.planning.search import plan

    sc = _scenario(prefill, tasks=["a", "b", "c", "d"], workload={"rate": rate, "duration_s": 6},
                   slo={"ttft_s": 0.3, "tpot_s": 1.0}, variants=[{"name": "sun", "mode": "shared", "workers": 4}])
    probes = []
    (vp,) = plan(sc, 0.9, size_prefill=True, goodput=False, on_probe=probes.append)
    assert set(vp.prefill_counts) == {"shared"}
    total = vp.prefill_counts["shared"]
    assert min(p["prefill_gpus"] for p in probes) >= least  # no probe below the GPUs that host every model
    # the answer is the least total meeting every model's TTFT target: it does, one fewer does not
    def worst_ttft(n: int) -> float:
        s = _scenario({**prefill, "workers": n}, tasks=["a", "b", "c", "d"], workload={"rate": rate, "duration_s": 6},
                      slo={"ttft_s": 0.3, "tpot_s": 1.0}, variants=[{"name": "sun", "mode": "shared", "workers": 4}])
        per_model = summarize(_run(s, build_workload(s)))["per_model"]
        return min(m["slo"]["ttft_attainment"] for m in per_model.values())

    assert worst_ttft(total) >= 0.9
    if total > least:
        assert worst_ttft(total - 1) < 0.9


def test_multi_lora_prefill_loads_an_adapter_not_a_model():
    from sunsim.costs.lora import LoraCost

    sc = _scenario({"workers": 1, "on_demand": {"resident": 1, "load_GBps": 64}},
                   variants=[{"name": "lora", "mode": "multi_lora", "workers": 1, "rank": 16}])
    adapter = LoraCost(sc.shape, gpu_spec("h100"), 16).adapter_bytes
    stream = _stream([0.0, 1.0], [0, 1], [1000, 1000])
    res = _run(sc, stream)
    np.testing.assert_allclose(res.records.prefill_start_s, [adapter / 64e9, 1.0 + adapter / 64e9], rtol=0, atol=1e-9)
    # the GPU holds the base once and one adapter: its KV bound loses the adapter's bytes only
    per_token = sc.shape.kv_bytes("bf16")
    assert abs((_kv_tokens(sc, 0) - res.prefill_kv_capacity_tokens) * per_token - adapter) \
        <= 2 * sc.decode.block_tokens * per_token
