"""Timing one kernel call: warm-up, repeats, median and spread; CUDA events and graphs on a GPU.

Each sample is one call, as a serving loop makes it (back-to-back calls of a small kernel run
faster from warm caches than a real step does). Fast points get extra samples, up to
``point_budget_s`` of timing per point. The statistic the fit uses is
:attr:`TimingConfig.statistic`: the median on a GPU; the lower quartile on a CPU, where a busy
neighbour on a shared machine only ever adds time (see there). ``min_sample_s`` > 0 instead
averages that many seconds of back-to-back calls per sample, for sub-microsecond clocks where a
single call is too short. Anything with ``measure(fn, graph=..., point=...)`` and ``once(fn)``
can stand in for :class:`Timer` (tests inject a deterministic one).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stats:
    time_s: float  # the statistic the fit uses (see TimingConfig.statistic)
    median_s: float
    q25_s: float
    p10_s: float
    p90_s: float
    min_s: float
    max_s: float
    repeats: int
    calls_per_sample: int

    def as_row(self) -> dict:
        return {"time_s": self.time_s, "median_s": self.median_s, "q25_s": self.q25_s, "p10_s": self.p10_s, "p90_s": self.p90_s, "min_s": self.min_s,
                "max_s": self.max_s, "repeats": self.repeats, "calls_per_sample": self.calls_per_sample}


def summarize(samples: list[float], calls: int = 1, statistic: str = "median") -> Stats:
    s = sorted(samples)
    q = statistics.quantiles(s, n=20, method="inclusive") if len(s) > 1 else [s[0]] * 19
    med = statistics.median(s)
    return Stats(q[4] if statistic == "q25" else med, med, q[4], q[1], q[-2], s[0], s[-1], len(s), calls)


@dataclass(frozen=True)
class TimingConfig:
    device: torch.device
    warmup: int = 2
    repeats: int = 5
    min_sample_s: float = 0.0
    point_budget_s: float = 0.3
    max_repeats: int = 60
    graphs: bool = True  # CUDA only: replay decode steps from a CUDA graph
    #: "median" (GPU), or "q25" (CPU): on a shared CPU, interference from other processes only
    #: ever adds time and arrives in bursts that can cover half the samples of a point, so the
    #: lower quartile estimates the undisturbed time far more stably than the median.
    statistic: str = "median"


class Timer:
    """Times callables on one device."""

    def __init__(self, cfg: TimingConfig) -> None:
        self.cfg = cfg
        self.cuda = cfg.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.cfg.device)

    def once(self, fn: Callable[[], object]) -> float:
        """Seconds for one call (synchronised), used by the serving loop."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def measure(self, fn: Callable[[], object], graph: bool = False, point: dict | None = None) -> Stats:
        """Statistics over at least ``repeats`` samples after ``warmup`` calls; ``graph`` captures ``fn`` once
        on CUDA. ``point`` (the grid row being timed) is unused here; injected timers use it."""
        with torch.inference_mode():
            if self.cuda and graph and self.cfg.graphs:
                fn = self._graphed(fn)
            for _ in range(self.cfg.warmup):
                fn()
            self.sync()
            first = self.once(fn)
            calls = max(1, min(1000, int(self.cfg.min_sample_s / max(first, 1e-7))))
            extra = int(self.cfg.point_budget_s / max(first * calls, 1e-7))
            repeats = max(self.cfg.repeats, min(self.cfg.max_repeats, extra))
            samples = [self._sample(fn, calls) for _ in range(repeats)]
        return summarize(samples, calls, self.cfg.statistic)

    def _sample(self, fn: Callable[[], object], calls: int) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / calls
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) / calls

    def _graphed(self, fn: Callable[[], object]) -> Callable[[], object]:
        """Capture ``fn`` in a CUDA graph (after side-stream warm-up) and return its replay."""
        stream = torch.cuda.Stream(self.cfg.device)
        stream.wait_stream(torch.cuda.current_stream(self.cfg.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(self.cfg.device).wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return g.replay


def is_oom(exc: BaseException) -> bool:
    """Out of device (or host) memory: the grid point is skipped and recorded, not fatal."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()
