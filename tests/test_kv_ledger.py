"""The KV block ledger on its own, against the same account kept the slow way.

:class:`KVBlockLedger` answers in bisections what a direct count answers by listing every
request and stepping every iteration: the batch's blocks, the blocks it gains, the first
iteration at which it outgrows the GPU, and the peak. Random sequences of holds, releases,
joins, leaves, settles and runs (seeded, and drawn by hypothesis so that a failure shrinks to
a short sequence) are replayed on both, and every answer is compared after every operation.
(tests/test_paged_bookkeeping.py checks the same ledger inside a decode worker.)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import GPUS
from sunsim.costs.model import AnalyticCostModel
from sunsim.sim.decode import DecodeWorker
from sunsim.sim.environment import Environment
from sunsim.sim.kv_ledger import KVBlockLedger
from sunsim.sim.kv_policy import KVPolicy
from sunsim.sim.records import Records


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Scratch:
    """The account kept the slow way: every holder listed, every iteration stepped."""

    block: int
    capacity: int
    it: int = 0
    fixed: list[int] = field(default_factory=list)  # blocks of each reservation (never joins)
    pending: list[int] = field(default_factory=list)  # KV the first step of each admitted request reads
    running: list[int] = field(default_factory=list)  # off of each running request: step j reads off + j
    used: int = 0
    peak: int = 0

    def held(self) -> int:
        return sum(self.fixed) + sum(_ceil(kv, self.block) for kv in self.pending)

    def batch_at(self, it: int) -> int:
        return sum(_ceil(off + it, self.block) for off in self.running)

    def first_overflow(self) -> int:
        j, held = 1, self.held()
        while held + self.batch_at(self.it + j) <= self.capacity:
            j += 1
        return j


def check(ledger: KVBlockLedger, ref: Scratch) -> None:
    assert ledger.it == ref.it
    assert ledger.held == ref.held()
    assert ledger.batch == ref.batch_at(ref.it)
    assert ledger.phases == tuple(sorted((off - 1) % ref.block for off in ref.running))
    assert ledger.running == len(ref.running)
    assert (ledger.used, ledger.peak) == (ref.used, ref.peak)


def replay(block: int, capacity: int, steps: int, draw: Callable[[int, int], int], seen: Counter) -> None:
    """Apply ``steps`` random operations to a ledger and to a :class:`Scratch`; ``draw(lo, hi)`` picks in [lo, hi]."""
    ledger, ref = KVBlockLedger(block, capacity), Scratch(block, capacity)
    for _ in range(steps):
        op = ("hold", "reserve", "release", "join", "leave", "settle", "run", "run")[draw(0, 7)]
        if op == "hold":  # an admission: held until it joins
            kv = draw(1, 6 * block + 20)
            if ref.used + _ceil(kv, block) <= capacity:
                ledger.hold(_ceil(kv, block))
                ref.pending.append(kv)
                ref.used += _ceil(kv, block)
        elif op == "reserve":  # held for good (the reserve policy)
            blocks = draw(0, 5)
            if ref.used + blocks <= capacity:
                ledger.hold(blocks)
                ref.fixed.append(blocks)
                ref.used += blocks
        elif op == "release" and ref.fixed:
            blocks = ref.fixed.pop(draw(0, len(ref.fixed) - 1))
            ledger.release(blocks)
            ref.used -= blocks
        elif op == "join" and ref.pending:
            off = ref.pending.pop(draw(0, len(ref.pending) - 1)) - ref.it
            ledger.join(off)
            ref.running.append(off)
        elif op == "leave" and ref.running:
            ledger.leave(ref.running.pop(draw(0, len(ref.running) - 1)))
        elif op == "settle":
            settle(ledger, ref)
        elif op == "run":
            # A boundary as a decode worker makes one: settle, preempting until the step fits.
            while settle(ledger, ref) > 0:
                ledger.leave(ref.running.pop(draw(0, len(ref.running) - 1)))
            check(ledger, ref)
            run(ledger, ref, draw, seen)
        ref.peak = max(ref.peak, ref.used)
        check(ledger, ref)


def settle(ledger: KVBlockLedger, ref: Scratch) -> int:
    need = ref.held() + ref.batch_at(ref.it)
    over = ledger.settle()
    assert over == need - ref.capacity
    if over <= 0:
        ref.used = need
        ref.peak = max(ref.peak, need)
    return over


def run(ledger: KVBlockLedger, ref: Scratch, draw: Callable[[int, int], int], seen: Counter) -> None:
    """From a settled boundary: check the run's answers, then advance up to the first overflow."""
    block, now = ref.block, ref.batch_at(ref.it)
    if not ref.running:
        n = draw(1, 3 * block)
    else:
        for j in range(3 * block + 2):
            assert ledger.growth(j) == ref.batch_at(ref.it + j) - now, j
        first = ref.first_overflow()
        assert ledger.first_overflow() == first
        for j in (1, block, first - 1, first, 2 * first):
            if not ledger.may_overflow(j):  # the bound is sound: no overflow within j iterations
                assert first > j
            seen["may overflow" if ledger.may_overflow(j) else "cannot overflow"] += 1
        n = draw(1, first)
    held = ref.held()
    per_step = max(held + ref.batch_at(ref.it + k) for k in range(n))  # every step of the run, one by one
    if ref.running:
        seen["peak counted" if ref.used + len(ref.running) * _ceil(n - 1, block) > ref.peak
             else "peak count skipped"] += 1
    ledger.advance(n)
    ref.peak = max(ref.peak, per_step)
    ref.it += n


