"""The cost model of the shipped table profiles (``sunsim/costs/table_model.py``) against the tables themselves.

The reference sums come from ``calibration/aic_analysis.py`` (the analysis of the imported tables, written
before this model: GEMMs and attention per operation, no closed form), and a few rows of the committed CSVs are
read directly as fixtures.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from calibration.aic_analysis import decode_step, prefill_step
from sunsim.costs import catalog
from sunsim.costs.architecture import preset
from sunsim.costs.hardware import gpu
from sunsim.costs.model import PREFILL_BATCH_OVERHEAD_S
from sunsim.costs.table_model import TableCostModel
from sunsim.errors import InputError
from sunsim.scenario import Scenario

LLAMA = preset("llama-3.1-8b")
BATCHES, CONTEXTS, PREFILLS = (1, 8, 32, 64, 128, 256, 512), (128, 1024, 4096), (512, 1024, 2048, 4096, 8192)


def model(name: str, dtype: str = "bf16", kv_dtype: str = "bf16") -> TableCostModel:
    tables = catalog.load(name)
    return catalog.make_cost_model(gpu(catalog.tables_gpu(tables)), LLAMA, dtype, tables, kv_dtype)


def rows(profile: str, table: str, **match: int) -> list[dict[str, str]]:
    with open(catalog.PROFILES_DIR / profile / table, encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if all(int(r[k]) == v for k, v in match.items())]


def fits_memory(name: str, batch: int, context: int) -> bool:
    g = gpu(catalog.shipped()[name])
    return LLAMA.weight_bytes("bf16") + batch * context * LLAMA.kv_bytes_per_token <= g.memory_bytes


@pytest.mark.parametrize("name", ["vllm-h200", "vllm-h100", "vllm-a100", "vllm-b200"])
def test_decode_step_is_within_5_percent_of_the_tables_own_operations(name: str) -> None:
    m, tables = model(name), catalog.load(name)
    checked = 0
    for b in BATCHES:
        for c in CONTEXTS:
            if not fits_memory(name, b, c):
                continue
            parts = m.parts(b, b * c)
            ref = decode_step(tables, b, c)
            mine = parts["projections"] + parts["lm_head"] + parts["attention"]
            assert mine == pytest.approx((ref.gemm_us + ref.attention_us) * 1e-6, rel=0.05), (b, c)
            alpha, beta = m.decode_coeffs(b)  # the step adds only the stated elementwise and overhead terms
            assert alpha + beta * b * c == pytest.approx(sum(parts.values()), rel=1e-9)
            checked += 1
    assert checked >= 17


@pytest.mark.parametrize("name", ["vllm-h200", "vllm-h100"])
def test_prefill_is_within_5_percent_of_the_tables_own_operations(name: str) -> None:
    m, tables = model(name), catalog.load(name)
    for tokens in PREFILLS:
        ref = prefill_step(tables, tokens)
        mine = m.prefill_time(tokens, tokens * tokens) - PREFILL_BATCH_OVERHEAD_S - m.elementwise_time(tokens)
        assert mine == pytest.approx((ref.gemm_us + ref.attention_us) * 1e-6, rel=0.05), tokens


def test_table_rows_as_fixtures() -> None:
    """At grid points the model's components are the CSV rows themselves."""
    m, t = model("vllm-h200"), catalog.load("vllm-h200")
    (qkv,) = rows("vllm-h200", "gemm.csv", m=64, n=6144, k=4096)
    assert t.gemm("bf16", 64, 6144, 4096).us == float(qkv["bf16_us"])
    (att,) = rows("vllm-h200", "attention_decode.csv", batch=64, kv_len=1023, heads=32, kv_heads=8, head_dim=128)
    a, c = m.decode_attention(64)
    layer = (a + c * 64 * 1023) / LLAMA.layers
    assert layer == pytest.approx(float(att["kv_bf16_us"]) * 1e-6, rel=0.15)  # the per-batch affine fit
    (pre,) = rows("vllm-h200", "attention_prefill.csv", batch=1, seq_len=2048, heads=32, kv_heads=8, head_dim=128)
    assert m.prefill_attention(2048, 2048 ** 2).us == pytest.approx(LLAMA.layers * float(pre["kv_bf16_us"]))


def test_fp8_decode_at_batch_1_is_at_most_three_quarters_of_bf16_on_h100() -> None:
    bf16, fp8 = model("vllm-h100"), model("vllm-h100", "fp8")
    for context in (128, 1024):
        (a8, b8), (a16, b16) = fp8.decode_coeffs(1), bf16.decode_coeffs(1)
        assert (a8 + b8 * context) / (a16 + b16 * context) <= 0.75, context
    assert fp8.projections_time(1) < 0.7 * bf16.projections_time(1)  # the tables' own fp8 rows


def test_fp8_kv_cache_prices_attention_from_the_fp8_rows() -> None:
    t = catalog.load("vllm-h100")
    bf16, fp8 = model("vllm-h100"), model("vllm-h100", kv_dtype="fp8")
    for batch in (8, 64, 256):
        for length in (1023, 4095):
            want = LLAMA.layers * t.attention("decode", batch, length, 32, 8, 128, kv_dtype="fp8").us * 1e-6
            a, c = fp8.decode_attention(batch)
            assert a + c * batch * length == pytest.approx(want, rel=0.12), (batch, length)
    assert fp8.decode_attention(256)[1] < 0.8 * bf16.decode_attention(256)[1]  # fp8 reads fewer bytes per token
    assert "kv_fp8_us" in rows("vllm-h100", "attention_decode.csv", batch=1, kv_len=1)[0]


