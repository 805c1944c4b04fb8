"""What the imported aiconfigurator-core tables say about Llama-3.1-8B steps (the README section's numbers).

``python -m calibration.aic_analysis [--profiles calibration/profiles]`` prints Markdown: per-op sums for a
decode step and a prefill, the fp8/bf16 GEMM ratio at small batches, and how well ``alpha(B) + beta*KV``
fits decode attention. Sums cover GEMMs and attention only (no norms, RoPE, activation, KV writes,
sampling, launch gaps): a lower bound on a served step, and a check of what the simulator's cost model
must reproduce.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.aic_tables import AicTables, Estimate, minimax_fit, relative_fit
from sunsim.costs.catalog import PROFILES_DIR


@dataclass(frozen=True)
class Llama:
    """Llama-3.1-8B (config.json): the shapes the analysis sums over."""

    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    intermediate: int = 14336
    vocab: int = 128256

    def layer_gemms(self) -> dict[str, tuple[int, int]]:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"qkv": (q + 2 * kv, self.hidden), "o": (self.hidden, q),
                "gate_up": (2 * self.intermediate, self.hidden), "down": (self.hidden, self.intermediate)}

    @property
    def weight_bytes_bf16(self) -> float:
        per_layer = sum(n * k for n, k in self.layer_gemms().values())
        return 2.0 * (self.layers * per_layer + 2 * self.vocab * self.hidden)

    def kv_bytes_per_token(self, element_bytes: int = 2) -> int:
        return self.layers * self.kv_heads * self.head_dim * 2 * element_bytes


MODEL = Llama()
BATCHES = (1, 8, 32, 64, 128, 256, 512)
CONTEXTS = (128, 1024, 4096)
PREFILLS = (512, 1024, 2048, 4096, 8192)
SMALL_M = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class Step:
    """One step's summed table times (µs) and whether any term was extrapolated."""

    gemm_us: float
    attention_us: float
    extrapolated: bool

    @property
    def total_ms(self) -> float:
        return (self.gemm_us + self.attention_us) / 1000.0


def _sum(parts: Sequence[tuple[float, Estimate]]) -> tuple[float, bool]:
    return sum(w * e.us for w, e in parts), any(e.extrapolated for _, e in parts)


def layer_gemm_us(t: AicTables, fmt: str, m: float) -> tuple[float, bool]:
    return _sum([(1.0, t.gemm(fmt, m, n, k)) for n, k in MODEL.layer_gemms().values()])


def decode_step(t: AicTables, batch: int, context: int, fmt: str = "bf16") -> Step:
    """Decode of ``batch`` sequences each attending ``context`` KV tokens. The LM head's n = 128256 lies beyond
    the grid's 65536 in every step, so it is always the n = 65536 time scaled in proportion to n
    (:meth:`sunsim.costs.tables.MeasuredTables.gemm`): that alone does not mark the step as extrapolated."""
    gl, ge = layer_gemm_us(t, fmt, batch)
    head = t.gemm("bf16", batch, MODEL.vocab, MODEL.hidden)
    attn = t.attention("decode", batch, context, MODEL.heads, MODEL.kv_heads, MODEL.head_dim)
    return Step(MODEL.layers * gl + head.us, MODEL.layers * attn.us, ge or attn.extrapolated)


def prefill_step(t: AicTables, tokens: int, fmt: str = "bf16") -> Step:
    """One sequence of ``tokens`` prompt tokens; the LM head runs on its last position only (as vLLM does)."""
    gl, ge = layer_gemm_us(t, fmt, tokens)
    head = t.gemm("bf16", 1, MODEL.vocab, MODEL.hidden)
    attn = t.attention("prefill", 1, tokens, MODEL.heads, MODEL.kv_heads, MODEL.head_dim)
    return Step(MODEL.layers * gl + head.us, MODEL.layers * attn.us, ge or attn.extrapolated)


def _fits(t: AicTables, batch: int, context: int) -> bool:
    memory = float(t.metadata["device"]["datasheet"]["memory_bytes"])
    return MODEL.weight_bytes_bf16 + batch * context * MODEL.kv_bytes_per_token() <= memory


def decode_table(t: AicTables) -> list[str]:
    head = "| B | " + " | ".join(f"C={c}: total ms (GEMM + attn)" for c in CONTEXTS) + " |"
    lines = [head, "|---" * (len(CONTEXTS) + 1) + "|"]
    for b in BATCHES:
        cells = []
        for c in CONTEXTS:
            s = decode_step(t, b, c)
            mark = ("†" if s.extrapolated else "") + ("‡" if not _fits(t, b, c) else "")
            cells.append(f"{s.total_ms:.2f}{mark} ({s.gemm_us / 1000:.2f} + {s.attention_us / 1000:.2f})")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return lines


