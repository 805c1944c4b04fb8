"""Import serving-engine kernel timings from NVIDIA aiconfigurator-core into a compact sunsim table profile.

aiconfigurator-core (PyPI, Apache-2.0) ships per-operation latencies that NVIDIA measured inside vLLM, SGLang
and TensorRT-LLM on real GPUs (``aiconfigurator_core/systems/data/<system>/<op>/<backend>/<version>/*.parquet``).
sunsim's own calibration times a torch re-implementation of a decoder; these tables time the serving engines'
kernels themselves, for every common GPU, without needing the GPU. This module only reads the package's files
(it never imports it, so neither its Rust extension nor scipy is needed) and writes, per GPU and backend:

``gemm.csv``               m,n,k,<format>_us...  one column per weight format present (bf16, fp8, fp8_block, nvfp4)
``attention_decode.csv``   batch,kv_len,heads,kv_heads,head_dim,kv_<dtype>_us...  generation attention
``attention_prefill.csv``  batch,seq_len,heads,kv_heads,head_dim,kv_<dtype>_us...  context attention (no prefix)
``quantize.csv``           m,k,scale_matrix_us,compute_scale_us  fp8 activation quantization (where present)
``allreduce.csv``          impl,dtype,gpus,elements,bytes,time_us  vLLM custom all-reduce and NCCL all-reduce
``silicon.csv``            end-to-end TTFT/TPOT rows of ``silicon_sample.csv`` for dense models (where present)
``metadata.json``          provenance (package, versions, source paths and sha256), datasheet, formats, selection
``LICENSE``                the Apache License 2.0 (the wheel carries none; section 4(a) asks for a copy)

Times are microseconds (the package stores milliseconds), rounded to ``digits`` significant digits. To keep
the profile small only what a dense Llama/Qwen/Mistral-like model of 1B-72B needs is kept: every ``m`` of the
GEMM table, but only the table's (n, k) grid points that bracket the GEMMs of ``aic_select.DENSE_MODELS`` at the
tensor-parallel degrees asked for (``--full-grid`` keeps all), and attention at the (heads, kv_heads,
head_dim) points that bracket those models' per-GPU heads, without sliding windows. Output is deterministic:
the same package version gives byte-identical files (sorted rows, fixed number format, no timestamps).

Usage::

    python -m calibration.aic_import --system h200_sxm --backend vllm --out sunsim/costs/profiles/vllm-h200
    python -m calibration.aic_import --all --out-root sunsim/costs/profiles    # the five shipped GPUs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calibration.aic_convert import (
    allreduce_table,
    attention_table,
    gemm_formats,
    gemm_table,
    quantize_table,
    silicon_table,
)
from calibration.aic_license import APACHE_2_0_TEXT
from calibration.aic_select import DENSE_MODELS, DenseShape, select_gemm_pairs
from calibration.aic_source import (
    PACKAGE,
    AicImportError,
    datasheet,
    jsonable,
    locate_package,
    nccl_source,
    pick_source,
    sha256,
)

ATTRIBUTION = "Data from NVIDIA aiconfigurator-core (Apache-2.0)"
COPYRIGHT = "Copyright (c) 2025-2026 NVIDIA CORPORATION & AFFILIATES. All rights reserved."
PROFILE_FORMAT = "sunsim-aic-tables/1"
DEFAULT_DIGITS = 4
DEFAULT_TP: tuple[int, ...] = (1, 2, 4, 8)
#: The GPUs whose profiles are committed (``--all``), and the short names their folders use.
DEFAULT_SYSTEMS: dict[str, str] = {
    "h100_sxm": "h100",
    "h200_sxm": "h200",
    "a100_sxm": "a100",
    "l40s": "l40s",
    "b200_sxm": "b200",
}
OUTPUT_FILES = (
    "gemm.csv", "attention_decode.csv", "attention_prefill.csv", "quantize.csv", "allreduce.csv",
    "silicon.csv", "metadata.json", "LICENSE",
)


def import_profile(system: str, backend: str = "vllm", out: Path | None = None, *, package_dir: Path | None = None,
                   package_version: str | None = None, tp: Sequence[int] = DEFAULT_TP,
                   models: dict[str, DenseShape] | None = None, full_grid: bool = False,
                   digits: int = DEFAULT_DIGITS) -> dict[str, Any]:
    """Write the table profile of ``system`` measured with ``backend`` into ``out``; returns its metadata.

    Files this importer owns that the package cannot fill this time (e.g. no quantize table) are removed, so a
    re-import of the same package version reproduces the folder exactly.
    """
    if out is None:
        raise AicImportError("an output folder is required")
    if not 1 <= digits <= 17:
        raise AicImportError(f"digits must be 1..17, got {digits}")
    if not tp or any(t < 1 for t in tp):
        raise AicImportError(f"tensor-parallel degrees must be positive integers, got {list(tp)}")
    tps = sorted(set(int(t) for t in tp))
    models = DENSE_MODELS if models is None else models
    pkg = locate_package(package_dir, package_version)
    if not (pkg.systems / "data" / system).is_dir():
        known = sorted(p.name for p in (pkg.systems / "data").iterdir() if p.is_dir())
        raise AicImportError(f"no data for system {system!r} in {PACKAGE} {pkg.version}; systems: {', '.join(known)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)

    tables: dict[str, Any] = {}
    sources: list[Path] = []
    missing: dict[str, str] = {}

    gemm_src = pick_source(pkg, system, "gemm", "gemm_perf.parquet", backend)
    if gemm_src is None:
        raise AicImportError(f"{system} has no GEMM table for any backend in {PACKAGE} {pkg.version}")
    gemm = gemm_table(pkg, gemm_src, out, models, tps, full_grid, digits)
    tables["gemm.csv"], sources = gemm.meta, sources + gemm.sources
    present = [c.removesuffix("_us") for c in gemm.meta["columns"] if c.endswith("_us")]

    for name, table, decode in (("attention_decode.csv", "generation_attention_perf.parquet", True),
                                ("attention_prefill.csv", "context_attention_perf.parquet", False)):
        src = pick_source(pkg, system, "attention", table, backend)
        if src is None:
            missing[name] = f"no {table} for {system}"
            continue
        res = attention_table(pkg, src, out, name, decode, models, tps, full_grid, digits)
        tables[name], sources = res.meta, sources + res.sources

    quant = [s for s in (pick_source(pkg, system, "quantize", t, backend, fallbacks=(backend,))
                         for t in ("scale_matrix_perf.parquet", "computescale_perf.parquet")) if s is not None]
    if quant:
        k_keep = None if full_grid else {k for _, k in select_gemm_pairs(
            models, tps, gemm.meta["grid"]["n_source"], gemm.meta["grid"]["k_source"])}
        res = quantize_table(pkg, quant, out, k_keep, digits)
        tables["quantize.csv"], sources = res.meta, sources + res.sources
    else:
        missing["quantize.csv"] = f"no {backend} quantize tables for {system} (fp8 activation quantization)"

    custom = pick_source(pkg, system, "comm", "custom_allreduce_perf.parquet", backend, fallbacks=(backend,))
    nccl = nccl_source(pkg, system)
    if custom or nccl:
        res = allreduce_table(pkg, custom, nccl, out, digits)
        tables["allreduce.csv"], sources = res.meta, sources + res.sources
    else:
        missing["allreduce.csv"] = f"no all-reduce tables for {system}"

    silicon = silicon_table(pkg, system, gemm_src.backend, out, digits)
    if silicon is not None:
        tables["silicon.csv"], sources = silicon.meta, sources + silicon.sources
    else:
        missing["silicon.csv"] = f"no dense-model rows for {system}/{gemm_src.backend} in silicon_sample.csv"
    missing["elementwise"] = (f"no {backend} tables for norms, RoPE, activation or KV-cache writes on {system} "
                              "(aiconfigurator models them analytically; its `mlp` tables are SGLang wide-EP MoE)")

    sheet, sheet_path = datasheet(pkg, system)
    qv = pkg.systems / "query_versions.yaml"
    sources += [sheet_path] + ([qv] if qv.exists() else [])
    (out / "LICENSE").write_text(APACHE_2_0_TEXT, encoding="utf-8")
    device = (gemm.meta.get("recorded", {}).get("device") or [None])[0]  # torch.cuda.get_device_name()
    unique_sources = sorted({p for p in sources if p.exists()}, key=lambda p: pkg.rel(p))
    engines = sorted({(t.get("backend"), t.get("version")) for t in tables.values() if t.get("backend")} |
                     {(s["backend"], s["version"]) for t in tables.values() for s in t.get("sources", [])})
    meta: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "name": out.name,
        "attribution": ATTRIBUTION,
        "license": {
            "spdx": "Apache-2.0",
            "file": "LICENSE",
            "notice": f"{ATTRIBUTION}. {COPYRIGHT} Licensed under the Apache License, Version 2.0 (see LICENSE "
                      "or https://www.apache.org/licenses/LICENSE-2.0). Modified by sunsim's importer: converted "
                      "from parquet, milliseconds to microseconds, rows selected and rounded as `selection` says.",
        },
        "source": {
            "package": PACKAGE,
            "package_version": pkg.version,
            "url": "https://pypi.org/project/aiconfigurator-core/",
            "system": system,
            "backend_requested": backend,
            "engines": [{"backend": b, "version": v} for b, v in engines],
            "collector": "github.com/ai-dynamo/aiconfigurator, collector/ (not shipped in the wheel)",
            "files": [{"path": pkg.rel(p), "sha256": sha256(p)} for p in unique_sources],
        },
        "device": {"name": device, "system": system, "datasheet": sheet},
        "formats": gemm_formats(pkg, system, present, gemm_src.backend),
        "units": {"time": "microseconds", "rounding": f"{digits} significant digits, positional notation",
                  "missing": "empty cell: the point was not measured in that format"},
        "selection": {
            "full_grid": full_grid,
            "tensor_parallel": tps,
            "models": {name: vars(shape) for name, shape in models.items()},
            "rule": "gemm: every m; the (n, k) grid points bracketing each model's qkv/o/gate_up/down/lm_head "
                    "GEMM per GPU at each valid TP degree (the two end points beyond the grid, for "
                    "extrapolation), unless full_grid. attention: every batch and length; the (heads, kv_heads, "
                    "head_dim) points bracketing each model's per-GPU heads, unless full_grid; full attention "
                    "only (no sliding window). quantize: the k values the kept GEMMs use.",
        },
        "tables": tables,
        "absent": missing,
    }
    text = json.dumps(jsonable(meta), indent=2, ensure_ascii=False) + "\n"
    (out / "metadata.json").write_bytes(text.encode("utf-8"))
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.aic_import", description=__doc__.split("\n")[0])
    p.add_argument("--system", help="aiconfigurator system name, e.g. h200_sxm, h100_sxm, a100_sxm, l40s, b200_sxm")
    p.add_argument("--backend", default="vllm", help="vllm (default), sglang or trtllm")
    p.add_argument("--out", type=Path, help="profile folder to write")
    p.add_argument("--all", action="store_true", help=f"import {', '.join(DEFAULT_SYSTEMS)} into --out-root")
    p.add_argument("--out-root", type=Path, help="with --all: writes <out-root>/<backend>-<gpu>/")
    p.add_argument("--package-dir", type=Path, help="an unpacked wheel instead of the installed package")
    p.add_argument("--package-version", help="the package version when --package-dir has no dist-info")
    p.add_argument("--tp", default=",".join(map(str, DEFAULT_TP)), help="tensor-parallel degrees kept (1,2,4,8)")
    p.add_argument("--full-grid", action="store_true", help="keep every (n, k) and attention head point")
    p.add_argument("--digits", type=int, default=DEFAULT_DIGITS, help="significant digits of the times (4)")
    args = p.parse_args(argv)
    try:
        tps = [int(t) for t in args.tp.split(",") if t.strip()]
    except ValueError:
        p.error(f"--tp must be integers separated by commas, got {args.tp!r}")
    if args.all:
        if args.out_root is None:
            p.error("--all needs --out-root")
        jobs = [(s, args.out_root / f"{args.backend}-{short}") for s, short in DEFAULT_SYSTEMS.items()]
    else:
        if not args.system or args.out is None:
            p.error("--system and --out are required (or --all --out-root)")
        jobs = [(args.system, args.out)]
    try:
        for system, out in jobs:
            meta = import_profile(system, args.backend, out, package_dir=args.package_dir,
                                  package_version=args.package_version, tp=tps, full_grid=args.full_grid,
                                  digits=args.digits)
            size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
            print(f"{system}: {out} ({size / 1024:.0f} KiB; {meta['source']['package']} "
                  f"{meta['source']['package_version']}; formats {', '.join(meta['formats']['present'])})")
    except AicImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
