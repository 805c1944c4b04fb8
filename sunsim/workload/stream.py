"""The request stream: arrival times, task model and lengths of every request, as arrays.

It is generated once per scenario and replayed unchanged by every variant, so that
the variants are compared on the same requests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

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
from sunsim.workload.rate_curve import curve_for
from sunsim.workload.trace_file import MAX_TRACE_BYTES, MAX_TRACE_TIME_S, TRACE_COLUMNS, read_trace, trace_task_index

# read_trace and the trace bounds live in trace_file; they stay importable from here, where callers found them.
__all__ = ["RequestSource", "RequestStream", "StreamFacts", "StreamedRequests", "build_workload", "workload_chunks", "check_size", "estimate_requests", "read_trace",
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
#: A streaming run's summary reads 13 of the request table's columns back (~100 B per request) and its
#: figures take temporaries of about as much again.
SUMMARY_BYTES_PER_REQUEST = 200


#: Requests per block of the stream: generated arrivals are drawn in blocks of this many candidates, each from
#: its own seeded generators, and a run admits them block by block.
BLOCK = 1 << 16


@dataclass(frozen=True)
class StreamFacts:
    """The few figures of a whole stream that a run's layout is checked against up front."""

    n: int
    first_arrival_s: float  # closed: +inf (sent by the run)
    last_arrival_s: float
    busy_models: frozenset[int]  # task models with at least one request
    worst: tuple[int, int, int]  # (request, prompt, output) of the request with the most tokens (the first such)
    longest_prompt: int
    mean_prompt: float

    @staticmethod
    def of(chunks: Iterable[RequestStream]) -> StreamFacts:
        n, first, last, busy, worst, longest, prompt_sum = 0, np.inf, -np.inf, set(), (0, 0, 0), 0, 0
        for c in chunks:
            if not len(c):
                continue
            first, last = min(first, float(c.arrival_s[0])), max(last, float(c.arrival_s[-1]))
            busy.update(np.unique(c.model).tolist())
            total = c.prompt_tokens + c.output_tokens
            i = int(np.argmax(total))
            if n == 0 or total[i] > worst[1] + worst[2]:
                worst = (c.start + i, int(c.prompt_tokens[i]), int(c.output_tokens[i]))
            longest = max(longest, int(c.prompt_tokens.max()))
            prompt_sum += int(c.prompt_tokens.sum())
            n += len(c)
        return StreamFacts(n, first, last, frozenset(busy), worst, longest, prompt_sum / n if n else 0.0)


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
    start: int = 0  # index of the first request (a block of a longer stream)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def chunks(self) -> Iterator[RequestStream]:
        """The stream in blocks of :data:`BLOCK` requests, as a run reads it."""
        for lo in range(0, len(self), BLOCK):
            hi = lo + BLOCK
            yield RequestStream(self.arrival_s[lo:hi], self.model[lo:hi], self.prompt_tokens[lo:hi],
                                self.output_tokens[lo:hi], self.models, self.closed, self.start + lo)

    @cached_property
    def facts(self) -> StreamFacts:
        """What a layout is checked against before a run (lengths, busy models, the arrival span)."""
        return StreamFacts.of(self.chunks())


class RequestSource(Protocol):
    """A run's requests, block by block: a whole :class:`RequestStream`, or :class:`StreamedRequests`."""

    closed: bool
    models: tuple[str, ...]

    @property
    def facts(self) -> StreamFacts: ...

    def __len__(self) -> int: ...

    def chunks(self) -> Iterator[RequestStream]: ...


def _rng(seed: int, stream: int, block: int) -> np.random.Generator:
    # Independent streams: changing how lengths are drawn never moves the arrivals; one per block.
    return np.random.default_rng(np.random.SeedSequence([seed, stream, block]))


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


