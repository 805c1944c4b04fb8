"""Per-request outcomes of a simulated variant, kept as columns.

Workers hold request indices and write times into these arrays instead of keeping an object
per request: a million requests then cost a few numpy columns, not a million objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Records:
    """Per-request outcomes, one array per column (NaN / -1 until set)."""

    n: int
    prefill_worker: np.ndarray = field(init=False)
    decode_worker: np.ndarray = field(init=False)
    preemptions: np.ndarray = field(init=False)
    prefill_start_s: np.ndarray = field(init=False)
    first_token_s: np.ndarray = field(init=False)
    decode_admit_s: np.ndarray = field(init=False)
    kv_ready_s: np.ndarray = field(init=False)
    decode_start_s: np.ndarray = field(init=False)
    finish_s: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.prefill_worker = np.full(self.n, -1, dtype=np.int32)
        self.decode_worker = np.full(self.n, -1, dtype=np.int32)
        self.preemptions = np.zeros(self.n, dtype=np.int32)
        for name in ("prefill_start_s", "first_token_s", "decode_admit_s", "kv_ready_s", "decode_start_s",
                     "finish_s"):
            setattr(self, name, np.full(self.n, np.nan))
