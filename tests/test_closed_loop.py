"""Closed-loop clients (workload.arrivals.kind: closed): N requests in the system, think times,
Little's law, the measured window, and the schema's refusals."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from sunsim.analysis.metrics import request_table, summarize
from sunsim.analysis.runner import run_scenario, write_run
from sunsim.scenario import ScenarioError, scenario_from_dict
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload

from .conftest import BASE


def closed(concurrency: int, num_requests: int = 300, think_time_s: float = 0.0, **arrivals) -> dict:
    d = copy.deepcopy(BASE)
    d["workload"].pop("rate")
    d["workload"].pop("duration_s")
    d["workload"]["num_requests"] = num_requests
    d["workload"]["arrivals"] = {"kind": "closed", "concurrency": concurrency, "think_time_s": think_time_s,
                                 **arrivals}
    return d


def run(d: dict, variant: int = 1):
    sc = scenario_from_dict(d)
    res = simulate_variant(sc, sc.variants[variant], build_workload(sc))
    return res, request_table(res), summarize(res)


def in_system(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Requests arrived and not finished, on each interval between consecutive events: (interval starts, count)."""
    a, f = df["arrival_s"].to_numpy(), df["finish_s"].to_numpy()
    times = np.unique(np.concatenate([a, f]))
    mid = (times[:-1] + times[1:]) / 2
    count = np.searchsorted(np.sort(a), mid, side="right") - np.searchsorted(np.sort(f), mid, side="right")
    return times[:-1], count


@pytest.mark.parametrize("n", [1, 5, 16])
def test_exactly_n_in_the_system_from_warmup_to_drain(n):
    res, df, s = run(closed(n))
    assert df["finish_s"].notna().all() and np.isfinite(df["arrival_s"]).all()
    assert (df["arrival_s"].to_numpy()[:n] == 0).all()  # every client sends at time 0
    start, end = s["window"]["start_s"], s["window"]["end_s"]
    assert 0 < start < end
    t, count = in_system(df)
    inside = (t >= 0) & (t < end)  # from the start, in fact, with no think time
    assert (count[inside] == n).all()
    assert count.max() == n
    if n > 1:  # after the first client stops the drain has fewer
        assert (count[t >= end] < n).all()
    # The window ends at the first stop: the (num_requests - n + 1)-th finish (the first one with nothing to send).
    assert end == pytest.approx(np.sort(df["finish_s"].to_numpy())[len(df) - n])
    # The default warm-up: the last of the clients' first requests finished.
    assert start == pytest.approx(df["finish_s"].to_numpy()[:n].max())


@pytest.mark.parametrize("think", [0.0, 0.35])
def test_next_arrival_is_a_finish_plus_the_think_time(think):
    n = 6
    _, df, _ = run(closed(n, think_time_s=think))
    a = df["arrival_s"].to_numpy()
    f = np.sort(df["finish_s"].to_numpy())
    # Request k (k >= n) is sent by the (k - n)-th finish in time order, exactly think seconds later.
    np.testing.assert_allclose(a[n:], f[: len(a) - n] + think, rtol=0, atol=1e-9)
    assert (np.diff(a) >= 0).all()


def test_one_client_runs_back_to_back():
    _, df, _ = run(closed(1, num_requests=60))
    a, f = df["arrival_s"].to_numpy(), df["finish_s"].to_numpy()
    np.testing.assert_array_equal(a[1:], f[:-1])
    assert df["e2e_s"].sum() == pytest.approx(f[-1], rel=1e-12)  # latencies tile the run from 0


def test_littles_law_in_the_window():
    n = 12
    _, df, s = run(closed(n, num_requests=4000))
    start, end = s["window"]["start_s"], s["window"]["end_s"]
    span = end - start
    measured = s["window"]["requests"]
    lam, w = s["throughput"]["requests_per_s"], s["e2e_s"]["mean"]
    # Over the window N requests are in the system, so the latencies intersecting it sum to N x span. The
    # measured ones (arrived and finished inside) miss at most the N straddling each edge, each at most the
    # longest latency; the finishes counted exceed the measured requests by at most the N arrived before it.
    longest = float(df["e2e_s"].max())
    low, high = 1 - 2 * longest / span, 1 + n / measured
    assert high - low < 0.15  # the bound is tight enough to catch a wrong window
    assert low <= lam * w / n <= high
    # The measured requests are exactly those arrived and finished inside the window.
    inside = (df["arrival_s"] >= start) & (df["finish_s"] <= end)
    assert measured == int(inside.sum())
    assert w == pytest.approx(float(df.loc[inside, "e2e_s"].mean()))


