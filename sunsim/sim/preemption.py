"""Preemption on a paged decode GPU: when the running batch's next step does not fit, the latest admitted
requests go back to the head of the queue, as vLLM's scheduler does (recompute, or swap to host memory)."""

from __future__ import annotations

import numpy as np


class Preemption:
    """The preemption steps of :class:`~sunsim.sim.decode.DecodeWorker`, on the worker's own state: its block
    ledger, running members, admission order and preempted requests' progress (a request resumes where it stopped)."""

    __slots__ = ()  # steps only: the state is the worker's

    def _grow(self, over: int) -> float:
        """The running requests' next step is ``over`` blocks short (:meth:`KVBlockLedger.settle`): preempt the
        latest admitted until it fits, and settle. Returns the seconds spent swapping victims out (0 under
        recompute); sets the victims aside.
        """
        ledger = self.ledger
        members = self._members
        ids = np.fromiter(members, dtype=np.int64, count=len(members))
        offs = np.fromiter((m[0] for m in members.values()), dtype=np.int64, count=len(members))
        nb = -(-(offs + self.it) // self.block)
        order = np.argsort(-self._seq[ids], kind="stable")
        k = int(np.searchsorted(np.cumsum(nb[order]), over)) + 1  # the fewest victims freeing enough
        pause = 0.0
        for rid in ids[order[:k]].tolist():  # latest admitted first; each goes to the queue's head
            ledger.leave(members[rid][0])
            pause += self._preempt(rid)
        ledger.settle()
        return pause

    def _preempt(self, rid: int) -> float:
        """Send a running request (already out of the ledger) back to the queue's head; returns its swap-out seconds."""
        off = self._members.pop(rid)[0]
        kv_next = off + self.it  # KV its next step would read: prompt + 1 + steps done
        self._resumes[rid] = (kv_next - self._prompt[rid] - 1, kv_next - 1)  # steps done; KV held now
        self._queued_kv += kv_next - 1
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
