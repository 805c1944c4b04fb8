"""aiconfigurator's own estimates of the measurement rows (``calibration/peer_estimates.py``): the error summary
against hand-computed numbers, the rows kept, a clear error without the package, and -- where the package is
installed -- real estimates of three rows (two agg, one disagg) that are positive and finite, plus variants of
one row that must be ordered as the batch and the weight format imply."""

from __future__ import annotations

import math
import sys

import pandas as pd
import pytest

from calibration import peer_estimates as pe

ROWS = ("qwen3_32b_qwen3_32b_h100_sxm_vllm_agg_4000x1000_c_tp2_0_epnone_3",
        "qwen3_32b_qwen3_32b_h100_sxm_vllm_agg_4000x1000_c_tp1_0_epnone_4",
        "nvidia_qwen3_32b_nvfp4_nvidia_qwen3_32b_nvfp4_b200_sxm_trtllm_disagg_15000x500_c480_tp_epnone_1")


def _table(peer_ttft, measured_ttft, status=None, group=None) -> pd.DataFrame:
    n = len(peer_ttft)
    return pd.DataFrame({
        "model": ["m"] * n, "system": ["s"] * n, "backend": ["b"] * n, "mode": group or ["agg"] * n,
        "peer_ttft_ms": [str(v) for v in peer_ttft], "measured_ttft_ms": [str(v) for v in measured_ttft],
        "peer_tpot_ms": ["2"] * n, "measured_tpot_ms": ["1"] * n, "status": status or ["ok"] * n,
    })


def test_error_summary_matches_hand_computation():
    # errors |p/m - 1|: 0.1, 0.5, 0.2, 0.3 (the fifth row failed and is left out)
    t = _table([110, 50, 120, 130, 999], [100, 100, 100, 100, 100], status=["ok"] * 4 + ["OOM"])
    s = pe.error_summary(t).set_index("group")
    assert s.loc["all", "rows"] == 5 and s.loc["all", "estimated"] == 4
    assert s.loc["all", "ttft_median"] == pytest.approx(0.25)  # mean of 0.2 and 0.3
    assert s.loc["all", "ttft_p90"] == pytest.approx(0.3 + 0.7 * (0.5 - 0.3))  # linear between 3rd and 4th
    assert s.loc["all", "tpot_median"] == pytest.approx(1.0)  # peer 2 ms vs 1 ms measured


def test_error_summary_groups_by_mode():
    t = _table([110, 300], [100, 100], group=["agg", "disagg"])
    s = pe.error_summary(t).set_index("group")
    assert s.loc["m s b agg", "ttft_median"] == pytest.approx(0.1)
    assert s.loc["m s b disagg", "ttft_median"] == pytest.approx(2.0)
    assert "m s b agg" in pe.format_summary(pe.error_summary(t))


def test_dense_shapes_and_rows_kept(tmp_path):
    assert pe.dense_shape("nvidia/Llama-3.1-8B-Instruct-FP8") == "llama-3.1-8b"
    assert pe.dense_shape("meta-llama/Llama-3.1-70B") == "llama-3.1-70b"
    assert pe.dense_shape("nvidia/Qwen3-32B-NVFP4") == "qwen3-32b"
    assert pe.dense_shape("Qwen/Qwen3-235B-A22B-FP8") is None  # a MoE model
    cols = ["id", "model_path", "system"]
    pd.DataFrame([["a", "Qwen/Qwen3-32B", "h100_sxm"], ["b", "Qwen/Qwen3-32B", "gb200"],
                  ["c", "deepseek-ai/DeepSeek-R1", "h200_sxm"], ["d", "meta-llama/Llama-3.1-70B", "b200_sxm"]],
                 columns=cols).to_csv(tmp_path / "m.csv", index=False)
    assert list(pe.read_rows(tmp_path / "m.csv")["id"]) == ["a", "d"]


def test_missing_package_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, pe.MODULE, None)  # what an absent package looks like to ``import``
    assert pe.main(["--out", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert "aiconfigurator-core is not installed" in err and "pip install aiconfigurator-core==0.12.0" in err
    assert "Traceback" not in err and not (tmp_path / "out.csv").exists()


@pytest.fixture(scope="module")
def estimated():
    pytest.importorskip("aiconfigurator_core")
    rows = pe.read_rows(pe.package_file(), ROWS)
    assert len(rows) == len(ROWS)
    base = rows[rows["id"] == ROWS[0]]
    variants = pd.concat([base.assign(id="double-batch", batch_size=str(2 * int(base["batch_size"].iloc[0]))),
                          base.assign(id="bf16", gemm_quant_mode="")], ignore_index=True)
    return rows, pe.estimate_rows(pd.concat([rows, variants], ignore_index=True))


def test_real_estimates_are_positive_and_finite(estimated):
    rows, table = estimated
    assert list(table.columns) == list(pe.COLUMNS)
    assert list(table["id"].iloc[:len(rows)]) == list(rows["id"])  # one row per measurement, in order
    assert (table["status"] == "ok").all(), table["status"].tolist()
    for metric in ("ttft", "tpot"):
        values = pd.to_numeric(table[f"peer_{metric}_ms"])
        assert all(math.isfinite(v) and v > 0 for v in values)
    for db, system, backend in zip(table["peer_database"], rows["system"], rows["backend"]):
        assert db.startswith(f"{system}/{backend}/") and len(db.split("/")) == 3
    config = table.set_index("id")["peer_config"]
    assert config[ROWS[0]].startswith("agg tp2 pp1 dp1 b48 ctx_tokens4000 gemm fp8 ")
    assert config[ROWS[1]].startswith("agg tp1 pp1 dp1 b24 ctx_tokens4000 gemm fp8 ")
    assert config[ROWS[2]].startswith("disagg prefill tp1 b1 x40 decode tp4 b80 x6 gemm nvfp4 ")


def test_real_estimates_follow_batch_and_precision(estimated):
    """Same engine, twice the batch: each decode step reads more KV cache and more prompts queue, so neither
    TPOT nor TTFT can fall. Same engine in bf16 instead of fp8: every GEMM reads twice the weight bytes, so
    TPOT must rise -- which also shows that rows differing only in format are not served one cached answer."""
    _, table = estimated
    t = table.set_index("id")
    tpot, ttft = pd.to_numeric(t["peer_tpot_ms"]), pd.to_numeric(t["peer_ttft_ms"])
    base = ROWS[0]
    assert tpot["double-batch"] > tpot[base] and ttft["double-batch"] >= ttft[base]
    assert tpot["bf16"] > tpot[base]
    assert "gemm bfloat16" in t.loc["bf16", "peer_config"]


def test_fp8_kv_cache_lowers_decode_time(estimated):
    """--kv-cache-quant fp8 halves the KV bytes every decode step reads, so the same row's TPOT must fall."""
    rows, table = estimated
    fp8 = pe.estimate_rows(rows[rows["id"] == ROWS[0]], kv_cache_quant="fp8").iloc[0]
    default = table.set_index("id").loc[ROWS[0]]
    assert fp8["status"] == "ok" and " kv fp8 " in fp8["peer_config"] and " kv bfloat16 " in default["peer_config"]
    assert float(fp8["peer_tpot_ms"]) < float(default["peer_tpot_ms"])