def prefill_table(tables: dict[str, AicTables]) -> list[str]:
    names = list(tables)
    lines = ["| tokens | " + " | ".join(f"{n}: total ms (GEMM + attn), tok/s" for n in names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for tokens in PREFILLS:
        cells = []
        for n in names:
            s = prefill_step(tables[n], tokens)
            mark = "†" if s.extrapolated else ""
            cells.append(f"{s.total_ms:.2f}{mark} ({s.gemm_us / 1000:.2f} + {s.attention_us / 1000:.2f}), "
                         f"{tokens / s.total_ms * 1000:,.0f}")
        lines.append(f"| {tokens} | " + " | ".join(cells) + " |")
    return lines


def ratio_table(t: AicTables) -> list[str]:
    fmts = [f for f in ("fp8", "fp8_block") if f in t.gemm_formats]
    lines = ["| m | bf16 µs/layer | " + " | ".join(f"{f}/bf16" for f in fmts) + " | per GEMM fp8/bf16 ("
             + ", ".join(MODEL.layer_gemms()) + ") |", "|---" * (len(fmts) + 3) + "|"]
    for m in SMALL_M:
        bf, _ = layer_gemm_us(t, "bf16", m)
        ratios = [layer_gemm_us(t, f, m)[0] / bf for f in fmts]
        per = [t.gemm("fp8", m, n, k).us / t.gemm("bf16", m, n, k).us for n, k in MODEL.layer_gemms().values()]
        lines.append(f"| {m} | {bf:.1f} | " + " | ".join(f"{r:.2f}" for r in ratios) + " | "
                     + ", ".join(f"{r:.2f}" for r in per) + " |")
    return lines


def attention_fit(t: AicTables, kv_dtype: str = "bf16", max_batch: int | None = None, min_len: int = 1
                  ) -> dict[str, float]:
    """Fit decode attention of Llama-8B's heads to ``alpha(B) + beta * B * kv_len`` over the measured points."""
    table = t._attn["decode"][(kv_dtype, MODEL.kv_heads, MODEL.head_dim, MODEL.heads)]
    groups, x, y = [], [], []
    for b, (lengths, times) in sorted(table.items()):
        if max_batch is not None and b > max_batch:
            continue
        for n, us in zip(lengths, times):
            if n >= min_len:
                groups.append(b)
                x.append(b * n)
                y.append(us)
    coef, r = relative_fit(groups, x, y)
    beta = float(coef[-1])
    _, minimax = minimax_fit(groups, x, y, beta_hi=3 * beta)
    _, r_pb = relative_fit(groups, x, y, per_group_slope=True)
    worst = int(np.argmax(np.abs(r)))
    kv_bytes = MODEL.kv_heads * MODEL.head_dim * 2 * (2 if kv_dtype == "bf16" else 1)
    return {"points": len(y), "ls_max": float(np.max(np.abs(r))), "ls_median": float(np.median(np.abs(r))),
            "minimax_max": minimax, "per_batch_max": float(np.max(np.abs(r_pb))),
            "beta_ns_per_token": beta * 1000.0, "bandwidth_GBps": kv_bytes / (beta * 1e-6) / 1e9,
            "worst_batch": groups[worst], "worst_len": x[worst] // groups[worst],
            "worst_sign": float(np.sign(r[worst]))}


def report(root: Path) -> str:
    t = {name: AicTables(root / f"vllm-{name}") for name in ("h100", "h200")}
    out: list[str] = []
    for name, tab in t.items():
        out += [f"Decode step, {name} bf16 (32 layers + LM head at m=B; attention with a bf16 KV cache):", ""]
        out += decode_table(tab) + [""]
    out += ["Prefill of one sequence, bf16 (GEMMs at m=tokens, LM head at m=1, causal attention):", ""]
    out += prefill_table(t) + [""]
    for name, tab in t.items():
        out += [f"GEMM time ratio per layer, {name} (qkv + o + gate_up + down):", ""] + ratio_table(tab) + [""]
    out += ["Decode attention fit `alpha(B) + beta * B * kv_len` (Llama-8B heads 32/8/128), relative errors:", "",
            "| GPU | KV | domain | points | LS max | LS median | minimax max | beta(B) LS max | beta ns/token | KV GB/s "
            "| LS worst at |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, tab in t.items():
        for kv in ("bf16", "fp8"):
            for label, kw in (("all measured", {}), ("B<=512, kv_len>=127", {"max_batch": 512, "min_len": 127})):
                f = attention_fit(tab, kv, **kw)
                out.append(f"| {name} | {kv} | {label} | {f['points']} | {f['ls_max']:.1%} | {f['ls_median']:.1%} "
                           f"| {f['minimax_max']:.1%} | {f['per_batch_max']:.1%} | {f['beta_ns_per_token']:.3f} | {f['bandwidth_GBps']:,.0f} "
                           f"| B={f['worst_batch']}, kv_len={f['worst_len']} ({'over' if f['worst_sign'] > 0 else 'under'}) |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.aic_analysis", description=__doc__.split("\n")[0])
    p.add_argument("--profiles", type=Path, default=PROFILES_DIR)
    args = p.parse_args(argv)
    sys.stdout.write(report(args.profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
