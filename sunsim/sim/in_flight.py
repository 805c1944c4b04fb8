"""The requests in flight of one run: per-request arrays indexed by slot, reused as requests finish.

Workers index these arrays by a request's *slot*. A slot is taken when its request arrives and given
back when it has finished and its row has gone to the run's :class:`RecordSink`, so the arrays follow
the requests in flight, not the run's total: a day of traffic needs the memory of its busiest moment.
Finished requests are handed to the sink in batches of :data:`FLUSH_EVERY`, one vectorised gather
each, so a finish costs a list append.

Growing the arrays (more requests in flight than slots) resizes them (and the lists) in place, so a worker
holding one keeps a valid reference; nothing here may keep a view of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import chain
from typing import Protocol

import numpy as np
import simpy

from sunsim.scenario import Scenario
from sunsim.sim.clients import ClosedLoopClients, closed_loop_clients
from sunsim.sim.environment import Environment
from sunsim.sim.records import COLUMNS, Records
from sunsim.workload.stream import RequestSource, RequestStream

#: Finished requests whose rows go to the sink (and slots come back) at once.
FLUSH_EVERY = 4096
#: The stream's own columns in a record row, beside :data:`sunsim.sim.records.COLUMNS`.
STREAM_COLUMNS: dict[str, tuple[type, float]] = {
    "arrival_s": (np.float64, np.nan), "model": (np.int32, 0), "prompt_tokens": (np.int64, 0),
    "output_tokens": (np.int64, 0),
}


class RecordSink(Protocol):
    """Where finished requests' rows go: ``request`` is each row's index in the stream."""

    def write(self, request: np.ndarray, columns: dict[str, np.ndarray]) -> None: ...


class MemorySink:
    """Rows into whole-run arrays indexed by request (the arrival column too: closed-loop runs fill it in)."""

    def __init__(self, stream: RequestStream) -> None:
        self.records = Records(len(stream))
        # closed loop: the run decides the arrival times; open loop: they are the stream's (maybe read-only)
        self.arrival_s = np.full(len(stream), np.inf) if stream.closed else None

    def write(self, request: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        for name in COLUMNS:
            getattr(self.records, name)[request] = columns[name]
        if self.arrival_s is not None:
            self.arrival_s[request] = columns["arrival_s"]


class InFlight:
    """Slots of the requests in flight and their per-request arrays (stream columns, records, workers' state);
    the stream's model, prompt and output columns are lists."""

    __slots__ = ("sink", "capacity", "_arrays", "request", "arrival_s", "model", "prompt", "output", "records", "_free",
                 "_done", "admitted", "done", "peak")

    def __init__(self, sink: RecordSink, capacity: int = 1024) -> None:
        self.sink = sink
        self.capacity = capacity
        self._arrays: list[tuple[np.ndarray, float]] = []
        self.request = self.per_request(np.int64, -1)  # the stream index of the request in each slot
        self.arrival_s = self.per_request(np.float64, np.nan)
        # Read one request at a time all along its life: Python lists (a numpy scalar costs ~8x a list item).
        self.model: list[int] = [0] * capacity
        self.prompt: list[int] = [0] * capacity
        self.output: list[int] = [0] * capacity
        self.records = Records(0)
        for name, (dtype, fill) in COLUMNS.items():
            setattr(self.records, name, self.per_request(dtype, fill))
        self.records.n = capacity
        self._free = self._free_slots(capacity)
        self._done: list[int] = []
        self.admitted = 0
        self.done = 0
        self.peak = 0  # the most requests in flight at once (slots held: up to FLUSH_EVERY more)

    def per_request(self, dtype: type, fill: float) -> np.ndarray:
        """A per-request array of the run (reset to ``fill`` when its slot comes back)."""
        arr = np.full(self.capacity, fill, dtype=dtype)
        self._arrays.append((arr, fill))
        return arr

    def admit(self, request: int, arrival_s: float, model: int, prompt: int, output: int) -> int:
        """Give an arriving request a slot, holding its stream columns; returns the slot."""
        slot = self._take_slot(request)
        self.request[slot] = request
        self.arrival_s[slot] = arrival_s
        self.model[slot] = model
        self.prompt[slot] = prompt
        self.output[slot] = output
        self.admitted += 1
        if self.admitted - self.done > self.peak:
            self.peak = self.admitted - self.done
        return slot

    @staticmethod
    def _free_slots(capacity: int) -> list[int]:
        """The slots free at the start, the next to take last."""
        return list(range(capacity - 1, -1, -1))

    def _take_slot(self, request: int) -> int:
        """A free slot for the ``request``-th request of the stream."""
        if not self._free:
            self._grow()
        return self._free.pop()

    def finished(self, slots: list[int]) -> None:
        """These requests are done: their rows go to the sink with the next batch."""
        self.done += len(slots)
        self._done.extend(slots)
        if len(self._done) >= FLUSH_EVERY:
            self._flush(np.asarray(self._done, dtype=np.int64))
            self._done = []

    def close(self) -> None:
        """The run stopped: every row still here (finished or not) goes to the sink."""
        self._flush(np.flatnonzero(self.request >= 0))
        self._done = []

    def _flush(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        listed, n = slots.tolist(), len(slots)
        cols = {"arrival_s": self.arrival_s[slots],
                **{name: np.fromiter(map(values.__getitem__, listed), dtype=STREAM_COLUMNS[name][0], count=n)
                   for name, values in (("model", self.model), ("prompt_tokens", self.prompt),
                                        ("output_tokens", self.output))}}
        cols.update({name: getattr(self.records, name)[slots] for name in COLUMNS})
        self.sink.write(self.request[slots], cols)
        # A preempted request may leave a stale entry in its worker's heap (popped lazily, keyed by slot):
        # its slot is retired, never reused, so that entry can never match another request.
        # Freed slots are handed out again in ascending order: requests arriving together then sit side by side
        # in every per-request array, as a whole-run array indexed by arrival would keep them (cache locality).
        reuse = np.sort(slots[cols["preemptions"] == 0])
        for arr, fill in self._arrays:
            arr[slots] = fill
        self.request[slots[cols["preemptions"] > 0]] = -2  # retired: neither free nor in flight
        self._free.extend(reuse[::-1].tolist())

    def _grow(self) -> None:
        old = self.capacity
        self.capacity = new = 2 * old
        for arr, fill in self._arrays:
            arr.resize(new, refcheck=False)  # in place: holders of the array keep a valid reference
            arr[old:] = fill
        for values in (self.model, self.prompt, self.output):
            values.extend([0] * old)
        self.records.n = new
        self._free.extend(range(new - 1, old - 1, -1))


class WholeRun(InFlight):
    """The requests in flight of a run whose rows go to whole-run arrays (:class:`MemorySink`): a request's slot
    is its index in the stream, so nothing is gathered or reset until the run's end, and requests arriving
    together sit side by side in every per-request array (memory a busy worker reads in order, not scattered
    over reused slots)."""

    __slots__ = ()

    def __init__(self, sink: RecordSink, n: int) -> None:
        super().__init__(sink, capacity=max(n, 1))

    @staticmethod
    def _free_slots(capacity: int) -> list[int]:
        return []  # a request's slot is its index: none is handed out (and no list of n slots is built)

    def _take_slot(self, request: int) -> int:
        return request

    def finished(self, slots: list[int]) -> None:
        """These requests are done: their rows stay in place until :meth:`close`."""
        self.done += len(slots)


class Feeder:
    """Admits the source's requests into ``in_flight`` and sends them on: at their arrival times (open loop) or
    when a closed-loop client asks (:meth:`send_next`, the arrival time then being now)."""

    __slots__ = ("env", "in_flight", "_send", "_rows", "_next")

    def __init__(self, env: Environment, source: RequestSource, in_flight: InFlight,
                 send: Callable[[int], None]) -> None:
        self.env, self.in_flight, self._send = env, in_flight, send
        self._rows = self._requests(source)
        self._next: tuple[int, float, int, int, int] | None = None  # the request due next, not yet admitted

    @staticmethod
    def _requests(source: RequestSource) -> Iterator[tuple[int, float, int, int, int]]:
        """The source's rows, chunk by chunk (chained in C: no Python frame per row)."""
        return chain.from_iterable(
            zip(range(c.start, c.start + len(c)), c.arrival_s.tolist(), c.model.tolist(), c.prompt_tokens.tolist(),
                c.output_tokens.tolist())
            for c in source.chunks())

    def send_next(self) -> None:
        """Send the next request now (closed loop)."""
        rid, _, m, p, o = next(self._rows)
        self._send(self.in_flight.admit(rid, self.env.now, m, p, o))

    def open_loop(self) -> None:
        """Send each request at its arrival time: a timer per arrival instant, no process."""
        self._next = next(self._rows, None)
        self._arrive()

    def _arrive(self, _ev: object = None) -> None:
        """Send the requests due now; set the timer for the next one."""
        env, admit, send, rows, row = self.env, self.in_flight.admit, self._send, self._rows, self._next
        now = env.now
        while row is not None:
            rid, t, m, p, o = row
            if t > now:
                self._next = row
                env.call_later(t - now, self._arrive)
                return
            send(admit(rid, t, m, p, o))
            row = next(rows, None)
        self._next = None

    def close(self, end_s: float) -> None:
        """The run stopped at ``end_s``: requests due by then but not sent yet still get their (empty) rows, as
        they would in a whole-run table; then every row goes to the sink."""
        pending = [self._next] if self._next is not None else []
        for row in pending + list(_until(self._rows, end_s)):
            if row[1] <= end_s:
                self.in_flight.admit(*row)
        self.in_flight.close()


def _until(rows: Iterator[tuple[int, float, int, int, int]], end_s: float) -> Iterator[tuple[int, float, int, int, int]]:
    for row in rows:
        if row[1] > end_s:
            return
        yield row


def run_to_end(env: Environment, sc: Scenario, feeder: Feeder, last_arrival_s: float,
               clients: ClosedLoopClients | None, all_done: simpy.Event) -> None:
    """Run a variant to its end: closed-loop ``clients`` when given, else the open-loop arrivals (stopping when
    ``all_done`` fires, or at the horizon: the scenario's, else ``sim.drain_s`` after the last arrival); then
    every request's row goes to the sink."""
    if clients is not None:
        clients.start()
        env.run(until=clients.until(sc.sim.horizon_s))
    else:
        feeder.open_loop()
        horizon = sc.sim.horizon_s or (last_arrival_s + sc.sim.drain_s)
        env.run(until=env.any_of([all_done, env.timeout(horizon)]))
    feeder.close(env.now)


class RunFrame:
    """What every variant's run shares: the environment, the requests in flight, their finishing (which frees a
    closed-loop client, or ends the run with the last request), and feeding them in until the end."""

    def __init__(self, sc: Scenario, source: RequestSource, sink: RecordSink | None = None) -> None:
        self.sc, self.source = sc, source
        if sink is None:
            assert isinstance(source, RequestStream)  # whole-run arrays need the whole stream
            sink = MemorySink(source)
        self.sink = sink
        self.env = Environment()
        self.in_flight = WholeRun(sink, len(source)) if isinstance(sink, MemorySink) else InFlight(sink)
        self.n = len(source)
        self.finished = 0
        self.all_done = self.env.event()
        self.clients: ClosedLoopClients | None = None

    def count_finished(self, slots: list[int]) -> None:
        """Requests in these slots finished now."""
        self.finished += len(slots)
        self.in_flight.finished(slots)
        if self.clients is not None:
            self.clients.finished(len(slots))  # frees as many clients
        elif self.finished == self.n:
            self.all_done.succeed()

    def run(self, send: Callable[[int], None]) -> None:
        """Feed the requests to ``send`` (by slot) and run to the end; then every row is in the sink."""
        feeder = Feeder(self.env, self.source, self.in_flight, send)
        if self.source.closed:
            self.clients = closed_loop_clients(self.env, self.sc, self.n, feeder.send_next)
        run_to_end(self.env, self.sc, feeder, self.source.facts.last_arrival_s, self.clients, self.all_done)

    def outcome(self) -> tuple[RequestSource, Records | None]:
        """The stream and whole-run records the result carries: with the run's own arrival times when they were
        decided by clients; no records when the rows went to a file."""
        if not isinstance(self.sink, MemorySink):
            return self.source, None
        stream = self.source
        if stream.closed:
            assert isinstance(stream, RequestStream)  # a memory sink holds a whole stream
            stream = replace(stream, arrival_s=self.sink.arrival_s)
        return stream, self.sink.records
