"""The simulated cluster: prefill workers, KV links and decode workers on a SimPy clock.

Request state lives in columnar arrays (:class:`Records`); workers hold request indices.
A decode worker advances whole runs of iterations between batch changes in one event:
with step time ``alpha(B) + beta * K`` and the batch's KV growing by ``B`` tokens per step,
the time of ``n`` iterations is a quadratic in ``n`` that is summed (and inverted) in
closed form, so no Python work is done per token or per iteration. Paged KV memory grows
by whole blocks inside a run; the running requests' block phases are kept sorted, so the
blocks gained over any number of iterations, and the first iteration at which they would
exceed the GPU's (which ends the run), take a few bisections instead of a pass over the batch.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simpy

from sunsim.costs.model import CostModel
from sunsim.sim.stats import DecodeStats, InterconnectStats, PrefillStats

KV_POLICIES = ("paged", "reserve")
PREEMPTION_MODES = ("recompute", "swap")


@dataclass
class Records:
    """Per-request outcomes, one array per column (NaN / -1 until set)."""

    n: int
    prefill_worker: np.ndarray = field(init=False)
    decode_worker: np.ndarray = field(init=False)
    preemptions: np.ndarray = field(init=False)
    prefill_start_s: np.ndarray = field(init=False)
    first_token_s: np.ndarray = field(init=False)
    decode_admit_s: np.ndarray = field(init=False)
    kv_ready_s: np.ndarray = field(init=False)
    decode_start_s: np.ndarray = field(init=False)
    finish_s: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.prefill_worker = np.full(self.n, -1, dtype=np.int32)
        self.decode_worker = np.full(self.n, -1, dtype=np.int32)
        self.preemptions = np.zeros(self.n, dtype=np.int32)
        for name in ("prefill_start_s", "first_token_s", "decode_admit_s", "kv_ready_s", "decode_start_s",
                     "finish_s"):
            setattr(self, name, np.full(self.n, np.nan))


# --------------------------------------------------------------------------------------
# Prefill
# --------------------------------------------------------------------------------------
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
        self.kv_load = 0  # queued prompt tokens
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
            tokens = int(prompt[batch[0]])
            while queue and tokens + prompt[queue[0]] <= room:
                rid = queue.popleft()
                batch.append(rid)
                tokens += int(prompt[rid])
            lengths = prompt[batch]
            self.kv_load -= tokens
            self.held_tokens += tokens
            self.peak_held_tokens = max(self.peak_held_tokens, self.held_tokens)
            self._rec.prefill_start_s[batch] = env.now
            duration = self.cost.prefill_time(tokens, int(np.dot(lengths, lengths)), len(batch))
            self.busy_s += duration
            self.batches += 1
            self._batch_end = env.now + duration
            yield env.timeout(duration)
            self.load -= len(batch)
            self._rec.first_token_s[batch] = env.now
            for rid in batch:
                self._on_done(rid, self.wid)

    def stats(self) -> PrefillStats:
        """What this worker did, as a plain record (taken at the end of a run).

        A batch still running when the run stops is busy only up to the stop.
        """
        busy = self.busy_s - max(0.0, self._batch_end - self.env.now)
        return PrefillStats(self.wid, busy, self.batches, self.peak_held_tokens, self.stalled_s)
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

    def stats(self) -> InterconnectStats:
        """The link model and how many links carried traffic, as a plain record."""
        return InterconnectStats(self.bandwidth_Bps, self.latency_s, self.kv_bytes_per_token, self.contention,
                                 len(self._links))


# --------------------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KVPolicy:
    """How a decode worker manages KV memory.

    ``paged`` (vLLM): blocks are allocated as tokens are generated; a request is admitted
    when the free blocks left after allocating its first step's blocks stay at or above the
    watermark; when a step's blocks do not fit, the most recently admitted running requests
    are preempted (``recompute``: blocks dropped, KV recomputed by a prefill-style pass on
    readmission; ``swap``: blocks copied to host memory and back). ``reserve``: blocks for
    prompt + the request's true output length are reserved at admission (clairvoyant, never
    preempts).
    """

    policy: str = "paged"
    preemption: str = "recompute"
    watermark: float = 0.01  # share of the GPU's blocks kept free at admission
    swap_Bps: float = 64e9  # host link per direction (PCIe 5 x16)
    kv_bytes_per_token: int = 0  # for swap times

    def __post_init__(self) -> None:
        if self.policy not in KV_POLICIES:
            raise ValueError(f"kv_policy must be one of {', '.join(KV_POLICIES)}, got {self.policy!r}")
        if self.preemption not in PREEMPTION_MODES:
            raise ValueError(f"preemption must be one of {', '.join(PREEMPTION_MODES)}, got {self.preemption!r}")


RESERVE = KVPolicy(policy="reserve")


class PagedState:
    """Per-request bookkeeping of the paged policy, one array per field, indexed by request id.

    One is shared by all the decode workers of a variant: a request is admitted by one worker
    only and stays there (a preempted one resumes on it; rerouted ones were never admitted, so
    their entries are untouched), so sharing changes nothing but the memory, which is then
    per request and not per request and decode GPU.
    """

    def __init__(self, n: int) -> None:
        self.off = np.zeros(n, dtype=np.int64)  # KV read at iteration j is off + j
        self.fin = np.full(n, -1, dtype=np.int64)  # iteration at which it is done; -1: not running
        self.steps = np.zeros(n, dtype=np.int64)  # decode steps done before its last preemption
        self.seq = np.zeros(n, dtype=np.int64)  # admission order (preemption victims: latest first)
        self.held = np.zeros(n, dtype=np.int64)  # blocks allocated at admission, until it joins
        self.restore = np.zeros(n, dtype=np.int64)  # tokens to restore when it joins (after a preemption)


class DecodeWorker:
    """Continuous batching over block-managed KV memory, iterations coalesced.

    Life of a request here: *waiting* (FCFS, for KV blocks and batch room) -> *admitted*
    (blocks allocated, KV in flight over the interconnect) -> *ready* (KV arrived; joins at
    the next iteration boundary) -> *running* -> done; under the paged policy a running
    request may be *preempted* back to the head of the waiting queue.

    At each iteration boundary (paged): ready requests join; every running request gets the
    blocks its next step needs, preempting the most recently admitted if they do not fit;
    then, if nobody was preempted, waiting requests are admitted while the watermark holds.
    Admission only happens at boundaries, as a serving engine's scheduler runs once per step.
    """

    def __init__(self, env: simpy.Environment, wid: int, cost: CostModel, kv_capacity_tokens: int,
                 block_tokens: int, max_batch: int | None, prompt: np.ndarray, output: np.ndarray,
                 rec: Records, start_transfer: Callable[[int, DecodeWorker], None],
                 timeline: list | None = None, on_finished: Callable[[int], None] | None = None,
                 kv: KVPolicy = RESERVE,
                 step_coeffs: Callable[[np.ndarray], tuple[float, float]] | None = None,
                 model: np.ndarray | None = None, n_models: int = 1,
                 paged_state: PagedState | None = None) -> None:
        self.env, self.wid, self.cost = env, wid, cost
        # Optional hook: a run's (alpha, beta) from the running batch's per-model counts
        # (colocated models, adapters); ``model`` maps request -> model index.
        self._step_coeffs = step_coeffs
        self._model = model
        self.model_counts = np.zeros(n_models, dtype=np.int64)
        self._on_finished = on_finished
        self.block = block_tokens
        self.capacity_blocks = kv_capacity_tokens // block_tokens
        self.max_batch = max_batch or 1 << 30
        self._prompt, self._output, self._rec = prompt, output, rec
        self._start_transfer = start_transfer
        self._coeffs: dict[int, tuple[float, float]] = {}
        self.kv = kv
        self.paged = kv.policy == "paged"
        self.watermark_blocks = int(kv.watermark * self.capacity_blocks)

        self.waiting: deque[int] = deque()
        self.load = 0  # waiting + admitted requests
        self.kv_load = 0  # KV tokens reserved + awaited (prompt + output of each)
        self.admitted = 0  # holding blocks: in transfer, ready or running
        self.used_blocks = 0
        self.reserved_tokens = 0
        self.ready: list[int] = []
        self._heap: list[tuple[int, int]] = []  # (iteration at which done, request)
        self.it = 0  # iterations completed
        self.batch = 0
        self._kv_offset = 0  # S: batch KV at iteration j is S + batch * j

        # Paged state, per request (indexed by request id): the variant's, or this worker's own.
        if paged_state is None:
            paged_state = PagedState(len(prompt) if self.paged else 0)
        self._off, self._fin, self._steps = paged_state.off, paged_state.fin, paged_state.steps
        self._seq, self._held, self._restore = paged_state.seq, paged_state.held, paged_state.restore
        self._members: dict[int, None] = {}  # running requests
        self._other_blocks = 0  # blocks of admitted requests not yet running
        self._batch_blocks = 0  # blocks of the running requests at the current boundary
        self._admissions = 0
        # Block phases of the running requests, sorted: (off - 1) mod block. At iteration j a
        # request's step fills its last block when (phase + j) mod block = block - 1.
        self._phases: list[int] = []

        # The run in progress (batch fixed): start time, KV at its first step, coefficients, length.
        self._run_t0 = 0.0
        self._run_busy0 = 0.0  # start of the busy time (before a restore pause)
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
        self.preemptions = 0
        self.restore_s = 0.0  # recompute / swap time spent on preempted requests
        self.timeline = timeline  # (time, batch, KV tokens held) at each change, when kept

    def blocks_for(self, rid: int) -> int:
        """Blocks reserved for a request under the ``reserve`` policy."""
        return -(-int(self._prompt[rid] + self._output[rid]) // self.block)

    def _first_step_blocks(self, rid: int) -> int:
        """Blocks a (re)admitted request needs for its next step: prompt + 1 + steps done."""
        return -(-(int(self._prompt[rid]) + 1 + int(self._steps[rid])) // self.block)

    # -- arrivals --------------------------------------------------------------------------
    def submit(self, rid: int) -> None:
        """A request routed here after prefill; it waits until blocks and batch room are free."""
        self._rec.decode_worker[rid] = self.wid
        self.waiting.append(rid)
        self.load += 1
        self.kv_load += int(self._prompt[rid] + self._output[rid])
        if not self.paged:
            self._admit()
        elif not self._running:
            if not self._settling:
                self._boundary()
        elif len(self.waiting) == 1 and not self._cut_pending:
            self._cut_if_admissible()

    def _admit(self) -> None:
        """Reserve policy: admit FCFS while prompt + output blocks fit (at any time)."""
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
            self._rec.decode_admit_s[rid] = self.env.now
            self._start_transfer(rid, self)

    def _admit_paged(self) -> None:
        """Paged policy, at a boundary: admit FCFS while the free blocks stay above the watermark."""
        rec, now = self._rec, self.env.now
        while self.waiting and self.admitted < self.max_batch:
            rid = self.waiting[0]
            need = self._first_step_blocks(rid)
            if self.capacity_blocks - self.used_blocks - need < self.watermark_blocks:
                break
            self.waiting.popleft()
            self.used_blocks += need
            self._other_blocks += need
            self._held[rid] = need
            self.admitted += 1
            self._admissions += 1
            self._seq[rid] = self._admissions
            if np.isnan(rec.decode_admit_s[rid]):
                rec.decode_admit_s[rid] = now
            if rec.preemptions[rid] > 0:
                self.ready.append(rid)  # its KV is restored on this GPU, not transferred
            else:
                self._start_transfer(rid, self)

    def _cut_if_admissible(self) -> None:
        """Mid-run arrival at an empty queue: end the run at the next boundary if it will be admitted there.

        Blocks only grow within a run, so if the head does not fit at the next boundary it
        does not fit before the run ends either.
        """
        if self.admitted >= self.max_batch:
            return
        room = self.capacity_blocks - self.used_blocks - self._first_step_blocks(self.waiting[0])
        if room < self.watermark_blocks:
            return  # it does not fit even now
        m = self._iterations_by(self.env.now - self._run_t0) + 1
        if m >= self._run_len:
            return  # the run ends at that boundary anyway
        if room - self._growth(m) >= self.watermark_blocks:
            self._cut_at(m)

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

    def _count(self, rids, sign: int) -> None:
        """Keep the per-model counts of the running batch (only when a step hook reads them)."""
        if self._step_coeffs is not None and len(rids):
            np.add.at(self.model_counts, self._model[np.asarray(rids, dtype=np.int64)], sign)

    def _join(self) -> float:
        """Ready requests join the batch; returns the seconds needed to restore preempted ones' KV."""
        rec, now, it = self._rec, self.env.now, self.it
        if not self.paged:
            for rid in self.ready:
                rec.decode_start_s[rid] = now
                steps = int(self._output[rid]) - 1  # the first token came from prefill
                heapq.heappush(self._heap, (it + steps, rid))
                self._kv_offset += int(self._prompt[rid]) + 1 - it
            self.batch += len(self.ready)
            self._count(self.ready, 1)
            self.ready.clear()
            return 0.0
        recompute: list[int] = []
        swap_tokens = 0
        for rid in self.ready:
            if np.isnan(rec.decode_start_s[rid]):
                rec.decode_start_s[rid] = now
            done = int(self._steps[rid])
            off = int(self._prompt[rid]) + 1 + done - it
            self._off[rid] = off
            self._fin[rid] = it + int(self._output[rid]) - 1 - done
            heapq.heappush(self._heap, (int(self._fin[rid]), rid))
            self._kv_offset += off
            self._members[rid] = None
            self._other_blocks -= int(self._held[rid])
            self._batch_blocks += int(self._held[rid])
            restore = int(self._restore[rid])
            if restore:
                self._restore[rid] = 0
                if self.kv.preemption == "recompute":
                    recompute.append(restore)
                else:
                    swap_tokens += -(-restore // self.block) * self.block
        self.batch += len(self.ready)
        self._count(self.ready, 1)
        self.ready.clear()
        pause = swap_tokens * self.kv.kv_bytes_per_token / self.kv.swap_Bps
        if recompute:
            lengths = np.asarray(recompute, dtype=np.int64)
            pause += self.cost.prefill_time(int(lengths.sum()), int(np.dot(lengths, lengths)), len(lengths))
        return pause

    def _grow(self) -> float:
        """Give every running request the blocks of its next step, preempting the latest admitted if needed.

        Returns the seconds spent swapping victims out (0 under recompute); sets the victims aside.
        """
        if not self._members:
            self._batch_blocks = 0
            self.used_blocks = self._other_blocks
            return 0.0
        # _batch_blocks is kept exact at every boundary (see _account and _join_filed).
        total = self._other_blocks + self._batch_blocks
        over = total - self.capacity_blocks
        if over <= 0:
            self.used_blocks = total
            return 0.0
        ids = np.fromiter(self._members, dtype=np.int64, count=len(self._members))
        nb = -(-(self._off[ids] + self.it) // self.block)
        order = np.argsort(-self._seq[ids], kind="stable")
        freed = np.cumsum(nb[order])
        k = int(np.searchsorted(freed, over)) + 1
        pause = 0.0
        for rid in ids[order[:k]].tolist():  # latest admitted first; each goes to the queue's head
            self._unfile(rid)
            pause += self._preempt(rid)
        self._batch_blocks -= int(freed[k - 1])
        self.used_blocks = self._other_blocks + self._batch_blocks
        return pause

    def _preempt(self, rid: int) -> float:
        off = int(self._off[rid])
        kv_next = off + self.it  # KV its next step would read: prompt + 1 + steps done
        self._steps[rid] = kv_next - int(self._prompt[rid]) - 1
        self._restore[rid] = kv_next - 1  # KV held now: prompt + tokens generated so far
        del self._members[rid]
        self._fin[rid] = -1
        self._kv_offset -= off
        self.batch -= 1
        self._count((rid,), -1)
        self.admitted -= 1
        self.waiting.appendleft(rid)
        self.preemptions += 1
        self._rec.preemptions[rid] += 1
        if self.kv.preemption == "swap":
            tokens = -(-(kv_next - 1) // self.block) * self.block
            return tokens * self.kv.kv_bytes_per_token / self.kv.swap_Bps
        return 0.0

    def _first_overflow(self) -> int:
        """Iterations from now until the batch's blocks first exceed the GPU's (paged, batch fixed).

        Request ``i`` needs a new block at iteration ``j`` when ``off_i + j = 1 (mod block)``;
        with ``F`` blocks free, every full round of ``block`` iterations takes one block per
        request, so the ``(F + 1)``-th new block lands ``F // B`` rounds in, at the
        ``(F mod B)``-th smallest first-crossing offset. Request ``i``'s first crossing is
        ``block - r_i`` iterations away, with ``r_i = (phase_i + it) mod block``, so that is
        the ``(F mod B)``-th largest ``r``: read from the sorted phases, rotated by ``it``.
        """
        phases, block = self._phases, self.block
        b = len(phases)
        rounds, rem = divmod(self.capacity_blocks - self.used_blocks, b)
        s = self.it % block
        k = bisect_left(phases, block - s)  # phases[k:] wrap around to the smallest r
        idx = b - 1 - rem  # rank of the wanted r in ascending order
        r = phases[k + idx] + s - block if idx < b - k else phases[idx - (b - k)] + s
        return rounds * block + block - r

    def _may_overflow(self, j: int) -> bool:
        """Whether the batch's blocks may exceed the GPU's within ``j`` iterations: a request gains
        at most ``ceil(j / block)`` blocks in them (a cheap bound that skips ``_first_overflow``)."""
        return self.batch * -(-j // self.block) > self.capacity_blocks - self.used_blocks

    def _growth(self, j: int) -> int:
        """Blocks the running batch gains over the next ``j`` iterations (from ``it``, batch fixed).

        Each request gains one block per ``block`` iterations, plus one more when its phase,
        rotated by ``it``, is within ``j mod block`` of the end of its block.
        """
        phases, block = self._phases, self.block
        q, t = divmod(j, block)
        gain = len(phases) * q
        if t:
            s = self.it % block
            edge = block - s  # phases at or above it wrap: r = phase + s - block
            gain += len(phases) - bisect_left(phases, block - t + edge)  # wrapped, r >= block - t
            gain += bisect_left(phases, edge) - bisect_left(phases, max(block - t - s, 0))  # unwrapped
        return gain

    def _join_filed(self) -> float:
        """``_join``, filing the joiners' block phases; nothing to do when none is ready."""
        if not self.ready:
            return 0.0
        joiners = self.ready.copy()
        pause = self._join()
        off, block, phases = self._off, self.block, self._phases
        for rid in joiners:
            insort(phases, (int(off[rid]) - 1) % block)
        return pause

    def _unfile(self, rid: int) -> None:
        """Drop a request leaving the batch (finished or preempted) from the block phases."""
        phases = self._phases
        del phases[bisect_left(phases, (int(self._off[rid]) - 1) % self.block)]

    def _finishing(self) -> list[int]:
        """Running requests done at iteration ``it``: the heap's entries keyed ``it`` (heap order, no pops)."""
        heap, it, fin = self._heap, self.it, self._fin
        if not heap or heap[0][0] != it:
            return []
        n, done, stack = len(heap), [], [0]
        while stack:
            k = stack.pop()
            if k < n and heap[k][0] == it:  # keys under a node are >= its key
                rid = heap[k][1]
                if fin[rid] == it and rid not in done:  # (skip stale and repeated entries)
                    done.append(rid)
                stack += (2 * k + 1, 2 * k + 2)
        return done

    def _boundary(self) -> None:
        """At an iteration boundary: let ready requests join, make room, admit, then start the next run."""
        env = self.env
        now = env.now
        pause = 0.0
        if self.paged:
            self._settling = True
            pause = self._join_filed()
            before = self.preemptions
            pause += self._grow()
            preempted_now = self.preemptions > before  # no admissions in a step that preempts
            if not preempted_now:
                self._admit_paged()
                pause += self._join_filed()
            self._settling = False
            if self.used_blocks > self.peak_blocks:
                self.peak_blocks = self.used_blocks
        else:
            self._settling = False
            if self.ready:
                self._join()
        if self.timeline is not None:
            held = self.used_blocks * self.block if self.paged else self.reserved_tokens
            self.timeline.append((now, self.batch, held))
        if self.batch == 0:
            self._running = False
            return
        self._running = True
        heap = self._heap
        if self.paged:
            while self._fin[heap[0][1]] != heap[0][0]:
                heapq.heappop(heap)  # preempted since it was pushed
        self._run_len = heap[0][0] - self.it
        if self.paged and self._may_overflow(self._run_len):
            self._run_len = min(self._run_len, self._first_overflow())
        self._run_busy0 = now
        self._run_t0 = now + pause
        self.restore_s += pause
        self._run_k0 = self._kv_offset + self.batch * self.it
        if self._step_coeffs is None:
            self._run_a, self._run_b = self._coeff(self.batch)
        else:
            self._run_a, self._run_b = self._step_coeffs(self.model_counts)
        self._cut_pending = False
        gen = self._gen
        self.events += 1
        env.timeout(pause + self._run_time(self._run_len)).callbacks.append(lambda _ev: self._run_end(gen))

    def _account(self, n: int) -> None:
        """Advance ``n`` iterations; paged: the run's peak blocks and the batch's blocks at the boundary."""
        self._settling = True
        if self.paged and n > 0:
            # Blocks peak at the run's last step; the bound (ceil((n - 1) / block) blocks per
            # request) skips the exact count when even that cannot beat the peak.
            used = self.used_blocks
            if used + self.batch * -(-(n - 1) // self.block) > self.peak_blocks:
                used += self._growth(n - 1)
                if used > self.peak_blocks:
                    self.peak_blocks = used
            self._batch_blocks += self._growth(n)
        self.it += n
        self.iterations += n
        self.tokens += n * self.batch
        self.busy_s += self.env.now - self._run_busy0
        if self.paged and n > 0 and self._heap[0][0] == self.it:  # those finishing leave with their blocks
            block, it = self.block, self.it
            for rid in self._finishing():
                self._batch_blocks -= -(-(int(self._off[rid]) + it) // block)
                self._unfile(rid)

    def _run_end(self, gen: int) -> None:
        if gen != self._gen:
            return  # the run was cut short and replaced
        self._account(self._run_len)
        rec, heap, now, it = self._rec, self._heap, self.env.now, self.it
        freed = 0
        while heap and heap[0][0] == it:
            _, rid = heapq.heappop(heap)
            if self.paged:
                if self._fin[rid] != it:
                    continue  # preempted since it was pushed
                self._fin[rid] = -1
                del self._members[rid]
                self._kv_offset -= int(self._off[rid])
                self.kv_load -= int(self._prompt[rid] + self._output[rid])
            else:
                self._kv_offset -= int(self._prompt[rid]) + 1 - (it - int(self._output[rid]) + 1)
                tokens = int(self._prompt[rid] + self._output[rid])
                self.reserved_tokens -= tokens
                self.kv_load -= tokens
                self.used_blocks -= self.blocks_for(rid)
            rec.finish_s[rid] = now
            freed += 1
            if self._step_coeffs is not None:
                self.model_counts[self._model[rid]] -= 1
        self.batch -= freed
        self.admitted -= freed
        self.load -= freed
        if self._on_finished is not None and freed:
            self._on_finished(freed)
        if not self.paged:
            self._admit()
        self._boundary()

    def _cut_run(self) -> None:
        """A request became ready mid-run: end the run at the next iteration boundary."""
        elapsed = self.env.now - self._run_t0
        m = self._iterations_by(elapsed) + 1  # the iteration in progress ends the cut
        if m >= self._run_len:
            return  # the run ends at that boundary anyway
        self._cut_at(m)

    def _cut_at(self, m: int) -> None:
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
        if elapsed <= 0:
            return 0  # still restoring preempted requests' KV
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

    def stats(self) -> DecodeStats:
        """What this worker did, as a plain record (taken at the end of a run).

        Busy time and work are accounted when a run ends, so a run still in progress when the run
        stops (at the horizon) is added here: busy up to the stop, with the iterations it completed.
        """
        busy, iterations, tokens = self.busy_s, self.iterations, self.tokens
        if self._running:
            busy += self.env.now - self._run_busy0
            done = self._iterations_by(self.env.now - self._run_t0)
            iterations += done
            tokens += done * self.batch
        return DecodeStats(self.wid, busy, iterations, tokens, self.peak_blocks, self.capacity_blocks,
                           self.block, self.preemptions, self.restore_s, self.timeline)


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
    env = simpy.Environment()
    rec = Records(n)
    # The cluster's convention: prompt p gives context p + 1 at the first step and the first
    # output token comes from prefill, so map (c, o) -> (p = c - 1, o + 1).
    prompt = np.asarray(context_tokens, dtype=np.int64) - 1
    output = np.asarray(output_tokens, dtype=np.int64) + 1
    worker = DecodeWorker(env, 0, cost, kv_capacity_tokens=kv_capacity_tokens, block_tokens=block_tokens,
                          max_batch=max_batch, prompt=prompt, output=output, rec=rec,
                          start_transfer=lambda rid, w: w.kv_arrived(rid), kv=kv)
    order = np.argsort(arrival_s, kind="stable")

    def arrivals():
        for rid in order:
            yield env.timeout(max(0.0, float(arrival_s[rid]) - env.now))
            worker.submit(int(rid))

    env.process(arrivals())
    env.run()
    return {"decode_start_s": rec.decode_start_s, "finish_s": rec.finish_s, "preemptions": rec.preemptions,
            "peak_blocks": worker.peak_blocks, "capacity_blocks": worker.capacity_blocks}
