"""A shared decode pool that grows and shrinks with its load (``variants[].autoscale``).

The rule, from what a serving engine exports (vLLM's KV-cache usage and running/waiting counts), never
from the future: ten times per interval the pool's serving GPUs are sampled for the KV tokens their
requests hold or wait with (:attr:`~sunsim.sim.decode.DecodeWorker.kv_load`: the running batch's KV
and the queued prompts) and for their requests (waiting and admitted). At the end of every
``every_s`` the interval's mean gives the load in GPUs,

    load = max(mean KV tokens / KV capacity of one GPU, mean requests / max_batch)

(the second term only when a ``max_batch`` bounds the batch), and the pool becomes
``clamp(ceil(load / target_load), min_workers, max_workers)`` GPUs. Queued work counts, so an overloaded
pool reads a load above its size and grows.

Growing starts new GPUs, which hold no requests for ``load_s`` seconds (weights loading) and then
join the router's pool. Shrinking first cancels loads still in progress (newest first; such a GPU
leaves when its load ends), then drains the least-loaded serving GPUs: each leaves the router at once,
its waiting requests that never ran are routed again within the pool, it finishes its running ones
(and resumes any it had preempted: their KV lives there) and leaves when empty. A GPU counts as in
service from the decision that starts it to the moment it leaves, loading and draining included:
:attr:`Autoscaler.timeline` records every change, and GPU-hours integrate it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sunsim.scenario import Autoscale
from sunsim.sim.decode import DecodeWorker
from sunsim.sim.environment import Environment

#: Load samples per interval (evenly spaced, the last at the decision).
SAMPLES = 10


class Autoscaler:
    """Resizes one shared pool (the list the router picks from, mutated in place)."""

    def __init__(self, env: Environment, spec: Autoscale, pool: list[DecodeWorker],
                 make_worker: Callable[[], DecodeWorker], kv_capacity: int, max_batch: int | None, tp: int,
                 reroute: Callable[[int], None]) -> None:
        self.env, self.spec, self.pool = env, spec, pool
        self._make, self._kv_capacity, self._max_batch, self._tp = make_worker, kv_capacity, max_batch, tp
        self._reroute = reroute
        self._loading: list[DecodeWorker] = []  # started, weights still loading
        self._cancelled: set[int] = set()  # loading GPUs that will leave when their load ends
        self._draining: dict[int, DecodeWorker] = {}
        self._in_service = len(pool)
        #: (time, decode GPUs in service from then on), one entry per change; the first at 0.
        self.timeline: list[tuple[float, int]] = [(0.0, len(pool) * tp)]
        #: (time, measured load in GPUs, new size) of every decision.
        self.decisions: list[tuple[float, float, int]] = []
        env.process(self._run())

    def _run(self):
        env, dt = self.env, self.spec.every_s / SAMPLES
        start = 0.0
        while True:
            kv = requests = 0
            for k in range(1, SAMPLES + 1):
                yield env.timeout(max(0.0, start + k * dt - env.now))  # on a grid: no drift from summed steps
                kv += sum(w.kv_load for w in self.pool)
                requests += sum(w.load for w in self.pool)
            start = env.now
            load = kv / SAMPLES / self._kv_capacity
            if self._max_batch is not None:
                load = max(load, requests / SAMPLES / self._max_batch)
            target = min(max(math.ceil(load / self.spec.target_load - 1e-9), self.spec.min_workers),
                         self.spec.max_workers)
            self.decisions.append((env.now, load, target))
            self._resize(target)

    def _resize(self, target: int) -> None:
        current = len(self.pool) + len(self._loading) - len(self._cancelled)
        for _ in range(target - current):
            self._start()
        excess = current - target
        for w in reversed(self._loading):  # cancel the newest loads first
            if excess > 0 and w.wid not in self._cancelled:
                self._cancelled.add(w.wid)
                excess -= 1
        for w in sorted(self.pool, key=lambda x: (x.load, x.wid))[:max(0, min(excess, len(self.pool) - 1))]:
            self._drain(w)

    def _change(self, gpus: int) -> None:
        self._in_service += gpus
        self.timeline.append((self.env.now, self._in_service * self._tp))

    def _start(self) -> None:
        w = self._make()
        self._loading.append(w)
        self._change(1)

        def join(_ev) -> None:
            self._loading.remove(w)
            if w.wid in self._cancelled:
                self._cancelled.discard(w.wid)
                self._change(-1)  # never served
                return
            self.pool.append(w)
            self.pool.sort(key=lambda x: x.wid)

        self.env.call_later(self.spec.load_s, join)

    def _drain(self, w: DecodeWorker) -> None:
        self.pool.remove(w)
        for rid in w.give_back_waiting():
            self._reroute(rid)
        self._draining[w.wid] = w
        self.check(w.wid)

    def check(self, wid: int) -> None:
        """Called when requests finish on ``wid``: a drained GPU leaves the pool's service."""
        w = self._draining.get(wid)
        if w is None or w.load > 0:
            return
        del self._draining[wid]
        self._change(-1)
