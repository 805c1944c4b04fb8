"""How a decode GPU manages KV memory: the policy's settings and the paged policy's per-request state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

KV_POLICIES = ("paged", "reserve")
PREEMPTION_MODES = ("recompute", "swap")


@dataclass(frozen=True)
class KVPolicy:
    """How a decode worker manages KV memory.

    ``paged`` (vLLM): blocks are allocated as tokens are generated; a request is admitted
    when the free blocks left after allocating its first step's blocks stay at or above the
    watermark; when a step's blocks do not fit, the most recently admitted running requests
    are preempted (``recompute``: blocks dropped, KV recomputed by a prefill-style pass on
    readmission; ``swap``: blocks copied to host memory and back). ``reserve``: blocks for
    prompt + the request's true output length are reserved at admission (clairvoyant, never
    preempts).
    """

    policy: str = "paged"
    preemption: str = "recompute"
    watermark: float = 0.01  # share of the GPU's blocks kept free at admission
    swap_Bps: float = 64e9  # host link per direction (PCIe 5 x16)
    kv_bytes_per_token: int = 0  # for swap times

    def __post_init__(self) -> None:
        if self.policy not in KV_POLICIES:
            raise ValueError(f"kv_policy must be one of {', '.join(KV_POLICIES)}, got {self.policy!r}")
        if self.preemption not in PREEMPTION_MODES:
            raise ValueError(f"preemption must be one of {', '.join(PREEMPTION_MODES)}, got {self.preemption!r}")


RESERVE = KVPolicy(policy="reserve")


class PagedState:
    """Per-request bookkeeping of the paged policy, one array per field, indexed by request id.

    One is shared by all the decode workers of a variant: a request is admitted by one worker
    only and stays there (a preempted one resumes on it; rerouted ones were never admitted, so
    their entries are untouched), so sharing changes nothing but the memory, which is then
    per request and not per request and decode GPU.
    """

    def __init__(self, n: int = 0, alloc: Alloc | None = None) -> None:
        alloc = alloc or fixed_alloc(n)
        self.seq = alloc(np.int64, 0)  # admission order (preemption victims: latest first)


#: Makes a per-request array of an element type, filled with a value: of a fixed length, or one
#: that follows the requests in flight (:meth:`sunsim.sim.in_flight.InFlight.per_request`).
Alloc = Callable[[type, int], np.ndarray]


def fixed_alloc(n: int) -> Alloc:
    """Per-request arrays of ``n`` entries."""
    return lambda dtype, fill: np.full(n, fill, dtype=dtype)