@pytest.mark.parametrize("block", [1, 2, 7, 16])
def test_ledger_matches_a_count_from_scratch(block):
    seen: Counter = Counter()
    for seed in range(12):
        rng = np.random.default_rng([block, seed])
        capacity = int(rng.integers(1, 120))
        replay(block, capacity, 400, lambda lo, hi, rng=rng: int(rng.integers(lo, hi + 1)), seen)
    # The shortcuts were taken both ways, and checked.
    for outcome in ("may overflow", "cannot overflow", "peak counted", "peak count skipped"):
        assert seen[outcome] > 0, outcome


@settings(max_examples=150, deadline=None)
@given(block=st.integers(1, 20), capacity=st.integers(1, 80), steps=st.integers(1, 60), data=st.data())
def test_ledger_matches_a_count_from_scratch_on_drawn_sequences(block, capacity, steps, data):
    replay(block, capacity, steps, lambda lo, hi: data.draw(st.integers(lo, hi)), Counter())


def test_a_worked_example():
    """Blocks of 4, two requests reading 1 and 3 tokens at iteration 0, room for 4 blocks."""
    ledger = KVBlockLedger(block=4, capacity=4)
    for off in (1, 3):
        ledger.hold(1)
        ledger.join(off)
    assert (ledger.held, ledger.batch, ledger.phases) == (0, 2, (0, 2))
    assert ledger.settle() == -2 and ledger.used == 2
    # The second crosses into its 2nd block at j = 2 (3 + 2 = 5 tokens), the first at j = 4,
    # the second into its 3rd at j = 6: the 5th block is needed then.
    assert [ledger.growth(j) for j in range(9)] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert ledger.first_overflow() == 6
    assert not ledger.may_overflow(4) and ledger.may_overflow(5)
    ledger.advance(6)  # steps 0..5 ran (4 blocks at most); step 6 needs 5
    assert (ledger.it, ledger.peak, ledger.batch) == (6, 4, 5)
    assert ledger.settle() == 1 and ledger.used == 2  # short by one: not allocated
    ledger.leave(3)  # preempt the second (3 blocks at 9 tokens)
    assert ledger.settle() == -2 and (ledger.used, ledger.phases) == (2, (0,))
    # Rotated by it = 6, the remaining request (now reading 7 tokens) crosses at j = 2.
    assert ledger.growth(1) == 0 and ledger.growth(2) == 1 and ledger.first_overflow() == 10


