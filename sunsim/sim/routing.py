"""Routing policies: which worker of a pool gets the next request.

A policy sees only each worker's load figures, never the request's model, which is what
makes a shared (SUN) pool's router model-agnostic. The same policies serve prefill and
decode pools.

:data:`POLICIES` is the one list of policies: the scenario schema takes its allowed
``routing`` names from it, so adding a policy is one decorated function here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Protocol

import numpy as np


class Loaded(Protocol):
    """What a worker shows its router: counts that change the instant a request is routed or leaves."""

    #: Requests running or waiting on the worker.
    load: int
    #: Outstanding KV tokens, as a router could know them: decode, the running batch's KV now plus the prompts
    #: of requests waiting or in transfer (never a request's future output); prefill, the prompt tokens queued
    #: or in the running batch (the KV it has yet to finish).
    kv_load: int


#: Pairs of random workers drawn at once per pool size (one numpy call, not one per pick).
PAIRS_PER_DRAW = 1024


@dataclass
class RouteState:
    """What a policy may remember between picks: its rng, a cursor per pool, drawn pairs per pool size."""

    rng: np.random.Generator
    cursor: dict[int, int] = field(default_factory=dict)
    _pairs: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)

    def two_distinct(self, n: int) -> tuple[int, int]:
        """Two distinct indices below ``n``, uniformly at random (the first drawn, then the second): drawn
        :data:`PAIRS_PER_DRAW` at a time."""
        pairs = self._pairs.get(n)
        if not pairs or not pairs[0]:
            first = self.rng.integers(0, n, PAIRS_PER_DRAW)
            second = self.rng.integers(0, n - 1, PAIRS_PER_DRAW)
            second += second >= first  # uniform over the other n - 1
            pairs = self._pairs[n] = (first.tolist()[::-1], second.tolist()[::-1])
        return pairs[0].pop(), pairs[1].pop()


#: A policy picks a worker from a pool of two or more; ``pool_id`` tells pools apart for stateful policies.
Policy = Callable[[Sequence[Loaded], int, RouteState], Loaded]

#: Policy name -> policy, in the order they are listed to users.
POLICIES: dict[str, Policy] = {}


def policy(name: str) -> Callable[[Policy], Policy]:
    """Register a routing policy under ``name`` (the value a scenario's ``routing`` field takes)."""
    def register(fn: Policy) -> Policy:
        if name in POLICIES:
            raise ValueError(f"routing policy {name!r} registered twice")
        POLICIES[name] = fn
        return fn
    return register


_by_load = attrgetter("load")
_by_kv = attrgetter("kv_load", "load")


@policy("round_robin")
def round_robin(pool: Sequence[Loaded], pool_id: int, state: RouteState) -> Loaded:
    """Each pool's workers in turn, whatever their load."""
    i = state.cursor.get(pool_id, 0)
    state.cursor[pool_id] = (i + 1) % len(pool)
    return pool[i]


@policy("least_loaded")
def least_loaded(pool: Sequence[Loaded], pool_id: int, state: RouteState) -> Loaded:
    """The worker with the fewest requests (the first of them on a tie)."""
    return min(pool, key=_by_load)


@policy("least_kv")
def least_kv(pool: Sequence[Loaded], pool_id: int, state: RouteState) -> Loaded:
    """The worker with the fewest outstanding KV tokens, then the fewest requests (the first on a tie):
    balances work and memory held rather than counts, which differ once lengths vary."""
    return min(pool, key=_by_kv)


@policy("power_of_two")
def power_of_two(pool: Sequence[Loaded], pool_id: int, state: RouteState) -> Loaded:
    """The less loaded of two distinct random workers (the first drawn on a tie): near least-loaded
    balance while looking at two workers only."""
    a, b = state.two_distinct(len(pool))
    wa, wb = pool[a], pool[b]
    return wb if wb.load < wa.load else wa


@policy("power_of_two_kv")
def power_of_two_kv(pool: Sequence[Loaded], pool_id: int, state: RouteState) -> Loaded:
    """Of two distinct random workers, the one with fewer outstanding KV tokens, then fewer requests (the
    first drawn on a tie): :func:`least_kv`'s balance by work held while looking at two workers only."""
    a, b = state.two_distinct(len(pool))
    wa, wb = pool[a], pool[b]
    return wb if _by_kv(wb) < _by_kv(wa) else wa


#: Policies that pick the first worker with the least of a key, with no state: also right for a one-worker pool.
_STATELESS = {"least_loaded": _by_load, "least_kv": _by_kv}


class Router:
    """Picks a worker from a pool. Deterministic given the rng's seed."""

    def __init__(self, policy: str, rng: np.random.Generator) -> None:
        if policy not in POLICIES:
            raise ValueError(f"routing must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy = policy
        self._pick = POLICIES[policy]
        self._state = RouteState(rng)
        key = _STATELESS.get(policy)
        if key is not None:  # the policy's own pick, without a call to it (and without the one-worker check)
            self.pick = lambda pool, pool_id: min(pool, key=key)

    def pick(self, pool: Sequence[Loaded], pool_id: int) -> Loaded:
        if len(pool) == 1:  # no choice to make, and no rng draw: results do not depend on the policy
            return pool[0]
        return self._pick(pool, pool_id, self._state)
