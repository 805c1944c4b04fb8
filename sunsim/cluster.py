"""The simulated cluster: prefill workers, KV links and decode workers on a SimPy clock.

Request state lives in columnar arrays (:class:`Records`); workers hold request indices.
A decode worker advances whole runs of iterations between batch changes in one event:
with step time ``alpha(B) + beta * K`` and the batch's KV growing by ``B`` tokens per step,
the time of ``n`` iterations is a quadratic in ``n`` that is summed (and inverted) in
closed form, so no Python work is done per token or per iteration.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simpy

from .costmodel import CostModel


@dataclass
class Records:
    """Per-request outcomes, one array per column (NaN / -1 until set)."""

    n: int
    prefill_worker: np.ndarray = field(init=False)
    decode_worker: np.ndarray = field(init=False)
    prefill_start_s: np.ndarray = field(init=False)
    first_token_s: np.ndarray = field(init=False)
    kv_ready_s: np.ndarray = field(init=False)
    decode_start_s: np.ndarray = field(init=False)
    finish_s: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.prefill_worker = np.full(self.n, -1, dtype=np.int32)
        self.decode_worker = np.full(self.n, -1, dtype=np.int32)
        for name in ("prefill_start_s", "first_token_s", "kv_ready_s", "decode_start_s", "finish_s"):
            setattr(self, name, np.full(self.n, np.nan))


# --------------------------------------------------------------------------------------
# Prefill
# --------------------------------------------------------------------------------------
class PrefillWorker:
    """FCFS prefill with batching up to a token budget; a longer prompt runs alone."""

    def __init__(self, env: simpy.Environment, wid: int, cost: CostModel, max_batch_tokens: int,
                 prompt: np.ndarray, rec: Records, on_done: Callable[[int, int], None]) -> None:
        self.env, self.wid, self.cost, self.budget = env, wid, cost, max_batch_tokens
        self._prompt, self._rec, self._on_done = prompt, rec, on_done
        self.queue: deque[int] = deque()
        self.load = 0  # queued + in the running batch
        self.kv_load = 0  # queued prompt tokens
        self.busy_s = 0.0
        self.batches = 0
        self._wake: simpy.Event | None = None
        env.process(self._run())

    def submit(self, rid: int) -> None:
        self.queue.append(rid)
        self.load += 1
        self.kv_load += int(self._prompt[rid])
        self._rec.prefill_worker[rid] = self.wid
        if self._wake is not None:
            self._wake.succeed()
            self._wake = None

    def _run(self):
        env, queue, prompt = self.env, self.queue, self._prompt
        while True:
            if not queue:
                self._wake = env.event()
                yield self._wake
            batch = [queue.popleft()]
            tokens = int(prompt[batch[0]])
            while queue and tokens + prompt[queue[0]] <= self.budget:
                rid = queue.popleft()
                batch.append(rid)
                tokens += int(prompt[rid])
            lengths = prompt[batch]
            self.kv_load -= tokens
            self._rec.prefill_start_s[batch] = env.now
            duration = self.cost.prefill_time(tokens, int(np.dot(lengths, lengths)))
            self.busy_s += duration
            self.batches += 1
            yield env.timeout(duration)
            self.load -= len(batch)
            self._rec.first_token_s[batch] = env.now
            for rid in batch:
                self._on_done(rid, self.wid)


# --------------------------------------------------------------------------------------
# KV transfer
# --------------------------------------------------------------------------------------
class Link:
    """A FIFO link: a transfer starts when the previous one on the link has finished.

    With FIFO service and durations known on entry, the queue is just the time the link
    frees up, so no process or resource object is needed per transfer.
    """

    __slots__ = ("free_at",)

    def __init__(self) -> None:
        self.free_at = 0.0


class Interconnect:
    def __init__(self, env: simpy.Environment, bandwidth_Bps: float, latency_s: float, contention: str,
                 kv_bytes_per_token: int) -> None:
        self.env = env
        self.bandwidth_Bps, self.latency_s = bandwidth_Bps, latency_s
        self.contention = contention
        self.kv_bytes_per_token = kv_bytes_per_token
        self._links: dict[object, Link] = {}

    def duration(self, tokens: int) -> float:
        return self.latency_s + tokens * self.kv_bytes_per_token / self.bandwidth_Bps

    def transfer(self, tokens: int, src: int, dst: int, done: Callable[[], None]) -> None:
        """Move ``tokens`` of KV from prefill worker ``src`` to decode worker ``dst``, then call ``done``."""
        now = self.env.now
        dur = self.duration(tokens)
        if self.contention == "none":
            end = now + dur
        else:
            key = dst if self.contention == "per_decode_worker" else (src, dst)
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = Link()
            end = max(now, link.free_at) + dur
            link.free_at = end
        self.env.timeout(end - now).callbacks.append(lambda _ev: done())


# --------------------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------------------
class DecodeWorker:
    """Continuous batching with KV memory reserved per request, iterations coalesced.

    Life of a request here: *waiting* (FCFS, for KV blocks and batch room) -> *admitted*
    (blocks reserved, KV in flight over the interconnect) -> *ready* (KV arrived; joins at
    the next iteration boundary) -> *running* -> done. Memory is reserved for the whole
    prompt plus output at admission, so a running request is never preempted.
    """

    def __init__(self, env: simpy.Environment, wid: int, cost: CostModel, kv_capacity_tokens: int,
                 block_tokens: int, max_batch: int | None, prompt: np.ndarray, output: np.ndarray,
                 rec: Records, start_transfer: Callable[[int, DecodeWorker], None],
                 timeline: list | None = None, on_finished: Callable[[int], None] | None = None) -> None:
        self.env, self.wid, self.cost = env, wid, cost
        self._on_finished = on_finished
        self.block = block_tokens
        self.capacity_blocks = kv_capacity_tokens // block_tokens
        self.max_batch = max_batch or 1 << 30
        self._prompt, self._output, self._rec = prompt, output, rec
        self._start_transfer = start_transfer
        self._coeffs: dict[int, tuple[float, float]] = {}

        self.waiting: deque[int] = deque()
        self.load = 0  # waiting + admitted requests
        self.kv_load = 0  # KV tokens reserved + awaited (prompt + output of each)
        self.admitted = 0  # reserved: in transfer, ready or running
        self.used_blocks = 0
        self.reserved_tokens = 0
        self.ready: list[int] = []
        self._heap: list[tuple[int, int]] = []  # (iteration at which done, request)
        self.it = 0  # iterations completed
        self.batch = 0
        self._kv_offset = 0  # S: batch KV at iteration j is S + batch * j

        # The run in progress (batch fixed): start time, KV at its first step, coefficients, length.
        self._run_t0 = 0.0
        self._run_k0 = 0.0
        self._run_a = 0.0
        self._run_b = 0.0
        self._run_len = 0
        self._gen = 0  # bumps when a run is cut short; stale timers check it
        self._cut_pending = False
        self._running = False  # a run's timer is pending
        self._settling = False  # inside end-of-run bookkeeping: arrivals just queue up

        # Statistics.
        self.busy_s = 0.0
        self.iterations = 0
        self.tokens = 0
        self.peak_blocks = 0
        self.events = 0
        self.timeline = timeline  # (time, batch, reserved KV tokens) at each change, when kept

    def blocks_for(self, rid: int) -> int:
        return -(-int(self._prompt[rid] + self._output[rid]) // self.block)

    # -- arrivals --------------------------------------------------------------------------
    def submit(self, rid: int) -> None:
        """A request routed here after prefill; it waits until blocks and batch room are free."""
        self._rec.decode_worker[rid] = self.wid
        self.waiting.append(rid)
        self.load += 1
        self.kv_load += int(self._prompt[rid] + self._output[rid])
        self._admit()

    def _admit(self) -> None:
        while self.waiting and self.admitted < self.max_batch:
            rid = self.waiting[0]
            need = self.blocks_for(rid)
            if self.used_blocks + need > self.capacity_blocks:
                break  # FCFS: the head blocks the queue, as in vLLM's FCFS scheduler
            self.waiting.popleft()
            self.reserved_tokens += int(self._prompt[rid] + self._output[rid])
            self.used_blocks += need
            self.admitted += 1
            if self.used_blocks > self.peak_blocks:
                self.peak_blocks = self.used_blocks
            self._start_transfer(rid, self)

    def kv_arrived(self, rid: int) -> None:
        """KV of ``rid`` is in memory: it joins the batch at the next iteration boundary."""
        self._rec.kv_ready_s[rid] = self.env.now
        self.ready.append(rid)
        if self._settling:
            return  # the boundary being settled will take it
        if not self._running:
            self._boundary()
        elif not self._cut_pending:
            self._cut_run()

    # -- the iteration engine ----------------------------------------------------------------
    def _run_time(self, n: float) -> float:
        """Seconds for the first ``n`` iterations of the current run."""
        return n * self._run_a + self._run_b * (n * self._run_k0 + self.batch * n * (n - 1) / 2)

    def _coeff(self, batch: int) -> tuple[float, float]:
        c = self._coeffs.get(batch)
        if c is None:
            c = self._coeffs[batch] = self.cost.decode_coeffs(batch)
        return c

    def _boundary(self) -> None:
        """At an iteration boundary: let ready requests join, then start the next run."""
        env, rec = self.env, self._rec
        now = env.now
        self._settling = False
        if self.ready:
            it = self.it
            for rid in self.ready:
                rec.decode_start_s[rid] = now
                steps = int(self._output[rid]) - 1  # the first token came from prefill
                heapq.heappush(self._heap, (it + steps, rid))
                self._kv_offset += int(self._prompt[rid]) + 1 - it
            self.batch += len(self.ready)
            self.ready.clear()
        if self.timeline is not None:
            self.timeline.append((now, self.batch, self.reserved_tokens))
        if self.batch == 0:
            self._running = False
            return
        self._running = True
        self._run_len = self._heap[0][0] - self.it
        self._run_t0 = now
        self._run_k0 = self._kv_offset + self.batch * self.it
        self._run_a, self._run_b = self._coeff(self.batch)
        self._cut_pending = False
        gen = self._gen
        self.events += 1
        env.timeout(self._run_time(self._run_len)).callbacks.append(lambda _ev: self._run_end(gen))

    def _account(self, n: int) -> None:
        self._settling = True
        self.it += n
        self.iterations += n
        self.tokens += n * self.batch
        self.busy_s += self.env.now - self._run_t0

    def _run_end(self, gen: int) -> None:
        if gen != self._gen:
            return  # the run was cut short and replaced
        self._account(self._run_len)
        rec, heap, now, it = self._rec, self._heap, self.env.now, self.it
        freed = 0
        while heap and heap[0][0] == it:
            _, rid = heapq.heappop(heap)
            rec.finish_s[rid] = now
            self._kv_offset -= int(self._prompt[rid]) + 1 - (it - int(self._output[rid]) + 1)
            tokens = int(self._prompt[rid] + self._output[rid])
            self.reserved_tokens -= tokens
            self.kv_load -= tokens
            self.used_blocks -= self.blocks_for(rid)
            freed += 1
        self.batch -= freed
        self.admitted -= freed
        self.load -= freed
        if self._on_finished is not None:
            self._on_finished(freed)
        self._admit()
        self._boundary()

    def _cut_run(self) -> None:
        """A request became ready mid-run: end the run at the next iteration boundary."""
        elapsed = self.env.now - self._run_t0
        m = self._iterations_by(elapsed) + 1  # the iteration in progress ends the cut
        if m >= self._run_len:
            return  # the run ends at that boundary anyway
        self._gen += 1
        self._cut_pending = True
        gen, t_end = self._gen, self._run_t0 + self._run_time(m)
        self.events += 1
        self.env.timeout(t_end - self.env.now).callbacks.append(lambda _ev: self._cut_end(gen, m))

    def _cut_end(self, gen: int, m: int) -> None:
        if gen != self._gen:
            return
        self._account(m)
        self._boundary()

    def _iterations_by(self, elapsed: float) -> int:
        """Whole iterations of the current run completed within ``elapsed`` seconds."""
        a = self._run_a + self._run_b * (self._run_k0 - self.batch / 2)
        b = self._run_b * self.batch / 2
        if b > 0:
            n = int((-a + math.sqrt(a * a + 4 * b * elapsed)) / (2 * b))
        else:
            n = int(elapsed / a)
        n = max(0, min(n, self._run_len))
        while n > 0 and self._run_time(n) > elapsed:
            n -= 1
        while n < self._run_len and self._run_time(n + 1) <= elapsed:
            n += 1
        return n


def simulate_decode_worker(cost: CostModel, arrival_s: np.ndarray, context_tokens: np.ndarray,
                           output_tokens: np.ndarray, max_batch: int | None = None) -> dict[str, np.ndarray]:
    """One decode worker with unbounded memory fed directly (no prefill, no transfer).

    A request with context ``c`` reads ``c + j`` KV tokens at its ``j``-th step and leaves after
    ``output_tokens`` steps. Used to compare the simulator with a real decode loop.
    """
    n = len(arrival_s)
    env = simpy.Environment()
    rec = Records(n)
    # The cluster's convention: prompt p gives context p + 1 at the first step and the first
    # output token comes from prefill, so map (c, o) -> (p = c - 1, o + 1).
    prompt = np.asarray(context_tokens, dtype=np.int64) - 1
    output = np.asarray(output_tokens, dtype=np.int64) + 1
    worker = DecodeWorker(env, 0, cost, kv_capacity_tokens=1 << 62, block_tokens=1, max_batch=max_batch,
                          prompt=prompt, output=output, rec=rec,
                          start_transfer=lambda rid, w: w.kv_arrived(rid))
    order = np.argsort(arrival_s, kind="stable")

    def arrivals():
        for rid in order:
            yield env.timeout(max(0.0, float(arrival_s[rid]) - env.now))
            worker.submit(int(rid))

    env.process(arrivals())
    env.run()
    return {"decode_start_s": rec.decode_start_s, "finish_s": rec.finish_s}
