"""The request stream: arrival times, task model and lengths of every request, as arrays.

It is generated once per scenario and replayed unchanged by every variant, so that
the variants are compared on the same requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sunsim.scenario import (
    MAX_REQUESTS,
    ClosedArrivals,
    FromTrace,
    Gamma,
    Geometric,
    LengthDist,
    LogNormal,
    Scenario,
    ScenarioError,
    TraceArrivals,
    Uniform,
)
from sunsim.workload.rate_curve import curve_arrivals, curve_for
from sunsim.workload.trace_file import MAX_TRACE_BYTES, MAX_TRACE_TIME_S, TRACE_COLUMNS, read_trace, trace_task_index

# read_trace and the trace bounds live in trace_file; they stay importable from here, where callers found them.
__all__ = ["RequestStream", "build_workload", "check_size", "estimate_requests", "read_trace",
           "MAX_TRACE_BYTES", "MAX_TRACE_TIME_S", "TRACE_COLUMNS"]

#: Memory the run's per-request arrays may take: the request stream (arrival, model and two
#: lengths = 28 B, plus ~36 B of temporaries while generating it) once, and for every variant
#: what a run measured at its peak (2026-12-01, default scenario, 3 variants: ~2,450 B per request
#: with the batch/KV timeline that `sunsim run` keeps, ~1,000 B without): records, paged-KV state,
#: the per-request table and the timeline's rows, ~800 B. Beyond this the run would swap or fail
#: half-way; it is refused up front with the estimate.
MAX_ARRAY_BYTES = 8 * 2**30
STREAM_BYTES_PER_REQUEST = 64
VARIANT_BYTES_PER_REQUEST = 800


@dataclass(frozen=True)
class RequestStream:
    """Columnar description of every request, sorted by arrival.

    Closed-loop arrivals (``closed``) are decided by the run: the stream drawn up front holds +inf
    ("not sent yet"), and each variant's run fills a copy of its own (``VariantResult.stream``), which
    every consumer after the run reads (request tables, summaries, rebalancing during it).
    """

    arrival_s: np.ndarray  # float64
    model: np.ndarray  # int32, index into ``models``
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    models: tuple[str, ...]
    closed: bool = False  # arrival times are filled in by the run (closed-loop clients)

    def __len__(self) -> int:
        return len(self.arrival_s)


def _rng(seed: int, stream: int) -> np.random.Generator:
    # Independent streams: changing how lengths are drawn never moves the arrivals.
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def estimate_requests(sc: Scenario) -> tuple[int, str]:
    """An upper estimate of the run's request count, and where it comes from (for the message)."""
    wl = sc.workload
    if isinstance(wl.arrivals, TraceArrivals):
        n = len(read_trace(wl.arrivals.path, wl.arrivals.layout()))
        why = f"the trace's {n:,} rows"
        if wl.num_requests is not None and wl.num_requests < n:
            n, why = wl.num_requests, f"workload.num_requests {wl.num_requests:,}"
        return n, why
    if isinstance(wl.arrivals, ClosedArrivals):
        assert wl.num_requests is not None  # the schema requires it for closed arrivals
        return wl.num_requests, f"workload.num_requests {wl.num_requests:,}"
    n, why = None, ""
    if wl.rate_curve is not None:
        if wl.duration_s is not None:
            n = float(curve_for(wl).cumulative(wl.duration_s))
            why = f"workload.rate_curve over workload.duration_s {wl.duration_s:g} s"
        if wl.num_requests is not None and (n is None or wl.num_requests < n):
            n, why = wl.num_requests, f"workload.num_requests {wl.num_requests:,}"
        return int(min(n, 2**62)), why  # type: ignore[arg-type]
    assert wl.rate is not None  # the schema requires a rate for renewal arrivals
    if wl.duration_s is not None:
        n = wl.rate * wl.duration_s
        why = f"workload.rate {wl.rate:g} req/s x workload.duration_s {wl.duration_s:g} s"
    if wl.num_requests is not None and (n is None or wl.num_requests < n):
        n, why = wl.num_requests, f"workload.num_requests {wl.num_requests:,}"
    return int(min(n, 2**62)), why  # type: ignore[arg-type]


def check_size(sc: Scenario) -> None:
    """Refuse a run whose request count or per-request arrays would be absurd, before allocating."""
    n, why = estimate_requests(sc)
    if n > MAX_REQUESTS:
        raise ScenarioError(f"workload: about {n:,} requests ({why}) is more than the {MAX_REQUESTS:,} a run "
                            f"allows; lower workload.rate or workload.duration_s, or set workload.num_requests")
    per_request = STREAM_BYTES_PER_REQUEST + VARIANT_BYTES_PER_REQUEST * len(sc.variants)
    need = n * per_request
    if need > MAX_ARRAY_BYTES:
        raise ScenarioError(
            f"workload: about {n:,} requests ({why}) x {len(sc.variants)} variants need ~{need / 2**30:.1f} GiB "
            f"of per-request arrays, more than the {MAX_ARRAY_BYTES // 2**30} GiB a run may use; "
            f"lower workload.rate or workload.duration_s, set workload.num_requests, or run fewer variants")


