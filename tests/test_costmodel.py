"""Analytic cost details against hand-computed numbers, and the measured low-bit curves."""

from __future__ import annotations

import pytest

from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import GIB, GPUS, LowBitGemm
from sunsim.costs.model import DECODE_STEP_OVERHEAD_S, PREFILL_BATCH_OVERHEAD_S, AnalyticCostModel
from sunsim.sim.variant import kv_capacity_tokens

from .conftest import make_scenario

L8B = PRESETS["llama-3.1-8b"]
H100 = GPUS["h100"]
BW = 3.35e12 * 0.78  # bytes/s reached by weight reads
FLOPS = 989e12 * 0.75


def test_decode_step_reads_its_embedding_rows_not_the_table():
    cost = AnalyticCostModel(H100, L8B, "bf16")
    proj = L8B.linear_params * 2 / BW  # 6.98e9 params, memory-bound at batch 8
    head = L8B.vocab * L8B.hidden * 2 / BW  # the LM head is read whole: every row needs logits
    rows = 8 * L8B.hidden * 2 / BW  # 8 embedding rows, not 128256
    norms = (2 * L8B.layers + 1) * L8B.hidden * 2 / BW
    alpha, beta = cost.decode_coeffs(8)
    assert alpha == pytest.approx(DECODE_STEP_OVERHEAD_S + proj + head + rows + norms, rel=1e-12)
    assert beta == pytest.approx(L8B.kv_bytes_per_token / (3.35e12 * 0.75))
    assert alpha == pytest.approx(0.5e-3 + 5.343e-3 + 0.4020e-3, rel=1e-3)  # by hand: 6.245 ms


def test_prefill_computes_the_lm_head_for_each_prompts_last_token_only():
    cost = AnalyticCostModel(H100, L8B, "bf16")
    tokens, prompts = 8192, 4
    proj = 2 * L8B.linear_params * tokens / FLOPS  # compute-bound
    head = max(L8B.vocab * L8B.hidden * 2 / BW, 2 * L8B.vocab * L8B.hidden * prompts / FLOPS)  # 4 rows: a read
    rest = (tokens + 2 * L8B.layers + 1) * L8B.hidden * 2 / BW
    got = cost.prefill_time(tokens, 0, prompts)
    assert got == pytest.approx(PREFILL_BATCH_OVERHEAD_S + proj + head + rest, rel=1e-12)
    # Logits for every prompt token would cost 2 x vocab x hidden x 8192 FLOPs more (~11.6 ms).
    assert 2 * L8B.vocab * L8B.hidden * tokens / FLOPS == pytest.approx(11.6e-3, rel=0.01)
    assert got == pytest.approx(2e-3 + 0.1542 + 0.402e-3 + 0.025e-3, rel=2e-3)


def test_transfer_moves_the_prompts_kv():
    from sunsim.sim.variant import simulate_variant
    from sunsim.workload.stream import build_workload

    sc = make_scenario(interconnect={"contention": "none", "latency_us": 0, "bandwidth_GBps": 1.0},
                       workload={"rate": 1, "duration_s": 5},
                       variants=[{"name": "s", "mode": "shared", "workers": 4}])
    stream = build_workload(sc)
    res = simulate_variant(sc, sc.variants[0], stream)
    r = res.records
    d = stream.output_tokens > 1  # light load: admitted at once, transfer starts at the first token
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


def test_lowbit_ratio_reproduces_the_measured_points():
    lb = LowBitGemm.read("h100_lowbit_gemm.csv")
    # gemlite W4A16: 80 / 166 us at 1 row, 134 / 169 us at 16; W8A16 85 / 109; fp8 135 ... 386 / 655.
    assert lb.time_ratio("int4", 1) == pytest.approx(80 / 166)
    assert lb.time_ratio("int4", 16) == pytest.approx(134 / 169)
    assert lb.time_ratio("int8", 16) == pytest.approx(109 / 169)
    for rows, fp8, bf16 in [(1, 135, 166), (16, 127, 169), (64, 117, 171), (256, 139, 209), (1024, 386, 655)]:
        assert lb.time_ratio("fp8", rows) == pytest.approx(fp8 / bf16)
    # Interpolated in log-rows: 4 rows is halfway between 1 and 16.
    assert lb.time_ratio("int4", 4) == pytest.approx((80 / 166 + 134 / 169) / 2)
    # Clamped outside the measured rows.
    assert lb.time_ratio("int4", 256) == pytest.approx(134 / 169)
    assert lb.time_ratio("fp8", 8192) == pytest.approx(386 / 655)
    assert lb.time_ratio("bf16", 64) == 1.0


def test_analytic_lowbit_projection_time_follows_the_measured_curve():
    bf16, int4 = AnalyticCostModel(H100, L8B, "bf16"), AnalyticCostModel(H100, L8B, "int4")
    # One layer's projections at batch 1: bf16 roofline ~167 us (measured 166), int4 ~80 us (measured 80).
    per_layer = bf16.projections_time(1) / L8B.layers
    assert per_layer * 1e6 == pytest.approx(167, abs=1)
    assert int4.projections_time(1) / L8B.layers * 1e6 == pytest.approx(per_layer * 1e6 * 80 / 166, rel=1e-9)
    assert int4.projections_time(16) / bf16.projections_time(16) == pytest.approx(134 / 169)
    assert int4.info.source == "sunsim/data/h100_lowbit_gemm.csv"
    assert "source" not in bf16.info.as_dict()
