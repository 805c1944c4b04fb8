"""Prefill GPUs: FCFS batches of prompts under a token budget, KV held until it is handed over."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import simpy

from sunsim.costs.model import CostModel
from sunsim.sim.records import Records
from sunsim.sim.stats import PrefillStats


class PrefillWorker:
    """FCFS prefill with batching up to a token budget; a longer prompt runs alone.

    A prefilled request's KV stays in this GPU's memory until its transfer to a decode GPU
    completes (:meth:`release`). With ``kv_capacity_tokens`` set, a batch whose KV would not
    fit beside the KV still held is not started: the worker stalls until transfers free
    memory, as DistServe and Splitwise prefill instances do.
    """

    def __init__(self, env: simpy.Environment, wid: int, cost: CostModel, max_batch_tokens: int,
                 prompt: np.ndarray, rec: Records, on_done: Callable[[int, int], None],
                 kv_capacity_tokens: int | None = None) -> None:
        self.env, self.wid, self.cost, self.budget = env, wid, cost, max_batch_tokens
        self._prompt, self._rec, self._on_done = prompt, rec, on_done
        self.kv_capacity = kv_capacity_tokens if kv_capacity_tokens is not None else 1 << 62
        self.queue: deque[int] = deque()
        self.load = 0  # queued + in the running batch
        self.kv_load = 0  # prompt tokens queued + in the running batch (outstanding until prefilled)
        self.held_tokens = 0  # KV of prefilled requests not yet handed to a decode GPU
        self.peak_held_tokens = 0
        self.stalled_s = 0.0  # time a batch was ready but waited for KV memory
        self.busy_s = 0.0
        self.batches = 0
        self._batch_end = 0.0  # when the batch started last ends (busy_s already counts all of it)
        self._wake: simpy.Event | None = None
        self._freed: simpy.Event | None = None
        env.process(self._run())

    def submit(self, rid: int) -> None:
        self.queue.append(rid)
        self.load += 1
        self.kv_load += int(self._prompt[rid])
        self._rec.prefill_worker[rid] = self.wid
        if self._wake is not None:
            self._wake.succeed()
            self._wake = None

    def release(self, tokens: int) -> None:
        """``tokens`` of KV left this GPU (transferred, or never needed by decode)."""
        self.held_tokens -= tokens
        if self._freed is not None:
            self._freed.succeed()
            self._freed = None

    def _run(self):
        env, queue, prompt = self.env, self.queue, self._prompt
        while True:
            if not queue:
                self._wake = env.event()
                yield self._wake
            if self.held_tokens + int(prompt[queue[0]]) > self.kv_capacity:
                t0 = env.now
                while self.held_tokens + int(prompt[queue[0]]) > self.kv_capacity:
                    self._freed = env.event()
                    yield self._freed
                self.stalled_s += env.now - t0
            room = min(self.budget, self.kv_capacity - self.held_tokens)
            batch = [queue.popleft()]
            lengths = [int(prompt[batch[0]])]
            tokens = lengths[0]
            while queue and tokens + (length := int(prompt[queue[0]])) <= room:
                batch.append(queue.popleft())
                lengths.append(length)
                tokens += length
            yield from self._run_batch(batch, lengths, tokens)

    def _run_batch(self, batch: list[int], lengths: list[int], tokens: int):
        """Prefill one batch (prompts of ``lengths``, ``tokens`` in all): hold its KV, take its time, hand each
        request on. Plain Python over the batch: its few requests cost less so than as numpy fancy indexing."""
        env = self.env
        self.held_tokens += tokens
        self.peak_held_tokens = max(self.peak_held_tokens, self.held_tokens)
        now = env.now
        start = self._rec.prefill_start_s
        for rid in batch:
            start[rid] = now
        duration = self.cost.prefill_time(tokens, sum(x * x for x in lengths), len(batch))
        self.busy_s += duration
        self.batches += 1
        self._batch_end = env.now + duration
        yield env.timeout(duration)
        self.load -= len(batch)
        self.kv_load -= tokens
        now, first = env.now, self._rec.first_token_s
        for rid in batch:
            first[rid] = now
        for rid in batch:
            self._on_done(rid, self.wid)

    def stats(self) -> PrefillStats:
        """What this worker did, as a plain record (taken at the end of a run).

        A batch still running when the run stops is busy only up to the stop.
        """
        busy = self.busy_s - max(0.0, self._batch_end - self.env.now)
        return PrefillStats(self.wid, busy, self.batches, self.peak_held_tokens, self.stalled_s)
