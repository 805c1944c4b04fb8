"""The metrics of ``vllm bench serve``, with its names and units, computed from sunsim's per-request table.

A vLLM user reads a run through ``mean_ttft_ms``, ``p99_tpot_ms``, ``request_goodput`` and so on; this
module gives exactly those keys (the ``vllm`` block of ``summary.json``) with vLLM's definitions:

* Latencies are over the *completed* requests only (vLLM leaves failed requests out); in milliseconds;
  ``std`` is the population standard deviation (``np.std``), percentiles are ``np.percentile`` (linear).
  TTFT = first token - arrival, E2EL = finish - arrival, TPOT = (E2EL - TTFT) / (output tokens - 1) over the
  requests with more than one output token.
* ITL (inter-token latency) is the pooled list of gaps between consecutive tokens of every request, so a
  long request weighs more than a short one (unlike TPOT, one value per request). sunsim's records hold a
  request's first token and finish, not each decode iteration (decode advances whole runs of iterations in
  closed form), so a request's ``output - 1`` gaps are taken as its TPOT spread evenly: the gaps sum to
  E2EL - TTFT exactly, as vLLM's do, but their spread within one request (a slow first gap while the KV
  cache is transferred, say) is not seen. The pooled statistics are computed from (TPOT, count) pairs,
  never by expanding per token.
* Duration is vLLM's ``benchmark_duration``: from the first request sent (the first arrival) to the last
  response (the last finish; if the run stopped with requests unfinished, the stop). It includes warm-up
  and drain, unlike sunsim's own ``throughput`` block, which measures a steady-state window.
  ``request_throughput`` = completed / duration, ``output_throughput`` = output tokens of the completed
  requests / duration, ``request_goodput`` = completed requests meeting every SLO target / duration.
* Goodput's SLO targets are the scenario's ``slo.ttft_s`` and ``slo.tpot_s`` (vLLM's ``--goodput
  ttft:MS tpot:MS``); a one-token request has TPOT 0 for goodput, as in vLLM, so it is judged on TTFT.
* Where vLLM reports 0 for a statistic of an empty list, this reports None (JSON null): no value, not zero.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sunsim.analysis.schema import LATENCIES, percentile_word
from sunsim.errors import InputError

#: vLLM's default percentiles (``vllm bench serve --metric-percentiles 99``). All four latency metrics are
#: always reported (vLLM's ``--percentile-metrics`` defaults to ttft,tpot,itl; e2el costs nothing extra here).
DEFAULT_PERCENTILES: tuple[float, ...] = (99.0,)


def parse_percentiles(text: str, field: str = "--percentiles") -> tuple[float, ...]:
    """``"50,90,99"`` -> (50.0, 90.0, 99.0); each must be a number strictly between 0 and 100."""
    out: list[float] = []
    for part in str(text).split(","):
        try:
            q = float(part.strip())
        except ValueError:
            raise InputError(f"{field}: {part.strip()!r} is not a number; give percentiles as e.g. 50,90,99") from None
        if not 0 < q < 100:  # also refuses nan and inf
            raise InputError(f"{field}: each percentile must be between 0 and 100 (exclusive), got {part.strip()}")
        if q not in out:
            out.append(q)
    return tuple(out)


def repeated_stats(values: np.ndarray, counts: np.ndarray, percentiles: tuple[float, ...]) -> dict[str, float]:
    """Mean, median, std and percentiles of ``values`` each repeated ``counts`` times, without repeating them.

    Equal to the same statistics of ``np.repeat(values, counts)`` (numpy's linear percentile: the sorted
    list's value at index ``(N - 1) q / 100``, interpolated between neighbours), at O(requests) cost.
    """
    v, c = _by_value(values, counts)
    return _sorted_stats(v, c, np.cumsum(c), percentiles)


def _by_value(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (as floats) and their ``counts`` sorted by value (stably), zero counts dropped."""
    if not (counts > 0).all():
        keep = counts > 0
        values, counts = values[keep], counts[keep]
    order = np.argsort(values, kind="stable")
    return np.asarray(values, dtype=float)[order], np.asarray(counts, dtype=np.int64)[order]


def _sorted_stats(v: np.ndarray, c: np.ndarray | None, cum: np.ndarray | None,
                  percentiles: tuple[float, ...]) -> dict[str, float]:
    """The statistics of sorted ``v`` repeated ``c`` times (``cum``: their running total); None: once each."""
    n = len(v) if cum is None else int(cum[-1])

    def at(k: np.ndarray) -> np.ndarray:  # the k-th (0-based) element of the repeated, sorted list
        return v[k] if cum is None else v[np.searchsorted(cum, k, side="right")]

    def pct(q: float) -> float:
        h = (n - 1) * q / 100.0
        lo = math.floor(h)
        a, b = at(np.array([lo, min(lo + 1, n - 1)]))
        return float(a + (h - lo) * (b - a))

    mean = float((v if c is None else v * c).sum() / n)
    dev = (v - mean) ** 2
    out = {"mean": mean, "median": pct(50.0), "std": float(math.sqrt((dev if c is None else c * dev).sum() / n))}
    out.update({f"p{percentile_word(q)}": pct(q) for q in percentiles})
    return out


def _plain_stats(x: np.ndarray, percentiles: tuple[float, ...]) -> dict[str, float]:
    """:func:`repeated_stats` of ``x`` with every count 1, without the counts."""
    return _sorted_stats(np.sort(np.asarray(x, dtype=float)), None, None, percentiles)  # (any sort: values only)


def benchmark_span(df: pd.DataFrame, stop_s: float) -> tuple[float, float]:
    """vLLM's benchmark duration as (start, end): the first arrival to the last finish, or to ``stop_s``
    (the simulation's stop) when some request of ``df`` never finished."""
    if len(df) == 0:
        return 0.0, 0.0
    fin = df["finish_s"].to_numpy(dtype=float)
    end = float(fin.max()) if np.isfinite(fin).all() else float(stop_s)
    return float(df["arrival_s"].min()), end


def vllm_metrics(df: pd.DataFrame, span: tuple[float, float], slo_ttft_s: float, slo_tpot_s: float,
                 percentiles: tuple[float, ...] = DEFAULT_PERCENTILES) -> dict:
    """The ``vllm`` block of a summary: ``vllm bench serve``'s result keys over the requests of ``df``,
    rates per second of ``span`` (:func:`benchmark_span` of the whole run, also for one model's rows)."""
    done = np.isfinite(df["finish_s"].to_numpy(dtype=float))
    out_tok = df["output_tokens"].to_numpy()[done]  # column by column: no copy of the table
    ttft = df["ttft_s"].to_numpy(dtype=float)[done]
    e2el = df["e2e_s"].to_numpy(dtype=float)[done]
    multi = out_tok > 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_all = np.where(multi, (e2el - ttft) / np.maximum(out_tok - 1, 1), 0.0)  # vLLM's all_tpots
    duration = span[1] - span[0]
    good = int(((ttft <= slo_ttft_s) & (tpot_all <= slo_tpot_s)).sum())
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: None)
    total_out = int(out_tok.sum(dtype=np.int64))
    total_in = int(df["prompt_tokens"].to_numpy()[done].sum(dtype=np.int64))
    block: dict = {
        "duration": duration,
        "completed": int(done.sum()),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": per_s(int(done.sum())),
        "request_goodput": per_s(good),
        "output_throughput": per_s(total_out),
        "total_token_throughput": per_s(total_in + total_out),
        "percentiles": list(percentiles),
        "goodput_slo_ms": {"ttft": slo_ttft_s * 1e3, "tpot": slo_tpot_s * 1e3},
    }
    # One series at a time, each array let go when done with: a streamed run's summary is bounded by this.
    stats = {"ttft": _series(ttft, None, percentiles), "e2el": _series(e2el, None, percentiles)}
    del ttft, e2el
    tpots = tpot_all[multi]
    del tpot_all
    gaps = out_tok[multi] - 1
    del out_tok
    if len(tpots):  # one sort for both: each request's TPOT, and the same once per gap (gaps >= 1: none dropped)
        v, c = _by_value(tpots, gaps)
        stats["tpot"] = _sorted_stats(v, None, None, percentiles)
        stats["itl"] = _sorted_stats(v, c, np.cumsum(c), percentiles)
    else:
        stats["tpot"] = stats["itl"] = None
    for name in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", *(f"p{percentile_word(q)}" for q in percentiles)):
            block[f"{stat}_{name}_ms"] = None if stats[name] is None else stats[name][stat] * 1e3
    return block


def _series(x: np.ndarray, counts: np.ndarray | None, percentiles: tuple[float, ...]) -> dict[str, float] | None:
    if len(x) == 0:
        return None
    return _plain_stats(x, percentiles) if counts is None else repeated_stats(x, counts, percentiles)


def vllm_keys(percentiles: tuple[float, ...] = DEFAULT_PERCENTILES) -> list[str]:
    """The metric keys of a ``vllm`` block, in order (what ``sunsim run --json`` prints per variant)."""
    keys = ["duration", "completed", "total_input_tokens", "total_output_tokens", "request_throughput",
            "request_goodput", "output_throughput", "total_token_throughput"]
    for name in LATENCIES:
        keys += [f"{stat}_{name}_ms" for stat in ("mean", "median", "std",
                                                  *(f"p{percentile_word(q)}" for q in percentiles))]
    return keys
