"""Per-request records and summaries: the standard serving metrics.

TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1);
E2E = finish - arrival. SLO attainment counts requests meeting both the TTFT and the TPOT
target (a request with one output token has no TPOT and is judged on TTFT alone);
unfinished requests count as misses. Only requests that arrived before the simulation
stopped count at all (a horizon cuts the stream).

Throughput measures capacity, not the drain: it counts the output tokens generated inside a
steady-state window (from ``sim.warmup_fraction`` of the arrival span to the last arrival),
the first token at its time and the decode tokens spread evenly over each request's decode;
the drain (last arrival -> last finish) is reported on its own.

Closed-loop clients (``workload.arrivals.kind: closed``) measure the window in which all N clients
are active: from ``warmup_s`` (default: the last of the clients' first requests finished, leaving
out the synchronised start) to the first client stop (the drain begins). Throughput counts the
tokens and finishes inside it; latencies and SLO attainment count the requests that arrived and
finished inside it (each saw N clients for its whole life), ``window.requests`` of them.

Per-model figures divide by the GPUs that serve the model: its own prefill GPUs and every
decode GPU of the pool that serves it (``per_model[m]["gpus"]``). A dedicated pool is the
model's alone; a shared (SUN, multi-LoRA) pool serves every model, so each model counts all
its GPUs, and its tok/s per decode GPU is its share of the pool's per-GPU throughput (the
models' figures add up to the pool's); a colocated model counts the GPUs hosting it. The GPU
counts are the layout at the start (a rebalanced pool's moves are not spread over time, an autoscaled pool counts
the GPUs it started with; ``gpu_hours``, ``peak_gpus`` and ``mean_gpus`` follow its size over time, see
:mod:`sunsim.analysis.gpu_hours`). A worker is a
tensor-parallel group of ``prefill.tp`` / the variant's ``tp`` GPUs, and every count is of GPUs (workers x tp).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunsim.analysis.dollars import fleet_cost, role_gpus
from sunsim.analysis.gpu_hours import gpu_hours_block
from sunsim.analysis.record_file import read_request_table
from sunsim.analysis.request_columns import REQUEST_COLUMNS, SUMMARY_COLUMNS, derived_columns
from sunsim.analysis.schema import FIELDS, percentile_fields
from sunsim.analysis.vllm_metrics import DEFAULT_PERCENTILES, benchmark_span, vllm_metrics
from sunsim.sim.records import COLUMNS as RECORD_COLUMNS
from sunsim.sim.tensor_parallel import gpu_counts
from sunsim.sim.variant import VariantResult
from sunsim.workload.stream import RequestStream


def request_table(res: VariantResult, columns: list[str] | None = None) -> pd.DataFrame:
    """One row per request that arrived before the run stopped, in arrival order (:data:`REQUEST_COLUMNS`, or
    ``columns`` of them); a streaming run's are read back from its file."""
    if res.records_file is not None:
        return read_request_table(res.records_file, res.end_s, columns)
    s, r = res.stream, res.records
    assert isinstance(s, RequestStream) and r is not None  # a run in memory holds its whole stream and records
    cols: dict[str, np.ndarray] = {"arrival_s": s.arrival_s, "prompt_tokens": s.prompt_tokens,
                                   "output_tokens": s.output_tokens}
    cols.update({name: getattr(r, name) for name in RECORD_COLUMNS})
    cols.update(derived_columns(cols))
    cols["request_id"] = np.arange(len(s))
    cols["model"] = np.asarray(s.models, dtype=object)[s.model]
    wanted = REQUEST_COLUMNS if columns is None else columns
    df = pd.DataFrame({c: cols[c] for c in wanted}, columns=wanted)
    return df[s.arrival_s <= res.end_s].reset_index(drop=True)


def throughput_window(arrival_s: np.ndarray, warmup_fraction: float) -> tuple[float, float]:
    """The steady-state window: warm-up (a share of the arrival span) excluded, ends at the last arrival."""
    first, last = float(arrival_s.min()), float(arrival_s.max())
    return first + warmup_fraction * (last - first), last


