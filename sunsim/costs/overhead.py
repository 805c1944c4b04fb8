"""A per-iteration engine overhead other than the profile's assumed one.

Every profile adds a fixed cost to each decode iteration (scheduling, sampling, graph launch:
:data:`sunsim.costs.model.DECODE_STEP_OVERHEAD_S`, assumed, not measured). ``hardware.iteration_overhead_ms``
replaces it, for instance with a value fitted to end-to-end measurements (``sunsim validate --measurements
--fit-on``). The difference is added to every iteration a decode or aggregated worker runs, mixed ones included;
a disaggregated prefill batch keeps its own overhead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sunsim.costs.model import DECODE_STEP_OVERHEAD_S, CostModel, ProfileInfo


@dataclass(frozen=True)
class IterationOverhead:
    """``cost`` with ``overhead_s`` per iteration instead of the assumed :data:`DECODE_STEP_OVERHEAD_S`."""

    cost: CostModel
    overhead_s: float

    @property
    def delta_s(self) -> float:
        return self.overhead_s - DECODE_STEP_OVERHEAD_S

    @property
    def info(self) -> ProfileInfo:
        note = f"engine overhead {self.overhead_s * 1e3:g} ms per iteration (hardware.iteration_overhead_ms)"
        base = self.cost.info
        return replace(base, note="; ".join(filter(None, (base.note, note))))

    def prefill_time(self, tokens: int, sum_sq_tokens: int, prompts: int = 1) -> float:
        return self.cost.prefill_time(tokens, sum_sq_tokens, prompts)

    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        alpha, beta = self.cost.decode_coeffs(batch)
        return alpha + self.delta_s, beta

    def mixed_time(self, decode_batch: int, decode_kv_tokens: int, chunks: Sequence[tuple[int, int]]) -> float:
        return self.cost.mixed_time(decode_batch, decode_kv_tokens, chunks) + self.delta_s

    def __getattr__(self, name: str):
        return getattr(self.cost, name)  # parts, notes, projections_time...: the profile's own


def with_overhead(cost: CostModel, overhead_ms: float | None) -> CostModel:
    """``cost`` itself when no overhead is given, else wrapped."""
    return cost if overhead_ms is None else IterationOverhead(cost, overhead_ms * 1e-3)
