"""A day of traffic in minutes: a time-varying rate, an autoscaled shared pool, GPU-hours.

The day of scenarios/diurnal-day.yaml is run scaled down (a 600 s "day" at a low rate, a small batch
bound so that the pool has to grow and shrink); what is checked is computed by hand here: the rate
curve's integral, the integral of the recorded GPUs in service, conservation of requests and tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sunsim.analysis.runner import run_scenario
from sunsim.scenario import ScenarioError, load_scenario
from sunsim.workload.stream import build_workload

ROOT = Path(__file__).resolve().parents[1]
DAY = ROOT / "scenarios" / "diurnal-day.yaml"
#: The day at 1/144 scale: one 600 s period peaking at 300 s, 6 req/s on average, decisions every 60 s.
SMALL = ["workload.duration_s=600", "workload.rate=6", "workload.rate_curve.period_s=600",
         "workload.rate_curve.peak_at_s=300", "decode.max_batch=8", "variants.0.autoscale.every_s=60",
         "variants.0.autoscale.load_s=20", "variants.1.rebalance.every_s=60", "variants.1.rebalance.load_s=20"]


@pytest.fixture(scope="module")
def day():
    sc = load_scenario(DAY, SMALL)
    return sc, run_scenario(sc)


def _by_name(run, name):
    i = [s["variant"] for s in run.summaries].index(name)
    return run.results[i], run.summaries[i], run.tables[i]


def test_the_scenario_file_is_a_day_of_four_models():
    sc = load_scenario(DAY)
    assert sc.workload.duration_s == 86400 and sc.workload.rate_curve.period_s == 86400
    assert sc.workload.rate_curve.peak_to_trough == 3 and len(sc.model.tasks) == 4
    assert {v.mode for v in sc.variants} == {"shared", "dedicated"}
    assert any(v.autoscale for v in sc.variants) and any(v.rebalance for v in sc.variants)


def _hand_integral(timeline: list, end: float) -> float:
    t = np.array([p[0] for p in timeline] + [end])
    n = np.array([p[1] for p in timeline])
    return float((n * np.diff(t)).sum())


def test_gpu_hours_are_the_integral_of_the_gpus_in_service(day):
    sc, run = day
    res, summary, _ = _by_name(run, "sun-autoscaled")
    timeline = summary["gpus_over_time"]
    prefill = summary["gpus"]["prefill"]
    assert prefill == 5 and timeline[0] == [0.0, prefill + 2]  # starts with its 2 decode GPUs
    assert summary["gpu_hours"] == pytest.approx(_hand_integral(timeline, summary["duration_s"]) / 3600, rel=1e-12)
    decode = [n - prefill for _, n in timeline]
    spec = sc.variants[0].autoscale
    assert min(decode) >= spec.min_workers and max(decode) <= spec.max_workers
    assert summary["peak_gpus"] == max(n for _, n in timeline)
    assert max(decode) > 2 and len(set(decode)) >= 3  # the pool grew for the peak and shrank after it
    # each added GPU (wid 2, 3, ... in order of the increments) admits nothing before its weights loaded
    starts = [t for (t, n), (_, before) in zip(timeline[1:], timeline) if n > before]
    rec = res.records
    for k, t0 in enumerate(starts):
        admitted = rec.decode_admit_s[rec.decode_worker == 2 + k]
        if len(admitted):
            assert admitted.min() >= t0 + spec.load_s - 1e-9
    # the dedicated design keeps its 5 + 8 GPUs for the whole run
    _, ded, _ = _by_name(run, "dedicated-rebalanced")
    assert ded["gpus_over_time"] == [[0.0, 13]] and ded["peak_gpus"] == 13
    assert ded["gpu_hours"] == pytest.approx(13 * ded["duration_s"] / 3600, rel=1e-12)
    assert summary["gpu_hours"] < ded["gpu_hours"]


def test_every_request_is_served_once_and_every_token_generated(day):
    _, run = day
    for res, summary, df in zip(run.results, run.summaries, run.tables):
        assert len(df) == len(run.stream) and summary["requests"]["unfinished"] == 0
        assert (df["finish_s"] >= df["arrival_s"]).all()
        assert df["decode_worker"].between(0, len(res.decode_stats) - 1).all()
        if summary["preemptions"] == 0:  # each output token after the first is one decode token
            assert sum(w.tokens for w in res.decode_stats) == int((df["output_tokens"] - 1).sum())


def test_arrivals_follow_the_diurnal_curve():
    """Binned arrival counts against the curve's integral, within Poisson error (chi-square over the bins)."""
    sc = load_scenario(DAY, ["workload.duration_s=600", "workload.rate=40", "workload.rate_curve.period_s=600",
                             "workload.rate_curve.peak_at_s=300"])
    t = build_workload(sc).arrival_s
    edges = np.linspace(0, 600, 31)
    seen = np.histogram(t, edges)[0]
    a = (3 - 1) / (3 + 1)  # peak 3x the trough: rate 40 (1 + a cos(...)), 60 at the peak, 20 at the trough

    def big_lambda(x):
        w = 2 * math.pi / 600
        return 40 * (x + a / w * (np.sin(w * (x - 300)) - math.sin(-w * 300)))

    expect = np.diff(big_lambda(edges))
    assert expect.sum() == pytest.approx(40 * 600)  # a whole period: the mean is the rate
    chi2 = float(((seen - expect) ** 2 / expect).sum())
    assert chi2 < 30 + 5 * math.sqrt(2 * 30)  # 30 bins: mean 30, sd sqrt(60); a flat rate would give ~1,700
    assert (np.abs(seen - expect) < 4.5 * np.sqrt(expect)).all()
    assert (np.diff(t) >= 0).all() and t.min() >= 0 and t.max() < 600