def test_fp8_kv_cache_doubles_the_tokens_that_fit() -> None:
    from sunsim.sim.variant import kv_capacity_tokens

    base = {"name": "kv", "model": {"preset": "llama-3.1-8b", "tasks": ["a", "b"]},
            "workload": {"rate": 1, "num_requests": 10}, "variants": [{"name": "sun", "mode": "shared", "workers": 1}]}
    bf16 = Scenario.model_validate(base)
    fp8 = Scenario.model_validate({**base, "decode": {"kv_dtype": "fp8"}})
    tokens_bf16, tokens_fp8 = (kv_capacity_tokens(sc, sc.shape, "bf16") for sc in (bf16, fp8))
    assert tokens_fp8 == pytest.approx(2 * tokens_bf16, abs=bf16.decode.block_tokens)
    assert tokens_fp8 > 1.99 * tokens_bf16


def test_a_format_the_tables_lack_falls_back_to_the_analytic_ratio_and_says_so() -> None:
    from sunsim.costs.model import AnalyticCostModel

    bf16, int4 = model("vllm-h100"), model("vllm-h100", "int4")
    g = gpu("h100")
    ratio = AnalyticCostModel(g, LLAMA, "int4").projections_time(16) / AnalyticCostModel(g, LLAMA, "bf16").projections_time(16)
    assert int4.projections_time(16) == pytest.approx(bf16.projections_time(16) * ratio)
    assert "int4 GEMMs not in vllm-h100's tables" in int4.info.note
    assert any("int4" in n for n in int4.notes(16, kv_tokens_per_seq=16))
    assert not bf16.notes(16, kv_tokens_per_seq=1024)


def test_unmeasured_formats_and_caches_are_refused_naming_them() -> None:
    with pytest.raises(InputError, match="fp8"):
        model("vllm-a100", "fp8")  # no fp8 tables and no fp8 tensor cores on an A100
    with pytest.raises(InputError, match="nvfp4"):
        model("vllm-h100", "nvfp4")
    with pytest.raises(InputError, match="fp8 KV cache"):
        model("vllm-a100", kv_dtype="fp8")
    assert model("vllm-b200", "nvfp4").projections_time(64) < model("vllm-b200").projections_time(64)


def test_extrapolation_past_the_tables_is_flagged() -> None:
    m = model("vllm-h100")
    assert any("rows" in n for n in m.notes(65536, kv_tokens_per_seq=16))
    assert any("decode attention" in n for n in m.notes(4096, kv_tokens_per_seq=1024))
    assert any("prefill attention" in n for n in m.notes(65536, prompt_tokens=65536, logit_rows=1))


def test_default_profile_follows_the_gpu_and_a_named_profile_sets_it() -> None:
    base = {"name": "p", "model": {"preset": "llama-3.1-8b", "tasks": ["a"]},
            "workload": {"rate": 1, "num_requests": 10}, "variants": [{"name": "sun", "mode": "shared", "workers": 1}]}
    assert Scenario.model_validate(base).hardware.profile == "vllm-h100"
    assert Scenario.model_validate({**base, "hardware": {"gpu": "h200"}}).hardware.profile == "vllm-h200"
    named = Scenario.model_validate({**base, "hardware": {"profile": "vllm-b200"}})
    assert named.hardware.gpu == "b200"
    assert Scenario.model_validate({**base, "hardware": {"profile": "analytic"}}).hardware.profile == "analytic"
    with pytest.raises(ValueError, match="measured on h200 GPUs but gpu is 'h100'"):
        Scenario.model_validate({**base, "hardware": {"gpu": "h100", "profile": "vllm-h200"}})


def _cost(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sunsim", "cost", "--model", "llama-3.1-8b", *args],
                          capture_output=True, text=True, timeout=120)


def test_cost_command_reads_a_named_profile() -> None:
    done = _cost("--profile", "vllm-h200", "--phase", "decode", "--batch", "64", "--context", "1024")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["profile"] == "vllm-h200" and out["kind"] == "measured" and out["device"] == "h200"
    assert out["time_ms"] == pytest.approx(sum(out["parts_ms"].values()))
    assert "aiconfigurator-core" in out["source"]
    fp8kv = json.loads(_cost("--profile", "vllm-h200", "--phase", "decode", "--batch", "64", "--context", "1024",
                             "--kv-dtype", "fp8").stdout)
    assert fp8kv["parts_ms"]["attention"] < out["parts_ms"]["attention"]
    bad = _cost("--profile", "vllm-h999", "--phase", "decode")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "vllm-h999" in bad.stderr


def test_validate_against_a_table_profile_compares_both_cost_models() -> None:
    """Our H100 calibration (2026-11-27, committed under calibration/profiles/) against vLLM's H100 tables."""
    from calibration.commands import load_profile
    from calibration.compare import compare
    from calibration.profile_models import cost_model_for
    from sunsim.costs.model import decode_step_time

    path = "calibration/profiles/h100-llama-3.1-8b-bf16"
    report = compare(path, "vllm-h100")
    ours, _ = cost_model_for(load_profile(path), LLAMA, "bf16")
    want = decode_step_time(ours, 8, 8 * 1024) / decode_step_time(model("vllm-h100"), 8, 8 * 1024) - 1
    assert report["dtypes"]["bf16"]["decode"]["B=8,C=1024"] == pytest.approx(want)
    assert "B=256,C=4096" not in report["dtypes"]["bf16"]["decode"]  # its KV does not fit an H100
    done = subprocess.run([sys.executable, "-m", "sunsim", "validate", "--profile", path, "--against", "vllm-h999"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "vllm-h999" in done.stderr and "Traceback" not in done.stderr
