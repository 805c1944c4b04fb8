"""Per-request outcomes of a simulated variant, kept as columns.

Workers hold request indices and write times into these arrays instead of keeping an object
per request: a million requests then cost a few numpy columns, not a million objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Each outcome column: its element type and its value until set.
COLUMNS: dict[str, tuple[type, float]] = {
    "prefill_worker": (np.int32, -1), "decode_worker": (np.int32, -1), "preemptions": (np.int32, 0),
    "prefill_start_s": (np.float64, np.nan), "first_token_s": (np.float64, np.nan),
    "decode_admit_s": (np.float64, np.nan), "kv_ready_s": (np.float64, np.nan),
    "decode_start_s": (np.float64, np.nan), "finish_s": (np.float64, np.nan),
}


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
        for name, (dtype, fill) in COLUMNS.items():
            setattr(self, name, np.full(self.n, fill, dtype=dtype))
