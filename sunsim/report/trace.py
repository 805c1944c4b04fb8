"""Chrome/Perfetto trace of a run: prefill batches, KV transfers and decode runs per worker.

Open the JSON in https://ui.perfetto.dev or chrome://tracing. Every slice is taken from what the
simulation recorded:

- a prefill batch runs from its requests' ``prefill_start_s`` to their ``first_token_s``;
- a KV transfer is requested when the decode worker admits the request (``decode_admit_s``), waits
  for its link (the interconnect's FIFO per link, replayed in admission order) and lasts the
  interconnect's own ``duration(prompt_tokens)``: the prompt's KV moves, the first output token's KV
  is computed by the first decode step; where a LoRA adapter was still loading, the wait from the
  transfer's end to ``kv_ready_s`` is its own slice;
- a decode run is a stretch of iterations with a fixed batch, from the worker's timeline.

Slices that overlap in time (transfers over a contention-free interconnect, adapter waits) never
share a track: each goes to the first lane of its worker that is free when it starts, and a worker
has as many lanes as it needs, so every track holds one slice at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sunsim.analysis.runner import ScenarioRun
from sunsim.output import check_owned_file, record_file, write_text
from sunsim.sim.stats import InterconnectStats

US = 1e6
#: Timestamps are written in microseconds rounded to the nanosecond: a slice ending where the next one
#: starts then ends at exactly that timestamp.
DIGITS = 3


@dataclass
class Slice:
    start_s: float
    end_s: float
    name: str
    args: dict = field(default_factory=dict)


def _us(t: float) -> float:
    return round(float(t) * US, DIGITS)


def prefill_slices(df: pd.DataFrame) -> dict[int, list[Slice]]:
    """Per prefill worker: its batches (the requests that started together on it), finished ones only."""
    done = df[df["prefill_start_s"].notna() & df["first_token_s"].notna()]
    out: dict[int, list[Slice]] = {}
    for (wid, start), b in done.groupby(["prefill_worker", "prefill_start_s"], sort=True):
        n, tokens = len(b), int(b["prompt_tokens"].sum())
        out.setdefault(int(wid), []).append(Slice(
            float(start), float(b["first_token_s"].iloc[0]),
            f"prefill batch ({n} req{'s' if n != 1 else ''}, {tokens} tokens)",
            {"requests": n, "tokens": tokens, "request_ids": [int(r) for r in b["request_id"]]}))
    return out


def transfer_slices(df: pd.DataFrame, link: InterconnectStats) -> tuple[dict[int, list[Slice]], dict[int, list[Slice]]]:
    """Per decode worker: the KV transfers into it, and the adapter waits after them (when any).

    The interconnect starts a transfer when the link is free (``max(request, link free)``) and frees
    the link at its end; replaying that in the order the transfers were requested gives each one's
    start and end. A transfer that ended when its KV became ready needs no wait slice.
    """
    moved = df[df["decode_admit_s"].notna() & (df["decode_worker"] >= 0)]
    moved = moved.sort_values(["decode_admit_s", "kv_ready_s", "request_id"], na_position="last", kind="stable")
    free: dict[object, float] = {}
    kv: dict[int, list[Slice]] = {}
    waits: dict[int, list[Slice]] = {}
    for rid, src, dst, asked, ready, tokens in moved[
            ["request_id", "prefill_worker", "decode_worker", "decode_admit_s", "kv_ready_s", "prompt_tokens"]
    ].itertuples(index=False):
        dur = link.duration(int(tokens))
        if link.contention == "none":
            start = float(asked)
        else:
            key = int(dst) if link.contention == "per_decode_worker" else (int(src), int(dst))
            start = max(float(asked), free.get(key, 0.0))
        end = start + dur
        if link.contention != "none":
            free[key] = end
        if np.isnan(ready):
            continue  # still moving when the run stopped
        kv.setdefault(int(dst), []).append(Slice(start, end, f"KV r{int(rid)} ({int(tokens)} tokens)",
                                                  {"request": int(rid), "tokens": int(tokens),
                                                   "from_prefill": int(src)}))
        if _us(ready) > _us(end):
            waits.setdefault(int(dst), []).append(Slice(end, float(ready), f"adapter load wait r{int(rid)}",
                                                        {"request": int(rid)}))
    return kv, waits


def decode_slices(timeline: Iterable[tuple[float, int, int]], end_s: float) -> list[Slice]:
    """Stretches of a decode worker's iterations with a fixed batch."""
    tl = list(timeline or [])
    out = []
    for (t0, batch, kv), (t1, _, _) in zip(tl, tl[1:] + [(end_s, 0, 0)]):
        if batch > 0 and t1 > t0:
            out.append(Slice(float(t0), float(t1), f"decode batch of {int(batch)}",
                             {"batch": int(batch), "kv_tokens": int(kv)}))
    return out


