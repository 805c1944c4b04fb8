"""Dedicated pools that move GPUs between models as traffic changes (a dynamic dedicated baseline).

Every ``every_s`` seconds the arrivals of the last interval give each model's rate, and the
pools' GPUs are split again in proportion to it (largest remainder, as a popularity split;
every model that started with a GPU keeps at least one, so no pool ever empties). A GPU that
moves leaves its pool's router at once and stops admitting new requests; its waiting requests
that never ran are re-routed to its old pool; it finishes its running requests (and resumes any
it had preempted); then it loads the new model's weights for ``load_s`` seconds, serving
nothing, and joins the new pool. The donor's least-loaded GPUs move first. The rates are the
past interval's only: nothing is forecast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sunsim.scenario import split_by_share
from sunsim.sim.decode import DecodeWorker
from sunsim.sim.environment import Environment


class Rebalancer:
    """Moves decode workers between per-model pools (the lists the router picks from, mutated in place)."""

    def __init__(self, env: Environment, every_s: float, load_s: float, pools: list[list[DecodeWorker]],
                 reroute: Callable[[int, int], None]) -> None:
        self.env, self.every_s, self.load_s = env, every_s, load_s
        self.pools = pools
        self._arrivals = np.zeros(len(pools), dtype=np.int64)  # per model, since the last look
        self._reroute = reroute
        self.home = {w.wid: m for m, pool in enumerate(pools) for w in pool}  # model served or moving to
        self._keep = np.array([len(p) > 0 for p in pools])
        self._draining: dict[int, DecodeWorker] = {}
        self.moves: list[tuple[float, int, int, int]] = []  # (time, worker, from model, to model)
        self.looks: list[tuple[float, tuple[int, ...]]] = []  # (time, each model's arrivals in the interval before)
        env.process(self._run())

    def _run(self):
        env, m = self.env, len(self.pools)
        while True:
            yield env.timeout(self.every_s)
            rate = self._arrivals.astype(float)
            self.looks.append((env.now, tuple(self._arrivals.tolist())))
            self._arrivals[:] = 0
            if rate.sum() == 0:
                continue
            share = np.where(self._keep, rate + 1e-9, 0.0)
            target = np.array(split_by_share(len(self.home), share / share.sum()))
            current = np.bincount(list(self.home.values()), minlength=m)
            takers = [k for k in range(m) for _ in range(max(0, int(target[k] - current[k])))]
            for donor in range(m):
                excess = int(current[donor] - target[donor])
                movable = sorted(self.pools[donor], key=lambda w: (w.load, w.wid))
                for w in movable[:max(0, min(excess, len(self.pools[donor]) - 1))]:
                    if takers:
                        self._move(w, donor, takers.pop(0))

    def arrived(self, model: int) -> None:
        """A request of ``model`` arrived (counted towards the interval's rates)."""
        self._arrivals[model] += 1

    def _move(self, w: DecodeWorker, src: int, dst: int) -> None:
        self.pools[src].remove(w)
        self.home[w.wid] = dst
        self.moves.append((self.env.now, w.wid, src, dst))
        for rid in w.give_back_waiting():
            self._reroute(rid, src)
        self._draining[w.wid] = w
        self.check(w.wid)

    def check(self, wid: int) -> None:
        """Called when requests finish on ``wid``: a drained moving GPU starts loading its new model."""
        w = self._draining.get(wid)
        if w is None or w.load > 0:
            return
        del self._draining[wid]
        dst = self.home[wid]

        def join(_ev) -> None:
            pool = self.pools[dst]
            pool.append(w)
            pool.sort(key=lambda x: x.wid)

        self.env.call_later(self.load_s, join)