def _piecewise(tmp_path: Path, rows: str, extra: str = "rate: 5") -> Path:
    (tmp_path / "day.csv").write_text("time_s,rate\n" + rows)
    text = DAY.read_text().replace("rate: 30", extra).replace(
        "rate_curve: {kind: diurnal, peak_to_trough: 3, peak_at_s: 50400, period_s: 86400}",
        "rate_curve: {kind: piecewise, path: day.csv}").replace("duration_s: 86400", "duration_s: 400")
    path = tmp_path / "day.yaml"
    path.write_text(text)
    return path


def test_piecewise_curve_from_a_file_next_to_the_scenario(tmp_path):
    path = _piecewise(tmp_path, "0,10\n100,0\n200,40\n300,10\n", extra="")
    t = build_workload(load_scenario(path)).arrival_s
    seen = np.histogram(t, [0, 100, 200, 300, 400])[0]
    expect = np.array([1000, 0, 4000, 1000])
    assert seen[1] == 0
    ok = expect > 0
    assert (np.abs(seen[ok] - expect[ok]) < 4.5 * np.sqrt(expect[ok])).all()
    # with workload.rate the curve is a shape scaled to that mean over the duration (5 req/s: a quarter)
    scaled = build_workload(load_scenario(path, ["workload.rate=3"])).arrival_s
    assert abs(len(scaled) - 1200) < 4.5 * math.sqrt(1200)


@pytest.mark.parametrize("rows, where", [
    ("0,10\n100,abc\n", "row 3, column rate: expected a number"),
    ("0,10\n100,-1\n", "row 3, column rate: -1 is outside"),
    ("5,10\n", "row 2, column time_s: the first row must be at 0"),
    ("0,10\n100,5\n100,6\n", "row 4, column time_s: 100 is not after"),
    ("0,0\n10,0\n", "every rate is 0"),
])
def test_bad_rate_files_name_the_row_and_column(tmp_path, rows, where):
    with pytest.raises(ScenarioError, match=where) as err:
        build_workload(load_scenario(_piecewise(tmp_path, rows, extra="")))
    assert "workload.rate_curve.path" in str(err.value)


@pytest.mark.parametrize("sets, says", [
    (["workload.arrivals={kind: gamma, cv: 2}"], "only with poisson arrivals"),
    (["variants.1.autoscale={every_s: 60, target_load: 0.5, max_workers: 4}"], "autoscale applies only to mode: shared"),
    (["variants.0.workers=9"], "outside autoscale's"),
    (["variants.0.autoscale.target_load=1.5"], "target_load"),
])
def test_bad_settings_are_refused_naming_the_field(sets, says):
    with pytest.raises(ScenarioError, match=says):
        load_scenario(DAY, sets)


def test_diurnal_needs_its_mean():
    with pytest.raises(ScenarioError, match="workload.rate is required with a diurnal"):
        load_scenario(DAY, ["workload.rate=null"])


def test_the_same_seed_gives_the_same_day(day):
    sc, run = day
    again = run_scenario(sc, ["sun-autoscaled"])
    _, first, df = _by_name(run, "sun-autoscaled")
    pd.testing.assert_frame_equal(df, again.tables[0])
    assert first["gpus_over_time"] == again.summaries[0]["gpus_over_time"]
    assert first["gpu_hours"] == again.summaries[0]["gpu_hours"]
    other = build_workload(load_scenario(DAY, SMALL + ["seed=2"])).arrival_s
    assert len(other) != len(run.stream) or not np.array_equal(other, run.stream.arrival_s)
