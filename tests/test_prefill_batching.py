"""A prefill GPU batches the requests arriving at one instant together, whether it starts its batch at once (and
same-instant arrivals join it while it has room) or at the end of the instant (a zero-delay timer)."""

from __future__ import annotations

import numpy as np
import pytest

from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import GPUS
from sunsim.costs.model import AnalyticCostModel
from sunsim.sim.environment import Environment
from sunsim.sim.prefill import PrefillWorker
from sunsim.sim.records import Records

COST = AnalyticCostModel(GPUS["h100"], PRESETS["llama-3.1-8b"], "bf16")


class _AtTheInstantsEnd(PrefillWorker):
    """A prefill worker whose idle start waits for the end of the instant (as a multiplexed one's does)."""

    starts_at_once = False


def _serve(arrival: np.ndarray, prompt: np.ndarray, at_once: bool, budget: int, kv_capacity: int | None):
    """One prefill worker fed the requests in arrival order (those of one instant in one go); its records and
    batch count. Each request's KV is handed over 5 ms after its prefill ends."""
    env, rec = Environment(), Records(len(arrival))
    workers: list[PrefillWorker] = []
    kind = PrefillWorker if at_once else _AtTheInstantsEnd
    w = kind(env, 0, COST, budget, prompt.tolist(), rec,
             lambda rid, _wid: workers[0].release_at(env.now + 0.005, int(prompt[rid])), kv_capacity)
    workers.append(w)

    def feed():
        for t in np.unique(arrival):
            yield env.timeout(t - env.now)
            for rid in np.flatnonzero(arrival == t).tolist():
                w.submit(rid)

    env.process(feed())
    env.run()
    return rec, w.batches, w.peak_held_tokens, w.stalled_s, w.busy_s


@pytest.mark.parametrize("budget, kv_capacity", [(8192, None), (2048, None), (4096, 6000)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_starting_at_once_batches_as_the_end_of_the_instant_does(seed, budget, kv_capacity):
    rng = np.random.default_rng(seed)
    n = 300
    arrival = np.round(np.cumsum(rng.exponential(0.02, n)), 1)  # timestamps of 0.1 s: many arrive together
    prompt = rng.integers(16, 1800, n)
    at_once = _serve(arrival, prompt, True, budget, kv_capacity)
    at_end = _serve(arrival, prompt, False, budget, kv_capacity)
    for col in ("prefill_start_s", "first_token_s"):
        np.testing.assert_array_equal(getattr(at_once[0], col), getattr(at_end[0], col))
    assert at_once[1:4] == at_end[1:4]  # batches, peak KV held, stalled time
    assert at_once[4] == pytest.approx(at_end[4], rel=1e-12)  # busy time (a batch joined is timed again)
    assert at_once[1] < len(np.unique(arrival)) + n // 2  # same-instant requests did share batches
    starts = at_once[0].prefill_start_s
    assert len(np.unique(starts)) < n


def test_a_request_arriving_as_the_batch_starts_joins_it_only_if_it_fits():
    rec, batches, *_ = _serve(np.zeros(3), np.array([3000, 3000, 3000]), True, 8192, None)
    assert batches == 2  # two fit the 8192-token budget together; the third waits for the next batch
    assert rec.prefill_start_s[0] == rec.prefill_start_s[1] == 0.0 < rec.prefill_start_s[2]
    assert rec.first_token_s[0] == rec.first_token_s[1] == pytest.approx(COST.prefill_time(6000, 2 * 3000**2, 2))
