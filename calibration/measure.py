"""Run the timing grid for one model shape and the requested weight formats, appending to the raw CSV.

Kinds of rows:

* ``gemm``: the four projections of one layer on ``batch`` rows (the GEMM efficiency curve);
* ``decode_layer`` / ``decode_mixed``: one layer's decode step, uniform or mixed KV lengths;
* ``prefill_layer``: one layer's prefill of ``batch`` prompts of ``seqlen`` tokens;
* ``head_decode`` / ``head_prefill``: embedding, final norm, 16-bit LM head and argmax;
* ``attention``: decode attention alone over ``batch`` sequences of ``seqlen`` cached tokens (its
  KV read bandwidth is a target);
* ``decode_stack`` / ``prefill_stack``: the whole instantiated stack, to check the composition
  ``layers x layer + head``.

Each row names the GEMM kernel(s) it ran (``kernel``): a format may use a different kernel per
row count, as engines do (gemlite: GEMV at one row, split-K GEMM, then GEMM).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from sunsim.costs.architecture import ModelShape

from .errors import BudgetExceeded
from .grid import Grid
from .kvcache import KVCache
from .model import DecodeBatch, Stack
from .raw import read_rows, row_key, write_rows
from .timing import Timer, is_oom


@dataclass(frozen=True)
class Point:
    kind: str
    dtype: str
    batch: int
    seqlen: int
    lengths: tuple[int, ...] = ()
    layers: int = 1

    @property
    def key(self) -> tuple:
        return row_key(self.row())

    def row(self) -> dict:
        reads_kv = self.kind.startswith("decode") or self.kind == "attention"
        lengths = self.lengths or ((self.seqlen,) * self.batch if reads_kv else ())
        tokens = self.batch if self.kind in ("gemm", "head_decode", "attention") or self.kind.startswith("decode") \
            else self.batch * self.seqlen
        row = {"kind": self.kind, "dtype": self.dtype, "batch": self.batch, "seqlen": self.seqlen,
               "lengths": ";".join(map(str, self.lengths)), "layers": self.layers, "tokens": tokens,
               "kv_tokens": sum(lengths) if reads_kv else 0,
               "sum_sq": self.batch * self.seqlen ** 2 if self.kind.startswith("prefill") or self.kind == "head_prefill"
               else 0}
        return row


def grid_points(grid: Grid, dtype: str, layers: int) -> list[Point]:
    """Every point of the grid for one weight format, cheapest kinds first."""
    pts = [Point("gemm", dtype, m, 0) for m in grid.gemm_tokens]
    pts += [Point("head_decode", dtype, b, 0) for b in grid.decode_batches]
    pts += [Point("decode_layer", dtype, b, c) for b in grid.decode_batches for c in grid.decode_contexts]
    pts += [Point("decode_mixed", dtype, len(m), 0, m) for m in grid.mixed]
    pts += [Point("attention", dtype, b, c) for b, c in grid.attention]
    pts += [Point("head_prefill", dtype, n, s) for n, s in grid.prefill_points]
    pts += [Point("prefill_layer", dtype, n, s) for n, s in grid.prefill_points]
    pts += [Point("decode_stack", dtype, b, c, layers=layers) for b, c in grid.stack_decode]
    pts += [Point("prefill_stack", dtype, n, s, layers=layers) for n, s in grid.stack_prefill]
    return pts


class Runner:
    """Builds the model for one weight format and times its points; KV caches are shared by all formats.

    A layer is timed as one pass through ``rotate`` distinct layers (each with its own KV cache)
    divided by ``rotate``: in a real model a layer's weights and KV have been evicted by the other
    layers when it runs again, and on a CPU whose last-level cache holds a small model's layer,
    timing one layer in a loop would be too fast. On a GPU (L2 tens of MB, an 8B layer 400+ MB)
    ``rotate`` = 1 suffices.
    """

    def __init__(self, shape: ModelShape, grid: Grid, layers: int, timer: Timer, backend: str,
                 rotate: int | None = None, fuse: bool = False, deadline: float | None = None) -> None:
        self.shape, self.grid, self.layers, self.timer, self.backend = shape, grid, layers, timer, backend
        self.fuse, self.deadline = fuse, deadline
        self.device = timer.cfg.device
        self.rotate = rotate or (layers if self.device.type == "cpu" else 1)
        self.max_pos = max(grid.max_context, grid.max_seq) + 2
        self._caches: list[KVCache] = []

    def caches(self) -> list[KVCache]:
        """One cache per instantiated layer: the rotated ones fit every grid point, the rest the stack points."""
        if not self._caches:
            s, g = self.shape, self.grid
            big = (max(g.decode_batches[-1], *(b for b, _ in g.attention), 1), g.max_context + 1)
            small = (max((b for b, _ in g.stack_decode), default=1), max((c for _, c in g.stack_decode), default=1) + 1)
            self._caches = [KVCache(*(big if i < self.rotate else small), s.kv_heads, s.head_dim, self.device,
                                    self.backend) for i in range(self.layers)]
        return self._caches

    def build(self, dtype: str) -> Stack:
        return Stack(self.shape, dtype, self.layers, self.device, self.max_pos, fuse=self.fuse)

    def job(self, stack: Stack, p: Point) -> tuple[Callable[[], object], bool, int]:
        """The callable to time for a point, whether a CUDA graph may replay it, and how many layers it runs."""
        s, dev = self.shape, self.device
        rot = stack.layers[:self.rotate]
        bf = torch.bfloat16
        if p.kind == "gemm":
            x = torch.randn(p.batch, s.hidden, dtype=bf, device=dev)
            a = torch.randn(p.batch, s.heads * s.head_dim, dtype=bf, device=dev)
            h = torch.randn(p.batch, s.intermediate, dtype=bf, device=dev)
            return (lambda: [lay.gemms(x, a, h) for lay in rot]), True, len(rot)
        if p.kind == "head_decode":
            t = torch.randint(0, s.vocab, (p.batch,), device=dev)
            return (lambda: stack.io.decode_part(t)), True, 1
        if p.kind == "head_prefill":
            t = torch.randint(0, s.vocab, (p.batch, p.seqlen), device=dev)
            return (lambda: stack.io.prefill_part(t)), False, 1
        if p.kind in ("decode_layer", "decode_mixed"):
            held = list(p.lengths) or [p.seqlen] * p.batch
            step = DecodeBatch(list(range(p.batch)), held, dev)
            x = torch.randn(p.batch, s.hidden, dtype=bf, device=dev)
            caches = self.caches()

            def run_decode() -> torch.Tensor:
                y = x
                for lay, cache in zip(rot, caches):
                    y = lay.decode(y, stack.rope, cache, step)
                return y

            return run_decode, True, len(rot)
        if p.kind == "prefill_layer":
            x = torch.randn(p.batch, p.seqlen, s.hidden, dtype=bf, device=dev)

            def run_prefill() -> torch.Tensor:
                y = x
                for lay in rot:
                    y = lay.prefill(y, stack.rope)
                return y

            return run_prefill, True, len(rot)
        if p.kind == "attention":
            step = DecodeBatch(list(range(p.batch)), [p.seqlen] * p.batch, dev)
            q = torch.randn(p.batch, s.heads, s.head_dim, dtype=bf, device=dev)
            cache = self.caches()[0]
            return (lambda: cache.attend(q, step.slots, step.lengths, step.slots_t, step.lengths_t)), True, 1
        if p.kind == "decode_stack":
            step = DecodeBatch(list(range(p.batch)), [p.seqlen] * p.batch, dev)
            t = torch.randint(0, s.vocab, (p.batch,), device=dev)
            caches = self.caches()
            return (lambda: stack.decode(t, caches, step)), True, 1
        if p.kind == "prefill_stack":
            t = torch.randint(0, s.vocab, (p.batch, p.seqlen), device=dev)
            return (lambda: stack.prefill(t)), True, 1
        raise ValueError(f"unknown point kind {p.kind!r}")

    def kernel(self, stack: Stack, p: Point) -> str:
        if p.kind == "attention":
            return f"attention:{self.backend}"
        if p.kind.startswith("head"):
            return "torch.nn.functional.linear(bf16)"
        rows = p.row()["tokens"]
        return stack.layers[0].kernels_for(rows)

    def time_point(self, stack: Stack, p: Point) -> dict:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise BudgetExceeded(f"time budget spent before {p.dtype} {p.kind} {p.batch}x{p.seqlen}")
        row = p.row()
        row["kernel"] = self.kernel(stack, p)
        try:
            fn, graphable, per = self.job(stack, p)
            stats = self.timer.measure(fn, graph=graphable, point={**row, "per": per}).as_row()
            for k in ("time_s", "median_s", "q25_s", "p10_s", "p90_s", "min_s", "max_s"):
                stats[k] /= per
            row.update(stats, status="ok", note=f"mean over {per} layers" if per > 1 else "")
        except Exception as exc:  # noqa: BLE001 - OOM is recorded and skipped, anything else re-raised
            if not is_oom(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            row.update(status="oom", note=str(exc).splitlines()[0][:200])
        return row


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, label: str) -> None: ...


def run_grid(runner: Runner, dtypes: list[str], csv_path: Path, progress: Progress | None = None) -> list[dict]:
    """Time every missing point, rewriting the CSV after each; returns all rows (old and new)."""
    rows = read_rows(csv_path)
    done = {row_key(r) for r in rows}
    todo = {d: [p for p in grid_points(runner.grid, d, runner.layers) if p.key not in done] for d in dtypes}
    if progress is not None:
        progress.start(sum(len(v) for v in todo.values()))
    for dtype, points in todo.items():
        if not points:
            continue
        stack = runner.build(dtype)
        for p in points:
            rows.append(runner.time_point(stack, p))
            write_rows(csv_path, rows)
            if progress is not None:
                progress.advance(f"{dtype} {p.kind} {p.batch}x{p.seqlen or len(p.lengths)}")
        del stack
    return rows
