"""Decode GPUs: continuous batching over block-managed KV memory, one event per batch change.

The worker decides who is in the batch: admission under the KV policy, joins, finishes and
preemptions. Between those changes :class:`~sunsim.sim.coalesced_runs.CoalescedRuns` advances
the batch a whole run of iterations per event, and under paged memory
:class:`~sunsim.sim.kv_ledger.KVBlockLedger` tells in a few bisections how many blocks a run
gains and the first iteration at which they would exceed the GPU's (which ends the run), so
nothing is done per token, per iteration or per request of the batch to keep memory exact.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable

import numpy as np

from sunsim.costs.model import CostModel
from sunsim.sim.coalesced_runs import CoalescedRuns
from sunsim.sim.environment import Environment
from sunsim.sim.kv_arrivals import KVArrivals
from sunsim.sim.kv_ledger import KVBlockLedger
from sunsim.sim.kv_policy import RESERVE, KVPolicy, PagedState
from sunsim.sim.preemption import Preemption
from sunsim.sim.records import Records
from sunsim.sim.stats import DecodeStats

#: A running request's entry in its worker's heap: the iteration at which it is done, shifted above its slot
#: (one int orders as the pair would, and compares faster than a tuple; slots stay far below 2**32).
SLOT_BITS = 32
SLOT_MASK = (1 << SLOT_BITS) - 1


class DecodeWorker(KVArrivals, Preemption, CoalescedRuns):
    """Continuous batching over block-managed KV memory, iterations coalesced.

    Life of a request here: *waiting* (FCFS, for KV blocks and batch room) -> *admitted*
    (blocks allocated, KV in flight over the interconnect) -> *ready* (KV arrived; joins at
    the next iteration boundary) -> *running* -> done; under the paged policy a running
    request may be *preempted* back to the head of the waiting queue. A transfer's end is
    known when it starts, so it is no event of its own: the run in progress ends at the
    first boundary after it (or an idle worker wakes then), where the request joins.

    At each iteration boundary (paged): ready requests join; every running request gets the
    blocks its next step needs, preempting the most recently admitted if they do not fit;
    then, if nobody was preempted, waiting requests are admitted while the watermark holds.
    Admission only happens at boundaries, as a serving engine's scheduler runs once per step
    (one made for the next boundary may be decided on arrival). ``start_transfer(rid, worker,
    at)`` starts moving an admitted request's KV at time ``at``, never earlier than now, and
    returns when it is in this GPU's memory.
    """

    __slots__ = ("wid", "_on_finished", "block", "capacity_blocks", "max_batch", "_prompt", "_output", "_rec",
                 "_start_transfer", "kv", "paged", "watermark_blocks", "ledger", "waiting", "load", "_queued_kv",
                 "admitted", "reserved_tokens", "ready", "_arriving", "_transfers", "_wake_at", "_heap", "_seq",
                 "_resumes", "_members", "_admissions", "admit_ahead", "_settling", "preemptions", "restore_s",
                 "timeline")  # (slots, as CoalescedRuns')

    def __init__(self, env: Environment, wid: int, cost: CostModel, kv_capacity_tokens: int,
                 block_tokens: int, max_batch: int | None, prompt: np.ndarray, output: np.ndarray,
                 rec: Records, start_transfer: Callable[[int, DecodeWorker, float], float],
                 timeline: list | None = None, on_finished: Callable[[list[int]], None] | None = None,
                 kv: KVPolicy = RESERVE,
                 step_coeffs: Callable[[np.ndarray], tuple[float, float]] | None = None,
                 model: np.ndarray | None = None, n_models: int = 1,
                 paged_state: PagedState | None = None, admit_ahead: bool = False) -> None:
        super().__init__(env, cost, step_coeffs, model, n_models)
        self.wid = wid
        self._on_finished = on_finished
        self.block = block_tokens
        self.capacity_blocks = kv_capacity_tokens // block_tokens
        self.max_batch = max_batch or 1 << 30
        self._prompt, self._output, self._rec = prompt, output, rec
        self._start_transfer = start_transfer
        self.kv = kv
        self.paged = kv.policy == "paged"
        self.watermark_blocks = int(kv.watermark * self.capacity_blocks)
        self.ledger = KVBlockLedger(block_tokens, self.capacity_blocks)  # both policies; paged blocks grow

        self.waiting: deque[int] = deque()
        self.load = 0  # waiting + admitted requests
        self._queued_kv = 0  # KV tokens of requests here but not in the batch: prompt + steps done
        self.admitted = 0  # holding blocks: in transfer, ready or running
        self.reserved_tokens = 0
        self.ready: list[int] = []  # KV here: join at the boundary being settled
        self._arriving: list[tuple[float, int, int]] = []  # (time the KV is here, order, request), a heap
        self._transfers = 0
        self._wake_at = math.inf  # an idle worker's timer for the next KV to arrive (inf: none set)
        self._heap: list[int] = []  # (iteration at which done) << SLOT_BITS | request

        # Paged state, per request (indexed by request id): the variant's, or this worker's own.
        if paged_state is None:
            paged_state = PagedState(len(prompt) if self.paged else 0)
        self._seq = paged_state.seq
        # Preempted requests, until they run again: id -> (steps done, KV tokens to restore when they join).
        self._resumes: dict[int, tuple[int, int]] = {}
        # Running requests: id -> (off, fin), its step at iteration j reading off + j KV tokens, done at
        # iteration fin (a heap entry whose iteration is not its fin is stale: preempted since).
        self._members: dict[int, tuple[int, int]] = {}
        self._admissions = 0

        # Paged: a mid-run arrival admitted at the next boundary is admitted on arrival, for that boundary,
        # when that cannot change the run (see _cut_if_admissible). Needs transfers that take time (one
        # ending at the boundary itself would join there) and nobody taking waiting requests back meanwhile.
        self.admit_ahead = admit_ahead and self.paged
        self._settling = False  # inside end-of-run bookkeeping: arrivals just queue up
        self.preemptions = 0
        self.restore_s = 0.0  # recompute / swap time spent on preempted requests
        self.timeline = timeline  # (time, batch, KV tokens held) at each change, when kept

    @property
    def kv_load(self) -> int:
        """KV tokens this worker holds or awaits, as a router could know them: the running batch's KV now
        (prompts and tokens generated so far) plus the prompts (and progress) of requests not yet running.

        Never the requests' future output, which no router knows: a policy balancing on this is not clairvoyant.
        """
        if self._running:
            kv = self._run_k0 + self.batch * self._iterations_now()
        else:
            kv = self._kv_offset + self.batch * self.it
        return int(kv) + self._queued_kv

    def give_back_waiting(self) -> list[int]:
        """Take the waiting requests that never ran here off this worker (to be routed elsewhere); a preempted
        one stays, its progress lives on this GPU."""
        keep: deque[int] = deque()
        given = []
        for rid in self.waiting:
            if rid in self._resumes:
                keep.append(rid)
            else:
                given.append(rid)
                self.load -= 1
                self._queued_kv -= self._prompt[rid]
        self.waiting = keep
        return given

    @property
    def peak_blocks(self) -> int:
        """The most KV blocks allocated at once."""
        return self.ledger.peak

    def blocks_for(self, rid: int) -> int:
        """Blocks reserved for a request under the ``reserve`` policy."""
        return -(-int(self._prompt[rid] + self._output[rid]) // self.block)

    def _first_step_blocks(self, rid: int) -> int:
        """Blocks a (re)admitted request needs for its next step: prompt + 1 + steps done."""
        resume = self._resumes.get(rid) if self._resumes else None
        return -(-(self._prompt[rid] + 1 + (resume[0] if resume else 0)) // self.block)

    # -- arrivals --------------------------------------------------------------------------
    def submit(self, rid: int) -> None:
        """A request routed here after prefill; it waits until blocks and batch room are free."""
        self._rec.decode_worker[rid] = self.wid
        self.waiting.append(rid)
        self.load += 1
        self._queued_kv += self._prompt[rid]
        if not self.paged:
            self._admit()
        elif not self._running:
            if not self._settling:
                self._boundary()
        elif len(self.waiting) == 1:
            self._cut_if_admissible()

    def _admit(self) -> None:
        """Reserve policy: admit FCFS while prompt + output blocks fit (at any time)."""
        ledger = self.ledger
        while self.waiting and self.admitted < self.max_batch:
            rid = self.waiting[0]
            need = self.blocks_for(rid)
            if ledger.used + need > ledger.capacity:
                break  # FCFS: the head blocks the queue, as in vLLM's FCFS scheduler
            self.waiting.popleft()
            self.reserved_tokens += int(self._prompt[rid] + self._output[rid])
            ledger.hold(need)
            self.admitted += 1
            self._rec.decode_admit_s[rid] = self.env.now
            self._expect(rid, self._start_transfer(rid, self, self.env.now))

    def _admit_paged(self) -> None:
        """Paged policy, at a boundary: admit FCFS while the free blocks stay above the watermark."""
        ledger = self.ledger
        while self.waiting and self.admitted < self.max_batch:
            need = self._first_step_blocks(self.waiting[0])
            if ledger.capacity - ledger.used - need < self.watermark_blocks:
                break
            self._admit_head(need, self.env.now)

    def _admit_head(self, need: int, at: float) -> None:
        """Admit the queue's head with ``need`` blocks at time ``at`` (now, or the boundary it is admitted for)."""
        rid = self.waiting.popleft()
        self.ledger.hold(need)  # until it joins the batch, which then grows them
        self.admitted += 1
        self._admissions += 1
        self._seq[rid] = self._admissions
        if rid in self._resumes:
            self.ready.append(rid)  # its KV is restored on this GPU, not transferred
        else:  # its first admission
            self._rec.decode_admit_s[rid] = at
            self._expect(rid, self._start_transfer(rid, self, at))

    def _cut_if_admissible(self) -> None:
        """Mid-run arrival at an empty queue: if it will be admitted at the next boundary, admit it there.

        Blocks only grow within a run, so if the head does not fit at the next boundary it
        does not fit before the run ends either. An admission changes nothing in the batch,
        so when its blocks cannot end the run sooner (the batch's growth to the run's last
        step still fits beside them) it is made now, for that boundary, and the run goes on
        (with ``admit_ahead``); otherwise the run is cut there and the boundary admits it.
        """
        if self.admitted >= self.max_batch:
            return
        ledger = self.ledger
        need = self._first_step_blocks(self.waiting[0])
        room = ledger.capacity - ledger.used - need
        if room < self.watermark_blocks:
            return  # it does not fit even now
        m = self._iterations_now() + 1
        last = self._run_len - 1
        if m > last:
            return  # the run ends at that boundary anyway
        # (the growth bound usually answers both questions below without counting)
        bound = ledger.growth_bound(last)
        if bound > room - self.watermark_blocks and room - ledger.growth(m) < self.watermark_blocks:
            return
        if self.admit_ahead and (bound <= room or ledger.growth(last) <= room):
            at = self._run_t0 + self._run_time(m)
            self._admit_head(need, at)
            if self.timeline is not None:  # as that boundary would show it
                self._mark(at, (ledger.used + ledger.growth(m)) * self.block)
        else:
            self._cut_at(m)

    def _join(self) -> float:
        """Ready requests join the batch; returns the seconds needed to restore preempted ones' KV."""
        rec, now, it = self._rec, self.env.now, self.it
        if not self.paged:
            for rid in self.ready:
                rec.decode_start_s[rid] = now
                steps = int(self._output[rid]) - 1  # the first token came from prefill
                heapq.heappush(self._heap, (it + steps) << SLOT_BITS | rid)
                self._kv_offset += int(self._prompt[rid]) + 1 - it
                self._queued_kv -= int(self._prompt[rid])
            self.batch += len(self.ready)
            if self._step_coeffs is not None:
                self._count(self.ready, 1)
            self.ready.clear()
            return 0.0
        recompute: list[int] = []
        swap_tokens = 0
        join, push = self.ledger.join, heapq.heappush
        members, heap, prompt, output, resumes = self._members, self._heap, self._prompt, self._output, self._resumes
        start, offset, queued = rec.decode_start_s, self._kv_offset, self._queued_kv
        for rid in self.ready:
            resume = resumes.pop(rid, None) if resumes else None
            if resume is None:  # its first join
                start[rid] = now
                done = 0
            else:
                done, restore = resume
                if self.kv.preemption == "recompute":
                    recompute.append(restore)
                else:
                    swap_tokens += -(-restore // self.block) * self.block
            p = prompt[rid]
            off = p + 1 + done - it
            queued -= p + done
            fin = it + output[rid] - 1 - done
            push(heap, fin << SLOT_BITS | rid)
            offset += off
            members[rid] = (off, fin)
            join(off)
        self._kv_offset, self._queued_kv = offset, queued
        self.batch += len(self.ready)
        if self._step_coeffs is not None:
            self._count(self.ready, 1)
        self.ready.clear()
        if not swap_tokens and not recompute:
            return 0.0
        pause = swap_tokens * self.kv.kv_bytes_per_token / self.kv.swap_Bps
        if recompute:
            lengths = np.asarray(recompute, dtype=np.int64)
            pause += self.cost.prefill_time(int(lengths.sum()), int(np.dot(lengths, lengths)), len(lengths))
        return pause

    def _mark(self, t: float, held: int) -> None:
        """Timeline: the batch and the KV tokens held from ``t`` on (the latest change at a time stands)."""
        timeline = self.timeline
        if timeline and timeline[-1][0] == t:
            timeline[-1] = (t, self.batch, held)
        else:
            timeline.append((t, self.batch, held))

    def _boundary(self) -> None:
        """At an iteration boundary: let ready requests join, make room, admit, then start the next run."""
        pause = 0.0
        self._wake_at = math.inf
        arriving, ledger = self._arriving, self.ledger
        if arriving and arriving[0][0] <= self.env.now:
            self._arrived()
        if self.paged:
            self._settling = True
            if self.ready:
                pause = self._join()
            if (over := ledger.settle()) > 0:
                pause += self._grow(over)  # no admissions in a step that preempts
            elif self.waiting:
                self._admit_paged()
                if self.ready:
                    pause += self._join()
            self._settling = False
        else:
            self._settling = False
            if self.ready:
                self._join()
        if self.timeline is not None:
            self._mark(self.env.now, ledger.used * self.block if self.paged else self.reserved_tokens)
        if self.batch == 0:
            self._running = False
            if arriving:
                self._sleep(arriving[0][0])
            return
        heap = self._heap
        if self.paged:
            if self.preemptions:  # (only a preempted request leaves a stale entry)
                members = self._members
                while (entry := members.get(heap[0] & SLOT_MASK)) is None or entry[1] != heap[0] >> SLOT_BITS:
                    heapq.heappop(heap)  # preempted since it was pushed
            run_len = (heap[0] >> SLOT_BITS) - self.it  # until the next request finishes
            if ledger.may_overflow(run_len):
                run_len = min(run_len, ledger.first_overflow())  # or its KV would not fit
        else:
            run_len = (heap[0] >> SLOT_BITS) - self.it
        if pause:
            self.restore_s += pause
        self._start_run(run_len, pause, arriving[0][0] if arriving else None)

    def _account(self, n: int) -> None:
        """Advance ``n`` iterations and the busy time; paged: the ledger records the run's peak (those finishing
        leave it next)."""
        self._settling = True
        self._advance(n)
        if self.paged:
            self.ledger.advance(n)

    def _run_end(self, _ev: object = None) -> None:
        """The run's timer fired: account it, let the requests done at this boundary leave, go on."""
        self._account(self._run_len)
        heap, it = self._heap, self.it
        later = (it + 1) << SLOT_BITS  # the entries below are done at iteration it
        if heap[0] >= later:  # a cut: nobody finishes here
            self._boundary()
            return
        done: list[int] = []
        if self.paged:
            members, leave, pop = self._members, self.ledger.leave, heapq.heappop
            while heap and heap[0] < later:
                rid = pop(heap) & SLOT_MASK
                entry = members.get(rid)
                if entry is None or entry[1] != it:
                    continue  # preempted since it was pushed (or an entry repeated)
                del members[rid]
                self._kv_offset -= entry[0]
                leave(entry[0])  # with its blocks
                done.append(rid)
        else:
            prompt, output = self._prompt, self._output
            while heap and heap[0] < later:
                rid = heapq.heappop(heap) & SLOT_MASK
                self._kv_offset -= prompt[rid] + 1 - (it - output[rid] + 1)
                self.reserved_tokens -= prompt[rid] + output[rid]
                self.ledger.release(self.blocks_for(rid))
                done.append(rid)
        if done:
            now, finish = self.env.now, self._rec.finish_s
            for rid in done:
                finish[rid] = now
            if self._step_coeffs is not None:
                self._count(done, -1)
            freed = len(done)
            self.batch -= freed
            self.admitted -= freed
            self.load -= freed
            if self._on_finished is not None:
                self._on_finished(done)
            if not self.paged:
                self._admit()
        self._boundary()

    def stats(self) -> DecodeStats:
        """What this worker did, as a plain record (taken at the end of a run; see :meth:`_work`)."""
        busy, iterations, tokens = self._work()
        return DecodeStats(self.wid, busy, iterations, tokens, self.peak_blocks, self.capacity_blocks,
                           self.block, self.preemptions, self.restore_s, self.timeline)
