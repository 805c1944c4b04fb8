"""vLLM-named metrics (summary.json's ``vllm`` block, comparison.csv), ``--percentiles`` and ``run --json``,
each checked against the per-request table by hand: vLLM's definitions recomputed from requests.csv."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from sunsim.analysis.schema import COMPARISON_COLUMNS
from sunsim.analysis.vllm_metrics import benchmark_span, parse_percentiles, repeated_stats, vllm_metrics
from sunsim.cli import main
from sunsim.errors import InputError

from .conftest import BASE, ROOT, merge

SLO_TTFT, SLO_TPOT = 0.015, 0.0078  # near the medians: some requests miss, goodput < throughput


def test_repeated_stats_by_hand() -> None:
    """[10, 20 x3] (30 has no gaps): mean 17.5, median 20, std sqrt(18.75), p25 at index 0.75 -> 17.5."""
    s = repeated_stats(np.array([30.0, 10.0, 20.0]), np.array([0, 1, 3]), (25.0, 99.0))
    assert s["mean"] == pytest.approx(17.5) and s["median"] == 20.0
    assert s["std"] == pytest.approx(np.sqrt((7.5**2 + 3 * 2.5**2) / 4))
    assert s["p25"] == pytest.approx(17.5) and s["p99"] == 20.0


def test_repeated_stats_equal_numpy_on_the_expanded_list() -> None:
    rng = np.random.default_rng(3)
    v, c = rng.gamma(2.0, 5.0, 200), rng.integers(0, 40, 200)
    full = np.repeat(v, c)
    qs = (1.0, 37.5, 50.0, 90.0, 99.9)
    s = repeated_stats(v, c, qs)
    assert s["mean"] == pytest.approx(full.mean()) and s["std"] == pytest.approx(full.std())
    for q in qs:
        assert s[f"p{q:g}"] == pytest.approx(np.percentile(full, q), rel=1e-12)


def test_vllm_block_by_hand() -> None:
    """Four requests: a fast one, a slow-decode one, a one-token one and an unfinished one (a failure)."""
    df = pd.DataFrame({
        "arrival_s": [1.0, 2.0, 3.0, 4.0],
        "prompt_tokens": [100, 200, 300, 400],
        "output_tokens": [11, 5, 1, 9],
        "first_token_s": [1.1, 2.5, 3.2, 4.1],
        "finish_s": [1.6, 3.3, 3.2, np.nan],
    })
    df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
    df["e2e_s"] = df["finish_s"] - df["arrival_s"]
    span = benchmark_span(df, stop_s=9.0)
    assert span == (1.0, 9.0)  # one request never finished: the run's stop ends the benchmark
    b = vllm_metrics(df, span, slo_ttft_s=0.3, slo_tpot_s=0.1, percentiles=(50.0,))
    assert b["duration"] == 8.0 and b["completed"] == 3
    assert b["total_output_tokens"] == 17 and b["total_input_tokens"] == 600
    assert b["request_throughput"] == pytest.approx(3 / 8) and b["output_throughput"] == pytest.approx(17 / 8)
    # TPOTs: 0.5/10 = 0.05 (good), 0.8/4 = 0.2 (misses TPOT; TTFT 0.5 misses too); one-token: TPOT 0, TTFT 0.2.
    assert b["request_goodput"] == pytest.approx(2 / 8)
    assert b["mean_tpot_ms"] == pytest.approx(125.0) and b["median_tpot_ms"] == pytest.approx(125.0)
    # ITL: 10 gaps of 50 ms and 4 of 200 ms, pooled.
    assert b["mean_itl_ms"] == pytest.approx((10 * 50 + 4 * 200) / 14) and b["median_itl_ms"] == pytest.approx(50)
    assert b["p50_ttft_ms"] == b["median_ttft_ms"] == pytest.approx(200.0)
    assert b["mean_e2el_ms"] == pytest.approx(1e3 * (0.6 + 1.3 + 0.2) / 3)
    assert b["std_ttft_ms"] == pytest.approx(1e3 * np.std([0.1, 0.5, 0.2]))
    assert "p99_ttft_ms" not in b  # only the chosen percentiles, as vLLM


@pytest.mark.parametrize("text", ["0", "100", "-5", "abc", "50,,90", "nan", "inf"])
def test_percentiles_are_validated(text: str, tmp_path, capsys) -> None:
    with pytest.raises(InputError, match="--percentiles"):
        parse_percentiles(text)
    assert main(["run", str(ROOT / "scenarios" / "default.yaml"), "--json", "--percentiles", text]) == 2
    assert "--percentiles" in capsys.readouterr().err


def test_parse_percentiles() -> None:
    assert parse_percentiles("50, 90,99,99.9,90") == (50.0, 90.0, 99.0, 99.9)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm")
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"workload": {"duration_s": 15},
                                                "slo": {"ttft_s": SLO_TTFT, "tpot_s": SLO_TPOT}})))
    assert main(["run", str(path), "--out", str(tmp / "run"), "--percentiles", "50,90,99.9"]) == 0
    return tmp / "run"


@pytest.mark.parametrize("variant", ["dedicated", "sun"])
def test_summary_vllm_block_matches_requests_csv(run_dir, variant: str) -> None:
    s = json.loads((run_dir / variant / "summary.json").read_text())
    v = s["vllm"]
    req = pd.read_csv(run_dir / variant / "requests.csv")
    done = req[req["finish_s"].notna()]
    multi = done[done["output_tokens"] > 1]
    assert v["completed"] == len(done) == s["requests"]["finished"]
    assert v["median_ttft_ms"] == pytest.approx(1e3 * done["ttft_s"].median())
    assert v["p90_ttft_ms"] == pytest.approx(1e3 * np.percentile(done["ttft_s"], 90))
    assert v["p99.9_tpot_ms"] == pytest.approx(1e3 * np.percentile(multi["tpot_s"], 99.9))
    assert v["mean_e2el_ms"] == pytest.approx(1e3 * done["e2e_s"].mean())
    # ITL pooled over every gap: its mean is the decode time over the gaps, not the mean TPOT.
    decode = (multi["finish_s"] - multi["first_token_s"]).sum()
    assert v["mean_itl_ms"] == pytest.approx(1e3 * decode / (multi["output_tokens"] - 1).sum())
    # vLLM's benchmark duration: first request sent -> last response (everything finished here).
    duration = done["finish_s"].max() - req["arrival_s"].min()
    assert v["duration"] == pytest.approx(duration)
    good = ((done["ttft_s"] <= SLO_TTFT) & (done["tpot_s"].isna() | (done["tpot_s"] <= SLO_TPOT))).sum()
    assert 0 < good < len(done)  # the targets bind: the check can tell goodput from throughput
    assert v["request_goodput"] == pytest.approx(good / duration)
    assert v["request_throughput"] == pytest.approx(len(done) / duration)
    assert v["output_throughput"] == pytest.approx(done["output_tokens"].sum() / duration)
    assert "p99_ttft_ms" not in v and v["percentiles"] == [50.0, 90.0, 99.9]


def test_comparison_csv_keeps_old_columns_and_adds_vllm_ones(run_dir) -> None:
    comp = pd.read_csv(run_dir / "comparison.csv")
    cols = list(comp.columns)
    assert cols[: len(COMPARISON_COLUMNS)] == list(COMPARISON_COLUMNS)  # old columns first, unchanged
    assert {"ttft_p50_s", "tpot_p90_s", "slo_attainment", "request_goodput", "median_itl_ms"} <= set(cols)
    assert {"p50_ttft_ms", "p90_itl_ms", "p99.9_e2el_ms"} <= set(cols)
    assert comp["p99_ttft_ms"].isna().all()  # 99 was not chosen: the schema's column stays empty
    for _, row in comp.iterrows():
        v = json.loads((run_dir / row["variant"] / "summary.json").read_text())["vllm"]
        for col in ("request_goodput", "median_ttft_ms", "p90_itl_ms", "p99.9_e2el_ms"):
            assert row[col] == pytest.approx(v[col], rel=1e-5)  # the CSV keeps 6 significant digits


def test_a_run_cut_by_its_horizon_ends_the_benchmark_at_the_stop(tmp_path) -> None:
    from sunsim.analysis.runner import run_scenario
    from sunsim.scenario import scenario_from_dict

    sc = scenario_from_dict(merge(BASE, {"workload": {"duration_s": 10}, "sim": {"horizon_s": 8}}))
    run = run_scenario(sc, ["dedicated"])
    s, df = run.summaries[0], run.tables[0]
    assert df["finish_s"].isna().any()
    assert s["vllm"]["duration"] == pytest.approx(s["duration_s"] - df["arrival_s"].min())
    assert s["vllm"]["completed"] == int(df["finish_s"].notna().sum())


def test_run_json_prints_one_object_and_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    scenario = str((ROOT / "scenarios" / "default.yaml").resolve())
    assert main(["run", scenario, "--set", "workload.duration_s=10", "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert list(tmp_path.iterdir()) == []  # no results/ folder, nothing else
    assert doc["scenario"] == "default" and doc["profile"]["name"] and doc["results"] is None
    assert set(doc["variants"]) == {"dedicated", "sun", "qsun"}
    for v in doc["variants"].values():
        for key in ("median_ttft_ms", "p99_itl_ms", "request_goodput", "request_throughput", "output_throughput"):
            assert isinstance(v[key], float)
        assert v["gpus"]["total"] == v["gpus"]["prefill"] + v["gpus"]["decode"]
        assert v["request_goodput"] <= v["request_throughput"]


def test_run_json_with_out_writes_the_folder_too(tmp_path, capsys) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"workload": {"duration_s": 5}})))
    assert main(["run", str(path), "--json", "--out", str(tmp_path / "r"), "--variant", "sun"]) == 0
    doc = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "r" / "sun" / "summary.json").read_text())
    assert doc["results"] == str(tmp_path / "r")
    assert doc["variants"]["sun"]["p99_tpot_ms"] == summary["vllm"]["p99_tpot_ms"]


def test_api_run_takes_percentiles() -> None:
    import sunsim

    from .conftest import make_scenario

    sc = make_scenario(workload={"duration_s": 5})
    run = sunsim.run(sc, variants=["sun"], percentiles=[75])
    assert "p75_ttft_ms" in run.scenario_run.summaries[0]["vllm"]
    with pytest.raises(InputError, match="percentiles"):
        sunsim.run(sc, percentiles=[150])


def test_per_model_blocks_share_the_run_duration_and_add_up(run_dir) -> None:
    """Each model's block is over the same benchmark duration, so counts and rates add up to the run's."""
    s = json.loads((run_dir / "sun" / "summary.json").read_text())
    parts = [m["vllm"] for m in s["per_model"].values()]
    assert all(p["duration"] == s["vllm"]["duration"] for p in parts)
    for key in ("completed", "total_output_tokens", "request_goodput", "request_throughput", "output_throughput"):
        assert sum(p[key] for p in parts) == pytest.approx(s["vllm"][key])
