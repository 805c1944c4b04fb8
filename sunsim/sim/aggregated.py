"""An aggregated GPU: prefill and decode on one worker, as vLLM V1 schedules them (chunked prefill).

Each iteration has a token budget (``max_num_batched_tokens``). The running decodes go first, one
token each; prefill chunks of the requests still prefilling, then of waiting ones admitted FCFS, fill
the rest, a prompt longer than what is left being split over iterations. A request's first token comes
from the iteration that computes the last chunk of its prompt; it decodes from the next one on.

An iteration with prefill chunks is timed by the cost model's
:meth:`~sunsim.costs.model.CostModel.mixed_time` and stepped one at a time. While no prefill work can
run (nothing waiting, or the queue's head does not fit), the batch is decode-only and
:class:`~sunsim.sim.coalesced_runs.CoalescedRuns` advances it whole runs of iterations in closed form
until a request finishes, its KV would overflow, or an arrival that fits cuts the run.

KV memory is paged as vLLM's block manager does it: a chunk's blocks are allocated when the chunk is
scheduled, a decode token's when its step is; when a step's blocks do not fit, the latest admitted
running requests (decoding or prefilling) are preempted and later recomputed: they queue again at the
head and prefill their prompt and the tokens they had generated, which yields their next token (vLLM
V1 preempts by recompute only). Under the ``reserve`` policy, prompt + output blocks are held from
admission and nothing is preempted.

Records: ``prefill_worker`` and ``decode_worker`` are this worker; ``prefill_start_s`` the start of the
first chunk; ``first_token_s`` the end of the prompt's last chunk; ``decode_start_s`` the same instant
(the request joins the next iteration); ``decode_admit_s`` and ``kv_ready_s`` stay empty: there is no
hand-over and no transfer.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

import numpy as np

from sunsim.costs.lora import AdapterCache, LoraCost
from sunsim.costs.lora import step_coeffs as lora_step_coeffs
from sunsim.costs.model import CostModel
from sunsim.sim.coalesced_runs import CoalescedRuns
from sunsim.sim.environment import Environment
from sunsim.sim.kv_ledger import KVBlockLedger
from sunsim.sim.kv_policy import Alloc, KVPolicy, fixed_alloc
from sunsim.sim.records import Records
from sunsim.sim.stats import DecodeStats


class AggregatedState:
    """Per-request state of a variant's aggregated workers, one array per field (a request lives on one)."""

    def __init__(self, n: int = 0, alloc: Alloc | None = None) -> None:
        alloc = alloc or fixed_alloc(n)
        self.gen = alloc(np.int64, 0)  # output tokens generated (as of its last prefill or preemption)
        self.done = alloc(np.int64, 0)  # tokens of its current prefill computed so far
        self.off = alloc(np.int64, 0)  # decoding: KV read at iteration j is off + j
        self.fin = alloc(np.int64, -1)  # decoding: iteration at which it is done; -1: not decoding
        self.seq = alloc(np.int64, 0)  # admission order (preemption victims: latest first)


