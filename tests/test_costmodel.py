"""Analytic cost details against hand-computed numbers on the fitted kernel curves."""

from __future__ import annotations

import pytest

from sunsim.costs.architecture import PRESETS
from sunsim.costs.efficiency import fits
from sunsim.costs.hardware import GIB, GPUS
from sunsim.costs.model import (
    DECODE_STEP_OVERHEAD_S,
    PREFILL_BATCH_OVERHEAD_S,
    AnalyticCostModel,
    projection_gemms,
)
from sunsim.sim.variant import kv_capacity_tokens

from .conftest import make_scenario

L8B = PRESETS["llama-3.1-8b"]
H100 = GPUS["h100"]
BF16 = fits().gemm["bf16"]  # the curve fitted to the H100 probe (tests/test_cost_curves.py checks the fit)
BW = BF16.bandwidth_Bps  # bytes/s reached by weight reads


def test_decode_step_reads_its_embedding_rows_not_the_table():
    cost = AnalyticCostModel(H100, L8B, "bf16")
    proj = L8B.layers * BF16.total(projection_gemms(L8B), 8, 2.0)  # the four fused projections on the curve
    head = BF16.time(L8B.hidden, L8B.vocab, 8, 2.0)  # the LM head is read whole: every row needs logits
    rows = 8 * L8B.hidden * 2 / BW  # 8 embedding rows, not 128256
    norms = (2 * L8B.layers + 1) * L8B.hidden * 2 / BW
    attn_calls = L8B.layers * fits().attention.decode_call_s  # one decode-attention call per layer
    alpha, beta = cost.decode_coeffs(8)
    assert alpha == pytest.approx(DECODE_STEP_OVERHEAD_S + proj + head + rows + norms + attn_calls, rel=1e-12)
    assert beta == pytest.approx(L8B.kv_bytes_per_token / fits().attention.decode_bandwidth_Bps)
    # By hand: 0.5 ms + 32 x 167.6 us (probe: 166-169 us per layer at 1-16 rows) + 0.40 ms head + 0.18 ms calls.
    assert alpha == pytest.approx(0.5e-3 + 5.362e-3 + 0.403e-3 + 0.179e-3, rel=1e-3)


def test_prefill_computes_the_lm_head_for_each_prompts_last_token_only():
    cost = AnalyticCostModel(H100, L8B, "bf16")
    tokens, prompts = 8192, 4
    proj = L8B.layers * BF16.total(projection_gemms(L8B), tokens, 2.0)  # compute-bound at 8192 rows
    head = BF16.time(L8B.hidden, L8B.vocab, prompts, 2.0)  # 4 rows: a read
    rest = (tokens + 2 * L8B.layers + 1) * L8B.hidden * 2 / BW
    attn = L8B.layers * fits().attention.decode_call_s + cost._attn_s_per_sq * fits().attention.prefill_half_len * tokens
    got = cost.prefill_time(tokens, 0, prompts)
    assert got == pytest.approx(PREFILL_BATCH_OVERHEAD_S + proj + head + rest + attn, rel=1e-12)
    # Logits for every prompt token would cost ~12.5 ms more on the bf16 curve.
    assert BF16.time(L8B.hidden, L8B.vocab, tokens, 2.0) == pytest.approx(12.5e-3, rel=0.01)
    assert got == pytest.approx(2e-3 + 0.1667 + 0.403e-3 + 0.025e-3 + attn, rel=2e-3)


def test_transfer_moves_the_prompts_kv():
    from sunsim.sim.variant import simulate_variant
    from sunsim.workload.stream import build_workload

    sc = make_scenario(interconnect={"contention": "none", "latency_us": 0, "bandwidth_GBps": 1.0},
                       workload={"rate": 1, "duration_s": 5},
                       variants=[{"name": "s", "mode": "shared", "workers": 4, "routing": "least_loaded"}])
    stream = build_workload(sc)
    res = simulate_variant(sc, sc.variants[0], stream)
    r = res.records
    # light load, each request to an idle GPU: admitted at once, the transfer starts at the first token
    d = stream.output_tokens > 1
    moved = (r.kv_ready_s - r.first_token_s)[d] * 1e9 / L8B.kv_bytes_per_token
    assert moved == pytest.approx(stream.prompt_tokens[d], rel=1e-6)


def test_gpu_memory_is_the_runtime_total_in_bytes():
    assert H100.memory_bytes == 85_017_493_504  # measured: 79.2 GiB, not 80e9 nor 80 GiB
    assert H100.memory_bytes / GIB == pytest.approx(79.18, abs=0.01)
    assert GPUS["h200"].memory_bytes / GIB == pytest.approx(140.4, abs=0.1)  # "141 GB"
    assert GPUS["a100"].memory_bytes / GIB == pytest.approx(80.0)
    sc = make_scenario()
    free = 85_017_493_504 * 0.9 - L8B.weight_bytes("bf16") - 4 * GIB
    assert kv_capacity_tokens(sc, L8B, "bf16") == int(free // L8B.kv_bytes_per_token) // 16 * 16


def test_analytic_lowbit_projection_time_follows_the_measured_curve():
    bf16, int4 = AnalyticCostModel(H100, L8B, "bf16"), AnalyticCostModel(H100, L8B, "int4")
    # One layer's projections at batch 1: the fitted bf16 curve gives ~167 us (probe: 166).
    per_layer = bf16.projections_time(1) / L8B.layers
    assert per_layer * 1e6 == pytest.approx(167, abs=1)
    # int4 (W4A16, Marlin/Machete class): the fitted memory term, n x t_fixed + int4 bytes / BW.
    w4 = fits().gemm["w4a16"]
    by_hand = sum(w4.fixed_s + k * n * (0.5 + 4 / 128) / w4.bandwidth_Bps for k, n in projection_gemms(L8B))
    assert int4.projections_time(1) / L8B.layers == pytest.approx(by_hand, rel=0.01)
    assert 0.45 < int4.projections_time(16) / bf16.projections_time(16) < 0.6
    assert "gemm_measurements.csv" in int4.info.source and "humming/pull/2" in int4.info.source
    assert "Marlin" in int4.info.kernel and "cuBLAS" in bf16.info.kernel
    assert bf16.info.as_dict()["source"].startswith("sunsim/costs/data/gemm_measurements.csv (P1")
