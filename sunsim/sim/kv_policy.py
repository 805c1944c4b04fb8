"""How a decode GPU manages KV memory: the policy's settings and the paged policy's per-request state."""

from __future__ import annotations

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

    def __init__(self, n: int) -> None:
        self.off = np.zeros(n, dtype=np.int64)  # KV read at iteration j is off + j
        self.fin = np.full(n, -1, dtype=np.int64)  # iteration at which it is done; -1: not running
        self.steps = np.zeros(n, dtype=np.int64)  # decode steps done before its last preemption
        self.seq = np.zeros(n, dtype=np.int64)  # admission order (preemption victims: latest first)
        self.restore = np.zeros(n, dtype=np.int64)  # tokens to restore when it joins (after a preemption)
