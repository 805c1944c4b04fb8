"""Which table points a dense decoder needs: its GEMM (n, k) and attention heads per GPU at each TP degree.

Keeping only the grid points that bracket these shapes (plus the two end points beyond the grid, for
extrapolation) makes an imported profile a few hundred KB instead of megabytes, and every kept point is one a
piecewise-linear lookup at those shapes uses.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DenseShape:
    """The numbers of a dense decoder that set its GEMM and attention shapes (from its Hugging Face config)."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int


#: Dense models of 1B-72B whose shapes decide which table points are kept (values from their config.json).
DENSE_MODELS: dict[str, DenseShape] = {
    "llama-3.2-1b": DenseShape(2048, 32, 8, 64, 8192, 128256),
    "llama-3.2-3b": DenseShape(3072, 24, 8, 128, 8192, 128256),
    "llama-3.1-8b": DenseShape(4096, 32, 8, 128, 14336, 128256),
    "llama-3.1-70b": DenseShape(8192, 64, 8, 128, 28672, 128256),
    "qwen2.5-1.5b": DenseShape(1536, 12, 2, 128, 8960, 151936),
    "qwen2.5-3b": DenseShape(2048, 16, 2, 128, 11008, 151936),
    "qwen2.5-7b": DenseShape(3584, 28, 4, 128, 18944, 152064),
    "qwen2.5-14b": DenseShape(5120, 40, 8, 128, 13824, 152064),
    "qwen2.5-32b": DenseShape(5120, 40, 8, 128, 27648, 152064),
    "qwen2.5-72b": DenseShape(8192, 64, 8, 128, 29568, 152064),
    "qwen3-1.7b": DenseShape(2048, 16, 8, 128, 6144, 151936),
    "qwen3-4b": DenseShape(2560, 32, 8, 128, 9728, 151936),
    "qwen3-8b": DenseShape(4096, 32, 8, 128, 12288, 151936),
    "qwen3-14b": DenseShape(5120, 40, 8, 128, 17408, 151936),
    "qwen3-32b": DenseShape(5120, 64, 8, 128, 25600, 151936),
    "mistral-7b-v0.3": DenseShape(4096, 32, 8, 128, 14336, 32768),
    "mistral-small-24b": DenseShape(5120, 32, 8, 128, 32768, 131072),
}


def bracket(grid: Sequence[int], x: int) -> list[int]:
    """The grid points a piecewise-linear lookup at ``x`` uses: ``x`` itself, its two neighbours, or (outside
    the grid) the two end points, so a consumer can extrapolate."""
    grid = sorted(grid)
    i = bisect.bisect_left(grid, x)
    if i < len(grid) and grid[i] == x:
        return [x]
    if i == 0:
        return grid[:2]
    if i == len(grid):
        return grid[-2:]
    return [grid[i - 1], grid[i]]


def tp_valid(shape: DenseShape, tp: int) -> bool:
    """vLLM's rule: heads split evenly; kv heads split evenly or are replicated."""
    if shape.heads % tp:
        return False
    return shape.kv_heads % tp == 0 if shape.kv_heads >= tp else tp % shape.kv_heads == 0


def gemm_shapes(shape: DenseShape, tp: int) -> dict[str, tuple[int, int]]:
    """(n, k) of each GEMM of one layer plus the LM head, per GPU at tensor parallelism ``tp`` (vLLM's fused
    column-parallel QKV and gate_up, row-parallel o and down, vocab-parallel LM head)."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    kv_per_gpu = max(kv // tp, shape.head_dim)
    return {
        "qkv": (q // tp + 2 * kv_per_gpu, shape.hidden),
        "o": (shape.hidden, q // tp),
        "gate_up": (2 * shape.intermediate // tp, shape.hidden),
        "down": (shape.hidden, shape.intermediate // tp),
        "lm_head": (shape.vocab // tp, shape.hidden),
    }


def attention_heads(shape: DenseShape, tp: int) -> tuple[int, int, int]:
    """(heads, kv_heads, head_dim) of attention on one GPU at tensor parallelism ``tp``."""
    return shape.heads // tp, max(shape.kv_heads // tp, 1), shape.head_dim


def select_gemm_pairs(models: dict[str, DenseShape], tps: Sequence[int], n_grid: Sequence[int],
                      k_grid: Sequence[int]) -> set[tuple[int, int]]:
    """The table's (n, k) points bracketing every model GEMM: enough for bilinear lookup at those shapes."""
    pairs: set[tuple[int, int]] = set()
    for shape in models.values():
        for tp in tps:
            if not tp_valid(shape, tp):
                continue
            for n, k in gemm_shapes(shape, tp).values():
                pairs |= {(a, b) for a in bracket(n_grid, n) for b in bracket(k_grid, k)}
    return pairs


def select_heads(models: dict[str, DenseShape], tps: Sequence[int], combos: set[tuple[int, int, int]]
                 ) -> tuple[set[tuple[int, int, int]], list[str]]:
    """The table's (heads, kv_heads, head_dim) points bracketing each model's per-GPU heads (same kv_heads and
    head_dim), and the model/TP points the table cannot cover."""
    keep: set[tuple[int, int, int]] = set()
    uncovered: list[str] = []
    for name, shape in models.items():
        for tp in tps:
            if not tp_valid(shape, tp):
                continue
            h, kv, hd = attention_heads(shape, tp)
            grid = sorted({c[0] for c in combos if c[1] == kv and c[2] == hd})
            if not grid:
                uncovered.append(f"{name} tp{tp} (heads {h}, kv_heads {kv}, head_dim {hd})")
                continue
            keep |= {(a, kv, hd) for a in bracket(grid, h)}
    return keep, uncovered
