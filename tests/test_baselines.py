"""Baselines beside dedicated and SUN: colocated models, multi-LoRA, rebalanced dedicated pools.

Each is checked against a mode it must reduce to (identical request tables), against step
costs computed by hand, and for conservation of requests and tokens.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sunsim.analysis.metrics import request_table, summarize
from sunsim.analysis.planning import plan
from sunsim.costs.colocation import place, round_coeffs
from sunsim.costs.hardware import gpu as gpu_spec
from sunsim.costs.lora import AdapterCache, LoraCost
from sunsim.costs.lora import step_coeffs as lora_step_coeffs
from sunsim.costs.model import AnalyticCostModel
from sunsim.experiments.beyond import stronger_baselines_finding
from sunsim.scenario import ScenarioError
from sunsim.sim.in_flight import FLUSH_EVERY
from sunsim.sim.rebalance import Rebalancer
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload

from .conftest import make_scenario

SMALL = {"duration_s": 15, "rate": 30}


def _table(sc, name: str) -> pd.DataFrame:
    v = next(v for v in sc.variants if v.name == name)
    return request_table(simulate_variant(sc, v, build_workload(sc))).reset_index(drop=True)


def _same(sc, a: str, b: str) -> None:
    """The same run: every row alike, times to 1e-9 s (a watched pool's decode GPUs cut a run where others may
    admit ahead for its next boundary: the same iterations, timed in one closed form or two)."""
    ta, tb = _table(sc, a), _table(sc, b)
    cols = [c for c in ta.columns if c != "variant"]
    pd.testing.assert_frame_equal(ta[cols], tb[cols], check_exact=False, rtol=0, atol=1e-9)


def _conserves(sc, name: str) -> None:
    """Every request finishes once; decode generates exactly output - 1 tokens per request."""
    stream = build_workload(sc)
    v = next(v for v in sc.variants if v.name == name)
    res = simulate_variant(sc, v, stream)
    df = request_table(res)
    assert len(df) == len(stream) and df["finish_s"].notna().all()
    assert sum(w.tokens for w in res.decode_workers) == int((stream.output_tokens - 1).sum())
    for w in res.decode_workers:
        assert w.batch == 0 and w.load == 0 and not w.waiting
        assert w.peak_blocks <= w.capacity_blocks


# --- colocated ------------------------------------------------------------------------------
def test_colocated_one_model_per_gpu_equals_dedicated():
    sc = make_scenario(workload=SMALL, variants=[
        {"name": "dedicated", "mode": "dedicated", "workers": {"total": 6, "by": "popularity"}},
        {"name": "co", "mode": "colocated", "workers": 6, "models_per_gpu": 1},
    ])
    _same(sc, "dedicated", "co")


def test_colocated_round_cost_by_hand():
    cost = AnalyticCostModel(gpu_spec("h100"), make_scenario().shape, "bf16")
    step = round_coeffs(cost)
    a3, beta = cost.decode_coeffs(3)
    a5, _ = cost.decode_coeffs(5)
    alpha, b = step(np.array([3, 0, 5, 0]))
    assert alpha == pytest.approx(a3 + a5) and b == beta
    # Two models of 4 cost more than one batch of 8: each model reads its own weights.
    assert step(np.array([4, 4, 0, 0]))[0] > cost.decode_coeffs(8)[0]
    # Hand check of one round: 3 + 5 requests holding 10,000 KV tokens in all.
    assert alpha + b * 10_000 == pytest.approx(a3 + a5 + beta * 10_000)


def test_placement_gives_hot_models_more_replicas():
    share = np.array([0.5, 0.25, 0.15, 0.10])
    hosts = place(4, 2, share)
    replicas = [sum(m in h for h in hosts) for m in range(4)]
    assert all(len(h) <= 2 and len(set(h)) == len(h) for h in hosts)
    assert replicas == [4, 2, 1, 1]  # 8 slots x share = 4 / 2 / 1.2 / 0.8: floors 4, 2, 1 and the floor of one
    assert place(4, 1, share) == [[0], [1], [2], [3]]


def test_colocated_conserves():
    sc = make_scenario(workload=SMALL, variants=[{"name": "co", "mode": "colocated", "workers": 2,
                                                  "models_per_gpu": 2}])
    _conserves(sc, "co")


def test_colocated_kv_memory_excludes_all_resident_weights():
    sc = make_scenario(workload=SMALL, variants=[
        {"name": "co1", "mode": "colocated", "workers": 4, "models_per_gpu": 1},
        {"name": "co2", "mode": "colocated", "workers": 2, "models_per_gpu": 2}])
    stream = build_workload(sc)
    one = simulate_variant(sc, sc.variants[0], stream).decode_workers[0]
    two = simulate_variant(sc, sc.variants[1], stream).decode_workers[0]
    lost = (one.capacity_blocks - two.capacity_blocks) * one.block * sc.shape.kv_bytes_per_token
    assert abs(lost - sc.shape.weight_bytes("bf16")) <= one.block * sc.shape.kv_bytes_per_token


@pytest.mark.parametrize("variant, field", [
    ({"mode": "shared", "workers": 2, "models_per_gpu": 2}, "models_per_gpu"),
    ({"mode": "colocated", "workers": 2, "models_per_gpu": 5}, "models_per_gpu"),
    ({"mode": "colocated", "workers": 1, "models_per_gpu": 2}, "workers"),
    ({"mode": "colocated", "workers": 2, "models_per_gpu": 0}, "models_per_gpu"),
])
def test_bad_colocated_refused(variant, field):
    with pytest.raises(ScenarioError, match=field):
        make_scenario(variants=[{"name": "x", **variant}])


def test_colocated_without_kv_memory_refused():
    # 4 x 16 GB of bf16 weights on 80 GB x 0.8 usable leave nothing for KV.
    sc = make_scenario(hardware={"memory_utilization": 0.8},
                       variants=[{"name": "x", "mode": "colocated", "workers": 1, "models_per_gpu": 4}])
    with pytest.raises(ScenarioError, match="models_per_gpu"):
        simulate_variant(sc, sc.variants[0], build_workload(sc))


# --- multi-LoRA -----------------------------------------------------------------------------
def test_multi_lora_rank0_one_task_equals_shared():
    sc = make_scenario(model={"preset": "llama-3.1-8b", "tasks": ["a"]}, workload=SMALL, variants=[
        {"name": "sun", "mode": "shared", "workers": 2},
        {"name": "lora", "mode": "multi_lora", "workers": 2, "rank": 0}])
    _same(sc, "sun", "lora")


def test_lora_step_cost_by_hand():
    """Llama-3.1-8B, rank 16, all seven modules: per layer r x sum(d_in + d_out) = 16 x 81,920."""
    from sunsim.costs.efficiency import fits

    shape = make_scenario().shape
    h100 = gpu_spec("h100")
    lora = LoraCost(shape, h100, rank=16)
    # q, o: 4096 + 4096; k, v: 4096 + 1024; gate, up, down: 4096 + 14336.
    params = 32 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432)
    assert lora.adapter_params == params == 41_943_040
    assert lora.adapter_bytes == 2 * params  # 80 MiB in bf16
    # Batch of 8 over 3 adapters: one shrink + one expand per module group (QKV, O, gate/up, down) and layer at the
    # measured per-call floor, 3 adapters read once, each token's activations through the groups, at the fitted
    # bf16 GEMM bandwidth; FLOPs at its FLOP/s.
    bw, flops, call = fits().gemm["bf16"].bandwidth_Bps, fits().gemm["bf16"].flops, fits().attention.decode_call_s
    act = 2 * ((4096 + 2 * (4096 + 1024 + 1024) + 6 * 16) + (4096 + 2 * 4096 + 2 * 16)
               + (4096 + 4 * 14336 + 4 * 16) + (14336 + 2 * 4096 + 2 * 16))  # bytes per token and layer
    by_hand = 32 * 8 * call + (3 * 2 * params + 8 * 32 * act) / bw + 2 * 8 * params / flops
    assert lora.time(8, 3) == pytest.approx(by_hand)  # ~1.55 ms, mostly the 256 kernel calls (central band)
    base = AnalyticCostModel(h100, shape, "bf16")
    alpha, beta = lora_step_coeffs(base, lora)(np.array([5, 0, 2, 1]))
    assert alpha == pytest.approx(base.decode_coeffs(8)[0] + by_hand) and beta == base.decode_coeffs(8)[1]
    # The band scales the whole adapter term.
    assert LoraCost(shape, h100, 16, "low").time(8, 3) < lora.time(8, 3) < LoraCost(shape, h100, 16, "high").time(8, 3)
    assert lora.load_s == pytest.approx(2 * params / 64e9)


def test_adapter_cache_lru_and_queued_loads():
    cache = AdapterCache(capacity=2, load_s=1.0)
    assert cache.ready_at(0, 0.0) == 1.0
    assert cache.ready_at(1, 0.5) == 2.0  # queues behind the first load
    assert cache.ready_at(0, 3.0) == 3.0  # resident
    assert cache.ready_at(2, 3.0) == 4.0  # evicts 1, the least recently used
    assert cache.ready_at(0, 5.0) == 5.0
    assert cache.ready_at(1, 5.0) == 6.0 and cache.loads == 4


def test_multi_lora_conserves_and_costs_more_than_shared():
    sc = make_scenario(workload=SMALL, variants=[
        {"name": "sun", "mode": "shared", "workers": 2},
        {"name": "lora", "mode": "multi_lora", "workers": 2, "max_adapters": 2}])
    _conserves(sc, "lora")
    stream = build_workload(sc)
    sun = simulate_variant(sc, sc.variants[0], stream)
    lora = simulate_variant(sc, sc.variants[1], stream)
    def per_token(res):
        r = res.records
        return float(np.nanmean((r.finish_s - r.decode_start_s) / np.maximum(stream.output_tokens - 1, 1)))
    assert per_token(lora) > per_token(sun)  # adapter work on every step
    assert lora.kv_capacity_tokens < sun.kv_capacity_tokens  # two 80 MiB adapters resident


@pytest.mark.parametrize("variant, field", [
    ({"mode": "shared", "workers": 2, "rank": 8}, "rank"),
    ({"mode": "dedicated", "workers": 1, "max_adapters": 2}, "max_adapters"),
    ({"mode": "multi_lora", "workers": 2, "rank": -1}, "rank"),
    ({"mode": "multi_lora", "workers": 2, "max_adapters": 0}, "max_adapters"),
    ({"mode": "multi_lora", "workers": {"a": 1}}, "workers"),
])
def test_bad_multi_lora_refused(variant, field):
    with pytest.raises(ScenarioError, match=field):
        make_scenario(variants=[{"name": "x", **variant}])


# --- rebalanced dedicated pools ------------------------------------------------------------------
def _shifted(every_s: float):
    # Zipf 1.5 over 4 models on 6 GPUs (3/1/1/1); at 8 s the ranking rotates and model b gets the hot traffic.
    ded = {"mode": "dedicated", "workers": {"total": 6, "by": "popularity"}}
    return make_scenario(
        prefill={"workers": 2}, slo={"ttft_s": 1.0, "tpot_s": 0.015},
        workload={"duration_s": 24, "rate": 250, "popularity": {"kind": "zipf", "s": 1.5},
                  "shift": {"at_s": 8, "rotate": 1}},
        variants=[{"name": "dedicated", **ded},
                  {"name": "reb", **ded, "rebalance": {"every_s": every_s, "load_s": 1.0}}])


def test_rebalance_rates_are_each_intervals_arrivals(monkeypatch):
    """The rates behind each move are the arrivals of each model in the interval before (counted as they arrive,
    in a run long enough that the requests' slots are reused)."""
    sc = _shifted(every_s=2.0)
    stream = build_workload(sc)
    assert len(stream) > FLUSH_EVERY + 1024  # (the first flush gives slots back)
    made: list[Rebalancer] = []
    init = Rebalancer.__init__
    monkeypatch.setattr(Rebalancer, "__init__", lambda self, *a, **k: (init(self, *a, **k), made.append(self))[0])
    simulate_variant(sc, sc.variants[1], stream)
    assert len(made[0].looks) >= 10
    for t, counts in made[0].looks:
        inside = (stream.arrival_s > t - 2.0) & (stream.arrival_s <= t)
        assert counts == tuple(np.bincount(stream.model[inside], minlength=4).tolist())


def test_rebalance_never_firing_equals_dedicated():
    _same(_shifted(every_s=1e6), "dedicated", "reb")


def test_rebalance_follows_the_shift_and_helps_the_hot_model():
    sc = _shifted(every_s=2.0)
    stream = build_workload(sc)
    static = simulate_variant(sc, sc.variants[0], stream)
    moving = simulate_variant(sc, sc.variants[1], stream)
    assert [p for p in static.decode_pool_of] == ["a", "a", "a", "b", "c", "d"]
    to_b = sum(1 for *_, dst in moving.moves if dst == 1) - sum(1 for _, _, src, _ in moving.moves if src == 1)
    assert to_b >= 1 and all(t > 8 for t, *_ in moving.moves)  # GPUs go to b, after the shift
    att = {name: summarize(res, request_table(res))["per_model"]["b"]["slo"]["attainment"]
           for name, res in (("static", static), ("moving", moving))}
    assert att["moving"] > att["static"]
    _conserves(sc, "reb")


@pytest.mark.parametrize("variant, field", [
    ({"mode": "shared", "workers": 2, "rebalance": {"every_s": 5}}, "rebalance"),
    ({"mode": "dedicated", "workers": 1, "rebalance": {"every_s": 0}}, "every_s"),
    ({"mode": "dedicated", "workers": 1, "rebalance": {"every_s": "inf"}}, "every_s"),
    ({"mode": "dedicated", "workers": 1, "rebalance": {"every_s": 5, "load_s": -1}}, "load_s"),
    ({"mode": "dedicated", "workers": 1, "rebalance": {"every_s": 5, "load_s": "nan"}}, "load_s"),
])
def test_bad_rebalance_refused(variant, field):
    with pytest.raises(ScenarioError, match=field):
        make_scenario(variants=[{"name": "x", **variant}])


# --- planning -------------------------------------------------------------------------------------
def test_plan_sizes_baselines():
    """colocated and multi_lora are sized as one pool, rebalanced dedicated as dedicated pools."""
    sc = make_scenario(workload={"duration_s": 10, "rate": 60}, variants=[
        {"name": "co", "mode": "colocated", "workers": 2, "models_per_gpu": 2},
        {"name": "lora", "mode": "multi_lora", "workers": 2},
        {"name": "reb", "mode": "dedicated", "workers": 1, "rebalance": {"every_s": 2, "load_s": 1}}])
    co, lora, reb = plan(sc, attainment=0.9, goodput=False, max_gpus=8)
    assert set(lora.decode_counts) == {"shared"} and lora.decode_counts["shared"] >= 1
    assert co.decode_counts["shared"] >= 2  # 4 models at 2 per GPU need at least 2 GPUs
    assert set(reb.decode_counts) == {"a", "b", "c", "d"} and min(reb.decode_counts.values()) >= 1


def test_stronger_baselines_finding_follows_the_table(tmp_path):
    d = tmp_path / "baselines"
    d.mkdir()
    pd.DataFrame({"variant": ["sun", "dedicated", "colocated"], "tpot_p90_s": [0.010, 0.012, 0.0101],
                  "slo_attainment": [1.0, 0.95, 1.0]}).to_csv(d / "comparison.csv", index=False)
    s = stronger_baselines_finding({"baselines": d})
    assert "beats static dedicated pools' (12.0 ms, SLO attainment 95.0%)" in s
    assert "is within 1% of colocated models' (10.1 ms" in s
    assert stronger_baselines_finding({}) is None