def tokens_in_window(df: pd.DataFrame, start: float, end: float) -> float:
    """Output tokens generated in ``[start, end]``.

    The first token counts at its time; a request's other ``output - 1`` tokens are spread
    evenly over its decode (decode start -> finish). Unfinished requests count their first token only.
    """
    first = df["first_token_s"].to_numpy(dtype=float)
    total = float(((first >= start) & (first <= end)).sum())
    ds = df["decode_start_s"].to_numpy(dtype=float)
    fin = df["finish_s"].to_numpy(dtype=float)
    output = df["output_tokens"].to_numpy()
    ok = np.isfinite(ds) & np.isfinite(fin) & (output > 1)
    ds, fin, rest = ds[ok], fin[ok], output[ok] - 1.0
    # in place where it can be: a streamed run's summary is bounded by these temporaries
    share = np.minimum(fin, end)
    share -= np.maximum(ds, start)
    np.clip(share, 0, None, out=share)  # the overlap of the decode with the window
    span = fin - ds
    del fin
    timed = span > 0
    np.divide(share, span, out=share, where=timed)
    flat = ~timed  # a decode of no duration counts whole if it starts in the window
    share[flat] = ((ds[flat] >= start) & (ds[flat] <= end))
    rest *= share
    return total + float(rest.sum())


def closed_window(res: VariantResult, df: pd.DataFrame) -> tuple[float, float, np.ndarray]:
    """A closed-loop run's window (start, end) and which rows of ``df`` it measures (see above)."""
    arrivals = res.scenario.workload.arrivals
    arrival = df["arrival_s"].to_numpy(dtype=float)
    fin = df["finish_s"].to_numpy(dtype=float)
    start = arrivals.warmup_s  # type: ignore[union-attr]  # only closed arrivals have clients
    if start is None:  # the clients' first requests: 0..N-1, all sent at time 0
        first = fin[: arrivals.concurrency]  # type: ignore[union-attr]
        start = float(np.max(first)) if np.isfinite(first).all() else res.end_s
    end = res.clients_stop_s if res.clients_stop_s is not None else res.end_s
    with np.errstate(invalid="ignore"):
        measured = (arrival >= start) & (fin <= end)
    return float(start), float(end), measured


def _stats(x: np.ndarray) -> dict[str, float | None]:
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def slo_met(ttft: np.ndarray, tpot: np.ndarray, finished: np.ndarray, slo_ttft: float, slo_tpot: float) -> np.ndarray:
    """Requests meeting both targets (a missing TPOT, from one output token, passes)."""
    return finished & (ttft <= slo_ttft) & (np.isnan(tpot) | (tpot <= slo_tpot))


def _figures(df: pd.DataFrame, window: tuple[float, float], gpus: dict[str, int], slo_ttft: float,
             slo_tpot: float, measured: np.ndarray | None = None) -> dict:
    """Counts and throughput over ``df``; latencies and SLO over its ``measured`` rows (default: all)."""
    all_finished = df["finish_s"].notna().to_numpy()
    fin = df["finish_s"].to_numpy(dtype=float)
    lat = df if measured is None else df[measured]
    finished = lat["finish_s"].notna().to_numpy()
    ttft, tpot, e2e = (lat[c].to_numpy(dtype=float) for c in ("ttft_s", "tpot_s", "e2e_s"))
    met = slo_met(ttft, tpot, finished, slo_ttft, slo_tpot)
    span = max(window[1] - window[0], 1e-12)
    tps = tokens_in_window(df, *window) / span
    return {
        "requests": {"arrived": int(len(df)), "finished": int(all_finished.sum()),
                     "unfinished": int((~all_finished).sum())},
        "throughput": {
            "requests_per_s": float(((fin >= window[0]) & (fin <= window[1])).sum() / span),
            "output_tokens_per_s": tps,
            "output_tokens_per_s_per_gpu": tps / gpus["total"] if gpus["total"] else None,
            "output_tokens_per_s_per_decode_gpu": tps / gpus["decode"] if gpus["decode"] else None,
        },
        "ttft_s": _stats(ttft),
        "tpot_s": _stats(tpot),
        "e2e_s": _stats(e2e),
        # First token -> KV in decode memory: waiting for memory, the link, and the transfer itself.
        "kv_wait_s": _stats(lat["kv_ready_s"].to_numpy(dtype=float) - lat["first_token_s"].to_numpy(dtype=float)),
        "parked_s": _stats(lat["parked_s"].to_numpy(dtype=float)),
        "preemptions": int(df["preemptions"].sum()),
        "slo": {"ttft_s": slo_ttft, "tpot_s": slo_tpot,
                "attainment": float(met.mean()) if len(met) else None,
                # Each target alone: tells which stage (prefill or decode) misses.
                "ttft_attainment": float((finished & (ttft <= slo_ttft)).mean()) if len(met) else None,
                "tpot_attainment": float((finished & (np.isnan(tpot) | (tpot <= slo_tpot))).mean())
                if len(met) else None},
    }


