"""The columns of the per-request table, and the latencies derived from a request's recorded times.

One definition for the whole-run table (:func:`sunsim.analysis.metrics.request_table`) and for the
rows a streaming run writes as requests finish (:mod:`sunsim.analysis.record_file`).
"""

from __future__ import annotations

import numpy as np

REQUEST_COLUMNS = [
    "request_id", "model", "arrival_s", "prompt_tokens", "output_tokens", "prefill_worker", "decode_worker",
    "prefill_start_s", "first_token_s", "decode_admit_s", "kv_ready_s", "decode_start_s", "finish_s", "ttft_s",
    "tpot_s", "e2e_s", "parked_s", "preemptions",
]
#: What a summary reads of the table (:func:`sunsim.analysis.metrics.summarize`).
SUMMARY_COLUMNS = [
    "model", "arrival_s", "prompt_tokens", "output_tokens", "first_token_s", "kv_ready_s", "decode_start_s",
    "finish_s", "ttft_s", "tpot_s", "e2e_s", "parked_s", "preemptions",
]


def derived_columns(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TTFT, TPOT, E2E and parked time of each request from its times (NaN where not reached)."""
    output = c["output_tokens"]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output > 1, (c["finish_s"] - c["first_token_s"]) / (output - 1), np.nan)
    return {
        "ttft_s": c["first_token_s"] - c["arrival_s"],
        "tpot_s": tpot,
        "e2e_s": c["finish_s"] - c["arrival_s"],
        # First token -> admitted by a decode worker: the KV sits parked in the prefill GPU's memory.
        "parked_s": c["decode_admit_s"] - c["first_token_s"],
    }
