"""The simulation's SimPy environment: SimPy's own event loop, with its two per-request operations made cheap.

Every request is a handful of timer events (its arrival, its prefill batch's end, decode runs' ends), and the
workers read the clock about fifteen times over its life. In :class:`simpy.Environment` each read is a call
of a Python property, and each timer a :class:`simpy.Timeout`, whose constructor and ``schedule`` are two more
Python calls. Here the clock is read through a C getter, and :meth:`Environment.call_later` queues a bare
triggered event straight onto SimPy's queue, ordered exactly as a ``Timeout`` made at the same moment: the
same time, priority and event id. Its :class:`Timer` can be cancelled, so that a worker whose run or batch
was cut short needs no check of its own when the old timer fires.

While it runs, Python's cyclic garbage collector is paused. The events make no reference cycles (their
garbage goes as its last reference does; ``tests/test_environment.py`` checks that a run leaves as little
cyclic garbage at 8,000 requests as at 2,000), so a collection would only walk the run's growing state (the
per-request columns, the workers' queues) for nothing, pulling it through the cache each time.

Everything else (``step``, processes, conditions) is SimPy's. The clock and the queue are SimPy 4's own
attributes (``_now``, ``_queue``, ``_eid``), hence the dependency's upper bound; the tests compare the order
of events with SimPy's timeouts.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from heapq import heappush
from operator import attrgetter

import simpy
from simpy.events import NORMAL


class Timer:
    """A timer's event as SimPy's loop reads it: triggered and ok, with the callbacks to run (nothing else)."""

    __slots__ = ("callbacks",)
    _ok = True
    _value = None

    def cancel(self) -> None:
        """Call nothing when it fires (SimPy still takes it off its queue then). Cancelling a fired timer does
        nothing."""
        if self.callbacks:
            self.callbacks.clear()

    def __repr__(self) -> str:
        return f"<timer {self.callbacks!r}>"


class Environment(simpy.Environment):
    """:class:`simpy.Environment`, its clock read without a Python call and with :meth:`call_later`."""

    now = property(attrgetter("_now"), doc="The current simulation time.")

    def call_later(self, delay: float, callback: Callable[[object], object]) -> Timer:
        """Call ``callback(event)`` ``delay`` seconds from now: ``env.timeout(delay).callbacks.append(callback)``
        in one Python call instead of three (ties are broken in the order of scheduling, as for timeouts)."""
        if not delay >= 0:  # (NaN too: it would never compare as due)
            raise ValueError(f"a timer's delay must be a number of seconds >= 0, got {delay}")
        timer = Timer()
        timer.callbacks = [callback]
        heappush(self._queue, (self._now + delay, NORMAL, next(self._eid), timer))
        return timer

    def run(self, until: float | simpy.Event | None = None) -> object:
        """SimPy's :meth:`~simpy.Environment.run`, with the cyclic garbage collector paused meanwhile."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return super().run(until)
        finally:
            if enabled:
                gc.enable()
