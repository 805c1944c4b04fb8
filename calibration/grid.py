"""Which points to time: decode (batch x context), mixed-length batches, prefill (prompts x length).

The GPU grids cover what the simulator asks for (decode batches 1..512, contexts 128..8k, prefill
128..16k tokens per batch); the CPU grids are trimmed so an 8B-shaped layer calibrates in minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import CalibrationError


@dataclass(frozen=True)
class Grid:
    decode_batches: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    prefill_points: tuple[tuple[int, int], ...]  # (prompts, tokens per prompt)
    mixed: tuple[tuple[int, ...], ...] = ()  # KV lengths of mixed-length decode batches
    stack_decode: tuple[tuple[int, int], ...] = ()  # (batch, context) full-stack checks
    stack_prefill: tuple[tuple[int, int], ...] = ()
    attention: tuple[tuple[int, int], ...] = ()  # (batch, context) decode attention alone
    name: str = "custom"

    def __post_init__(self) -> None:
        if not self.decode_batches or not self.decode_contexts or not self.prefill_points:
            raise CalibrationError("grid: needs at least one decode batch, decode context and prefill point")
        for label, values in (("decode_batches", self.decode_batches), ("decode_contexts", self.decode_contexts)):
            if list(values) != sorted(set(values)) or values[0] < 1:
                raise CalibrationError(f"grid.{label}: must be strictly increasing positive integers, got {values}")

    @property
    def prefill_tokens(self) -> list[int]:
        return sorted({n * s for n, s in self.prefill_points})

    @property
    def gemm_tokens(self) -> list[int]:
        return sorted(set(self.decode_batches) | set(self.prefill_tokens))

    @property
    def max_context(self) -> int:
        return max([*self.decode_contexts, *(max(m) for m in self.mixed), *(c for _, c in self.attention)])

    @property
    def max_seq(self) -> int:
        return max(s for _, s in self.prefill_points)


def _prefill(tokens: list[int], seqlens: list[int]) -> tuple[tuple[int, int], ...]:
    """Every (prompts, length) with ``prompts * length`` in ``tokens``: same tokens, different attention work."""
    pts = {(t // s, s) for t in tokens for s in [*seqlens, t] if s <= t and t % s == 0}
    return tuple(sorted(pts, key=lambda p: (p[0] * p[1], p[1])))


def _mixed(batches: tuple[int, ...], contexts: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Mixed-length batches: half short, half long with the mean of a grid context; and one long among short."""
    out = []
    short, mid, top = contexts[0], contexts[len(contexts) // 2], contexts[-1]
    for b in sorted({batches[len(batches) // 2], batches[-1]}):
        if b < 2:
            continue
        long = min(2 * mid - short, top)
        out.append(tuple(short if i % 2 else long for i in range(b)))
        out.append((top,) + (short,) * (b - 1))
    return tuple(out)


@dataclass(frozen=True)
class GridSpec:
    batches: tuple[int, ...]
    contexts: tuple[int, ...]
    prefill_tokens: list[int] = field(default_factory=list)
    seqlens: list[int] = field(default_factory=list)
    attention: tuple[tuple[int, int], ...] = ()


SPECS: dict[tuple[str, str], GridSpec] = {
    ("cuda", "full"): GridSpec((1, 2, 4, 8, 16, 32, 64, 128, 256, 512), (128, 256, 512, 1024, 2048, 4096, 8192),
                               [128, 256, 512, 1024, 2048, 4096, 8192, 16384], [128, 512, 2048, 8192], ((1, 1024), (16, 1024), (64, 1024), (256, 1024))),
    ("cuda", "quick"): GridSpec((1, 4, 16, 64, 256), (128, 1024, 4096), [128, 512, 2048, 8192], [128, 2048],
                                ((1, 1024), (16, 1024), (64, 1024))),
    ("cpu", "full"): GridSpec((1, 2, 4, 8, 16, 32, 64), (128, 512, 1024, 2048), [128, 256, 512, 1024, 2048],
                              [128, 512], ((1, 1024), (16, 1024))),
    ("cpu", "quick"): GridSpec((1, 2, 4, 8, 16), (128, 512, 2048), [128, 256, 512, 1024], [128], ((1, 512), (8, 512))),
}


def preset_grid(device_type: str, name: str) -> Grid:
    if name not in ("quick", "full"):
        raise CalibrationError(f"grid: must be 'quick' or 'full', got {name!r}")
    spec = SPECS[(device_type, name)]
    pre = _prefill(spec.prefill_tokens, spec.seqlens)
    b, c = spec.batches, spec.contexts
    return Grid(
        decode_batches=b, decode_contexts=c, prefill_points=pre, mixed=_mixed(b, c),
        stack_decode=((b[0], c[0]), (b[len(b) // 2], c[len(c) // 2]), (b[-1], c[0])),
        stack_prefill=(pre[0], pre[len(pre) // 2]), attention=spec.attention, name=name,
    )


def trim_prefill(grid: Grid, max_tokens: int | None) -> Grid:
    """Drop prefill points above ``max_tokens`` prompt tokens (slow low-bit prefill on a CPU)."""
    if max_tokens is None:
        return grid
    keep = tuple(p for p in grid.prefill_points if p[0] * p[1] <= max_tokens)
    if not keep:
        raise CalibrationError(f"max_prefill_tokens: {max_tokens} leaves no prefill point (smallest: "
                               f"{min(n * s for n, s in grid.prefill_points)})")
    stack = tuple(p for p in grid.stack_prefill if p in keep) or (keep[0],)
    return replace(grid, prefill_points=keep, stack_prefill=stack)
