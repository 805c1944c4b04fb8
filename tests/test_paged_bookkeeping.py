"""The paged decode worker's incremental block bookkeeping equals a count from scratch, in place.

The worker's :class:`KVBlockLedger` keeps the running batch's block count and its sorted block
phases up to date instead of passing over the batch at each boundary, and skips the
first-overflow search and the peak count when a cheap bound shows they cannot matter. Here every
boundary and every run end of small, memory-starved workers is checked against a direct
per-request count of the worker's own requests: blocks held, blocks gained over the next
iterations, the first iteration that overflows the GPU, the run's length and the peak. The skip
bounds must be seen both ways. (tests/test_kv_ledger.py checks the ledger on its own.)
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import GPUS
from sunsim.costs.model import AnalyticCostModel
from sunsim.sim.decode import DecodeWorker
from sunsim.sim.kv_ledger import KVBlockLedger
from sunsim.sim.kv_policy import KVPolicy
from sunsim.sim.standalone_decode import simulate_decode_worker

COST = AnalyticCostModel(GPUS["h100"], PRESETS["llama-3.1-8b"], "bf16")


def _blocks(w: DecodeWorker, at: int) -> int:
    """Blocks the running requests need for their step at iteration ``at``, counted one by one."""
    return sum(-(-(w._members[rid][0] + at) // w.block) for rid in w._members)


def _first_overflow(w: DecodeWorker) -> int:
    """The first iteration ahead at which the batch's blocks exceed the GPU's, by stepping."""
    j = 1
    while w.ledger.held + _blocks(w, w.it + j) <= w.capacity_blocks:
        j += 1
    return j


@pytest.fixture
def checked(monkeypatch):
    """Wrap the worker's boundary and run accounting with from-scratch checks; count the bound's outcomes."""
    seen: Counter = Counter()
    boundary, account, may_overflow = DecodeWorker._boundary, DecodeWorker._account, KVBlockLedger.may_overflow

    def checked_may_overflow(ledger, j):
        out = may_overflow(ledger, j)
        seen["overflow search" if out else "overflow search skipped"] += 1
        return out

    def checked_boundary(w):
        boundary(w)
        block, ledger = w.block, w.ledger
        assert ledger.it == w.it
        assert list(ledger.phases) == sorted((w._members[rid][0] - 1) % block for rid in w._members)
        assert ledger.batch == _blocks(w, w.it)
        assert ledger.used == ledger.held + ledger.batch <= w.capacity_blocks
        if not w._running:
            return
        for j in range(3 * block + 2):
            assert ledger.growth(j) == _blocks(w, w.it + j) - ledger.batch, j
        first = _first_overflow(w)
        assert ledger.first_overflow() == first
        next_finish = min(w._members[rid][1] for rid in w._members) - w.it
        assert w._run_len == min(next_finish, first)

    def checked_account(w, n):
        last_step = w.ledger.held + _blocks(w, w.it + n - 1) if n > 0 else 0
        peak = w.peak_blocks
        seen["peak counted" if n > 0 and w.ledger.used + w.batch * -(-(n - 1) // w.block) > peak
             else "peak count skipped"] += 1
        account(w, n)
        assert w.peak_blocks == max(peak, last_step)
        # (those finishing here leave the ledger next, in the run end's pass: the boundary check sees them gone)
        assert w.ledger.batch == _blocks(w, w.it)
        assert w.ledger.running == len(w._members)

    monkeypatch.setattr(DecodeWorker, "_boundary", checked_boundary)
    monkeypatch.setattr(DecodeWorker, "_account", checked_account)
    monkeypatch.setattr(KVBlockLedger, "may_overflow", checked_may_overflow)
    return seen


@pytest.mark.parametrize("block", [1, 7, 16])
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_incremental_blocks_match_a_count_from_scratch(checked, block, preemption):
    rng = np.random.default_rng(block * 10 + len(preemption))
    preempted = 0
    for slack_blocks in (2, 8, 40, 400):  # from constant preemption to memory to spare
        n = 60
        arrival = np.cumsum(rng.exponential(0.003, n))
        context = rng.integers(1, 200, n)
        output = rng.integers(1, 250, n)
        capacity = (-(-int((context + output + 1).max()) // block) + slack_blocks) * block
        kv = KVPolicy(policy="paged", preemption=preemption, watermark=0.01,
                      kv_bytes_per_token=PRESETS["llama-3.1-8b"].kv_bytes_per_token)
        got = simulate_decode_worker(COST, arrival, context, output, max_batch=16, kv_capacity_tokens=capacity,
                                     block_tokens=block, kv=kv)
        assert not np.isnan(got["finish_s"]).any()
        preempted += int(got["preemptions"].sum())
    assert preempted > 0
    # Both sides of each shortcut were taken (and checked above).
    for outcome in ("overflow search", "overflow search skipped", "peak counted", "peak count skipped"):
        assert checked[outcome] > 0, outcome
