"""Prefill GPUs: FCFS batches of prompts under a token budget, KV held until it is handed over."""

from __future__ import annotations

import heapq
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
    completes (:meth:`release_at`, told when the transfer starts). With ``kv_capacity_tokens``
    set, a batch whose KV would not fit beside the KV still held is not started: the worker
    stalls until transfers free memory, as DistServe and Splitwise prefill instances do.
    Transfers ending are not events: the worker counts the ones ended by each time it looks,
    and only a stalled worker sets a timer, for the next one to end.
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
        self._held = 0  # KV of prefilled requests not yet handed to a decode GPU (as of the last _collect)
        self._releases: list[tuple[float, int]] = []  # (time a transfer ends, its tokens), a heap
        self.peak_held_tokens = 0
        self.stalled_s = 0.0  # time a batch was ready but waited for KV memory
        self.busy_s = 0.0
        self.batches = 0
        self._batch_end = 0.0  # when the batch started last ends (busy_s already counts all of it)
        self._wake: simpy.Event | None = None
        self._freed: simpy.Event | None = None  # a stalled worker waits on it
        self._freed_at = float("inf")  # when its timer fires (inf: none set)
        env.process(self._run())

    @property
    def held_tokens(self) -> int:
        """KV of prefilled requests still held here now."""
        self._collect()
        return self._held

    def submit(self, rid: int) -> None:
        self.queue.append(rid)
        self.load += 1
        self.kv_load += int(self._prompt[rid])
        self._rec.prefill_worker[rid] = self.wid
        if self._wake is not None:
            self._wake.succeed()
            self._wake = None

    def release(self, tokens: int) -> None:
        """``tokens`` of KV left this GPU now (never needed by decode)."""
        self._held -= tokens
        if self._freed is not None:
            self._wake_stalled()

    def release_at(self, t: float, tokens: int) -> None:
        """``tokens`` of KV leave this GPU at ``t`` (not before now): their transfer to a decode GPU ends then."""
        heapq.heappush(self._releases, (t, tokens))
        if self._freed is not None and t < self._freed_at:
            self._arm(t)

    def _collect(self) -> None:
        """Count the transfers ended by now as released."""
        releases, now = self._releases, self.env.now
        while releases and releases[0][0] <= now:
            self._held -= heapq.heappop(releases)[1]

    def _arm(self, t: float) -> None:
        """Wake the stalled worker at ``t`` (a timer set earlier for a later time still fires, and finds it woken)."""
        self._freed_at = t
        freed = self._freed
        self.env.timeout(t - self.env.now).callbacks.append(lambda _ev: self._freed is freed and self._wake_stalled())

    def _wake_stalled(self) -> None:
        self._freed.succeed()
        self._freed = None
        self._freed_at = float("inf")

    def _fits(self, tokens: int) -> bool:
        """Whether a batch starting with a prompt of ``tokens`` fits beside the KV held now."""
        self._collect()
        return self._held + tokens <= self.kv_capacity

    def _stall(self, tokens: int):
        """Wait until a prompt of ``tokens`` fits beside the KV held (the time counts as stalled)."""
        t0 = self.env.now
        while not self._fits(tokens):
            self._freed = self.env.event()
            if self._releases:
                self._arm(self._releases[0][0])
            yield self._freed
        self.stalled_s += self.env.now - t0

    def _run(self):
        env, queue, prompt = self.env, self.queue, self._prompt
        while True:
            if not queue:
                self._wake = env.event()
                yield self._wake
            if not self._fits(head := int(prompt[queue[0]])):
                yield from self._stall(head)
            room = min(self.budget, self.kv_capacity - self._held)
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
        self._held += tokens
        if self._held > self.peak_held_tokens:
            self.peak_held_tokens = self._held
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
