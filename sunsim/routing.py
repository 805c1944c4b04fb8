"""Routing policies: which worker of a pool gets the next request.

A policy sees only each worker's load figures, never the request's model, which is what
makes a shared (SUN) pool's router model-agnostic. The same policies serve prefill and
decode pools.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Protocol

import numpy as np

POLICIES = ("round_robin", "least_loaded", "least_kv", "power_of_two")


class Loaded(Protocol):
    #: Requests running or waiting on the worker.
    load: int
    #: Tokens held or awaited (KV tokens for decode, queued prompt tokens for prefill).
    kv_load: int


_by_load = attrgetter("load")
_by_kv = attrgetter("kv_load", "load")


class Router:
    """Picks a worker from a pool. Deterministic given the rng's seed."""

    def __init__(self, policy: str, rng: np.random.Generator) -> None:
        if policy not in POLICIES:
            raise ValueError(f"routing must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy = policy
        self._rng = rng
        self._next: dict[int, int] = {}  # round-robin cursor per pool

    def pick(self, pool: Sequence[Loaded], pool_id: int) -> Loaded:
        n = len(pool)
        if n == 1:
            return pool[0]
        if self.policy == "round_robin":
            i = self._next.get(pool_id, 0)
            self._next[pool_id] = (i + 1) % n
            return pool[i]
        if self.policy == "least_loaded":
            return min(pool, key=_by_load)  # first of the least loaded
        if self.policy == "least_kv":
            return min(pool, key=_by_kv)
        a, b = self._rng.choice(n, size=2, replace=False)
        wa, wb = pool[a], pool[b]
        return wb if wb.load < wa.load else wa
