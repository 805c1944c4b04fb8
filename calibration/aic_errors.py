"""How far sunsim's analytic cost profiles are from the imported aiconfigurator-core tables (README numbers).

``python -m calibration.aic_errors [--profiles calibration/profiles]`` prints Markdown: for H100, H200 and
A100 (the GPUs with an analytic profile), Llama-3.1-8B in bf16, the analytic GEMM, attention and summed times
of a decode step and a one-prompt prefill against the table sums of :mod:`calibration.aic_analysis`, the
fp8/bf16 GEMM ratio both ways, and a summary per GPU. The comparison is like for like: only what the tables
hold (GEMMs incl. the LM head, attention), never the analytic step's fixed overhead, norms or embedding reads.
Relative error = analytic / table - 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from calibration.aic_analysis import (
    BATCHES,
    CONTEXTS,
    PREFILLS,
    SMALL_M,
    Step,
    _fits,
    decode_step,
    layer_gemm_us,
    prefill_step,
)
from calibration.aic_tables import AicTables
from sunsim.costs import efficiency as eff
from sunsim.costs.architecture import WEIGHT_BYTES, preset
from sunsim.costs.catalog import PROFILES_DIR
from sunsim.costs.hardware import gpu
from sunsim.costs.model import AnalyticCostModel

GPUS = ("h100", "h200", "a100")
FP8_GPUS = ("h100", "h200")
SHAPE = "llama-3.1-8b"
COMPONENTS = ("gemm", "attention", "step")


@dataclass(frozen=True)
class Point:
    """One step priced both ways (µs); ``fits`` = its KV cache and the weights fit the GPU's memory."""

    phase: str  # "decode" (batch B, length = context C) or "prefill" (one prompt, length = tokens)
    batch: int
    length: int
    analytic_gemm_us: float
    analytic_attention_us: float
    table: Step
    fits: bool = True

    @property
    def analytic_step_us(self) -> float:
        return self.analytic_gemm_us + self.analytic_attention_us

    @property
    def table_step_us(self) -> float:
        return self.table.gemm_us + self.table.attention_us

    def analytic_us(self, component: str) -> float:
        return {"gemm": self.analytic_gemm_us, "attention": self.analytic_attention_us,
                "step": self.analytic_step_us}[component]

    def table_us(self, component: str) -> float:
        return {"gemm": self.table.gemm_us, "attention": self.table.attention_us, "step": self.table_step_us}[component]

    def error(self, component: str) -> float:
        """analytic / table - 1 of ``component`` ("gemm", "attention" or "step" = their sum)."""
        return self.analytic_us(component) / self.table_us(component) - 1.0

    @property
    def label(self) -> str:
        return f"B={self.batch}, C={self.length}" if self.phase == "decode" else f"{self.length} tokens"


def analytic(name: str, dtype: str = "bf16") -> AnalyticCostModel:
    return AnalyticCostModel(gpu(name), preset(SHAPE), dtype)


def analytic_decode_us(m: AnalyticCostModel, batch: int, context: int) -> tuple[float, float]:
    """(GEMMs, attention) of a decode step in µs: the projections and the LM head at B rows; attention's
    per-layer call floor plus beta times every KV token of the batch. No step overhead, norms or embeddings:
    the tables have none."""
    gemm = m.projections_time(batch) + m.head_time(batch)
    attention = m._attn_calls_s + m._beta * batch * context
    return gemm * 1e6, attention * 1e6


def analytic_prefill_us(m: AnalyticCostModel, tokens: int) -> tuple[float, float]:
    """(GEMMs, attention) of one prompt's prefill in µs: projections at ``tokens`` rows, the LM head at one
    row (the last position, as the table sum has it), causal attention with sum_sq = tokens^2."""
    half = eff.fits().attention.prefill_half_len
    gemm = m.projections_time(tokens) + m.head_time(1)
    attention = m._attn_calls_s + m._attn_s_per_sq * (tokens * tokens + half * tokens)
    return gemm * 1e6, attention * 1e6


def decode_points(m: AnalyticCostModel, t: AicTables) -> list[Point]:
    out = []
    for b in BATCHES:
        for c in CONTEXTS:
            g, a = analytic_decode_us(m, b, c)
            out.append(Point("decode", b, c, g, a, decode_step(t, b, c), _fits(t, b, c)))
    return out


def prefill_points(m: AnalyticCostModel, t: AicTables) -> list[Point]:
    out = []
    for n in PREFILLS:
        g, a = analytic_prefill_us(m, n)
        out.append(Point("prefill", 1, n, g, a, prefill_step(t, n)))
    return out


@dataclass(frozen=True)
class Summary:
    """Median |error| and the signed error of largest magnitude, over the points that fit in memory."""

    points: int
    excluded: int
    median_abs: float
    worst: float
    worst_at: str


def summarize(points: list[Point], component: str = "step") -> Summary:
    """Why exclude: a step whose KV cache does not fit the GPU is never served, so its error does not matter."""
    used = [p for p in points if p.fits]
    errors = [p.error(component) for p in used]
    worst = max(used, key=lambda p: abs(p.error(component)))
    return Summary(len(used), len(points) - len(used), statistics.median(abs(e) for e in errors),
                   worst.error(component), worst.label)


