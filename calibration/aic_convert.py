"""Each aiconfigurator table converted to one profile CSV (ms -> µs, selected, deduplicated, wide by format).

Every converter returns the metadata that says where its rows came from and what its columns mean.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from calibration.aic_select import DenseShape, select_gemm_pairs, select_heads
from calibration.aic_source import AicImportError, Package, Source, collection_meta, read_table, version_key
from calibration.aic_write import dedupe, isin, kernels, wide_rows, write_csv

#: aiconfigurator's GEMM quant-mode names -> the profile's format names, in column order.
GEMM_FORMATS: dict[str, str] = {
    "bfloat16": "bf16",
    "fp8": "fp8",
    "fp8_block": "fp8_block",
    "nvfp4": "nvfp4",
    "int8_wo": "int8_wo",
    "int4_wo": "int4_wo",
    "sq": "int8_sq",
}
GEMM_FORMAT_NOTES: dict[str, str] = {
    "bf16": "bf16 weights and activations",
    "fp8": "FP8 W8A8 with a per-tensor weight scale and a static per-tensor activation scale (vLLM Fp8Config, "
           "activation_scheme=static); the collector times the whole linear forward, input quantization included",
    "fp8_block": "FP8 with 128x128 block weight scales and dynamic per-token-group (1x128) activation scales "
                 "(vLLM Fp8Config weight_block_size=[128, 128], DeepSeek-style), quantization included; the "
                 "collector times this format without a CUDA graph, so host launch overhead is in the rows (a flat "
                 "floor of tens to hundreds of µs at small m)",
    "nvfp4": "NVFP4 W4A4 (E2M1 values, one FP8 scale per 16), Blackwell only",
    "int8_wo": "int8 weight-only (W8A16)",
    "int4_wo": "int4 weight-only (W4A16)",
    "int8_sq": "int8 W8A8 (SmoothQuant)",
    "fp8_rowwise": "FP8 with per-channel weight and dynamic per-token activation scales",
}
KV_DTYPES: dict[str, str] = {"bfloat16": "bf16", "float16": "fp16", "fp8": "fp8", "int8": "int8"}
ELEMENT_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4, "int8": 1, "fp8": 1}
COMM_DTYPES: dict[str, str] = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32",
                               "int8": "int8", "fp8": "fp8"}
SILICON_COLUMNS = (
    "id", "model_path", "backend", "backend_version", "precision", "gemm_quant_mode", "mode", "isl", "osl",
    "batch_size", "tp_size", "pp_size", "prefill_batch_size", "prefill_num_workers", "prefill_tp_size",
    "decode_batch_size", "decode_num_workers", "decode_tp_size", "silicon_ttft_ms", "silicon_tpot_ms",
)
_DENSE_SILICON = re.compile(r"(?i)(?:llama-[23](?:\.\d)?-\d+b|qwen3-\d+b|qwen2\.5-\d+b|qwen2-\d+b|mistral)")
_MOE_SILICON = re.compile(r"(?i)-a\d+(?:\.\d+)?b|moe|mixtral")


@dataclass
class TableResult:
    """What writing one table produced, for metadata.json."""

    meta: dict[str, Any] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)


def source_meta(pkg: Package, src: Source, df: pd.DataFrame | None = None) -> dict[str, Any]:
    """Where a table came from, why that one, and what its rows say measured them (framework, version, GPU)."""
    meta = {"source": pkg.rel(src.path), "backend": src.backend, "version": src.version, "why": src.reason,
            "collection_meta": collection_meta(src)}
    if df is not None:
        meta["recorded"] = {c: sorted({str(v) for v in df[c].unique()}) for c in ("framework", "version", "device")
                            if c in df.columns}
    return meta


def gemm_table(pkg: Package, src: Source, out: Path, models: dict[str, DenseShape], tps: Sequence[int],
               full_grid: bool, digits: int) -> TableResult:
    df = read_table(src, ["kernel_source", "gemm_dtype", "m", "n", "k", "latency"])
    n_grid, k_grid = sorted(int(x) for x in df.n.unique()), sorted(int(x) for x in df.k.unique())
    if not full_grid:
        pairs = select_gemm_pairs(models, tps, n_grid, k_grid)
        df = df[isin(df, ["n", "k"], pairs)]
    recorded = df
    df, dups = dedupe(df, ["gemm_dtype", "m", "n", "k"])
    formats = sorted(df.gemm_dtype.unique(), key=lambda d: (list(GEMM_FORMATS).index(d) if d in GEMM_FORMATS
                                                            else len(GEMM_FORMATS), d))
    names = {d: GEMM_FORMATS.get(d, re.sub(r"[^a-z0-9_]", "_", d.lower())) for d in formats}
    wide = df.pivot(index=["m", "n", "k"], columns="gemm_dtype", values="latency").sort_index()
    header = ["m", "n", "k"] + [f"{names[d]}_us" for d in formats]
    rows = wide_rows(wide, formats)
    count = write_csv(out / "gemm.csv", header, rows, digits)
    meta = source_meta(pkg, src, recorded) | {
        "rows": count,
        "columns": {"m": "rows of the activation (tokens in the step)", "n": "output features",
                    "k": "input features"} | {f"{names[d]}_us": f"µs, {GEMM_FORMAT_NOTES.get(names[d], d)}"
                                              for d in formats},
        "grid": {"m": sorted(int(x) for x in wide.index.get_level_values(0).unique()),
                 "n_source": n_grid, "k_source": k_grid,
                 "nk_pairs": len({(n, k) for _, n, k in wide.index})},
        "kernels": kernels(df, "gemm_dtype", {d: f"{names[d]}_us" for d in formats}, "m"),
        "duplicates": dups,
    }
    return TableResult(meta, [src.path, src.meta_path])


def attention_table(pkg: Package, src: Source, out: Path, name: str, decode: bool, models: dict[str, DenseShape],
                    tps: Sequence[int], full_grid: bool, digits: int) -> TableResult:
    need = ["kernel_source", "batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim",
            "kv_cache_dtype", "step", "latency"]
    df = read_table(src, need)
    conditions = [("window_size", 0, "full attention"), ("beam_width", 1, "no beam search"),
                  ("attn_dtype", "bfloat16", "bf16 queries")]
    conditions.append(("isl", 1, "one new token per sequence") if decode else ("step", 0, "no cached prefix"))
    filters: list[str] = []
    for column, value, why in conditions:
        if column in df:
            df = df[df[column] == value]
            filters.append(f"{column} == {value} ({why})")
    if decode:
        length, length_doc = "kv_len", ("KV tokens each sequence attends to, the new one included (the table's "
                                        "`step`: the collector's sequence length with one query token)")
        df = df.assign(length=df.step)
    else:
        length, length_doc = "seq_len", "prompt tokens of each sequence (the table's `isl`), causal, no prefix"
        df = df.assign(length=df.isl)
    heads = ["num_heads", "num_key_value_heads", "head_dim"]
    combos = {tuple(int(v) for v in row) for row in df[heads].drop_duplicates().itertuples(index=False)}
    keep, uncovered = select_heads(models, tps, combos)
    if full_grid:
        keep = combos
    df = df[isin(df, heads, keep)]
    idx = ["batch_size", "length", "num_heads", "num_key_value_heads", "head_dim"]
    recorded = df
    df, dups = dedupe(df, idx + ["kv_cache_dtype"])
    dtypes = sorted(df.kv_cache_dtype.unique(), key=lambda d: (list(KV_DTYPES).index(d) if d in KV_DTYPES else 99, d))
    names = {d: f"kv_{KV_DTYPES.get(d, d)}" for d in dtypes}
    wide = df.pivot(index=idx, columns="kv_cache_dtype", values="latency").sort_index()
    header = ["batch", length, "heads", "kv_heads", "head_dim"] + [f"{names[d]}_us" for d in dtypes]
    rows = wide_rows(wide, dtypes)
    count = write_csv(out / name, header, rows, digits)
    meta = source_meta(pkg, src, recorded) | {
        "rows": count,
        "columns": {"batch": "sequences in the step", length: length_doc,
                    "heads": "query heads on this GPU", "kv_heads": "KV heads on this GPU", "head_dim": "head size"}
                   | {f"{names[d]}_us": f"µs with a {KV_DTYPES.get(d, d)} KV cache (bf16 queries and output)"
                      for d in dtypes},
        "filters": filters,
        "heads_kept": [list(c) for c in sorted(keep)],
        "uncovered": uncovered,
        "kernels": kernels(df, "kv_cache_dtype", {d: f"{names[d]}_us" for d in dtypes}, "batch_size"),
        "duplicates": dups,
    }
    return TableResult(meta, [src.path, src.meta_path])


def quantize_table(pkg: Package, srcs: list[Source], out: Path, k_keep: set[int] | None, digits: int) -> TableResult:
    """fp8 activation-quantization kernels over (m, k): the static quant and the extra cost of a dynamic scale."""
    frames, metas = [], []
    for src in srcs:
        df = read_table(src, ["kernel_source", "m", "k", "latency"])
        frames.append(df.assign(column=src.path.stem.removesuffix("_perf")))
        metas.append(source_meta(pkg, src, df))
    df = pd.concat(frames, ignore_index=True)
    if "quant_dtype" in df:
        df = df[df.quant_dtype == "fp8"]
    if k_keep is not None:
        df = df[df.k.astype(int).isin(sorted(k_keep))]
    df, dups = dedupe(df, ["column", "m", "k"])
    cols = [c for c in ("scale_matrix", "computescale") if c in set(df.column)]
    wide = df.pivot(index=["m", "k"], columns="column", values="latency").sort_index()
    label = {"scale_matrix": "scale_matrix_us", "computescale": "compute_scale_us"}
    rows = wide_rows(wide, cols)
    count = write_csv(out / "quantize.csv", ["m", "k"] + [label[c] for c in cols], rows, digits)
    meta = {
        "sources": metas,
        "rows": count,
        "columns": {"m": "rows of the activation", "k": "its features",
                    "scale_matrix_us": "µs to quantize a bf16 (m, k) activation to fp8 with a static scale "
                                       "(kernel static_scaled_fp8_quant)",
                    "compute_scale_us": "µs a dynamic per-token scale adds over the static quantization (kernel "
                                        "dynamic_per_token_scaled_fp8_quant minus static_scaled_fp8_quant)"},
        "note": "vLLM's fp8 GEMM rows already include the static input quantization; these separate the cost",
        "kernels": kernels(df, "column", label, "m"),
        "duplicates": dups,
    }
    return TableResult(meta, [p for s in srcs for p in (s.path, s.meta_path)])


def allreduce_table(pkg: Package, custom: Source | None, nccl: Source | None, out: Path, digits: int) -> TableResult:
    """All-reduce time over message size: vLLM's custom kernel (graphed and eager) and NCCL's."""
    frames: list[pd.DataFrame] = []
    metas: list[dict[str, Any]] = []
    sources: list[Path] = []
    if custom is not None:
        df = read_table(custom, ["kernel_source", "allreduce_dtype", "num_gpus", "message_size", "latency"])
        impl = df.kernel_source.astype(str).str.lower().str.replace(r"[^a-z0-9_]", "_", regex=True)
        frames.append(pd.DataFrame({"impl": impl, "dtype": df.allreduce_dtype.astype(str), "gpus": df.num_gpus,
                                    "elements": df.message_size, "latency": df.latency}))
        metas.append(source_meta(pkg, custom, df) | {"kernels": sorted({str(k) for k in df.kernel_source})})
        sources += [custom.path, custom.meta_path]
    if nccl is not None:
        df = read_table(nccl, ["op_name", "nccl_dtype", "num_gpus", "message_size", "latency"])
        df = df[df.op_name == "all_reduce"]
        frames.append(pd.DataFrame({"impl": "nccl", "dtype": df.nccl_dtype.astype(str), "gpus": df.num_gpus,
                                    "elements": df.message_size, "latency": df.latency}))
        metas.append(source_meta(pkg, nccl, df) | {"filters": ["op_name == all_reduce"]})
        sources += [nccl.path, nccl.meta_path]
    df = pd.concat(frames, ignore_index=True)
    df["dtype"] = [COMM_DTYPES.get(d, d) for d in df.dtype]
    df, dups = dedupe(df, ["impl", "dtype", "gpus", "elements"], kernel=None)
    table = [(i, d, int(g), int(e), int(e) * ELEMENT_BYTES.get(d, 2), t * 1000.0)
             for i, d, g, e, t in df[["impl", "dtype", "gpus", "elements", "latency"]].itertuples(index=False)]
    count = write_csv(out / "allreduce.csv", ["impl", "dtype", "gpus", "elements", "bytes", "time_us"], table, digits)
    meta = {
        "sources": metas, "rows": count,
        "columns": {"impl": "vllm_custom_graph / vllm_custom_eager: vLLM's custom all-reduce inside / outside a "
                            "CUDA graph; nccl: nccl-tests all_reduce_perf (out-of-place time)",
                    "dtype": "element type", "gpus": "GPUs in the all-reduce (one node)",
                    "elements": "elements reduced (the table's message_size)", "bytes": "elements x element size",
                    "time_us": "µs"},
        "duplicates": dups,
    }
    return TableResult(meta, sources)


@functools.lru_cache(maxsize=4)
def read_silicon(path: Path) -> pd.DataFrame:
    """silicon_sample.csv as text cells (copied verbatim), read once per run."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def silicon_table(pkg: Package, system: str, backend: str, out: Path, digits: int) -> TableResult | None:
    """End-to-end TTFT/TPOT that NVIDIA measured for dense models on this system and backend (for validation)."""
    path = pkg.systems / "silicon_sample.csv"
    if not path.exists():
        return None
    df = read_silicon(path)
    missing = [c for c in SILICON_COLUMNS if c not in df.columns]
    if missing or "system" not in df.columns:
        raise AicImportError(f"{path} lacks columns {missing or ['system']}")
    names = df.model_path.str.split("/").str[-1]
    dense = names.str.contains(_DENSE_SILICON) & ~names.str.contains(_MOE_SILICON)
    df = df[(df.system == system) & (df.backend == backend) & dense].sort_values("id", kind="mergesort")
    if df.empty:
        return None
    count = write_csv(out / "silicon.csv", SILICON_COLUMNS,
                      (tuple(r) for r in df[list(SILICON_COLUMNS)].itertuples(index=False)), digits)
    meta = {"source": pkg.rel(path), "rows": count,
            "filters": [f"system == {system}", f"backend == {backend}", "dense models (Llama, Qwen2.5/3 dense, "
                        "Mistral; no MoE)"],
            "note": "copied verbatim (columns subset); end-to-end serving measurements whose engine version "
                    "(backend_version) may differ from the kernel tables'",
            "models": sorted(set(df.model_path)), "backend_versions": sorted(set(df.backend_version))}
    return TableResult(meta, [path])