def test_exponential_think_never_exceeds_n_and_is_seeded():
    d = closed(8, think_time_s=0.2, think="exponential")
    df1, df2 = run(d)[1], run(d)[1]
    pd.testing.assert_frame_equal(df1, df2)
    _, count = in_system(df1)
    assert count.max() <= 8
    # A finish frees a client; arrivals lag finishes by the think times: mean close to 0.2 s.
    # Sends follow finishes in another order than the finishes, but each finish sends one: the sums match.
    a, f = df1["arrival_s"].to_numpy(), np.sort(df1["finish_s"].to_numpy())
    lag = (a[8:].sum() - f[: len(a) - 8].sum()) / (len(a) - 8)
    assert lag == pytest.approx(0.2, rel=0.25)  # 292 exponential draws: sd of the mean ~6%
    d["seed"] = 8
    _, df3, _ = run(d)
    assert not np.array_equal(df1["arrival_s"].to_numpy(), df3["arrival_s"].to_numpy())


def test_same_seed_same_records_and_variants_share_requests():
    d = closed(10, num_requests=200)
    sc = scenario_from_dict(d)
    runs = [run_scenario(sc), run_scenario(sc)]
    for a, b in zip(runs[0].tables, runs[1].tables):
        pd.testing.assert_frame_equal(a, b)
    ded, sun = runs[0].tables
    # Same requests (models, lengths) in the same order; arrival times follow each variant's speed.
    for col in ("model", "prompt_tokens", "output_tokens"):
        assert (ded[col] == sun[col]).all()
    assert not np.array_equal(ded["arrival_s"].to_numpy(), sun["arrival_s"].to_numpy())
    assert np.isinf(runs[0].stream.arrival_s).all()  # the stream drawn up front is not touched by the runs


def test_single_token_requests_finish_at_prefill_and_free_their_client():
    d = closed(4, num_requests=80)
    d["workload"]["output_tokens"] = {"kind": "fixed", "value": 1}
    _, df, s = run(d)
    assert df["decode_worker"].eq(-1).all()  # never reached decode
    assert (df["finish_s"] == df["first_token_s"]).all()
    np.testing.assert_allclose(df["arrival_s"].to_numpy()[4:], np.sort(df["finish_s"].to_numpy())[:76], atol=1e-12)
    assert s["requests"]["finished"] == 80


def test_duration_stops_the_clients():
    d = closed(6, num_requests=100_000)
    d["workload"]["duration_s"] = 5.0
    _, df, s = run(d)
    assert df["arrival_s"].max() < 5.0
    assert df["finish_s"].notna().all()  # the drain let every sent request finish
    assert 6 < len(df) < 100_000
    # No think time: the first client to stop is the first to finish at or after duration_s.
    f = df["finish_s"].to_numpy()
    assert s["window"]["end_s"] == pytest.approx(f[f >= 5.0].min())


def test_window_in_summary_and_comparison(tmp_path):
    d = closed(5, num_requests=150, warmup_s=1.5)
    sc = scenario_from_dict(d)
    r = run_scenario(sc)
    write_run(r, tmp_path / "out")
    comp = pd.read_csv(tmp_path / "out" / "comparison.csv")
    for row, summary in zip(comp.itertuples(), r.summaries):
        assert summary["window"]["start_s"] == 1.5  # given
        assert row.window_start_s == pytest.approx(1.5)
        assert row.window_end_s == pytest.approx(summary["window"]["end_s"], rel=1e-5)
    req = pd.read_csv(tmp_path / "out" / "sun" / "requests.csv")
    assert np.isfinite(req["arrival_s"]).all() and (req["ttft_s"] > 0).all()
    np.testing.assert_allclose(req["ttft_s"], req["first_token_s"] - req["arrival_s"], atol=1e-6)  # as written


@pytest.mark.parametrize("patch, field", [
    ({"rate": 3}, "workload.rate"),
    ({"arrivals": {"kind": "closed", "concurrency": 0}}, "concurrency"),
    ({"arrivals": {"kind": "closed", "concurrency": 2, "think": "lognormal"}}, "think"),
    ({"arrivals": {"kind": "closed", "concurrency": 2, "think_time_s": -1}}, "think_time_s"),
    ({"arrivals": {"kind": "closed", "concurrency": 500}}, "concurrency"),
    ({"num_requests": None}, "workload.num_requests"),
    ({"shift": {"at_s": 3}}, "workload.shift"),
])
def test_schema_refusals_name_the_field(patch, field):
    d = closed(4)
    for k, v in patch.items():
        if v is None:
            d["workload"].pop(k)
            d["workload"]["duration_s"] = 10
        else:
            d["workload"][k] = v
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        scenario_from_dict(d)


def test_planning_refuses_closed_arrivals():
    from sunsim.analysis.planning.search import Planner

    with pytest.raises(ScenarioError, match="workload.arrivals"):
        Planner(scenario_from_dict(closed(4)), 0.9, 8)