def _lengths(dist: LengthDist, n: int, rng: np.random.Generator, column: str) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if isinstance(dist, FromTrace):
        values = read_trace(dist.path, dist.layout())[column].to_numpy()
        return values[rng.integers(0, len(values), size=n)].astype(np.int64)
    if isinstance(dist, Uniform):
        return rng.integers(dist.low, dist.high + 1, size=n).astype(np.int64)
    if isinstance(dist, LogNormal):
        mu = np.log(dist.mean) - dist.sigma**2 / 2
        x = np.rint(rng.lognormal(mu, dist.sigma, size=n))
        return np.clip(x, dist.min, dist.max).astype(np.int64)
    if isinstance(dist, Geometric):
        return rng.geometric(1.0 / dist.mean, size=n).astype(np.int64)
    return np.full(n, dist.value, dtype=np.int64)  # Fixed


def _arrivals(sc: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame | None]:
    wl = sc.workload
    arr = wl.arrivals
    if isinstance(arr, ClosedArrivals):  # sent during the run: +inf until then
        assert wl.num_requests is not None  # the schema requires it for closed arrivals
        return np.full(wl.num_requests, np.inf), None
    if isinstance(arr, TraceArrivals):
        df = read_trace(arr.path, arr.layout())
        t = df["arrived_at"].to_numpy(dtype=float)
        t = t - t[0]
        if wl.rate is not None and len(t) > 1 and t[-1] > 0:
            t = (t / t[-1]) * ((len(t) - 1) / wl.rate)  # mean rate -> wl.rate (t / t[-1] stays in [0, 1])
        else:
            t = t * arr.time_scale
        keep = np.ones(len(t), dtype=bool)
        if wl.duration_s is not None:
            keep &= t < wl.duration_s
        idx = np.flatnonzero(keep)
        if wl.num_requests is not None:
            idx = idx[: wl.num_requests]
        return t[idx], df.iloc[idx]
    if wl.rate_curve is not None:  # a non-homogeneous Poisson process
        return curve_arrivals(curve_for(wl), rng, wl.duration_s, wl.num_requests), None
    # Renewal process: draw enough gaps in one go, then cut.
    n_guess = wl.num_requests or int(wl.duration_s * wl.rate * 1.2 + 10 * np.sqrt(wl.duration_s * wl.rate) + 10)
    mean_gap = 1.0 / wl.rate
    times = np.zeros(0)
    while True:
        if isinstance(arr, Gamma):
            k = 1.0 / arr.cv**2
            gaps = rng.gamma(k, mean_gap / k, size=n_guess)
        else:
            gaps = rng.exponential(mean_gap, size=n_guess)
        times = np.concatenate([times, (times[-1] if len(times) else 0.0) + np.cumsum(gaps)])
        if wl.num_requests is not None and len(times) >= wl.num_requests:
            return times[: wl.num_requests], None
        if wl.duration_s is not None and times[-1] >= wl.duration_s:
            return times[times < wl.duration_s], None


def build_workload(sc: Scenario) -> RequestStream:
    """Generate the request stream of a scenario, deterministically from its seed."""
    wl = sc.workload
    tasks = sc.model.tasks
    check_size(sc)
    t, trace_rows = _arrivals(sc, _rng(sc.seed, 1))
    n = len(t)
    if n == 0:
        raise ScenarioError("workload: the scenario produces no requests (duration_s too short for the rate?)")

    # Task model of each request: from the trace's model column (through arrivals.models), else by popularity.
    from_trace = None
    if trace_rows is not None:
        assert isinstance(wl.arrivals, TraceArrivals)  # trace rows come only from trace arrivals
        from_trace = trace_task_index(trace_rows, wl.arrivals, tasks)
    if from_trace is not None:
        model = from_trace
    else:
        rank = _rng(sc.seed, 2).choice(len(tasks), size=n, p=sc.popularity()).astype(np.int32)
        if wl.shift is not None:
            shifted = t >= wl.shift.at_s
            rank[shifted] = (rank[shifted] + wl.shift.rotate) % len(tasks)
        model = rank

    prompt = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    use_trace_lengths = trace_rows is not None and sc.workload.arrivals.use_lengths  # type: ignore[union-attr]
    if use_trace_lengths:
        prompt[:] = trace_rows["num_prefill_tokens"].to_numpy()
        output[:] = trace_rows["num_decode_tokens"].to_numpy()
    else:
        rng_p, rng_o = _rng(sc.seed, 3), _rng(sc.seed, 4)
        for i, task in enumerate(tasks):
            sel = np.flatnonzero(model == i)
            own = wl.per_model.get(task)
            pd_ = (own.prompt_tokens if own and own.prompt_tokens else None) or wl.prompt_tokens
            od_ = (own.output_tokens if own and own.output_tokens else None) or wl.output_tokens
            prompt[sel] = _lengths(pd_, len(sel), rng_p, "num_prefill_tokens")
            output[sel] = _lengths(od_, len(sel), rng_o, "num_decode_tokens")
    return RequestStream(arrival_s=np.asarray(t, dtype=float), model=model, prompt_tokens=prompt,
                         output_tokens=output, models=tuple(tasks),
                         closed=isinstance(wl.arrivals, ClosedArrivals))