def check_size(sc: Scenario, streaming: bool = False) -> None:
    """Refuse a run whose request count or per-request arrays would be absurd, before allocating.

    A run in memory holds every request's arrays; a streaming one only the requests in flight, but its exact
    summary reads :data:`SUMMARY_BYTES_PER_REQUEST` per request of one variant back (its disk is checked
    where it writes, :func:`sunsim.analysis.runner.stream_scenario`)."""
    n, why = estimate_requests(sc)
    if n > MAX_REQUESTS:
        raise ScenarioError(f"workload: about {n:,} requests ({why}) is more than the {MAX_REQUESTS:,} a run "
                            f"allows; lower workload.rate or workload.duration_s, or set workload.num_requests")
    if streaming:
        need, limit = n * SUMMARY_BYTES_PER_REQUEST, summary_memory_limit()
        if need > limit:
            raise ScenarioError(
                f"workload: about {n:,} requests ({why}): the exact summary of a streaming run reads "
                f"~{need / 2**30:.1f} GiB of latencies back per variant, more than half this machine's memory "
                f"({limit / 2**30:.1f} GiB); lower workload.rate or workload.duration_s, or set workload.num_requests")
        return
    per_request = STREAM_BYTES_PER_REQUEST + VARIANT_BYTES_PER_REQUEST * len(sc.variants)
    need = n * per_request
    if need > MAX_ARRAY_BYTES:
        raise ScenarioError(
            f"workload: about {n:,} requests ({why}) x {len(sc.variants)} variants need ~{need / 2**30:.1f} GiB "
            f"of per-request arrays, more than the {MAX_ARRAY_BYTES // 2**30} GiB a run may use; stream the run "
            f"(sunsim run --stream: memory follows the requests in flight), lower workload.rate or "
            f"workload.duration_s, set workload.num_requests, or run fewer variants")


