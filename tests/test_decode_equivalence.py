"""The coalesced decode worker gives the same times as a plain per-iteration loop.

The reference below does one loop turn per iteration and one per request inside, with the
same rules as the worker: at each iteration boundary finished requests free their blocks,
running requests get the blocks of their next step (preempting the most recently admitted
if they do not fit), then, if nobody was preempted, waiting requests are admitted FCFS.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import GPUS
from sunsim.costs.model import AnalyticCostModel
from sunsim.sim.kv_policy import RESERVE, KVPolicy
from sunsim.sim.standalone_decode import simulate_decode_worker


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def reference_decode(cost, arrival, context, output, max_batch=None, capacity_tokens=None, block=1,
                     kv: KVPolicy = RESERVE):
    """Per-iteration continuous batching; returns (start, finish, preemptions, peak blocks)."""
    n = len(arrival)
    prompt = [int(c) - 1 for c in context]  # the cluster's convention (see simulate_decode_worker)
    out = [int(o) + 1 for o in output]
    order = sorted(range(n), key=lambda i: (arrival[i], i))
    cap_blocks = (capacity_tokens // block) if capacity_tokens else 1 << 60
    wm = int(kv.watermark * cap_blocks)
    paged = kv.policy == "paged"
    start, finish = np.full(n, np.nan), np.full(n, np.nan)
    preempt = np.zeros(n, dtype=int)
    steps_done = [0] * n
    t, nxt, seq, peak, done = 0.0, 0, 0, 0, 0
    waiting: deque[int] = deque()
    running: dict[int, list[int]] = {}  # rid -> [kv of next step, steps left, admission order]
    reserved = 0
    cap = max_batch or n
    while done < n:
        if not running and not waiting:
            t = max(t, arrival[order[nxt]])
        while nxt < n and arrival[order[nxt]] <= t:
            waiting.append(order[nxt])
            nxt += 1
        pause, preempted_now = 0.0, False
        if paged:
            need = {rid: _ceil(r[0], block) for rid, r in running.items()}
            used = sum(need.values())
            recompute, swap_tokens = [], 0
            for rid in sorted(running, key=lambda r: -running[r][2]):
                if used <= cap_blocks:
                    break
                used -= need[rid]
                kv_next = running.pop(rid)[0]
                steps_done[rid] = kv_next - prompt[rid] - 1
                waiting.appendleft(rid)
                preempt[rid] += 1
                preempted_now = True
                if kv.preemption == "swap":
                    pause += _ceil(kv_next - 1, block) * block * kv.kv_bytes_per_token / kv.swap_Bps
            while not preempted_now and waiting and len(running) < cap:
                rid = waiting[0]
                kv_next = prompt[rid] + 1 + steps_done[rid]
                b = _ceil(kv_next, block)
                if cap_blocks - used - b < wm:
                    break
                waiting.popleft()
                used += b
                seq += 1
                running[rid] = [kv_next, out[rid] - 1 - steps_done[rid], seq]
                if np.isnan(start[rid]):
                    start[rid] = t
                if preempt[rid]:
                    if kv.preemption == "recompute":
                        recompute.append(kv_next - 1)
                    else:
                        swap_tokens += _ceil(kv_next - 1, block) * block
            pause += swap_tokens * kv.kv_bytes_per_token / kv.swap_Bps
            if recompute:
                lengths = np.asarray(recompute)
                pause += cost.prefill_time(int(lengths.sum()), int(np.dot(lengths, lengths)), len(lengths))
            peak = max(peak, used)
        else:
            while waiting and len(running) < cap:
                rid = waiting[0]
                b = _ceil(prompt[rid] + out[rid], block)
                if reserved + b > cap_blocks:
                    break
                waiting.popleft()
                reserved += b
                start[rid] = t
                running[rid] = [prompt[rid] + 1, out[rid] - 1, 0, b]
            peak = max(peak, reserved)
        if not running:
            if nxt < n:
                t = max(t, arrival[order[nxt]])
            continue
        alpha, beta = cost.decode_coeffs(len(running))
        t += pause + alpha + beta * sum(r[0] for r in running.values())
        for rid in list(running):
            running[rid][0] += 1
            running[rid][1] -= 1
            if running[rid][1] == 0:
                finish[rid] = t
                if not paged:
                    reserved -= running[rid][3]
                del running[rid]
                done += 1
    return start, finish, preempt, peak


COST = {d: AnalyticCostModel(GPUS["h100"], PRESETS["llama-3.1-8b"], d) for d in ("bf16", "int4")}


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
    got = simulate_decode_worker(COST[dtype], arrival, context, output, max_batch=max_batch)
    start, finish, _, _ = reference_decode(COST[dtype], arrival, context, output, max_batch)
    np.testing.assert_allclose(got["decode_start_s"], start, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got["finish_s"], finish, rtol=1e-9, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    mean_gap=st.floats(1e-4, 0.05),
    max_out=st.integers(1, 200),
    max_batch=st.one_of(st.none(), st.integers(1, 12)),
    block=st.sampled_from([1, 4, 16]),
    slack=st.integers(0, 600),
    policy=st.sampled_from(["paged-recompute", "paged-swap", "reserve"]),
    watermark=st.sampled_from([0.0, 0.01, 0.1]),
)
def test_memory_bound_worker_matches_per_iteration(n, seed, mean_gap, max_out, max_batch, block, slack, policy,
                                                   watermark):
    """Small KV memories so that admission waits and (paged) requests get preempted."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(mean_gap, n))
    context = rng.integers(1, 300, n)
    output = rng.integers(1, max_out + 1, n)
    # Room for the largest request (with the watermark) plus some slack, in whole blocks.
    biggest = int((context + output + 1).max())
    capacity = (_ceil(biggest, block) + slack // block + 1) * block
    capacity = int(capacity / (1 - watermark)) // block * block + 2 * block
    if policy == "reserve":
        kv = RESERVE
    else:
        kv = KVPolicy(policy="paged", preemption=policy.split("-")[1], watermark=watermark,
                      kv_bytes_per_token=PRESETS["llama-3.1-8b"].kv_bytes_per_token)
    got = simulate_decode_worker(COST["bf16"], arrival, context, output, max_batch=max_batch,
                                 kv_capacity_tokens=capacity, block_tokens=block, kv=kv)
    start, finish, preempt, peak = reference_decode(COST["bf16"], arrival, context, output, max_batch, capacity,
                                                    block, kv)
    np.testing.assert_allclose(got["decode_start_s"], start, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got["finish_s"], finish, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got["preemptions"], preempt)
    assert got["peak_blocks"] <= got["capacity_blocks"]
    if kv.policy == "paged":  # (reserve admits mid-iteration, before the boundary's frees: a higher peak)
        assert got["peak_blocks"] == peak


def test_paged_preempts_under_pressure():
    """A hand-made case: two long requests in a memory for one and a half; the later one is preempted."""
    cost = COST["bf16"]
    arrival = np.array([0.0, 0.0])
    context = np.array([64, 64])
    output = np.array([100, 100])
    kv = KVPolicy(policy="paged", preemption="recompute", watermark=0.0)
    got = simulate_decode_worker(cost, arrival, context, output, kv_capacity_tokens=240, block_tokens=16, kv=kv)
    ref = reference_decode(cost, arrival, context, output, None, 240, 16, kv)
    assert got["preemptions"].tolist() == [0, 1] == ref[2].tolist()
    np.testing.assert_allclose(got["finish_s"], ref[1], rtol=1e-9)
    assert got["finish_s"][1] > got["finish_s"][0]
