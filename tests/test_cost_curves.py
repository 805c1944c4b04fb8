"""The analytic profiles' kernel curves against the measurements they are fitted to (issue 15, parts A and B)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration.commands import predict
from sunsim.costs import efficiency as eff
from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import GPUS
from sunsim.costs.model import AnalyticCostModel, decode_step_time, projection_gemms

L8B = PRESETS["llama-3.1-8b"]
H100 = GPUS["h100"]
#: The H100 probe's timings of one Llama-3.1-8B layer's four projections (bf16 F.linear, fp8 _scaled_mm row-wise with
#: activations already fp8), us per rows: ../shared/measurements/h100-2026-11-27/README.md, "Kernel probe".
PROBE_BF16 = {1: 166, 16: 169, 64: 171, 256: 209, 1024: 655}
PROBE_FP8 = {1: 135, 16: 127, 64: 117, 256: 139, 1024: 386}
#: The probe's batched SDPA decode attention (one layer, GQA 32/8 x 128, context 1024), us per batch.
PROBE_DECODE_ATTN = {1: 7.0, 16: 25.9, 64: 92.1, 256: 352.3}


def per_layer_us(cost: AnalyticCostModel, rows: int) -> float:
    return cost.projections_time(rows) / L8B.layers * 1e6


@pytest.mark.parametrize("rows", sorted(PROBE_BF16))
def test_bf16_curve_reproduces_the_probe_within_10_percent(rows):
    got = per_layer_us(AnalyticCostModel(H100, L8B, "bf16"), rows)
    assert got == pytest.approx(PROBE_BF16[rows], rel=0.10)
    assert got == pytest.approx(PROBE_BF16[rows], rel=0.01)  # the fit is in fact within 1%


def test_bf16_curve_is_smooth_through_the_ridge_and_slows_before_it():
    curve = eff.fits().gemm["bf16"]
    k, n = 4096, 28672
    mem = lambda m: (k * n * 2 + m * (2 * k + 2 * n)) / curve.bandwidth_Bps  # noqa: E731
    comp = lambda m: 2 * m * k * n / curve.flops  # noqa: E731
    rows = np.arange(1, 2049)
    t = np.array([curve.time(k, n, m, 2.0) for m in rows])
    assert np.all(np.diff(t) > 0)  # monotone
    assert np.max(np.abs(np.diff(t, 2))) < 1e-3 * t.max()  # no kink: second differences stay tiny
    ridge = min(rows, key=lambda m: abs(mem(m) - comp(m)))
    assert t[ridge - 1] / max(mem(ridge), comp(ridge)) == pytest.approx(2 ** (1 / curve.p), rel=0.02)
    # +26% at 256 rows measured (209 vs 166 us): the curve slows before the ridge, a plain roofline would not.
    assert per_layer_us(AnalyticCostModel(H100, L8B, "bf16"), 256) / per_layer_us(AnalyticCostModel(H100, L8B, "bf16"), 1) > 1.2
    assert 2.0 < curve.p < 6.0 and 0.7 < curve.bandwidth_Bps / eff.FIT_BANDWIDTH < 0.85


def test_fp8_curve_reproduces_the_probe_within_10_percent():
    curve = eff.fits().gemm["fp8"]
    for rows, us in PROBE_FP8.items():
        got = curve.total(projection_gemms(L8B), rows, 1.0) * 1e6
        assert got == pytest.approx(us, rel=0.10)
    # The cost model adds vLLM's per-token activation quantization on top (4 GEMM inputs per layer).
    fp8 = AnalyticCostModel(H100, L8B, "fp8")
    assert per_layer_us(fp8, 64) > curve.total(projection_gemms(L8B), 64, 1.0) * 1e6 + 4 * eff.ACT_QUANT_CALL_S * 1e6 - 1e-6


def test_every_fit_and_check_point_is_tabulated_with_its_source():
    for fmt in ("bf16", "fp8", "w4a16", "w8a16"):
        table = eff.error_table(fmt)
        assert table and all(row["source"] in eff.SOURCES for row in table)
        fitted = [row for row in table if row["use"] == "fit"]
        assert max(abs(row["rel_error"]) for row in fitted) < {"bf16": 0.01, "fp8": 0.10}.get(fmt, 0.22)
    # The second H100 harness (sunsim calibrate) agrees within 15% at 1..8192 rows without being fitted.
    checks = [row for row in eff.error_table("bf16") if row["source"] == "P2"]
    assert len(checks) == 9 and max(abs(row["rel_error"]) for row in checks) < 0.15


@pytest.mark.parametrize("batch", sorted(PROBE_DECODE_ATTN))
def test_decode_attention_reproduces_the_probe(batch):
    att = eff.fits().attention
    kv_bytes = batch * 1024 * L8B.kv_bytes_per_token / L8B.layers
    assert (att.decode_call_s + kv_bytes / att.decode_bandwidth_Bps) * 1e6 == pytest.approx(PROBE_DECODE_ATTN[batch], rel=0.06)
    assert 0.85 < att.decode_bandwidth_Bps / 3.35e12 < 0.97 and 4e-6 < att.decode_call_s < 7e-6


def test_prefill_attention_reproduces_flashattention3():
    att = eff.fits().attention
    for row in eff.read_table(eff.ATTENTION_FILE):
        if row["kind"] == "prefill":
            L = int(row["context"])
            rate = att.prefill_rate_max / (1 + att.prefill_half_len / L)
            assert rate / 1e12 == pytest.approx(float(row["value"]), rel=0.08)
    # The analytic prefill prices sum(L^2) and a per-token term: one 2048-token prompt costs more attention than
    # two of 1024 (same tokens).
    cost = AnalyticCostModel(H100, L8B, "bf16")
    assert cost.prefill_time(2048, 2048**2, 1) > cost.prefill_time(2048, 2 * 1024**2, 2)


def step_ms(dtype: str, batch: int, context: int) -> float:
    return predict("analytic-h100", "llama-3.1-8b", dtype, "decode", batch, context, 1024)["time_ms"]


def test_int4_decode_speedup_over_bf16_on_h100():
    """Issue 15 asks >= 2.0x at batch 16 and >= 1.4x at batch 64 (context 16). The H100 measurements of
    Marlin/Machete-class W4A16 kernels give the projections ~1.9x at 1-16 rows for this model's GEMM sizes,
    and the step keeps its 16-bit LM head, attention calls and step overhead: 1.66x at batch 16 (the 2.0x
    would need the projections >= 2.5x faster, which no H100 measurement here shows at these sizes)."""
    b16 = step_ms("bf16", 16, 16) / step_ms("int4", 16, 16)
    b64 = step_ms("bf16", 64, 16) / step_ms("int4", 64, 16)
    assert b64 >= 1.4
    assert b16 == pytest.approx(1.66, abs=0.03)
    proj = AnalyticCostModel(H100, L8B, "bf16").projections_time(16) / AnalyticCostModel(H100, L8B, "int4").projections_time(16)
    assert 1.8 < proj < 2.0


def test_lowbit_profiles_name_the_kernel_class_and_their_sources():
    out = predict("analytic-h100", "llama-3.1-8b", "int4", "decode", 16, 16, 1024)
    assert "W4A16" in out["kernel"] and "Marlin" in out["kernel"]
    assert "humming/pull/2" in out["source"] and "vllm/pull/23198" in out["source"]
    assert "W8A8" in predict("analytic-h100", "llama-3.1-8b", "fp8", "decode", 16, 16, 1024)["kernel"]
    json.dumps(out)  # printable


def test_lowbit_past_the_measured_rows_is_a_stated_model_flagged_never_a_clamp():
    int4, bf16 = AnalyticCostModel(H100, L8B, "int4"), AnalyticCostModel(H100, L8B, "bf16")
    lo, hi = eff.measured_rows("int4")
    assert (lo, hi) == (1, 32)
    assert int4.notes(16) == [] and int4.notes(hi) == []
    assert any("measured 1..32 rows" in n for n in int4.notes(64))
    ratios = [int4.projections_time(m) / bf16.projections_time(m) for m in (1, 64, 256, 1024, 8192)]
    assert ratios[0] < ratios[1] < ratios[2] < ratios[3]  # the gain shrinks with rows: not clamped at 32 rows
    assert ratios[-1] == pytest.approx(1.0, abs=0.02)  # compute-bound: parity with bf16 (Machete)
    out = predict("analytic-h100", "llama-3.1-8b", "int4", "decode", 64, 1024, 1024)
    assert out["extrapolated"] is True and any("int4 projection GEMMs" in n for n in out["notes"])
    inside = predict("analytic-h100", "llama-3.1-8b", "bf16", "decode", 64, 1024, 1024)
    assert inside["extrapolated"] is False and inside["notes"] == []


def test_lm_head_and_embeddings_stay_16_bit_in_every_format():
    ref = AnalyticCostModel(H100, L8B, "bf16")
    for dtype in ("int4", "int8", "fp8"):
        low = AnalyticCostModel(H100, L8B, dtype)
        assert low.head_time(64) == ref.head_time(64)
        assert low._embed_s_per_row == ref._embed_s_per_row and low._norm_read_s == ref._norm_read_s


def test_other_gpus_take_the_h100_fractions_of_their_datasheet_and_say_so():
    f = eff.fits().gemm["bf16"]
    for name in ("h200", "a100"):
        gpu = GPUS[name]
        cost = AnalyticCostModel(gpu, L8B, "bf16")
        assert cost._bf16.bandwidth_Bps / gpu.bandwidth_Bps == pytest.approx(f.bandwidth_Bps / 3.35e12)
        assert cost._bf16.flops / gpu.bf16_flops == pytest.approx(f.flops / 989e12)
        assert "assumed" in cost.info.note and any("assumed" in n for n in cost.notes(1))
    assert AnalyticCostModel(H100, L8B, "bf16").info.note == ""
    # Faster memory, faster weight-bound steps.
    h200 = decode_step_time(AnalyticCostModel(GPUS["h200"], L8B, "bf16"), 1, 1024)
    assert h200 < decode_step_time(AnalyticCostModel(H100, L8B, "bf16"), 1, 1024)


def test_decode_step_stays_affine_in_kv_tokens():
    for dtype in ("bf16", "int4", "int8", "fp8"):
        cost = AnalyticCostModel(H100, L8B, dtype)
        alpha, beta = cost.decode_coeffs(32)
        assert decode_step_time(cost, 32, 3000) - decode_step_time(cost, 32, 1000) == pytest.approx(2000 * beta)
        assert alpha > 0 and beta > 0
