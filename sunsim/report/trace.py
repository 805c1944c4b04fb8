"""Chrome/Perfetto trace of a run: prefill batches, KV transfers and decode runs per worker.

Open the JSON in https://ui.perfetto.dev or chrome://tracing. Prefill batches and
transfers are recovered from the per-request records; decode runs (stretches of
iterations with a fixed batch) come from the workers' timelines.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sunsim.analysis.runner import ScenarioRun
from sunsim.output import check_owned_file, record_file, write_text

US = 1e6


def chrome_trace_events(run: ScenarioRun) -> list[dict]:
    events: list[dict] = []
    for pid, (res, df) in enumerate(zip(run.results, run.tables)):
        name = res.variant.name
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"variant {name}"}})
        # Threads: prefill workers 0.., decode workers 1000.., links 2000..
        for w in res.prefill_stats:
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": w.wid,
                           "args": {"name": f"prefill {w.wid}"}})
        for w in res.decode_stats:
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": 1000 + w.wid,
                           "args": {"name": f"decode {w.wid} ({res.decode_pool_of[w.wid]})"}})
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": 2000 + w.wid,
                           "args": {"name": f"KV in -> decode {w.wid}"}})
        started = df[df["prefill_start_s"].notna() & df["first_token_s"].notna()]
        batches = started.groupby(["prefill_worker", "prefill_start_s"], sort=True).agg(
            end=("first_token_s", "first"), n=("request_id", "size"), tokens=("prompt_tokens", "sum"))
        for (wid, start), b in batches.iterrows():
            events.append({"ph": "X", "name": f"prefill x{b.n}", "pid": pid, "tid": int(wid),
                           "ts": start * US, "dur": (b.end - start) * US,
                           "args": {"requests": int(b.n), "tokens": int(b.tokens)}})
        moved = df[df["kv_ready_s"].notna()]
        dur = np.array([res.interconnect_stats.duration(int(p) + 1) for p in moved["prompt_tokens"]])
        for (rid, wid, end), d in zip(moved[["request_id", "decode_worker", "kv_ready_s"]].itertuples(index=False),
                                      dur):
            events.append({"ph": "X", "name": f"KV r{rid}", "pid": pid, "tid": 2000 + int(wid),
                           "ts": (end - d) * US, "dur": d * US})
        for w in res.decode_stats:
            tl = w.timeline or []
            for (t0, batch, kv), (t1, _, _) in zip(tl, tl[1:] + [(res.end_s, 0, 0)]):
                if batch > 0 and t1 > t0:
                    events.append({"ph": "X", "name": f"decode B={batch}", "pid": pid, "tid": 1000 + w.wid,
                                   "ts": t0 * US, "dur": (t1 - t0) * US, "args": {"batch": batch, "kv_tokens": kv}})
    return events


def write_chrome_trace(run: ScenarioRun, path: Path) -> Path:
    """Write the trace atomically; ``path`` must be new or a trace ``sunsim run`` wrote (never a device)."""
    path = check_owned_file(Path(path), "run", "--trace-out")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"traceEvents": chrome_trace_events(run), "displayTimeUnit": "ms"}))
    record_file(path, "run")
    return path
