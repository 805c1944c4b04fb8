"""One decode worker fed directly, without prefill or transfers.

This is the simulator's decode loop on its own, as ``sunsim validate`` compares it with a real
continuous-batching loop and the tests with a per-iteration reference: whatever the cluster
adds around it (routing, prefill queues, links) is left out so that differences are the loop's.
"""

from __future__ import annotations

import numpy as np

from sunsim.costs.model import CostModel
from sunsim.sim.decode import DecodeWorker
from sunsim.sim.environment import Environment
from sunsim.sim.kv_policy import RESERVE, KVPolicy
from sunsim.sim.records import Records


def simulate_decode_worker(cost: CostModel, arrival_s: np.ndarray, context_tokens: np.ndarray,
                           output_tokens: np.ndarray, max_batch: int | None = None,
                           kv_capacity_tokens: int = 1 << 62, block_tokens: int = 1,
                           kv: KVPolicy = RESERVE) -> dict[str, np.ndarray]:
    """One decode worker fed directly (no prefill, no transfer); unbounded memory by default.

    A request with context ``c`` reads ``c + j`` KV tokens at its ``j``-th step and leaves after
    ``output_tokens`` steps. Used to compare the simulator with a real decode loop and with a
    per-iteration reference.
    """
    n = len(arrival_s)
    env = Environment()
    rec = Records(n)
    # The cluster's convention: prompt p gives context p + 1 at the first step and the first
    # output token comes from prefill, so map (c, o) -> (p = c - 1, o + 1).
    prompt = np.asarray(context_tokens, dtype=np.int64) - 1
    output = np.asarray(output_tokens, dtype=np.int64) + 1
    worker = DecodeWorker(env, 0, cost, kv_capacity_tokens=kv_capacity_tokens, block_tokens=block_tokens,
                          max_batch=max_batch, prompt=prompt, output=output, rec=rec,
                          start_transfer=lambda _rid, _w, at: at, kv=kv)  # KV there at once
    order = np.argsort(arrival_s, kind="stable")

    def arrivals():
        for rid in order:
            yield env.timeout(max(0.0, float(arrival_s[rid]) - env.now))
            worker.submit(int(rid))

    env.process(arrivals())
    env.run()
    return {"decode_start_s": rec.decode_start_s, "finish_s": rec.finish_s, "preemptions": rec.preemptions,
            "peak_blocks": worker.peak_blocks, "capacity_blocks": worker.capacity_blocks}
