"""The KV block account of one decode GPU, in closed form over runs of iterations.

A running request whose step at iteration ``j`` reads ``off + j`` KV tokens holds
``ceil((off + j) / block)`` blocks then: it gains one block each time its KV crosses a block
edge, at the iterations where ``(off - 1 + j) mod block = block - 1``. Only the *block phase*
``(off - 1) mod block`` says when, so the ledger keeps the running requests' phases in one
sorted list. The blocks the batch gains over any number of iterations, and the first
iteration at which they would exceed the GPU's, are then a few bisections in that list,
whatever the batch size and the run length: the decode worker never passes over its batch or
steps through iterations to keep memory exact (see :mod:`sunsim.sim.decode`).
"""

from __future__ import annotations

from bisect import bisect_left, insort


class KVBlockLedger:
    """Blocks allocated on one decode GPU, by whom, now and at the peak.

    Two kinds of holders:

    * *held* blocks do not grow: those of requests admitted but not yet running (paged: their
      KV is in flight or ready), and under the ``reserve`` policy every request's reservation
      (:meth:`hold`, :meth:`release`);
    * the *batch*'s blocks grow with its KV: running requests are filed by their offset
      ``off`` (their step at iteration ``j`` reads ``off + j`` tokens) when they start
      running (:meth:`join`) and removed when they finish or are preempted (:meth:`leave`).

    ``it`` is the iteration the ledger stands at; :meth:`advance` moves it over a run of
    iterations with the batch unchanged, recording the run's peak and the blocks the batch
    needs for its step at the new ``it``. Those are not allocated until :meth:`settle`, at
    the iteration boundary, after the finished requests left: it reports a shortfall, which
    the caller resolves by preempting (:meth:`leave`) and settling again. ``used`` is thus
    what was allocated at the last boundary (or hold/release); ``peak`` the most ever.
    """

    __slots__ = ("block", "capacity", "it", "used", "peak", "held", "batch", "_phases", "_sum_off", "_sum_phase")

    def __init__(self, block: int, capacity: int) -> None:
        self.block = block  # tokens per block
        self.capacity = capacity  # blocks of the GPU
        self.it = 0  # iterations advanced
        self.used = 0  # blocks allocated (held + the batch's, as of the last settle)
        self.peak = 0  # most blocks allocated at once, including within runs
        self.held = 0  # blocks of holders outside the running batch
        self.batch = 0  # blocks the running requests need for their step at iteration ``it``
        self._phases: list[int] = []  # (off - 1) mod block of each running request, sorted
        self._sum_off = self._sum_phase = 0  # of the running requests' offsets and phases

    @property
    def phases(self) -> tuple[int, ...]:
        """The running requests' block phases, ascending (a copy, for inspection)."""
        return tuple(self._phases)

    @property
    def running(self) -> int:
        """Requests in the running batch."""
        return len(self._phases)

    # -- holders ---------------------------------------------------------------------------
    def hold(self, blocks: int) -> None:
        """Allocate ``blocks`` that do not grow (an admission: paged until it joins, reserve for good)."""
        self.held += blocks
        self.used += blocks
        if self.used > self.peak:
            self.peak = self.used

    def release(self, blocks: int) -> None:
        """Free ``blocks`` allocated by :meth:`hold` (a reserved request finished)."""
        self.held -= blocks
        self.used -= blocks

    def join(self, off: int) -> None:
        """A held request starts running at ``it``: its ``ceil((off + it) / block)`` held blocks
        (what it was admitted with) become the batch's and grow from now on."""
        blocks = -(-(off + self.it) // self.block)
        self.held -= blocks
        self.batch += blocks
        phase = (off - 1) % self.block
        insort(self._phases, phase)
        self._sum_off += off
        self._sum_phase += phase

    def leave(self, off: int) -> None:
        """A running request leaves at ``it`` (finished or preempted) with the blocks of its step there."""
        self.batch -= -(-(off + self.it) // self.block)
        phases, phase = self._phases, (off - 1) % self.block
        del phases[bisect_left(phases, phase)]
        self._sum_off -= off
        self._sum_phase -= phase

    def settle(self) -> int:
        """Allocate the batch's blocks for its step at ``it``, if they fit beside the held ones.

        Returns how many blocks are missing: ``<= 0`` when allocated; otherwise nothing changes,
        and requests must :meth:`leave` to free at least that many before settling again.
        """
        total = self.held + self.batch
        over = total - self.capacity
        if over <= 0:
            self.used = total
            if total > self.peak:
                self.peak = total
        return over

    # -- the batch over a run of iterations ---------------------------------------------------
    def advance(self, n: int) -> None:
        """``n`` iterations pass with the batch unchanged: record their peak, move ``it`` and the
        batch's need to the step at ``it + n`` (allocated by the next :meth:`settle`).

        From a settled boundary, and for steps that fit: ``n <= first_overflow()``, as a decode
        worker's run ends where the next step's blocks would not.
        """
        if n > 0:
            # Blocks peak at the run's last step (it + n - 1); a request gains at most
            # ceil((n - 1) / block) blocks by then, a bound that usually skips the exact count.
            used = self.used
            if used + len(self._phases) * -(-(n - 1) // self.block) > self.peak:  # (growth_bound, inlined)
                used += self._blocks_at(self.it + n - 1) - self.batch
                if used > self.peak:
                    self.peak = used
            self.it += n
            self.batch = self._blocks_at(self.it)

    def growth(self, j: int) -> int:
        """Blocks the batch gains over the next ``j`` iterations (from ``it``, batch unchanged)."""
        return self._blocks_at(self.it + j) - self.batch

    def _blocks_at(self, j: int) -> int:
        """Blocks the running requests need for their step at iteration ``j`` (batch unchanged since ``it``).

        A request reading ``x = off + j`` tokens holds ``ceil(x / block) = (x - 1 - r) / block + 1``
        blocks, with ``r = (x - 1) mod block = (phase + j) mod block``, which is ``phase + s``
        less ``block`` for the phases at or above ``block - s`` (``s = j mod block``). Summed:
        the offsets' and phases' sums and one bisection for how many phases wrap.
        """
        phases, block = self._phases, self.block
        n = len(phases)
        s = j % block
        wrapped = n - bisect_left(phases, block - s)
        return (self._sum_off + n * (j - 1 - s) - self._sum_phase) // block + wrapped + n

    def growth_bound(self, j: int) -> int:
        """At least :meth:`growth` of ``j``: a request gains at most ``ceil(j / block)`` blocks in ``j`` iterations
        (a cheap bound that usually makes the exact count unnecessary)."""
        return len(self._phases) * -(-j // self.block)

    def may_overflow(self, j: int) -> bool:
        """Whether the batch's blocks may exceed the GPU's within ``j`` iterations (by :meth:`growth_bound`, which
        skips :meth:`first_overflow` when they cannot)."""
        return len(self._phases) * -(-j // self.block) > self.capacity - self.used  # (growth_bound, inlined)

    def first_overflow(self) -> int:
        """Iterations from ``it`` until the batch's blocks first exceed the GPU's (batch unchanged, not empty).

        Request ``i`` needs a new block at iteration ``j`` when ``off_i + j = 1 (mod block)``;
        with ``F`` blocks free, every full round of ``block`` iterations takes one block per
        request, so the ``(F + 1)``-th new block lands ``F // B`` rounds in, at the
        ``(F mod B)``-th smallest first-crossing offset. Request ``i``'s first crossing is
        ``block - r_i`` iterations away, with ``r_i = (phase_i + it) mod block``, so that is
        the ``(F mod B)``-th largest ``r``: read from the sorted phases, rotated by ``it``.
        """
        phases, block = self._phases, self.block
        b = len(phases)
        rounds, rem = divmod(self.capacity - self.used, b)
        s = self.it % block
        k = bisect_left(phases, block - s)  # phases[k:] wrap around to the smallest r
        idx = b - 1 - rem  # rank of the wanted r in ascending order
        r = phases[k + idx] + s - block if idx < b - k else phases[idx - (b - k)] + s
        return rounds * block + block - r
