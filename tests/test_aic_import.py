"""Profiles imported from NVIDIA aiconfigurator-core (``calibration/aic_import.py``): measured rows land in the
committed tables unchanged, a re-import reproduces them byte for byte, and provenance and licence travel with
the data. The importer itself is also exercised on a tiny fake package, so it is tested where the real
package is not installed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from calibration.aic_import import ATTRIBUTION, import_profile
from calibration.aic_license import APACHE_2_0_SHA256
from calibration.aic_select import DenseShape
from calibration.aic_source import AicImportError, version_key
from calibration.aic_tables import AicTables, interp1, minimax_fit, relative_fit
from calibration.aic_write import format_us

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "sunsim" / "costs" / "profiles"
FOLDERS = {"h100_sxm": "vllm-h100", "h200_sxm": "vllm-h200", "a100_sxm": "vllm-a100", "l40s": "vllm-l40s",
           "b200_sxm": "vllm-b200"}
DIGITS = 4

# Rows copied from aiconfigurator-core 0.12.0's tables (latency in milliseconds, as stored), each named by its
# file inside the package: aiconfigurator_core/systems/data/<system>/gemm/vllm/<version>/gemm_perf.parquet.
GEMM_ROWS = [  # (system, version, gemm_dtype, m, n, k, latency_ms, profile column)
    ("h200_sxm", "0.24.0", "bfloat16", 64, 6144, 4096, 0.017793777916166518, "bf16_us"),
    ("h200_sxm", "0.24.0", "fp8", 128, 4096, 4096, 0.013658666776286231, "fp8_us"),
    ("h200_sxm", "0.24.0", "fp8_block", 1, 4096, 4096, 0.06107200185457865, "fp8_block_us"),
    ("h100_sxm", "0.24.0", "bfloat16", 4096, 4096, 12288, 0.489224910736084, "bf16_us"),
    ("h100_sxm", "0.24.0", "fp8", 1, 51200, 4096, 0.07291022274229261, "fp8_us"),
    ("b200_sxm", "0.24.0", "nvfp4", 32, 4096, 4096, 0.00914666677514712, "nvfp4_us"),
    ("a100_sxm", "0.14.0", "bfloat16", 8, 6144, 4096, 0.038358221451441445, "bf16_us"),
    ("l40s", "0.24.0", "fp8", 16, 4096, 4096, 0.01740800009833442, "fp8_us"),
]
# .../attention/vllm/<version>/{generation,context}_attention_perf.parquet, window_size 0
ATTENTION_ROWS = [  # (system, version, table, batch, isl, step, heads, kv_heads, head_dim, kv dtype, latency_ms)
    ("h200_sxm", "0.24.0", "generation", 64, 1, 1023, 32, 8, 128, "bfloat16", 0.08070399860541026),
    ("h200_sxm", "0.24.0", "generation", 64, 1, 1023, 32, 8, 128, "fp8", 0.07054933408896129),
    ("h100_sxm", "0.24.0", "context", 1, 4096, 0, 32, 8, 128, "bfloat16", 0.2643146713574727),
    ("b200_sxm", "0.24.0", "generation", 8, 1, 4095, 64, 8, 128, "bfloat16", 0.02978666623433431),
    ("a100_sxm", "0.14.0", "context", 2, 2048, 0, 40, 8, 128, "bfloat16", 0.5989600022633871),
]
# h200_sxm/comm/vllm/0.24.0/custom_allreduce_perf.parquet (vLLM_custom_graph, bf16, 8 GPUs, 4194304 elements),
# l40s/comm/nccl/2.27.3/nccl_perf.parquet (all_reduce, half, 4 GPUs, 1048576 elements),
# h200_sxm/quantize/vllm/0.24.0/scale_matrix_perf.parquet (m 128, k 4096)
ALLREDUCE_ROWS = [("vllm-h200", "vllm_custom_graph", "bf16", 8, 4194304, 0.048392958641052246),
                  ("vllm-l40s", "nccl", "fp16", 4, 1048576, 0.6221)]
QUANTIZE_ROW = ("vllm-h200", 128, 4096, 0.002239999920129776)


def _close(got: float, want_us: float) -> bool:
    """``got`` is ``want_us`` rounded to the profile's significant digits."""
    half_unit = 0.5 * 10 ** (math.floor(math.log10(want_us)) - (DIGITS - 1))
    return abs(got - want_us) <= half_unit * (1 + 1e-9)


