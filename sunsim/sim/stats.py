"""Plain records of what each worker and the interconnect did in a run, taken once at its end.

Metrics, timelines and traces read these instead of the live simulation objects, so the
results depend on a small frozen schema rather than on the workers' internals (which are free
to change as long as ``stats()`` still fills these fields).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PrefillStats:
    wid: int
    busy_s: float  # up to the stop: a batch still running then counts until the stop only
    batches: int
    peak_held_tokens: int  # KV of prefilled requests waiting for decode, at its highest
    stalled_s: float  # a batch was ready but waited for KV memory
    loads: int = 0  # on-demand prefill: prefill modules loaded
    load_s: float = 0.0  # on-demand prefill: seconds spent loading them (up to the stop)


@dataclass(frozen=True)
class DecodeStats:
    wid: int
    busy_s: float  # up to the stop, the run in progress then included (as are its completed iterations)
    iterations: int
    tokens: int  # decode tokens generated (the first token comes from prefill)
    peak_blocks: int
    capacity_blocks: int
    block: int  # tokens per KV block
    preemptions: int
    restore_s: float  # recompute / swap time spent on preempted requests
    #: (time, batch, KV tokens held) at each change; None when the timeline was not kept.
    timeline: Sequence[tuple[float, int, int]] | None


@dataclass(frozen=True)
class InterconnectStats:
    bandwidth_Bps: float
    latency_s: float
    kv_bytes_per_token: int
    contention: str
    links: int  # links that carried a transfer (0 when transfers do not contend)

    def duration(self, tokens: int) -> float:
        """Time to move ``tokens`` of KV over an idle link (the interconnect's own formula)."""
        return self.latency_s + tokens * self.kv_bytes_per_token / self.bandwidth_Bps
