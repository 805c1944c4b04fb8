"""Prefill GPUs: FCFS batches of prompts under a token budget, KV held until it is handed over."""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import Callable, Sequence

from sunsim.costs.model import CostModel
from sunsim.sim.environment import Environment, Timer
from sunsim.sim.records import Records
from sunsim.sim.stats import PrefillStats

NAN = float("nan")


class PrefillWorker:
    """FCFS prefill with batching up to a token budget; a longer prompt runs alone.

    A prefilled request's KV stays in this GPU's memory until its transfer to a decode GPU
    completes (:meth:`release_at`, told when the transfer starts). With ``kv_capacity_tokens``
    set, a batch whose KV would not fit beside the KV still held is not started: the worker
    stalls until transfers free memory, as DistServe and Splitwise prefill instances do.
    Transfers ending are not events: the worker counts the ones ended by each time it looks,
    and only a stalled worker sets a timer, for the next one to end.

    Driven by callbacks, not a process: a batch's timer ends it and starts the next. An idle
    worker given a request starts its batch at once; a request arriving at the same instant
    still joins it while it has room (its time is then taken again), so requests arriving
    together are batched together, as if the batch were formed at the end of the instant.
    """

    __slots__ = ("env", "wid", "cost", "budget", "_prompt", "_rec", "_on_done", "kv_capacity", "queue", "load",
                 "kv_load", "_held", "_releases", "peak_held_tokens", "stalled_s", "busy_s", "batches",
                 "_batch_ends_at", "_active", "_batch", "_lengths", "_tokens", "_room", "_batch_t0", "_duration",
                 "_timer", "_on_batch_done", "_stalled_since", "_lone", "_wake_at")  # (slots: read per request)

    #: Whether an idle worker starts at once (and same-instant arrivals join the batch), or at the end of the
    #: instant, by a zero-delay timer.
    starts_at_once = True

    def __init__(self, env: Environment, wid: int, cost: CostModel, max_batch_tokens: int,
                 prompt: Sequence[int], rec: Records, on_done: Callable[[int, int], None],
                 kv_capacity_tokens: int | None = None, lone_times: array | None = None) -> None:
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
        self._batch_ends_at = 0.0  # when the batch started last ends (busy_s already counts all of it)
        self._active = False  # a batch runs, is about to start, or waits for memory
        # The batch running: its requests, their prompt lengths, its tokens, the room it was formed in, its
        # start and duration; its timer (a batch taken again sets a new one).
        self._batch: list[int] = []
        self._lengths: list[int] = []
        self._tokens = self._room = 0
        self._batch_t0, self._duration = -1.0, 0.0
        self._timer: Timer | None = None  # the running batch's (cancelled when a request joins it)
        self._on_batch_done = self._batch_done  # (the bound method, made once rather than per timer)
        self._stalled_since: float | None = None  # waiting for memory since then
        # A lone prompt's prefill time by its length (NaN: not asked for yet), shared by the GPUs of one cost model:
        # one contiguous table, a lookup reading 8 bytes.
        self._lone = lone_times if lone_times is not None else array("d")
        self._wake_at = float("inf")  # a stalled worker's timer (inf: none set)

    @property
    def held_tokens(self) -> int:
        """KV of prefilled requests still held here now."""
        self._collect()
        return self._held

    def submit(self, rid: int) -> None:
        self._rec.prefill_worker[rid] = self.wid
        self.load += 1
        self.kv_load += self._prompt[rid]
        self._enqueue(rid)
        if not self._active:
            self._active = True
            if self.starts_at_once:
                self._start()  # (what _next does with a request queued)
            else:
                self.env.call_later(0, self._next)
        elif self._batch_t0 == self.env.now and self.starts_at_once and len(self.queue) == 1:
            self._join_batch()

    def _enqueue(self, rid: int) -> None:
        self.queue.append(rid)

    def release(self, tokens: int) -> None:
        """``tokens`` of KV left this GPU now (never needed by decode)."""
        self._held -= tokens

    def release_at(self, t: float, tokens: int) -> None:
        """``tokens`` of KV leave this GPU at ``t`` (not before now): their transfer to a decode GPU ends then."""
        heapq.heappush(self._releases, (t, tokens))
        if self._stalled_since is not None and t < self._wake_at:
            self._arm(t)

    def _collect(self) -> None:
        """Count the transfers ended by now as released."""
        releases, now = self._releases, self.env.now
        while releases and releases[0][0] <= now:
            self._held -= heapq.heappop(releases)[1]

    def _arm(self, t: float) -> None:
        """Look again at ``t``, when a transfer ends (a timer set earlier for a later time finds itself stale)."""
        self._wake_at = t
        self.env.call_later(t - self.env.now, lambda _ev: t == self._wake_at and self._retry())

    def _retry(self) -> None:
        self._wake_at = float("inf")
        self._start()

    # -- batches ---------------------------------------------------------------------------
    def _next(self, _ev: object = None) -> None:
        """Start the next batch, or go idle."""
        if self.queue:
            self._start()
        else:
            self._active = False

    def _head(self) -> int:
        """Prompt tokens of the request the next batch starts with."""
        return self._prompt[self.queue[0]]

    def _start(self) -> None:
        """Start a batch from the queue's head if its KV fits beside the KV held; else wait for transfers to end."""
        self._collect()
        releases, now = self._releases, self.env.now
        if self._held + self._head() > self.kv_capacity:
            if self._stalled_since is None:
                self._stalled_since = now
            if releases and releases[0][0] < self._wake_at:
                self._arm(releases[0][0])
            return
        if self._stalled_since is not None:
            self.stalled_s += now - self._stalled_since
            self._stalled_since = None
        room = min(self.budget, self.kv_capacity - self._held)
        self._run_batch(*self._take(room), room)

    def _take(self, room: int) -> tuple[list[int], list[int], int]:
        """The next batch: the queue's head, then FCFS while the prompts fit in ``room`` tokens."""
        queue, prompt = self.queue, self._prompt
        batch = [queue.popleft()]
        lengths = [prompt[batch[0]]]
        tokens = lengths[0]
        while queue and tokens + (length := prompt[queue[0]]) <= room:
            batch.append(queue.popleft())
            lengths.append(length)
            tokens += length
        return batch, lengths, tokens

    def _run_batch(self, batch: list[int], lengths: list[int], tokens: int, room: int) -> None:
        """Prefill one batch (prompts of ``lengths``, ``tokens`` in all, formed in ``room`` tokens): hold its KV,
        take its time, then hand each request on. Plain Python over the batch: its few requests cost less so
        than as numpy fancy indexing."""
        self._held += tokens
        if self._held > self.peak_held_tokens:
            self.peak_held_tokens = self._held
        now = self.env.now
        start = self._rec.prefill_start_s
        for rid in batch:
            start[rid] = now
        self._batch, self._lengths, self._tokens, self._room, self._batch_t0 = batch, lengths, tokens, room, now
        self.batches += 1
        self._time_batch()

    def _time_batch(self) -> None:
        """Set the running batch's timer."""
        batch, tokens = self._batch, self._tokens
        if len(batch) == 1:  # a lone prompt: its time by its length, computed once per length
            lone = self._lone
            duration = lone[tokens] if tokens < len(lone) else NAN
            if duration != duration:
                duration = self._lone_time(tokens)
        else:
            duration = self.cost.prefill_time(tokens, sum(x * x for x in self._lengths), len(batch))
        self.busy_s += duration - self._duration
        self._duration = duration
        self._batch_ends_at = self._batch_t0 + duration
        self._timer = self.env.call_later(duration, self._on_batch_done)

    def _lone_time(self, tokens: int) -> float:
        """A lone prompt of ``tokens`` tokens: its prefill time, kept in the shared table."""
        lone = self._lone
        if tokens >= len(lone):
            lone.extend([NAN] * (max(tokens + 1, 2 * len(lone)) - len(lone)))
        lone[tokens] = duration = self.cost.prefill_time(tokens, tokens * tokens, 1)
        return duration

    def _join_batch(self) -> None:
        """A request arriving as its batch starts (the queue's only one) joins it if it fits in the batch's room."""
        rid = self.queue[0]
        p = self._prompt[rid]
        if self._tokens + p > self._room:
            return
        self.queue.popleft()
        self._batch.append(rid)
        self._lengths.append(p)
        self._tokens += p
        self._held += p
        if self._held > self.peak_held_tokens:
            self.peak_held_tokens = self._held
        self._rec.prefill_start_s[rid] = self.env.now
        self._timer.cancel()  # the batch is timed again
        self._time_batch()

    def _batch_done(self, _ev: object) -> None:
        """The timer of a batch fired: it is done."""
        batch, tokens = self._batch, self._tokens
        self._batch_t0, self._duration = -1.0, 0.0
        self.load -= len(batch)
        self.kv_load -= tokens
        now, first, on_done, wid = self.env.now, self._rec.first_token_s, self._on_done, self.wid
        for rid in batch:
            first[rid] = now
        for rid in batch:
            on_done(rid, wid)
        self._next()

    def stats(self) -> PrefillStats:
        """What this worker did, as a plain record (taken at the end of a run).

        A batch still running when the run stops is busy only up to the stop.
        """
        busy = self.busy_s - max(0.0, self._batch_ends_at - self.env.now)
        return PrefillStats(self.wid, busy, self.batches, self.peak_held_tokens, self.stalled_s)