def _csv(folder: str, name: str) -> pd.DataFrame:
    return pd.read_csv(PROFILES / folder / name)


# --- (a) real rows are in the committed profiles, unchanged --------------------------------------------------


@pytest.mark.parametrize("row", GEMM_ROWS, ids=lambda r: f"{r[0]}-{r[2]}-{r[3]}x{r[4]}x{r[5]}")
def test_real_gemm_rows_are_in_the_profile(row: tuple) -> None:
    system, _, _, m, n, k, ms, column = row
    df = _csv(FOLDERS[system], "gemm.csv")
    hit = df[(df.m == m) & (df.n == n) & (df.k == k)]
    assert len(hit) == 1
    assert _close(float(hit[column].iloc[0]), ms * 1000.0)


@pytest.mark.parametrize("row", ATTENTION_ROWS, ids=lambda r: f"{r[0]}-{r[2]}-{r[3]}-{r[4] + r[5]}-{r[9]}")
def test_real_attention_rows_are_in_the_profile(row: tuple) -> None:
    system, _, table, batch, isl, step, heads, kv, hd, dtype, ms = row
    decode = table == "generation"
    df = _csv(FOLDERS[system], "attention_decode.csv" if decode else "attention_prefill.csv")
    length = ("kv_len", step) if decode else ("seq_len", isl)
    hit = df[(df.batch == batch) & (df[length[0]] == length[1]) & (df.heads == heads) & (df.kv_heads == kv)
             & (df.head_dim == hd)]
    assert len(hit) == 1
    assert _close(float(hit[f"kv_{'bf16' if dtype == 'bfloat16' else dtype}_us"].iloc[0]), ms * 1000.0)


def test_real_allreduce_and_quantize_rows_are_in_the_profile() -> None:
    for folder, impl, dtype, gpus, elements, ms in ALLREDUCE_ROWS:
        df = _csv(folder, "allreduce.csv")
        hit = df[(df.impl == impl) & (df.dtype == dtype) & (df.gpus == gpus) & (df.elements == elements)]
        assert len(hit) == 1 and int(hit.bytes.iloc[0]) == 2 * elements
        assert _close(float(hit.time_us.iloc[0]), ms * 1000.0)
    folder, m, k, ms = QUANTIZE_ROW
    df = _csv(folder, "quantize.csv")
    assert _close(float(df[(df.m == m) & (df.k == k)].scale_matrix_us.iloc[0]), ms * 1000.0)


def test_tables_have_the_documented_columns_sorted_and_unique() -> None:
    keys = {"gemm.csv": ["m", "n", "k"], "attention_decode.csv": ["batch", "kv_len", "heads", "kv_heads", "head_dim"],
            "attention_prefill.csv": ["batch", "seq_len", "heads", "kv_heads", "head_dim"],
            "allreduce.csv": ["impl", "dtype", "gpus", "elements"], "quantize.csv": ["m", "k"]}
    for folder in FOLDERS.values():
        for name, key in keys.items():
            path = PROFILES / folder / name
            if not path.exists():
                assert name == "quantize.csv" and folder == "vllm-a100"
                continue
            df = pd.read_csv(path)
            assert list(df.columns[:len(key)]) == key
            assert all(c.endswith("_us") for c in df.columns[len(key):] if c != "bytes")
            assert not df.duplicated(key).any()
            assert df[key].equals(df[key].sort_values(key).reset_index(drop=True))
    assert list(_csv("vllm-b200", "gemm.csv").columns) == ["m", "n", "k", "bf16_us", "fp8_us", "fp8_block_us",
                                                           "nvfp4_us"]
    assert list(_csv("vllm-a100", "gemm.csv").columns) == ["m", "n", "k", "bf16_us"]


