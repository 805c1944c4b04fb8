"""Timing one kernel call: warm-up, repeats, median and spread; CUDA events and graphs on a GPU.

A single call of a small kernel on a CPU lasts tens of microseconds, below the clock's noise
floor, so each sample runs the call enough times to last at least ``min_sample_s`` and reports
the per-call mean; the statistic over samples is the median (robust to a busy neighbour).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stats:
    median_s: float
    p10_s: float
    p90_s: float
    min_s: float
    max_s: float
    repeats: int
    calls_per_sample: int

    def as_row(self) -> dict:
        return {"median_s": self.median_s, "p10_s": self.p10_s, "p90_s": self.p90_s, "min_s": self.min_s,
                "max_s": self.max_s, "repeats": self.repeats, "calls_per_sample": self.calls_per_sample}


def summarize(samples: list[float], calls: int = 1) -> Stats:
    s = sorted(samples)
    q = statistics.quantiles(s, n=10, method="inclusive") if len(s) > 1 else [s[0]] * 9
    return Stats(statistics.median(s), q[0], q[-1], s[0], s[-1], len(s), calls)


@dataclass(frozen=True)
class TimingConfig:
    device: torch.device
    warmup: int = 2
    repeats: int = 5
    min_sample_s: float = 2e-3
    graphs: bool = True  # CUDA only: replay decode steps from a CUDA graph


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

    def measure(self, fn: Callable[[], object], graph: bool = False) -> Stats:
        """Median over ``repeats`` samples after ``warmup`` calls; ``graph`` captures ``fn`` once on CUDA."""
        with torch.inference_mode():
            if self.cuda and graph and self.cfg.graphs:
                fn = self._graphed(fn)
            for _ in range(self.cfg.warmup):
                fn()
            self.sync()
            first = self.once(fn)
            calls = max(1, min(1000, int(self.cfg.min_sample_s / max(first, 1e-7))))
            samples = [self._sample(fn, calls) for _ in range(self.cfg.repeats)]
        return summarize(samples, calls)

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