class Fp8Ratio(NamedTuple):
    """fp8/bf16 time of one layer's four projection GEMMs at ``m`` rows."""

    m: int
    analytic: float  # with the analytic per-token activation quantization (4 calls + bytes per layer)
    analytic_gemm_only: float  # the fp8 GEMM curve alone: separates the quantization term from the curve
    table: float  # vLLM's fp8 layer, its static input quantization inside the timed layer


def fp8_ratios(name: str, t: AicTables) -> list[Fp8Ratio]:
    """Why projections only: the LM head stays bf16 in both, and would dilute the ratio equally."""
    fp8, bf16 = analytic(name, "fp8"), analytic(name, "bf16")
    out = []
    for m in SMALL_M:
        gemm_only = fp8.shape.layers * fp8._proj.total(fp8._gemms, m, WEIGHT_BYTES["fp8"])
        table = layer_gemm_us(t, "fp8", m)[0] / layer_gemm_us(t, "bf16", m)[0]
        base = bf16.projections_time(m)
        out.append(Fp8Ratio(m, fp8.projections_time(m) / base, gemm_only / base, table))
    return out


def _marks(p: Point) -> str:
    return ("†" if p.table.extrapolated else "") + ("‡" if not p.fits else "")


def _cells(p: Point) -> str:
    return " | ".join(f"{p.analytic_us(c) / 1000:.2f} / {p.table_us(c) / 1000:.2f} | {p.error(c):+.1%}"
                      for c in COMPONENTS)


_HEAD = "GEMM ms analytic / table | GEMM err | attention ms analytic / table | attn err | sum ms analytic / table | sum err"


def decode_table(points: list[Point]) -> list[str]:
    lines = [f"| B | C | {_HEAD} |", "|---" * 8 + "|"]
    lines += [f"| {p.batch} | {p.length}{_marks(p)} | {_cells(p)} |" for p in points]
    return lines


def prefill_table(points: dict[str, list[Point]]) -> list[str]:
    lines = [f"| GPU | tokens | {_HEAD} |", "|---" * 8 + "|"]
    lines += [f"| {name} | {p.length}{_marks(p)} | {_cells(p)} |" for name, ps in points.items() for p in ps]
    return lines


def fp8_table(ratios: dict[str, list[Fp8Ratio]]) -> list[str]:
    lines = ["| m | " + " | ".join(f"{n} analytic | {n} analytic GEMM only | {n} table | {n} analytic/table - 1"
                                   for n in ratios) + " |", "|---" * (4 * len(ratios) + 1) + "|"]
    for i, m in enumerate(SMALL_M):
        cells = [f"{r[i].analytic:.2f} | {r[i].analytic_gemm_only:.2f} | {r[i].table:.2f} | "
                 f"{r[i].analytic / r[i].table - 1:+.1%}" for r in ratios.values()]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def summary_table(decode: dict[str, list[Point]], prefill: dict[str, list[Point]]) -> list[str]:
    lines = ["| GPU | phase | part | points (excluded) | median abs error | worst error | worst at |",
             "|---|---|---|---|---|---|---|"]
    for name in decode:
        for phase, points in (("decode", decode[name]), ("prefill", prefill[name])):
            for c, label in zip(COMPONENTS, ("GEMM", "attention", "sum")):
                s = summarize(points, c)
                lines.append(f"| {name} | {phase} | {label} | {s.points} ({s.excluded}) | {s.median_abs:.1%} "
                             f"| {s.worst:+.1%} | {s.worst_at} |")
    return lines


def report(root: Path) -> str:
    tables = {name: AicTables(root / f"vllm-{name}") for name in GPUS}
    models = {name: analytic(name) for name in GPUS}
    decode = {n: decode_points(models[n], tables[n]) for n in GPUS}
    prefill = {n: prefill_points(models[n], tables[n]) for n in GPUS}
    out = ["Summary, Llama-3.1-8B bf16, relative error analytic / table - 1 (decode: the points that fit in "
           "memory; sum = GEMMs + attention, without the analytic step's overhead and norms):", ""]
    out += summary_table(decode, prefill) + [""]
    for name in GPUS:
        out += [f"Decode step, {name} bf16 (GEMMs: 32 layers' projections + LM head at m = B; attention: bf16 KV, "
                "C tokens per sequence):", ""] + decode_table(decode[name]) + [""]
    out += ["Prefill of one prompt, bf16 (GEMMs at m = tokens, LM head at m = 1, causal attention):", ""]
    out += prefill_table(prefill) + [""]
    out += ["fp8 / bf16 time of the four projection GEMMs per layer (LM head excluded; analytic and table with "
            "their input quantization, \"GEMM only\" without):", ""]
    out += fp8_table({n: fp8_ratios(n, tables[n]) for n in FP8_GPUS}) + [""]
    out += ["† = a table term extrapolated beyond the measured batch or length (the LM head's n lies past the grid: "
            "the widest measured GEMM scaled in proportion, not marked); ‡ = KV cache plus weights exceed the GPU's "
            "memory (left out of the summary)."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.aic_errors", description=__doc__.split("\n")[0])
    p.add_argument("--profiles", type=Path, default=PROFILES_DIR)
    args = p.parse_args(argv)
    sys.stdout.write(report(args.profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