# --- (b) a re-import reproduces the committed files byte for byte ---------------------------------------------


def test_reimport_reproduces_the_committed_profiles(tmp_path: Path) -> None:
    pytest.importorskip("aiconfigurator_core")
    import importlib.metadata

    committed = json.loads((PROFILES / "vllm-h200" / "metadata.json").read_text(encoding="utf-8"))
    version = importlib.metadata.version("aiconfigurator-core")
    if version != committed["source"]["package_version"]:
        pytest.skip(f"installed aiconfigurator-core {version}; the profiles are from "
                    f"{committed['source']['package_version']}")
    for system, folder in FOLDERS.items():
        out = tmp_path / folder
        import_profile(system, "vllm", out)
        want = sorted(p.name for p in (PROFILES / folder).iterdir())
        assert sorted(p.name for p in out.iterdir()) == want
        for name in want:
            assert (out / name).read_bytes() == (PROFILES / folder / name).read_bytes(), f"{folder}/{name}"


# --- (c) provenance and licence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("system", FOLDERS)
def test_metadata_carries_provenance_and_licence(system: str) -> None:
    folder = PROFILES / FOLDERS[system]
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    assert meta["attribution"] == ATTRIBUTION == "Data from NVIDIA aiconfigurator-core (Apache-2.0)"
    assert meta["license"]["spdx"] == "Apache-2.0" and "Apache License, Version 2.0" in meta["license"]["notice"]
    assert hashlib.sha256((folder / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256
    src = meta["source"]
    assert src["package"] == "aiconfigurator-core" and src["package_version"] == "0.12.0"
    assert src["system"] == system and src["backend_requested"] == "vllm"
    files = {f["path"]: f["sha256"] for f in src["files"]}
    assert all(p.startswith("aiconfigurator_core/systems/") for p in files)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in files.values())
    assert f"aiconfigurator_core/systems/{system}.yaml" in files
    for name, table in meta["tables"].items():
        assert (folder / name).exists()
        for entry in table.get("sources", [table]):
            assert entry["source"] in files
            if "backend" in entry and entry["backend"] != "nccl":
                assert entry["backend"] == "vllm"  # no fallback was needed for these five GPUs
    gemm = meta["tables"]["gemm.csv"]
    assert gemm["collection_meta"]["framework"] == "vllm" and gemm["version"] == gemm["collection_meta"]["version"]
    sheet = meta["device"]["datasheet"]
    assert sheet["memory_bytes"] > 1e10 and sheet["memory_bandwidth_Bps"] > 1e11 and sheet["bf16_flops"] > 1e14
    present = [c.removesuffix("_us") for c in _csv(FOLDERS[system], "gemm.csv").columns[3:]]
    assert list(meta["formats"]["present"]) == present
    assert set(meta["formats"]["absent"]).isdisjoint(present) and "int4_wo" in meta["formats"]["absent"]


# --- lookups over the committed tables ----------------------------------------------------------------------------


def test_lookups_return_grid_points_and_interpolate_linearly() -> None:
    t = AicTables(PROFILES / "vllm-h200")
    df = _csv("vllm-h200", "gemm.csv")
    row = df[(df.m == 64) & (df.n == 6144) & (df.k == 4096)].iloc[0]
    assert t.gemm("bf16", 64, 6144, 4096).us == row.bf16_us
    lo, hi = t.gemm("bf16", 8, 16384, 4096).us, t.gemm("bf16", 8, 51200, 4096).us
    mid = t.gemm("bf16", 8, (16384 + 51200) // 2, 4096)
    assert mid.us == pytest.approx((lo + hi) / 2) and not mid.extrapolated
    # the LM head lies beyond the grid's n = 65536: the widest measured GEMM, scaled in proportion to n
    assert t.gemm("bf16", 8, 128256, 4096).us == pytest.approx(t.gemm("bf16", 8, 65536, 4096).us * 128256 / 65536)
    att = t.attention("decode", 64, 1023, 32, 8, 128)
    assert att.us == pytest.approx(80.70) and not att.extrapolated
    assert interp1([1, 3], [10.0, 30.0], 5) == type(att)(50.0, True)


def test_fits_recover_an_exact_surface() -> None:
    groups = [1, 1, 1, 8, 8, 8]
    x = [g * n for g, n in zip(groups, [128, 1024, 4096] * 2)]
    t = [10.0 + 2.0 * g + 0.001 * xi for g, xi in zip(groups, x)]
    coef, r = relative_fit(groups, x, t)
    assert coef[-1] == pytest.approx(0.001) and max(abs(r)) < 1e-9
    beta, worst = minimax_fit(groups, x, t, beta_hi=0.01)
    assert beta == pytest.approx(0.001, rel=1e-6) and worst < 1e-6


# --- the importer on a tiny fake package (no aiconfigurator-core needed) ------------------------------------------


def _fake_package(root: Path) -> Path:
    """A two-system stand-in for the wheel: vllm GEMMs, attention only from sglang, an NCCL table with a repeat."""
    pkg = root / "aiconfigurator_core"
    systems = pkg / "systems"
    (root / "aiconfigurator_core-9.9.9.dist-info").mkdir(parents=True)
    (root / "aiconfigurator_core-9.9.9.dist-info" / "METADATA").write_text("Name: aiconfigurator-core\nVersion: 9.9.9\n")
    systems.mkdir(parents=True)
    (systems / "query_versions.yaml").write_text(yaml.safe_dump(
        {"defaults": {"vllm": {"current": "0.2.0"}, "sglang": {"current": "0.5.0"}}}))
    (systems / "tiny.yaml").write_text(yaml.safe_dump(
        {"gpu": {"mem_capacity": 8e10, "mem_bw": 3e12, "bfloat16_tc_flops": 1e15, "sm_version": 90},
         "misc": {"nccl_version": "2.0"}}))
    data = systems / "data" / "tiny"

    def table(family: str, backend: str, version: str, name: str, df: pd.DataFrame) -> None:
        d = data / family / backend / version
        d.mkdir(parents=True, exist_ok=True)
        df.to_parquet(d / name, index=False)
        (d / "collection_meta.yaml").write_text(yaml.safe_dump(
            {"runtime": {"framework": backend, "version": version}, "tables": {name[:-8]: {"status": "complete"}}}))

    grid = [256, 1024, 4096, 16384]
    rows = [{"framework": "VLLM", "version": v, "device": "Tiny GPU", "op_name": "gemm", "kernel_source": "lin",
             "gemm_dtype": d, "m": m, "n": n, "k": k, "latency": (1 + m * n * k / 1e9) / 1000 * (0.6 if d == "fp8" else 1)}
            for v in ("0.1.0", "0.2.0") for d in ("bfloat16", "fp8") for m in (1, 16) for n in grid for k in grid]
    gemm = pd.DataFrame(rows)
    table("gemm", "vllm", "0.1.0", "gemm_perf.parquet", gemm[gemm.version == "0.1.0"].assign(latency=9.0))
    table("gemm", "vllm", "0.2.0", "gemm_perf.parquet", gemm[gemm.version == "0.2.0"])
    att = pd.DataFrame([{"kernel_source": "fa", "batch_size": b, "isl": 1, "num_heads": h, "num_key_value_heads": 2,
                         "head_dim": 128, "kv_cache_dtype": "bfloat16", "step": s, "window_size": w,
                         "latency": 0.01 + b * s * 1e-7} for b in (1, 4) for s in (127, 1023) for h in (4, 8, 16)
                        for w in (0, 128)])
    table("attention", "sglang", "0.5.0", "generation_attention_perf.parquet", att)
    nccl = pd.DataFrame([{"op_name": op, "nccl_dtype": "half", "num_gpus": 2, "message_size": 1024, "latency": lat}
                         for op, lat in (("all_reduce", 0.010), ("all_reduce", 0.012), ("all_gather", 0.5))])
    table("comm", "nccl", "2.0", "nccl_perf.parquet", nccl)
    return root


def test_importer_on_a_fake_package(tmp_path: Path) -> None:
    root = _fake_package(tmp_path / "wheel")
    shape = {"toy": DenseShape(hidden=1024, heads=8, kv_heads=2, head_dim=128, intermediate=2048, vocab=4096)}
    out = tmp_path / "vllm-tiny"
    out.mkdir()
    (out / "quantize.csv").write_text("stale\n")
    meta = import_profile("tiny", "vllm", out, package_dir=root, tp=[1], models=shape)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    import_profile("tiny", "vllm", out, package_dir=root, tp=[1], models=shape)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # deterministic
    assert "quantize.csv" not in first and "quantize.csv" in meta["absent"]  # a stale file is not left behind

    assert meta["source"]["package_version"] == "9.9.9"
    gemm = pd.read_csv(out / "gemm.csv")
    assert list(gemm.columns) == ["m", "n", "k", "bf16_us", "fp8_us"]
    # qkv (1536, 1024) -> n in {1024, 4096}; o (1024, 1024); gate_up (4096, 1024); down (1024, 2048) -> k in
    # {1024, 4096}; lm head (4096, 1024): the points bracketing those shapes, never n or k = 256 or 16384
    assert set(gemm.n) == {1024, 4096} and set(gemm.k) == {1024, 4096}
    row = gemm[(gemm.m == 16) & (gemm.n == 4096) & (gemm.k == 1024)].iloc[0]
    assert row.bf16_us == float(format_us(1 + 16 * 4096 * 1024 / 1e9, 4))  # ms -> µs, current version 0.2.0
    assert meta["tables"]["gemm.csv"]["version"] == "0.2.0"

    decode = pd.read_csv(out / "attention_decode.csv")
    assert set(decode.heads) == {8} and len(decode) == 4  # window 128 rows and unneeded heads dropped
    entry = meta["tables"]["attention_decode.csv"]
    assert entry["backend"] == "sglang" and "fallback" in entry["why"]
    ar = pd.read_csv(out / "allreduce.csv")
    assert ar.to_dict("records") == [{"impl": "nccl", "dtype": "fp16", "gpus": 2, "elements": 1024, "bytes": 2048,
                                      "time_us": 11.0}]  # the median of a repeated measurement
    assert meta["tables"]["allreduce.csv"]["duplicates"]["repeats_merged_by_median"] == 1
    assert "attention_prefill.csv" in meta["absent"] and meta["formats"]["absent"]["fp8_block"]


def test_importer_refuses_bad_requests(tmp_path: Path) -> None:
    root = _fake_package(tmp_path / "wheel")
    with pytest.raises(AicImportError, match="no data for system 'nope'"):
        import_profile("nope", "vllm", tmp_path / "o", package_dir=root)
    with pytest.raises(AicImportError, match="no systems/data"):
        import_profile("tiny", "vllm", tmp_path / "o", package_dir=tmp_path)
    with pytest.raises(AicImportError, match="tensor-parallel"):
        import_profile("tiny", "vllm", tmp_path / "o", package_dir=root, tp=[0])
    if importlib.util.find_spec("aiconfigurator_core") is None:
        with pytest.raises(AicImportError, match="not installed"):
            import_profile("tiny", "vllm", tmp_path / "o")


def test_version_order_and_number_format() -> None:
    assert sorted(["0.24.0", "0.5.6.post2", "1.3.0rc20", "1.3.0", "0.1.dev19262", "0.5.6"], key=version_key) == [
        "0.1.dev19262", "0.5.6", "0.5.6.post2", "0.24.0", "1.3.0rc20", "1.3.0"]
    assert [format_us(v, 4) for v in (63831.177, 0.5, 1.2345e-5, 9.99996, float("nan"))] == [
        "63830", "0.5", "0.00001234", "10", ""]
