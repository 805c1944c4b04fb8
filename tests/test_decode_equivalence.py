"""The coalesced decode worker gives the same times as a plain per-iteration loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sunsim.architecture import PRESETS
from sunsim.cluster import simulate_decode_worker
from sunsim.costmodel import AnalyticCostModel
from sunsim.hardware import GPUS


def reference_decode(cost, arrival, context, output, max_batch=None):
    """Straightforward continuous batching: one loop turn per iteration, one per request inside."""
    n = len(arrival)
    order = sorted(range(n), key=lambda i: (arrival[i], i))
    start = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    t, nxt = 0.0, 0
    waiting: list[int] = []
    running: dict[int, list[int]] = {}  # rid -> [kv tokens, steps left]
    cap = max_batch or n
    while nxt < n or waiting or running:
        if not running and not waiting:
            t = max(t, arrival[order[nxt]])
        while nxt < n and arrival[order[nxt]] <= t:
            waiting.append(order[nxt])
            nxt += 1
        while waiting and len(running) < cap:
            rid = waiting.pop(0)
            start[rid] = t
            running[rid] = [int(context[rid]), int(output[rid])]
        if not running:
            continue
        alpha, beta = cost.decode_coeffs(len(running))
        t += alpha + beta * sum(kv for kv, _ in running.values())
        for rid in list(running):
            running[rid][0] += 1
            running[rid][1] -= 1
            if running[rid][1] == 0:
                finish[rid] = t
                del running[rid]
    return start, finish


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    mean_gap=st.floats(1e-4, 0.2),
    max_out=st.integers(1, 300),
    max_batch=st.one_of(st.none(), st.integers(1, 8)),
    dtype=st.sampled_from(["bf16", "int4"]),
)
def test_coalesced_matches_per_iteration(n, seed, mean_gap, max_out, max_batch, dtype):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(mean_gap, n))
    context = rng.integers(1, 4000, n)
    output = rng.integers(1, max_out + 1, n)
    cost = AnalyticCostModel(GPUS["h100"], PRESETS["llama-3.1-8b"], dtype)
    got = simulate_decode_worker(cost, arrival, context, output, max_batch=max_batch)
    start, finish = reference_decode(cost, arrival, context, output, max_batch)
    np.testing.assert_allclose(got["decode_start_s"], start, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got["finish_s"], finish, rtol=1e-9, atol=1e-9)
