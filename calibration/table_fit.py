"""How closely the simulator's table cost model (``sunsim/costs/table_model.py``) follows the tables it reads.

``python -m calibration.table_fit`` prints Markdown for Llama-3.1-8B in bf16 on every shipped table profile:

* the decode step's table-priced parts (projection GEMMs, LM head, attention) against the per-operation sums of
  :mod:`calibration.aic_analysis` at B 1-512 and C 128-4096 (the points whose KV fits the GPU), and the
  prefill's against them at 512-8192 tokens: what the closed form and the precomputed row grid cost;
* decode attention in the closed form ``a(B) + c(B) * B * kv_len`` (one line per batch) against every measured
  point it is fitted to (kv_len >= 127, KV within the GPU's memory).
"""

from __future__ import annotations

import argparse
import statistics
import sys

from calibration.aic_analysis import decode_step, prefill_step
from sunsim.costs import catalog
from sunsim.costs.architecture import preset
from sunsim.costs.hardware import gpu
from sunsim.costs.model import PREFILL_BATCH_OVERHEAD_S
from sunsim.costs.table_model import MIN_FIT_KV_LEN, TableCostModel

LLAMA = preset("llama-3.1-8b")
BATCHES, CONTEXTS, PREFILLS = (1, 8, 32, 64, 128, 256, 512), (128, 1024, 4096), (512, 1024, 2048, 4096, 8192)


def _worst(errors: dict) -> tuple[float, float, object]:
    """(median |error|, worst error, where) of a {point: relative error} map."""
    where = max(errors, key=lambda k: abs(errors[k]))
    return statistics.median(abs(e) for e in errors.values()), errors[where], where


def step_errors(name: str) -> tuple[dict, dict]:
    """Relative errors of the model's table-priced decode and prefill parts against the per-op table sums."""
    tables = catalog.load(name)
    g = gpu(catalog.tables_gpu(tables))
    m = TableCostModel(tables, g, LLAMA, "bf16")
    decode, prefill = {}, {}
    for b in BATCHES:
        for c in CONTEXTS:
            if LLAMA.weight_bytes("bf16") + b * c * LLAMA.kv_bytes_per_token > g.memory_bytes:
                continue
            p, ref = m.parts(b, b * c), decode_step(tables, b, c)
            decode[(b, c)] = (p["projections"] + p["lm_head"] + p["attention"]) / (
                (ref.gemm_us + ref.attention_us) * 1e-6) - 1
    for tokens in PREFILLS:
        ref = prefill_step(tables, tokens)
        mine = m.prefill_time(tokens, tokens * tokens) - PREFILL_BATCH_OVERHEAD_S - m.elementwise_time(tokens)
        prefill[tokens] = mine / ((ref.gemm_us + ref.attention_us) * 1e-6) - 1
    return decode, prefill


def attention_errors(name: str, kv_dtype: str = "bf16") -> dict:
    """Relative error of the per-batch closed form at every measured point it is fitted to."""
    tables = catalog.load(name)
    g = gpu(catalog.tables_gpu(tables))
    m = TableCostModel(tables, g, LLAMA, "bf16", kv_dtype)
    heads = (kv_dtype, LLAMA.kv_heads, LLAMA.head_dim, LLAMA.heads)
    out = {}
    for b in tables.batches("decode", *heads):
        a, c = m.decode_attention(b)
        for n in tables.lengths("decode", *heads, b):
            if n < MIN_FIT_KV_LEN or b * n * LLAMA.kv_bytes(kv_dtype) > g.memory_bytes:
                continue
            want = LLAMA.layers * tables.attention("decode", b, n, LLAMA.heads, LLAMA.kv_heads, LLAMA.head_dim,
                                                   kv_dtype).us * 1e-6
            out[(b, n)] = (a + c * b * n) / want - 1
    return out


def report() -> str:
    lines = ["| profile | decode step: points, median, worst (at B, C) | prefill: median, worst (at tokens) "
             "| attention closed form, bf16 KV: points, median, worst (at B, kv_len) | same, fp8 KV |",
             "|---|---|---|---|---|"]
    for name in catalog.shipped():
        decode, prefill = step_errors(name)
        dm, dw, dat = _worst(decode)
        pm, pw, pat = _worst(prefill)
        cells = []
        tables = catalog.load(name)
        for kv in ("bf16", "fp8"):
            if kv not in tables.kv_dtypes("decode"):
                cells.append("not measured")
                continue
            att = attention_errors(name, kv)
            am, aw, aat = _worst(att)
            cells.append(f"{len(att)}, {am:.1%}, {aw:+.1%} (B={aat[0]}, {aat[1]})")
        lines.append(f"| {name} | {len(decode)}, {dm:.1%}, {dw:+.1%} (B={dat[0]}, C={dat[1]}) | {pm:.1%}, {pw:+.1%} "
                     f"({pat}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m calibration.table_fit", description=__doc__.split("\n")[0]).parse_args(argv)
    sys.stdout.write(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
