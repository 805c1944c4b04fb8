"""KV arriving on a decode GPU: requests whose transfer ends at a known time join at the first iteration boundary
after it, with no event of the transfer's own."""

from __future__ import annotations

import heapq


class KVArrivals:
    """The arrival steps of :class:`~sunsim.sim.decode.DecodeWorker`, on the worker's own state: a heap of
    ``(time the KV is here, order, request)`` (``_arriving``, ``_transfers`` counting them), the ``ready``
    list of the boundary being settled, and ``_wake_at``, an idle worker's timer for the next one.

    A transfer's end is known when it starts, so the run in progress is cut at the boundary after it
    (:meth:`_expect`), or a run started later ends there (``join_at`` of ``_start_run``), or an idle worker
    wakes then (:meth:`_sleep`); the boundary takes those that arrived by its time (:meth:`_arrived`), in
    the order of their times, then of their transfers' starts.
    """

    __slots__ = ()  # steps only: the state is the worker's

    def _expect(self, rid: int, t: float) -> None:
        """The KV of admitted ``rid`` is in memory at ``t``: it joins at the first boundary after, which ends
        the run in progress (cut there) or wakes the idle worker."""
        if self._settling and t <= self.env.now:  # here already: it joins at the boundary being settled
            self._rec.kv_ready_s[rid] = t
            self.ready.append(rid)
            return
        heapq.heappush(self._arriving, (t, self._transfers, rid))
        self._transfers += 1
        if self._settling:
            return  # the boundary being settled starts the run that takes it
        if self._running:
            m = self._iterations_from(self._done_now, t - self._run_t0) + 1  # (as many are done by t as by now)
            if m < self._run_len:
                self._cut_at(m)
        elif t <= self.env.now:
            self._boundary()
        elif t < self._wake_at:
            self._sleep(t)

    def _sleep(self, t: float) -> None:
        """Idle: wake at ``t``, when the next KV arrives (a timer set for later finds itself stale)."""
        self._wake_at = t
        self.events += 1
        self.env.call_later(t - self.env.now, lambda _ev: t == self._wake_at and self._boundary())

    def _arrived(self) -> None:
        """Requests whose KV is here by now are ready."""
        arriving, now = self._arriving, self.env.now
        kv_ready, ready = self._rec.kv_ready_s, self.ready
        while arriving and arriving[0][0] <= now:
            t, _, rid = heapq.heappop(arriving)
            kv_ready[rid] = t
            ready.append(rid)