def gemm_formats(pkg: Package, system: str, present: list[str], backend: str) -> dict[str, Any]:
    """Which weight formats the imported GEMM table has, and where the absent ones exist (other engines)."""
    elsewhere: dict[str, list[str]] = {}
    base = pkg.systems / "data" / system / "gemm"
    for table in sorted(base.glob("*/*/gemm_perf.parquet")) if base.is_dir() else []:
        where = f"{table.parent.parent.name}/{table.parent.name}"
        try:
            dtypes = pd.read_parquet(table, columns=["gemm_dtype"]).gemm_dtype.unique()
        except Exception:  # a damaged sibling table only loses this hint
            continue
        for d in dtypes:
            elsewhere.setdefault(GEMM_FORMATS.get(str(d), str(d)), []).append(where)
    absent = {}
    for fmt in ("bf16", "fp8", "fp8_rowwise", "fp8_block", "nvfp4", "int8_wo", "int4_wo", "int8_sq"):
        if fmt in present:
            continue
        where = sorted(set(elsewhere.get(fmt, [])), key=lambda w: (w.split("/")[0], version_key(w.split("/")[1])))
        note = f"not in the imported {backend} GEMM table"
        absent[fmt] = note + (f"; measured in: {', '.join(where)} (other engines, not imported)" if where else
                              "; not measured for this system in this package")
    return {"present": {f: GEMM_FORMAT_NOTES.get(f, f) for f in present}, "absent": absent}
