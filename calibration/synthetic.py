"""A deterministic stand-in for :class:`calibration.timing.Timer`: fake kernel times from a formula.

Tests of the grid, the fit, the budget and the validation logic inject it, so they do not depend
on how busy the machine is; each timed callable still runs once, so the real kernels are exercised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .timing import Stats, TimingConfig


@dataclass(frozen=True)
class LinearCost:
    """Per-kind costs: ``fixed + per_row x rows + per_kv x kv_tokens + per_sq x sum_sq`` seconds."""

    fixed: float = 20e-6
    per_row: float = 2e-6
    per_kv: float = 5e-9
    per_sq: float = 1e-11
    head_scale: float = 0.25

    def __call__(self, row: dict) -> float:
        t = self.fixed + self.per_row * row["tokens"] + self.per_kv * row["kv_tokens"] + self.per_sq * row["sum_sq"]
        if row["kind"].startswith("head"):
            return self.head_scale * (self.fixed + self.per_row * row["tokens"])
        if row["kind"] == "gemm":
            return 0.6 * (self.fixed + self.per_row * row["tokens"])
        if row["kind"].endswith("_stack"):  # a whole stack: layers x layer + head
            one = dict(row, kind=row["kind"].replace("stack", "layer"), layers=1)
            head = dict(row, kind="head_" + row["kind"].split("_")[0])
            return row["layers"] * self(one) + self(head)
        return t


class SyntheticTimer:
    """Runs each callable once and reports ``cost(row)`` as every statistic."""

    def __init__(self, cost: Callable[[dict], float], scale_by: dict[str, float] | None = None) -> None:
        self.cost = cost
        self.scale_by = scale_by or {}
        self.cfg = TimingConfig(device=torch.device("cpu"), statistic="median")
        self.calls = 0

    def measure(self, fn: Callable[[], object], graph: bool = False, point: dict | None = None) -> Stats:
        with torch.inference_mode():
            fn()
        self.calls += 1
        t = self.cost(point) * point.get("per", 1) * self.scale_by.get(point["dtype"], 1.0)
        return Stats(t, t, t, t, t, t, t, 1, 1)

    def once(self, fn: Callable[[], object]) -> float:  # pragma: no cover - validation tests inject their own
        fn()
        return 0.0