class AggregatedWorker(CoalescedRuns):
    """One GPU serving prefill and decode under a token budget per iteration (see the module docstring).

    At most ``max_batch`` requests run at once (decoding or prefilling), and never more than the budget,
    so the decode rows always leave room for a chunk. ``lora`` prices every task as an adapter on the
    base (multi-LoRA aggregated serving): the adapter work of each iteration's rows and distinct adapters
    is added, as multi-LoRA decode does; ``adapters`` is then the GPU's adapter cache, and a request
    waits for its adapter to load before it queues.
    """

    def __init__(self, env: Environment, wid: int, cost: CostModel, kv_capacity_tokens: int,
                 block_tokens: int, max_batch: int | None, budget: int, prompt: np.ndarray, output: np.ndarray,
                 rec: Records, kv: KVPolicy, state: AggregatedState,
                 on_finished: Callable[[list[int]], None] | None = None, timeline: list | None = None,
                 lora: LoraCost | None = None, model: np.ndarray | None = None, n_models: int = 1,
                 adapters: AdapterCache | None = None) -> None:
        hook = lora_step_coeffs(cost, lora) if lora is not None else None
        super().__init__(env, cost, hook, model, n_models)
        self.wid, self.block, self.budget = wid, block_tokens, budget
        self.max_running = min(max_batch or budget, budget)
        self.capacity_blocks = kv_capacity_tokens // block_tokens
        self.kv, self.paged = kv, kv.policy == "paged"
        self.watermark_blocks = int(kv.watermark * self.capacity_blocks)
        self.ledger = KVBlockLedger(block_tokens, self.capacity_blocks)
        self._prompt, self._output, self._rec = prompt, output, rec
        self._s = state
        self._on_finished = on_finished
        self._finished: list[int] = []  # done since the last report to on_finished
        self._lora = lora if lora is not None and lora.rank else None
        self._adapters = adapters
        self.timeline = timeline

        self.waiting: deque[int] = deque()  # to prefill (new, or preempted: recompute), FCFS
        self.prefilling: deque[int] = deque()  # admitted, prompt not yet computed
        self._members: dict[int, None] = {}  # decoding
        self._heap: list[tuple[int, int]] = []  # (iteration at which done, request)
        self._chunks: list[tuple[int, int, int]] = []  # the mixed step in progress: (request, new, prefix)
        self._mixed = False  # the pending timer ends a mixed step, not a decode run
        self._admissions = 0
        self.load = 0  # waiting + running (routing)
        self.kv_load = 0  # prompt + output of each (routing)
        self.preemptions = 0
        self.prefills_done = 0  # prompts completed (each yields one token; recomputes included)
        self.mixed_iterations = 0

    @property
    def peak_blocks(self) -> int:
        return self.ledger.peak

    @property
    def running(self) -> int:
        return self.batch + len(self.prefilling)

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.block)

    def _target(self, rid: int) -> int:
        """Tokens its (re)prefill computes: the prompt and the tokens it had generated."""
        return int(self._prompt[rid] + self._s.gen[rid])

    # -- arrivals ------------------------------------------------------------------------------
    def submit(self, rid: int) -> None:
        """A request routed here; it queues once its adapter (if any) is resident."""
        rec = self._rec
        rec.prefill_worker[rid] = rec.decode_worker[rid] = self.wid
        self.load += 1
        self.kv_load += int(self._prompt[rid] + self._output[rid])
        if self._adapters is not None:
            ready = self._adapters.ready_at(int(self._model[rid]), self.env.now)
            if ready > self.env.now:
                self.env.call_later(ready - self.env.now, lambda _ev: self._enqueue(rid))
                return
        self._enqueue(rid)

    def _enqueue(self, rid: int) -> None:
        self.waiting.append(rid)
        if not self._running:
            self._boundary()
        elif not self._mixed and len(self.waiting) == 1:
            self._cut_if_admissible()

    def _admissible_in(self, m: int) -> bool:
        """Whether the queue's head would be admitted ``m`` iterations into the decode run starting at the
        ledger's boundary (blocks only grow within a run: if it does not fit then, it does not fit later)."""
        if self.running >= self.max_running:
            return False
        rid, ledger = self.waiting[0], self.ledger
        if not self.paged:
            return ledger.used + self._blocks(int(self._prompt[rid] + self._output[rid])) <= ledger.capacity
        room = ledger.capacity - ledger.used - self._blocks(min(self._target(rid), self.budget - self.batch))
        return room >= self.watermark_blocks and room - ledger.growth(m) >= self.watermark_blocks

    def _cut_if_admissible(self) -> None:
        """Mid decode run: end the run at the next boundary if the queue's head will be admitted there."""
        m = self._iterations_now() + 1
        if m < self._run_len and self._admissible_in(m):  # (else the run ends at that boundary anyway)
            self._cut_at(m)

    # -- the iteration boundary ----------------------------------------------------------------
    def _boundary(self) -> None:
        """Make room for the next step (preempting), admit, then start a mixed step or a decode run."""
        chunks, preempted = self._fit()
        if not preempted or not (chunks or self.batch):  # no admissions in a step that preempts, unless idle
            self._admit(chunks)
        if self.timeline is not None:
            held = self.ledger.used * self.block
            self.timeline.append((self.env.now, self.running, held))
        if chunks:
            self._start_mixed(chunks)
        elif self.batch:
            heap, fin = self._heap, self._s.fin
            while fin[heap[0][1]] != heap[0][0]:
                heapq.heappop(heap)  # preempted since it was pushed
            run_len = heap[0][0] - self.it
            if self.paged and self.ledger.may_overflow(run_len):
                run_len = min(run_len, self.ledger.first_overflow())
            if preempted and self.waiting and self._admissible_in(1):
                run_len = 1  # admissions skipped only for the preempting step: the next one takes them
            self._start_run(run_len, 0.0)
        else:
            self._running = False

    def _continuing(self) -> list[tuple[int, int, int]]:
        """Chunks of the requests already prefilling, FCFS, in the budget the decode rows leave."""
        left, out, done = self.budget - self.batch, [], self._s.done
        for rid in self.prefilling:
            prefix = int(done[rid])
            c = min(self._target(rid) - prefix, left)
            if c > 0:
                out.append((rid, c, prefix))
                left -= c
        return out

    def _fit(self) -> tuple[list[tuple[int, int, int]], bool]:
        """Allocate the decode rows' blocks and the continuing chunks'; preempt the latest admitted
        running requests until they fit. Returns the chunks and whether anything was preempted."""
        ledger = self.ledger
        if not self.paged:
            return self._continuing(), False
        victims: list[int] | None = None
        while True:
            chunks = self._continuing()
            extra = sum(self._blocks(p + c) - self._blocks(p) for _, c, p in chunks)
            if ledger.held + ledger.batch + extra <= ledger.capacity:
                break
            if victims is None:
                running = list(self._members) + list(self.prefilling)
                victims = sorted(running, key=lambda r: -int(self._s.seq[r]))
            self._preempt(victims.pop(0))
        # Allocated with the decode rows' at the settle (``hold`` would count them on a stale total).
        ledger.held += extra
        ledger.settle()
        return chunks, victims is not None

    def _admit(self, chunks: list[tuple[int, int, int]]) -> None:
        """Waiting requests join FCFS while the budget, the running cap and memory allow (paged: the free
        blocks stay above the watermark after the first chunk's; reserve: prompt + output fit)."""
        ledger, rec, s = self.ledger, self._rec, self._s
        left = self.budget - self.batch - sum(c for _, c, _ in chunks)
        while self.waiting and left > 0 and self.running < self.max_running:
            rid = self.waiting[0]
            c = min(self._target(rid), left)
            if self.paged:
                need = self._blocks(c)
                if ledger.capacity - ledger.used - need < self.watermark_blocks:
                    break
            else:
                need = self._blocks(int(self._prompt[rid] + self._output[rid]))
                if ledger.used + need > ledger.capacity:
                    break  # FCFS: the head blocks the queue
            self.waiting.popleft()
            ledger.hold(need)
            self._admissions += 1
            s.seq[rid] = self._admissions
            s.done[rid] = 0
            self.prefilling.append(rid)
            chunks.append((rid, c, 0))
            left -= c
            if np.isnan(rec.prefill_start_s[rid]):
                rec.prefill_start_s[rid] = self.env.now

    def _preempt(self, rid: int) -> None:
        """Send a running request back to the queue's head, its blocks freed (recomputed when readmitted)."""
        s, ledger = self._s, self.ledger
        if rid in self._members:
            off = int(s.off[rid])
            s.gen[rid] = off + self.it - int(self._prompt[rid])  # its next step would read prompt + generated
            ledger.leave(off)
            del self._members[rid]
            s.fin[rid] = -1
            self._kv_offset -= off
            self.batch -= 1
            self._count((rid,), -1)
        else:
            ledger.release(self._blocks(int(s.done[rid])))
            self.prefilling.remove(rid)
        s.done[rid] = 0
        self.waiting.appendleft(rid)
        self.preemptions += 1
        self._rec.preemptions[rid] += 1

    # -- mixed steps -----------------------------------------------------------------------------
    def _start_mixed(self, chunks: list[tuple[int, int, int]]) -> None:
        """One iteration of the decode rows and the chunks, timed by the cost model's mixed step."""
        self._running, self._mixed, self._chunks = True, True, chunks
        kv = self._kv_offset + self.batch * self.it
        t = self.cost.mixed_time(self.batch, kv, [(c, p) for _, c, p in chunks])
        if self._lora is not None:
            rows = self.batch + sum(c for _, c, _ in chunks)
            distinct = set(np.flatnonzero(self.model_counts).tolist()) | {int(self._model[r]) for r, _, _ in chunks}
            t += self._lora.time(rows, len(distinct))
        self._run_busy0 = self.env.now
        self.events += 1
        self.mixed_iterations += 1
        self.env.call_later(t, lambda _ev: self._mixed_end())

    def _mixed_end(self) -> None:
        """The mixed step is done: the decode rows advance, finished prompts yield their token."""
        self._mixed = False
        freed = self._account(1)
        s, rec, now, it, ledger = self._s, self._rec, self.env.now, self.it, self.ledger
        for rid, c, _ in self._chunks:
            s.done[rid] += c
            target = self._target(rid)
            if s.done[rid] < target:
                continue
            self.prefilling.remove(rid)
            self.prefills_done += 1
            s.gen[rid] += 1
            if np.isnan(rec.first_token_s[rid]):
                rec.first_token_s[rid] = now
            if s.gen[rid] >= self._output[rid]:  # the prompt's token was its last
                if self.paged:
                    ledger.release(self._blocks(target))
                else:
                    ledger.release(self._blocks(int(self._prompt[rid] + self._output[rid])))
                self._finish(rid)
                freed += 1
                continue
            if np.isnan(rec.decode_start_s[rid]):
                rec.decode_start_s[rid] = now
            off = target + 1 - it  # its first decode step (at ``it``) reads the context and the new token
            s.off[rid] = off
            s.fin[rid] = it + int(self._output[rid] - s.gen[rid])
            heapq.heappush(self._heap, (int(s.fin[rid]), rid))
            self._kv_offset += off
            self._members[rid] = None
            self.batch += 1
            self._count((rid,), 1)
            if self.paged:
                # the new token's slot: needed by the next step, allocated (or preempted for) at its settle
                ledger.held += self._blocks(target + 1) - self._blocks(target)
                ledger.join(off)
        self._chunks = []
        if freed:
            self._report_finished()
        self._boundary()

    # -- decode runs (CoalescedRuns) ------------------------------------------------------------
    def _account(self, n: int) -> int:
        """Advance ``n`` iterations of the decode rows; those done leave. Returns how many finished."""
        self._advance(n)
        if self.paged:
            self.ledger.advance(n)
        heap, it, s, freed = self._heap, self.it, self._s, 0
        while heap and heap[0][0] == it:
            _, rid = heapq.heappop(heap)
            if s.fin[rid] != it:
                continue  # preempted since it was pushed
            off = int(s.off[rid])
            s.fin[rid] = -1
            del self._members[rid]
            self._kv_offset -= off
            self.batch -= 1
            self._count((rid,), -1)
            if self.paged:
                self.ledger.leave(off)
            else:
                self.ledger.release(self._blocks(int(self._prompt[rid] + self._output[rid])))
            self._finish(rid)
            freed += 1
        return freed

    def _finish(self, rid: int) -> None:
        self._rec.finish_s[rid] = self.env.now
        self._finished.append(rid)
        self.load -= 1
        self.kv_load -= int(self._prompt[rid] + self._output[rid])

    def _report_finished(self) -> None:
        """Tell ``on_finished`` which requests finished at this boundary."""
        done, self._finished = self._finished, []
        if self._on_finished is not None:
            self._on_finished(done)

    def _run_end(self, _ev: object = None) -> None:
        freed = self._account(self._run_len)
        if freed:
            self._report_finished()
        self._boundary()

    def _work(self) -> tuple[float, int, int]:
        if self._mixed:  # a mixed step in progress at the stop: busy up to it, not yet counted
            return self.busy_s + self.env.now - self._run_busy0, self.iterations, self.tokens
        return super()._work()

    def stats(self) -> DecodeStats:
        """What this worker did (``tokens``: decode rows; the prompts' tokens are :attr:`prefills_done`).

        ``restore_s`` is 0: recomputing a preempted request runs as prefill chunks inside iterations."""
        busy, iterations, tokens = self._work()
        return DecodeStats(self.wid, busy, iterations, tokens, self.peak_blocks, self.capacity_blocks,
                           self.block, self.preemptions, 0.0, self.timeline)