def lanes(slices: list[Slice]) -> list[list[Slice]]:
    """Slices spread over as few lanes as a greedy pass needs: each to the first lane free at its start."""
    out: list[list[Slice]] = []
    ends: list[float] = []
    for s in sorted(slices, key=lambda s: (_us(s.start_s), _us(s.end_s))):
        start = _us(s.start_s)
        for i, end in enumerate(ends):
            if end <= start:
                out[i].append(s)
                ends[i] = _us(s.end_s)
                break
        else:
            out.append([s])
            ends.append(_us(s.end_s))
    return out


class _Tracks:
    """Threads of one process (variant), numbered in the order they are made and shown in that order."""

    def __init__(self, pid: int, events: list[dict]) -> None:
        self.pid, self.events, self.next_tid = pid, events, 0

    def add(self, name: str, slices: list[Slice]) -> None:
        """The slices on one or more tracks named ``name`` (``name · lane k`` beyond the first)."""
        for k, lane in enumerate(lanes(slices) or [[]]):
            tid = self.next_tid
            self.next_tid += 1
            label = name if k == 0 else f"{name} · lane {k + 1}"
            self.events.append({"ph": "M", "name": "thread_name", "pid": self.pid, "tid": tid, "args": {"name": label}})
            self.events.append({"ph": "M", "name": "thread_sort_index", "pid": self.pid, "tid": tid,
                                "args": {"sort_index": tid}})
            for s in lane:
                ts = _us(s.start_s)
                self.events.append({"ph": "X", "name": s.name, "pid": self.pid, "tid": tid, "ts": ts,
                                    "dur": round(_us(s.end_s) - ts, DIGITS), "args": s.args})


def chrome_trace_events(run: ScenarioRun) -> list[dict]:
    events: list[dict] = []
    for pid, (res, df) in enumerate(zip(run.results, run.tables)):
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"variant {res.variant.name}"}})
        tracks = _Tracks(pid, events)
        prefill = prefill_slices(df)
        pools = getattr(res, "prefill_pool_of", None) or []
        for w in res.prefill_stats:
            pool = f" ({pools[w.wid]})" if w.wid < len(pools) else ""
            tracks.add(f"prefill {w.wid}{pool}", prefill.get(w.wid, []))
        kv, waits = transfer_slices(df, res.interconnect_stats)
        for w in res.decode_stats:
            tracks.add(f"decode {w.wid} ({res.decode_pool_of[w.wid]})", decode_slices(w.timeline, res.end_s))
            tracks.add(f"KV in -> decode {w.wid}", kv.get(w.wid, []))
            if waits.get(w.wid):
                tracks.add(f"adapter wait, decode {w.wid}", waits[w.wid])
    return events


def write_chrome_trace(run: ScenarioRun, path: Path) -> Path:
    """Write the trace atomically; ``path`` must be new or a trace ``sunsim run`` wrote (never a device)."""
    path = check_owned_file(Path(path), "run", "--trace-out")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"traceEvents": chrome_trace_events(run), "displayTimeUnit": "ms"}))
    record_file(path, "run")
    return path
