"""GPU-hours and peak GPUs of a run: what a fleet that scales over a day is billed for.

Every GPU a design holds counts from the start to the run's end (``end_s``): prefill GPUs, and the
decode GPUs of each pool. A rebalanced dedicated pool moves GPUs between models but never changes their
number (a moving GPU drains and loads while held), so a fixed layout's GPU-hours are its GPUs x the run.
An autoscaled pool changes size: its GPUs are integrated over the recorded timeline of GPUs in
service (:mod:`sunsim.sim.autoscale`: loading and draining GPUs included).
"""

from __future__ import annotations

from sunsim.sim.layout import VariantResult


def gpus_over_time(res: VariantResult, prefill_gpus: int, decode_gpus: int) -> list[tuple[float, int]]:
    """(time, GPUs in service from then on, prefill included), one entry per change, the first at 0;
    ``prefill_gpus``/``decode_gpus`` are the layout's (used when the pool never changes size)."""
    if not res.decode_gpu_timeline:
        return [(0.0, prefill_gpus + decode_gpus)]
    return [(float(t), prefill_gpus + int(n)) for t, n in res.decode_gpu_timeline if t <= res.end_s]


def gpu_seconds(timeline: list[tuple[float, int]], end_s: float) -> float:
    """The integral over ``[0, end_s]`` of a step function given as (time, value from then)."""
    total = 0.0
    for (t, n), nxt in zip(timeline, timeline[1:] + [(end_s, 0)]):
        total += n * max(0.0, min(nxt[0], end_s) - t)
    return total


def gpu_hours_block(res: VariantResult, prefill_gpus: int, decode_gpus: int) -> dict:
    """``summary.json``'s GPU-hours keys: ``gpu_hours``, ``peak_gpus``, ``mean_gpus`` and the timeline."""
    timeline = gpus_over_time(res, prefill_gpus, decode_gpus)
    seconds = gpu_seconds(timeline, res.end_s)
    return {"gpu_hours": seconds / 3600.0, "peak_gpus": max(n for _, n in timeline),
            "mean_gpus": seconds / res.end_s if res.end_s > 0 else float(timeline[0][1]),
            "gpus_over_time": [[t, n] for t, n in timeline]}
