"""A decode GPU's batch advanced a whole run of iterations per event, timed in closed form.

Between batch changes, with step time ``alpha(B) + beta * K`` and the batch's KV growing by
``B`` tokens per step, the time of ``n`` iterations is a quadratic in ``n`` that is summed
(and, when a request arrives mid-run, inverted) in closed form, so no Python work is done per
token or per iteration: an event is a batch change, not a step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from sunsim.costs.model import CostModel
from sunsim.sim.environment import Environment, Timer


class CoalescedRuns:
    """The iteration engine of a decode worker: runs of iterations with the batch unchanged.

    A run is started at an iteration boundary for a length the subclass chooses (until the
    next request finishes, its KV would overflow, or a request joins); one timer ends it. A
    request that must join sooner cuts it at an earlier boundary instead (:meth:`_cut_at`).
    The subclass (:class:`~sunsim.sim.decode.DecodeWorker`) decides who is in the batch: it
    keeps ``batch``, ``_kv_offset`` and the per-model counts current as requests join and
    leave, and implements :meth:`_boundary` and :meth:`_run_end`.
    """

    # Slots rather than a per-instance dict: these are read and written a few hundred times per request.
    __slots__ = ("env", "cost", "_coeffs", "_step_coeffs", "_model", "model_counts", "it", "batch", "_kv_offset",
                 "_run_t0", "_run_busy0", "_run_k0", "_run_a", "_run_b", "_run_len", "_done_now", "_next_done_s",
                 "_running", "_timer", "_on_run_end", "busy_s", "iterations", "tokens", "events")

    def __init__(self, env: Environment, cost: CostModel,
                 step_coeffs: Callable[[np.ndarray], tuple[float, float]] | None,
                 model: np.ndarray | None, n_models: int) -> None:
        self.env, self.cost = env, cost
        self._coeffs: dict[int, tuple[float, float]] = {}
        # Optional hook: a run's (alpha, beta) from the running batch's per-model counts
        # (colocated models, adapters); ``model`` maps request -> model index.
        self._step_coeffs = step_coeffs
        self._model = model
        self.model_counts = np.zeros(n_models, dtype=np.int64)

        self.it = 0  # iterations completed
        self.batch = 0  # running requests
        self._kv_offset = 0  # S: batch KV at iteration j is S + batch * j

        # The run in progress (batch fixed): start time, KV at its first step, coefficients, length.
        self._run_t0 = 0.0
        self._run_busy0 = 0.0  # start of the busy time (before a restore pause)
        self._run_k0 = 0.0
        self._run_a = 0.0
        self._run_b = 0.0
        self._run_len = 0
        self._done_now = 0  # iterations of the run done by the last look at now (time only moves on)
        self._next_done_s = math.inf  # seconds into the run when iteration _done_now + 1 ends (inf: none left)
        self._running = False  # a run's timer is pending
        self._timer: Timer | None = None  # the pending run's (cancelled when the run is cut short)
        self._on_run_end = self._run_end  # (the bound method, made once rather than per timer)

        self.busy_s = 0.0
        self.iterations = 0
        self.tokens = 0  # tokens generated: iterations x batch
        self.events = 0

    # -- what the subclass decides -----------------------------------------------------------
    def _boundary(self) -> None:
        """At an iteration boundary: change the batch, then :meth:`_start_run` or stop."""
        raise NotImplementedError

    def _run_end(self, _ev: object = None) -> None:
        """The run's timer fired: account its ``_run_len`` iterations, let the batch change."""
        raise NotImplementedError

    # -- runs --------------------------------------------------------------------------------
    def _coeff(self, batch: int) -> tuple[float, float]:
        """A batch size's step coefficients, kept once asked for (read as ``_coeffs.get(batch) or _coeff(batch)``)."""
        c = self._coeffs[batch] = self.cost.decode_coeffs(batch)
        return c

    def _count(self, rids, sign: int) -> None:
        """Keep the per-model counts of the running batch (only when a step hook reads them)."""
        if self._step_coeffs is not None:
            counts, model = self.model_counts, self._model
            for rid in rids:
                counts[model[rid]] += sign

    def _start_run(self, run_len: int, pause: float, join_at: float | None = None) -> None:
        """Run the current batch for ``run_len`` iterations, after ``pause`` seconds restoring KV; or only until
        the first boundary after ``join_at``, when a request will join there."""
        now, batch = self.env.now, self.batch
        self._running = True
        self._run_len = run_len
        self._done_now = 0
        self._run_busy0 = now
        self._run_t0 = t0 = now + pause
        self._run_k0 = k0 = self._kv_offset + batch * self.it
        if self._step_coeffs is None:
            self._run_a, self._run_b = a, b = self._coeffs.get(batch) or self._coeff(batch)
        else:
            self._run_a, self._run_b = a, b = self._step_coeffs(self.model_counts)
        t = run_len * a + b * (run_len * k0 + batch * run_len * (run_len - 1) / 2)  # (_run_time, inlined)
        first = a + b * k0  # (_run_time(1): the same arithmetic)
        self._next_done_s = first if run_len else math.inf
        if join_at is not None and join_at - t0 < t:  # it joins before the run's end
            if join_at - t0 < first:  # (a join usually comes within the first iteration)
                self._run_len, t = 1, first
            else:
                m = self._iterations_from(1, join_at - t0) + 1
                if m < run_len:
                    self._run_len = run_len = m
                    t = self._run_time(m)
        self.events += 1
        self._timer = self.env.call_later(pause + t, self._on_run_end)

    def _advance(self, n: int) -> None:
        """Count ``n`` iterations of the current run as done, and its busy time up to now."""
        self.it += n
        self.iterations += n
        self.tokens += n * self.batch
        self.busy_s += self.env.now - self._run_busy0

    def _cut_at(self, m: int) -> None:
        """End the current run after its first ``m`` iterations instead (its own timer is cancelled)."""
        self._timer.cancel()
        self._run_len = m
        t_end = self._run_t0 + self._run_time(m)
        self.events += 1
        self._timer = self.env.call_later(t_end - self.env.now, self._on_run_end)

    # -- the run's clock, in closed form ------------------------------------------------------
    def _run_time(self, n: float) -> float:
        """Seconds for the first ``n`` iterations of the current run."""
        return n * self._run_a + self._run_b * (n * self._run_k0 + self.batch * n * (n - 1) / 2)

    def _iterations_now(self) -> int:
        """:meth:`_iterations_by` now: as many as at the last look, or more (the run's time only moves on)."""
        elapsed = self.env.now - self._run_t0
        if elapsed < self._next_done_s:  # (routers look often, mostly within one iteration)
            return self._done_now
        self._done_now = n = self._iterations_from(self._done_now + 1, elapsed)
        self._next_done_s = math.inf if n >= self._run_len else self._run_time(n + 1)
        return n

    def _iterations_from(self, n: int, elapsed: float) -> int:
        """:meth:`_iterations_by` ``elapsed``, knowing that ``n`` iterations are done by then: a step or two of the
        clock from there (the same arithmetic as :meth:`_run_time`), else the closed form."""
        alpha, beta, k0, batch, length = self._run_a, self._run_b, self._run_k0, self.batch, self._run_len
        for _ in (0, 1):
            if n >= length or (n + 1) * alpha + beta * ((n + 1) * k0 + batch * (n + 1) * n / 2) > elapsed:
                return n
            n += 1
        return self._iterations_by(elapsed)

    def _iterations_by(self, elapsed: float) -> int:
        """Whole iterations of the current run completed within ``elapsed`` seconds.

        The square root inverts :meth:`_run_time` up to rounding; the loops settle it exactly, so
        that a run cut after that many iterations ends when :meth:`_run_time` says.
        """
        if elapsed <= 0:
            return 0  # still restoring preempted requests' KV
        alpha, beta, k0, batch, length = self._run_a, self._run_b, self._run_k0, self.batch, self._run_len
        a = alpha + beta * (k0 - batch / 2)
        b = beta * batch / 2
        if b > 0:
            n = int((-a + math.sqrt(a * a + 4 * b * elapsed)) / (2 * b))
        else:
            n = int(elapsed / a)
        n = max(0, min(n, length))
        # (_run_time, inlined: the same arithmetic)
        while n > 0 and n * alpha + beta * (n * k0 + batch * n * (n - 1) / 2) > elapsed:
            n -= 1
        while n < length and (n + 1) * alpha + beta * ((n + 1) * k0 + batch * (n + 1) * n / 2) <= elapsed:
            n += 1
        return n

    def _work(self) -> tuple[float, int, int]:
        """Busy seconds, iterations and tokens so far, the run in progress included up to now.

        Work is counted when a run ends, so a run still going when the simulation stops (at
        the horizon) adds its busy time up to the stop and the iterations it completed.
        """
        busy, iterations, tokens = self.busy_s, self.iterations, self.tokens
        if self._running:
            busy += self.env.now - self._run_busy0
            done = self._iterations_now()
            iterations += done
            tokens += done * self.batch
        return busy, iterations, tokens