def summary_memory_limit() -> int:
    """Half the machine's physical memory (8 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return MAX_ARRAY_BYTES


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


def _trace_arrivals(sc: Scenario) -> tuple[np.ndarray, pd.DataFrame]:
    """A trace's arrival times (shifted to start at 0, rescaled to ``workload.rate`` or by ``time_scale``), and the
    rows they come from, cut to ``duration_s`` and ``num_requests``."""
    wl = sc.workload
    arr = wl.arrivals
    assert isinstance(arr, TraceArrivals)  # only called for trace arrivals
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


def _arrival_blocks(sc: Scenario) -> Iterator[tuple[np.ndarray, pd.DataFrame | None]]:
    """Arrival times block by block (with their trace rows, for trace arrivals).

    Generated arrivals come from fixed blocks of :data:`BLOCK` candidates, block ``k`` from its own
    generator, so the times never depend on how many blocks a consumer takes at once.
    """
    wl = sc.workload
    arr = wl.arrivals
    if isinstance(arr, ClosedArrivals):  # sent during the run: +inf until then
        assert wl.num_requests is not None  # the schema requires it for closed arrivals
        for lo in range(0, wl.num_requests, BLOCK):
            yield np.full(min(BLOCK, wl.num_requests - lo), np.inf), None
        return
    if isinstance(arr, TraceArrivals):
        t, rows = _trace_arrivals(sc)
        for lo in range(0, len(t), BLOCK):
            yield t[lo:lo + BLOCK], rows.iloc[lo:lo + BLOCK]
        return
    curve = curve_for(wl) if wl.rate_curve is not None else None
    limit_n, limit_t = wl.num_requests, wl.duration_s
    t0, have, k = 0.0, 0, 0
    while True:
        rng = _rng(sc.seed, 1, k)
        k += 1
        if curve is not None:  # a non-homogeneous Poisson process, by thinning candidates at the peak rate
            cand = t0 + np.cumsum(rng.exponential(1.0 / curve.peak, size=BLOCK))
            times = cand[rng.random(BLOCK) * curve.peak < curve.rate(cand)]
            t0 = float(cand[-1])
        else:  # a renewal process
            assert wl.rate is not None  # the schema requires a rate for renewal arrivals
            mean_gap = 1.0 / wl.rate
            if isinstance(arr, Gamma):
                shape = 1.0 / arr.cv**2
                gaps = rng.gamma(shape, mean_gap / shape, size=BLOCK)
            else:
                gaps = rng.exponential(mean_gap, size=BLOCK)
            times = t0 + np.cumsum(gaps)
            t0 = float(times[-1])
        if limit_t is not None:
            times = times[times < limit_t]
        if limit_n is not None:
            times = times[: limit_n - have]
        have += len(times)
        if len(times):
            yield times, None
        if (limit_n is not None and have >= limit_n) or (limit_t is not None and t0 >= limit_t):
            return


def _chunk(sc: Scenario, k: int, start: int, t: np.ndarray, trace_rows: pd.DataFrame | None) -> RequestStream:
    """Block ``k`` of the stream (requests ``start`` onwards): task models and lengths drawn from its own generators."""
    wl = sc.workload
    tasks = sc.model.tasks
    n = len(t)
    # Task model of each request: from the trace's model column (through arrivals.models), else by popularity.
    from_trace = None
    if trace_rows is not None:
        assert isinstance(wl.arrivals, TraceArrivals)  # trace rows come only from trace arrivals
        from_trace = trace_task_index(trace_rows, wl.arrivals, tasks)
    if from_trace is not None:
        model = from_trace
    else:
        rank = _rng(sc.seed, 2, k).choice(len(tasks), size=n, p=sc.popularity()).astype(np.int32)
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
        rng_p, rng_o = _rng(sc.seed, 3, k), _rng(sc.seed, 4, k)
        for i, task in enumerate(tasks):
            sel = np.flatnonzero(model == i)
            if not len(sel):
                continue
            own = wl.per_model.get(task)
            pd_ = (own.prompt_tokens if own and own.prompt_tokens else None) or wl.prompt_tokens
            od_ = (own.output_tokens if own and own.output_tokens else None) or wl.output_tokens
            prompt[sel] = _lengths(pd_, len(sel), rng_p, "num_prefill_tokens")
            output[sel] = _lengths(od_, len(sel), rng_o, "num_decode_tokens")
    return RequestStream(arrival_s=np.asarray(t, dtype=float), model=model, prompt_tokens=prompt,
                         output_tokens=output, models=tuple(tasks),
                         closed=isinstance(wl.arrivals, ClosedArrivals), start=start)


def workload_chunks(sc: Scenario) -> Iterator[RequestStream]:
    """The request stream of a scenario block by block (each a :class:`RequestStream` whose ``start`` is the
    index of its first request): what a streaming run reads, never holding more than a block."""
    start = 0
    for k, (t, rows) in enumerate(_arrival_blocks(sc)):
        yield _chunk(sc, k, start, t, rows)
        start += len(t)


def build_workload(sc: Scenario) -> RequestStream:
    """Generate the request stream of a scenario, deterministically from its seed (the blocks of
    :func:`workload_chunks`, joined)."""
    check_size(sc)
    chunks = list(workload_chunks(sc))
    if not chunks:
        raise ScenarioError("workload: the scenario produces no requests (duration_s too short for the rate?)")
    if len(chunks) == 1:
        return chunks[0]
    return RequestStream(
        arrival_s=np.concatenate([c.arrival_s for c in chunks]), model=np.concatenate([c.model for c in chunks]),
        prompt_tokens=np.concatenate([c.prompt_tokens for c in chunks]),
        output_tokens=np.concatenate([c.output_tokens for c in chunks]), models=chunks[0].models,
        closed=chunks[0].closed)


class StreamedRequests:
    """A scenario's request stream read block by block, generated anew each time a run reads it: what a
    streaming run uses, so that memory follows the requests in flight and not the run's total.

    The blocks are those of :func:`workload_chunks`, so a run on this gives the same requests, in the same
    order, as one on :func:`build_workload`'s whole arrays. One pass up front takes its :class:`StreamFacts`.
    """

    def __init__(self, sc: Scenario) -> None:
        check_size(sc, streaming=True)
        self._sc = sc
        self.models = tuple(sc.model.tasks)
        self.closed = isinstance(sc.workload.arrivals, ClosedArrivals)
        self.facts = StreamFacts.of(self.chunks())
        if self.facts.n == 0:
            raise ScenarioError("workload: the scenario produces no requests (duration_s too short for the rate?)")

    def __len__(self) -> int:
        return self.facts.n

    def chunks(self) -> Iterator[RequestStream]:
        return workload_chunks(self._sc)