def model_gpus(res: VariantResult, model: str) -> dict[str, int]:
    """GPUs serving ``model``: its prefill GPUs and the decode GPUs of every pool that serves it (see above)."""
    serves = (res.decode_serves or [(pool,) for pool in res.decode_pool_of])[:res.start_decode_workers]
    prefill = sum(model in s for s in res.prefill_serves) if res.prefill_serves else res.prefill_pool_of.count(model)
    return gpu_counts(prefill, sum(model in s for s in serves), res.scenario.prefill.tp, res.variant.tp)


def summarize(res: VariantResult, df: pd.DataFrame | None = None,
              percentiles: tuple[float, ...] = DEFAULT_PERCENTILES) -> dict:
    """The ``summary.json`` of one variant; its ``vllm`` block (and each model's) holds ``vllm bench serve``'s
    metrics (:mod:`sunsim.analysis.vllm_metrics`), ``percentiles`` choosing its ``p{q}_*`` keys."""
    sc, v = res.scenario, res.variant
    df = request_table(res, SUMMARY_COLUMNS) if df is None else df
    decode_workers = len(res.decode_stats) if res.start_decode_workers is None else res.start_decode_workers
    gpus = gpu_counts(len(res.prefill_stats), decode_workers, sc.prefill.tp, v.tp)
    arrival = df["arrival_s"].to_numpy(dtype=float)
    measured = None
    if res.stream.closed:
        start, end, measured = closed_window(res, df)
        window = (start, end)
        window_info = {"start_s": window[0], "end_s": window[1], "requests": int(measured.sum()),
                       "kind": "closed"}
    else:
        window = throughput_window(arrival, sc.sim.warmup_fraction)
        window_info = {"start_s": window[0], "end_s": window[1], "warmup_fraction": sc.sim.warmup_fraction}
    last_finish = float(np.nanmax(df["finish_s"].to_numpy(dtype=float))) if df["finish_s"].notna().any() else None
    all_done = bool(df["finish_s"].notna().all())
    slo = sc.slo
    summary = {
        "scenario": sc.name,
        "variant": v.name,
        "mode": v.mode,
        "dtype": v.dtype,
        "routing": v.routing,
        "seed": sc.seed,
        "model": sc.shape.name,
        "gpu": sc.hardware.gpu,
        "prefill_gpu": role_gpus(sc, v)[0],
        "decode_gpu": role_gpus(sc, v)[1],
        "profile": res.profile.as_dict(),
        "gpus": gpus,
        "duration_s": res.end_s,
        **gpu_hours_block(res, gpus["prefill"], gpus["decode"]),
        "window": window_info,
        # Window end (last arrival; closed: first client stop) -> last finish (-> the stop, if unfinished).
        "drain_s": (last_finish if all_done and last_finish is not None else res.end_s) - window[1],
        **_figures(df, window, gpus, slo.ttft_s, slo.tpot_s, measured),
    }
    span = benchmark_span(df, res.end_s)
    summary["vllm"] = vllm_metrics(df, span, slo.ttft_s, slo.tpot_s, percentiles)
    per_model = {}
    # one model's rows at a time (a groupby's iteration would sort a copy of the whole table first)
    for name, rows in df.groupby("model", sort=False, observed=True).indices.items():
        part = df.iloc[rows]
        pm_gpus = model_gpus(res, str(name))
        own = None if measured is None else measured[rows]
        per_model[str(name)] = {"gpus": pm_gpus, **_figures(part, window, pm_gpus, slo.ttft_s, slo.tpot_s, own),
                                "vllm": vllm_metrics(part, span, slo.ttft_s, slo.tpot_s, percentiles)}
    # every GPU of the variant at its role's price, over the steady window's output tokens (see analysis/dollars)
    # (an autoscaled pool at its mean GPUs in service over the run)
    decode_held = summary["mean_gpus"] - gpus["prefill"] if res.decode_gpu_timeline else gpus["decode"]
    summary["cost"] = fleet_cost(sc, v, gpus["prefill"], decode_held,  # type: ignore[arg-type]
                                 summary["throughput"]["output_tokens_per_s"])
    summary["per_model"] = dict(sorted(per_model.items(), key=lambda kv: sc.model.tasks.index(kv[0])))
    summary["decode_workers"] = [
        {
            "worker": w.wid,
            "pool": res.decode_pool_of[w.wid],
            "busy_fraction": w.busy_s / res.end_s if res.end_s > 0 else 0.0,
            "mean_batch": w.tokens / w.iterations if w.iterations else 0.0,
            "peak_kv_fraction": w.peak_blocks / w.capacity_blocks,
            "tokens": int(w.tokens),
            "iterations": int(w.iterations),
            "preemptions": int(w.preemptions),
            "restore_s": w.restore_s,
        }
        for w in res.decode_stats
    ]
    busy = np.array([d["busy_fraction"] for d in summary["decode_workers"]])
    summary["decode_utilization"] = {
        "mean_busy_fraction": float(busy.mean()),
        "min_busy_fraction": float(busy.min()),
        "max_busy_fraction": float(busy.max()),
        "mean_batch": float(sum(w.tokens for w in res.decode_stats)
                            / max(1, sum(w.iterations for w in res.decode_stats))),
        "kv_capacity_tokens": res.kv_capacity_tokens,
        "kv_policy": sc.decode.kv_policy,
        "preemption": sc.decode.preemption,
        "preemptions": int(sum(w.preemptions for w in res.decode_stats)),
    }
    cap = res.prefill_kv_capacity_tokens
    summary["prefill_workers"] = [
        {"worker": w.wid, "busy_fraction": w.busy_s / res.end_s if res.end_s > 0 else 0.0, "batches": w.batches,
         "peak_kv_tokens": int(w.peak_held_tokens), "peak_kv_fraction": w.peak_held_tokens / cap if cap else None,
         "stalled_s": w.stalled_s}
        for w in res.prefill_stats
    ]
    summary["prefill_kv_capacity_tokens"] = cap
    if sc.prefill.shared:  # shared prefill GPUs: what each holds, and on demand its loads
        _shared_prefill(summary, res)
    summary["sim"] = {"wall_s": res.wall_s, "events": res.events,
                      "requests_per_wall_s": len(df) / res.wall_s if res.wall_s > 0 else None}
    return summary


