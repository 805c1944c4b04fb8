"""Closed-loop clients: the load of a benchmark run at fixed concurrency (``vllm bench serve
--max-concurrency N``, genai-perf ``--concurrency N``).

``N`` clients send a request each at time 0; a client sends its next one when its previous one
finished (its last token) and its think time passed. The requests are the stream's, in index
order: the k-th request sent is request k, so its model and lengths were drawn up front and only
its arrival time is decided here (the time it is sent; the run's arrival column stays sorted).
Clients are interchangeable: a finish frees one client, whichever it was.

The clients stop when the stream is exhausted or a send would fall at or after
``workload.duration_s``; the run then drains. It ends when the last request finished, or
``sim.drain_s`` after the last request was sent (``sim.horizon_s``, if given, stops it earlier).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from sunsim.scenario import ClosedArrivals, Scenario
from sunsim.sim.environment import Environment


class ClosedLoopClients:
    """Sends the stream's requests as clients free up; ``done`` fires when the run may stop."""

    def __init__(self, env: Environment, spec: ClosedArrivals, total: int,
                 send_next: Callable[[], None], stop_s: float | None, drain_s: float,
                 rng: np.random.Generator) -> None:
        self.env, self.spec = env, spec
        self.total = total  # requests in the stream
        self._send_next = send_next  # sends the stream's next request now
        self.stop_s, self.drain_s = stop_s, drain_s
        self._rng = rng
        self.sent = 0
        self.pending = 0  # clients thinking, their next send scheduled
        self.in_flight = 0
        #: When the first client stopped (finished with nothing left to send): the end of the window in
        #: which all ``concurrency`` clients were active. None while none has.
        self.first_stop_s: float | None = None
        self.done = env.event()

    def start(self) -> None:
        for _ in range(min(self.spec.concurrency, self.total)):
            self._send()

    def finished(self, k: int) -> None:
        """``k`` requests finished now: each frees its client, which thinks, then sends the next."""
        self.in_flight -= k
        now = self.env.now
        for _ in range(k):
            if self.sent + self.pending >= self.total:
                self._stopped(now)
                continue
            think = self._think()
            if self.stop_s is not None and now + think >= self.stop_s:
                self._stopped(now)
                continue
            self.pending += 1
            self.env.call_later(think, self._think_over)
        if self.in_flight == 0 and self.pending == 0 and not self.done.triggered:
            self.done.succeed()  # every client stopped and the last request finished

    def _think(self) -> float:
        t = self.spec.think_time_s
        if self.spec.think == "exponential" and t > 0:
            return float(self._rng.exponential(t))
        return t

    def _think_over(self, _event: object) -> None:
        self.pending -= 1
        self._send()

    def _send(self) -> None:
        self.sent += 1
        self.in_flight += 1
        if self.sent == self.total:  # the last one: the run may drain for drain_s more
            self.env.call_later(self.drain_s, self._drain_over)
        self._send_next()

    def _drain_over(self, _event: object) -> None:
        if not self.done.triggered:
            self.done.succeed()

    def _stopped(self, now: float) -> None:
        if self.first_stop_s is None:
            self.first_stop_s = now

    def until(self, horizon_s: float | None) -> simpy.Event:
        """What the run waits for: ``done``, or the horizon (given, or duration_s + drain_s) if sooner.

        With duration_s the last send falls before it, so duration_s + drain_s bounds the drain
        at least as generously as "last arrival + drain_s" does for open arrivals."""
        if horizon_s is None and self.stop_s is not None:
            horizon_s = self.stop_s + self.drain_s
        if horizon_s is None:
            return self.done
        return self.env.any_of([self.done, self.env.timeout(horizon_s)])


def closed_loop_clients(env: Environment, sc: Scenario, total: int,
                        send_next: Callable[[], None]) -> ClosedLoopClients:
    """The clients of a scenario with closed arrivals (think times seeded from the scenario's seed)."""
    spec = sc.workload.arrivals
    assert isinstance(spec, ClosedArrivals)  # only closed streams are driven by clients
    return ClosedLoopClients(env, spec, total, send_next, sc.workload.duration_s, sc.sim.drain_s,
                             np.random.default_rng([sc.seed, 13]))