def test_reserve_policy_holds_and_releases():
    ledger = KVBlockLedger(block=16, capacity=10)
    ledger.hold(4)
    ledger.hold(5)
    ledger.release(4)
    ledger.hold(2)
    assert (ledger.used, ledger.held, ledger.peak, ledger.batch, ledger.running) == (7, 7, 9, 0, 0)


def _worker_run(output_tokens: np.ndarray, block: int, preemption: str) -> DecodeWorker:
    """Feed one paged decode worker directly (as :func:`simulate_decode_worker`) and keep it."""
    cost = AnalyticCostModel(GPUS["h100"], PRESETS["llama-3.1-8b"], "bf16")
    rng = np.random.default_rng(len(output_tokens))
    n = len(output_tokens)
    arrival, context = np.cumsum(rng.exponential(0.003, n)), rng.integers(1, 200, n)
    env, rec = Environment(), Records(n)
    kv = KVPolicy(policy="paged", preemption=preemption, kv_bytes_per_token=PRESETS["llama-3.1-8b"].kv_bytes_per_token)
    capacity = (_ceil(int((context + output_tokens + 1).max()), block) + 6) * block
    w = DecodeWorker(env, 0, cost, capacity, block, 8, context - 1, output_tokens + 1, rec,
                     lambda _rid, _w, at: at, kv=kv)  # KV there at once

    def arrivals():
        for rid in range(n):
            yield env.timeout(max(0.0, float(arrival[rid]) - env.now))
            w.submit(rid)

    env.process(arrivals())
    env.run()
    assert not np.isnan(rec.finish_s).any()
    return w


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_a_drained_worker_leaves_the_ledger_empty(preemption):
    """Every block comes back, including those of requests with no decode step at all (their first
    and only token from prefill), which join and leave at the same boundary."""
    outputs = np.random.default_rng(3).integers(1, 120, 80)
    outputs[::9] = 0
    w = _worker_run(outputs, 7, preemption)
    assert w.preemptions > 0
    led = w.ledger
    assert (led.used, led.held, led.batch, led.running) == (0, 0, 0, 0)
    assert 0 < led.peak <= led.capacity


@pytest.mark.parametrize("policy", ["paged", "reserve"])
def test_kv_load_is_the_kv_held_now_never_the_future_output(policy):
    """What a router reads: the prompts of requests not yet running, then the batch's KV growing by one
    token per request per iteration; two requests alike but for their (unknown) output length weigh the same."""
    cost = AnalyticCostModel(GPUS["h100"], PRESETS["llama-3.1-8b"], "bf16")
    env, rec = Environment(), Records(2)
    kv = KVPolicy(policy=policy, kv_bytes_per_token=PRESETS["llama-3.1-8b"].kv_bytes_per_token)
    prompt, output = np.array([100, 100]), np.array([2000, 3])
    transfer = 0.002  # the long request's KV arrives then; the short one's never
    short = DecodeWorker(env, 0, cost, 1 << 16, 16, 8, prompt, output, rec, lambda rid, w, _at: math.inf, kv=kv)
    long = DecodeWorker(env, 1, cost, 1 << 16, 16, 8, prompt, output, rec, lambda rid, w, at: at + transfer, kv=kv)
    long.submit(0)
    short.submit(1)
    env.run(until=transfer / 2)
    assert long.kv_load == short.kv_load == 100  # waiting / in transfer: its prompt
    step = cost.decode_coeffs(1)  # joined at the transfer's end; the batch's first step reads prompt + 1
    seen = []
    for k in range(5):
        t = transfer + step[0] * k + step[1] * sum(101 + j for j in range(k))  # k whole iterations
        env.run(until=t + 0.5 * (step[0] + step[1] * (101 + k)))  # halfway through iteration k
        seen.append(long.kv_load)
    assert seen == [101, 102, 103, 104, 105]