def _shared_prefill(summary: dict, res: VariantResult) -> None:
    """Shared prefill GPUs' entries: the models each holds and, on demand, its loads (count and seconds)."""
    on_demand = res.scenario.prefill.on_demand
    for entry, w, pool in zip(summary["prefill_workers"], res.prefill_stats, res.prefill_pool_of):
        entry["models"] = pool
        if on_demand is not None:
            entry["loads"], entry["load_s"] = int(w.loads), w.load_s
    if on_demand is not None:
        summary["prefill_loads"] = {
            "resident": on_demand.resident, "load_GBps": on_demand.load_GBps,
            "loads": int(sum(w.loads for w in res.prefill_stats)),
            "load_s": float(sum(w.load_s for w in res.prefill_stats)),
            "max_load_s_per_gpu": float(max((w.load_s for w in res.prefill_stats), default=0.0)),
        }


def comparison_row(summary: dict) -> dict:
    """One flat row of the variant comparison table: the schema's summary-backed columns, in order, then a
    ``p{q}_*_ms`` column per chosen percentile the schema does not list (``sunsim run --percentiles``)."""
    row = {f.column: f.get(summary) for f in FIELDS if f.source is not None}
    for f in percentile_fields(summary.get("vllm", {}).get("percentiles", ())):
        row.setdefault(f.column, f.get(summary))
    return row
