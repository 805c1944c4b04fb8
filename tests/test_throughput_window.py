"""Throughput over a steady-state window measures capacity, not the drain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sunsim.analysis.metrics import summarize, throughput_window, tokens_in_window
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload

from .conftest import make_scenario


def test_tokens_in_window_by_hand():
    df = pd.DataFrame({
        "first_token_s": [1.0, 2.0, 9.0, 3.0],
        "decode_start_s": [2.0, 4.0, np.nan, 4.0],
        "finish_s": [12.0, 6.0, 9.0, np.nan],
        "output_tokens": [11, 5, 1, 50],
    })
    # Window [5, 10]: request 0: first token outside, 10 decode tokens over [2, 12] -> 5 of them;
    # request 1: first outside, 4 tokens over [4, 6] -> 2; request 2: its one token at 9 -> 1;
    # request 3 unfinished: first token outside -> 0.
    assert tokens_in_window(df, 5.0, 10.0) == pytest.approx(5 + 2 + 1)
    assert tokens_in_window(df, 0.0, 100.0) == pytest.approx(11 + 5 + 1 + 1)
    assert throughput_window(np.array([10.0, 20.0, 110.0]), 0.1) == (20.0, 110.0)


def _run(dtype: str):
    # Both variants keep up with the same requests; the bf16 one decodes more slowly and drains for longer.
    sc = make_scenario(
        workload={"rate": 40, "duration_s": 60,
                  "output_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.3, "max": 1000}},
        variants=[{"name": "v", "mode": "shared", "workers": 2, "dtype": dtype}],
    )
    res = simulate_variant(sc, sc.variants[0], build_workload(sc))
    return summarize(res), res


def test_identical_requests_with_different_drain_get_the_same_throughput():
    (bf16, rb), (int4, ri) = _run("bf16"), _run("int4")
    assert bf16["requests"]["finished"] == int4["requests"]["finished"] == bf16["requests"]["arrived"]
    assert bf16["drain_s"] > int4["drain_s"] + 0.5  # the variants differ in drain ...
    a, b = bf16["throughput"]["output_tokens_per_s"], int4["throughput"]["output_tokens_per_s"]
    assert abs(a / b - 1) < 0.003  # ... but not in windowed throughput
    # Whereas dividing all tokens by the run's span separates them by the drain.
    tokens = float(sum(w.tokens for w in rb.decode_workers))
    old = tokens / rb.end_s, tokens / ri.end_s
    assert abs(old[0] / old[1] - 1) > 5 * abs(a / b - 1)
    assert bf16["window"]["end_s"] == pytest.approx(float(rb.stream.arrival_s.max()))
    assert bf16["drain_s"] == pytest.approx(rb.end_s - bf16["window"]["end_s"])
