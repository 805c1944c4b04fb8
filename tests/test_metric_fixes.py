"""Reported metric and report bugs, one test each: busy time cut by the horizon, per-model GPUs of a
shared pool, per-request memory that grew with the decode GPU count, damaged run folders."""

from __future__ import annotations

import gc
import json
import shutil
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from sunsim.analysis.metrics import summarize
from sunsim.cli import main
from sunsim.errors import InputError
from sunsim.report.load import load_run
from sunsim.report.markdown import write_report
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload

from .conftest import ROOT, make_scenario

ONE_LONG_REQUEST = {"num_requests": 1, "duration_s": None, "rate": 1000,
                    "prompt_tokens": {"kind": "fixed", "value": 8000},
                    "output_tokens": {"kind": "fixed", "value": 2000}}


# --------------------------------------------------------------------------------------
# 1. Busy time at the horizon
@pytest.mark.parametrize("mode", ["dedicated", "shared"])
def test_decode_run_in_progress_at_the_horizon_counts_as_busy(mode: str) -> None:
    """One request decoding from ~0.2 s past a 3 s horizon: its GPU was busy nearly all the time, not 0%."""
    sc = make_scenario(workload=ONE_LONG_REQUEST, sim={"horizon_s": 3.0},
                       variants=[{"name": "v", "mode": mode, "workers": 1}])
    res = simulate_variant(sc, sc.variants[0], build_workload(sc))
    start = float(res.records.decode_start_s[0])
    assert 0 < start < 1 and res.end_s == pytest.approx(3.0) and res.records.finish_s[0] != res.records.finish_s[0]
    summary = summarize(res)
    busy = {w["worker"]: w for w in summary["decode_workers"]}
    worker = busy[int(res.records.decode_worker[0])]
    assert worker["busy_fraction"] == pytest.approx((3.0 - start) / 3.0, rel=1e-6)
    # The iterations done in that run count too: one request decoding is a batch of one.
    assert worker["iterations"] > 100 and worker["tokens"] == worker["iterations"] and worker["mean_batch"] == 1.0
    assert summary["decode_utilization"]["max_busy_fraction"] == pytest.approx(worker["busy_fraction"])


def test_prefill_batch_in_progress_at_the_horizon_is_busy_only_until_it():
    """A prefill batch running past the stop is busy up to the stop, never more than 100% of the run."""
    sc = make_scenario(workload=ONE_LONG_REQUEST, sim={"horizon_s": 0.02},
                       variants=[{"name": "v", "mode": "shared", "workers": 1}])
    res = simulate_variant(sc, sc.variants[0], build_workload(sc))
    start = float(res.records.prefill_start_s[0])
    assert res.records.first_token_s[0] != res.records.first_token_s[0]  # still prefilling at the stop
    worker = summarize(res)["prefill_workers"][int(res.records.prefill_worker[0])]
    assert worker["busy_fraction"] == pytest.approx((0.02 - start) / 0.02, rel=1e-6)


# --------------------------------------------------------------------------------------
# 2. Per-model figures of a shared pool
@pytest.mark.parametrize("tasks", [["a", "b", "c", "d"], ["shared", "b", "c", "d"]])
def test_per_model_decode_gpus_of_a_shared_pool_are_the_pool(tasks: list[str]) -> None:
    """Every model of a shared pool is served by all its GPUs (a model named "shared" gets no special credit),
    so the per-model tok/s per decode GPU add up to the pool's."""
    sc = make_scenario(model={"preset": "llama-3.1-8b", "tasks": tasks}, prefill={"workers": 1},
                       variants=[{"name": "sun", "mode": "shared", "workers": 3}])
    summary = summarize(simulate_variant(sc, sc.variants[0], build_workload(sc)))
    per_model = summary["per_model"]
    assert list(per_model) == tasks
    for name, m in per_model.items():
        assert m["gpus"] == {"prefill": 1, "decode": 3, "total": 4}, name
        tps = m["throughput"]["output_tokens_per_s"]
        assert m["throughput"]["output_tokens_per_s_per_decode_gpu"] == pytest.approx(tps / 3)
        assert m["throughput"]["output_tokens_per_s_per_gpu"] == pytest.approx(tps / 4)
    total = sum(m["throughput"]["output_tokens_per_s_per_decode_gpu"] for m in per_model.values())
    assert total == pytest.approx(summary["throughput"]["output_tokens_per_s_per_decode_gpu"])


def test_per_model_decode_gpus_of_dedicated_pools_are_their_own() -> None:
    sc = make_scenario(variants=[{"name": "d", "mode": "dedicated", "workers": {"a": 2, "b": 1, "c": 1, "d": 1}}])
    per_model = summarize(simulate_variant(sc, sc.variants[0], build_workload(sc)))["per_model"]
    assert {k: m["gpus"]["decode"] for k, m in per_model.items()} == {"a": 2, "b": 1, "c": 1, "d": 1}


# --------------------------------------------------------------------------------------
# 3. Per-request memory of a variant does not grow with its decode GPUs
def _retained_bytes(workers: int) -> tuple[float, int]:
    sc = make_scenario(workload={"rate": 400, "duration_s": 15}, decode={"kv_policy": "paged"},
                       variants=[{"name": "s", "mode": "shared", "workers": workers}])
    stream = build_workload(sc)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        res = simulate_variant(sc, sc.variants[0], stream)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert res.records.finish_s.size == len(stream)
    return (after - before) / len(stream), len(stream)


@pytest.mark.slow
def test_paged_per_request_state_is_allocated_once_per_variant_not_per_decode_gpu() -> None:
    """The run-size estimate (workload.check_size) counts a variant's arrays per request, whatever its GPU
    count; per-worker copies of the paged state (48 B per request per GPU) broke it on large pools."""
    few, n = _retained_bytes(2)
    many, _ = _retained_bytes(16)
    assert n > 4000
    assert many - few < 16, f"{many - few:.0f} B more per request with 16 decode GPUs than with 2"


# --------------------------------------------------------------------------------------
# 4. Damaged run folders
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "default"
    assert main(["run", str(ROOT / "scenarios" / "default.yaml"), "--out", str(out),
                 "--set", "workload.duration_s=10", "--no-timeline"]) == 0
    return out


def _copy(run_dir: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("report")))


def _cut_columns(text: str) -> str:
    """The header lost a column (the rows did not): pandas would shift every value into the wrong column."""
    lines = text.splitlines(keepends=True)
    return lines[0].replace("mode,", "", 1) + "".join(lines[1:])


COMPARISON_DAMAGE = {
    "cut-mid-line": lambda t: t[: len(t) // 2],
    "cut-at-line": lambda t: "".join(t.splitlines(keepends=True)[:2]),  # a variant's row lost
    "header-only": lambda t: t.splitlines(keepends=True)[0],
    "empty": lambda t: "",
    "missing-column-in-header": _cut_columns,
    "missing-fields-in-a-row": lambda t: "".join(
        line if i != 2 else line.rsplit(",", 3)[0] + "\n" for i, line in enumerate(t.splitlines(keepends=True))),
    "no-required-columns": lambda t: "variant,mode\n" + "".join(
        ",".join(line.split(",")[:2]) + "\n" for line in t.splitlines()[1:]),
    "text-in-percent-column": lambda t: t.replace(",1,", ",100%,"),  # slo_attainment of the shared variants
}


@pytest.mark.parametrize("damage", list(COMPARISON_DAMAGE))
def test_damaged_comparison_table_is_an_input_error_naming_it(run_dir: Path, tmp_path: Path, damage: str,
                                                               capsys) -> None:
    run = _copy(run_dir, tmp_path / "run")
    comp = run / "comparison.csv"
    text = comp.read_text()
    damaged = COMPARISON_DAMAGE[damage](text)
    assert damaged != text
    comp.write_text(damaged)
    with pytest.raises(InputError, match="comparison.csv"):
        load_run(run)
    before = set(tmp_path.rglob("*"))
    assert main(["report", str(run), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "comparison.csv" in "".join(err.split()) and "Traceback" not in err
    assert set(tmp_path.rglob("*")) == before


SUMMARY_DAMAGE = {
    "cut-mid-file": lambda t: t[: len(t) // 2],
    "empty": lambda t: "",
    "a-list": lambda t: "[1, 2, 3]\n",
    "requests-not-an-object": lambda t: json.dumps({**json.loads(t), "requests": [1]}),
    "not-utf8": lambda t: "\udcff",
}


@pytest.mark.parametrize("damage", list(SUMMARY_DAMAGE))
def test_damaged_summary_is_an_input_error_naming_it(run_dir: Path, tmp_path: Path, damage: str, capsys) -> None:
    run = _copy(run_dir, tmp_path / "run")
    path = run / "sun" / "summary.json"
    path.write_bytes(SUMMARY_DAMAGE[damage](path.read_text()).encode("utf-8", "surrogateescape"))
    with pytest.raises(InputError, match=r"sun/summary\.json.*(damaged or truncated)"):
        load_run(run)
    assert main(["report", str(run), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in "".join(err.split()) and "Traceback" not in err


def test_damaged_scenario_yaml_is_an_input_error_naming_it(run_dir: Path, tmp_path: Path) -> None:
    run = _copy(run_dir, tmp_path / "run")
    (run / "scenario.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="scenario.yaml"):
        load_run(run)


def test_intact_run_folder_still_reports(run_dir: Path, tmp_path: Path) -> None:
    report = write_report(_copy(run_dir, tmp_path / "run"), tmp_path / "out")
    text = report.read_text()
    table = [line for line in text.splitlines() if line.startswith("| sun |")]
    assert table and "100%" not in table[0] and "| 100 |" in table[0]  # SLO attainment shown as a percentage
    attainment = pd.read_csv(run_dir / "comparison.csv")["slo_attainment"]  # a fraction; 1 everywhere reads as int
    assert pd.api.types.is_numeric_dtype(attainment) and attainment.between(0, 1).all()


def test_a_20_million_request_run_is_refused_before_allocating(tmp_path, capsys):
    """20M requests of one variant need ~17 GB at the measured ~800 B per request and variant: refused, not OOM."""
    from .conftest import ROOT

    argv = ["run", str(ROOT / "scenarios" / "default.yaml"), "--out", str(tmp_path / "o"), "--variant", "sun",
            "--set", "workload.rate=20000", "--set", "workload.duration_s=1000"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "GiB" in err and "Traceback" not in err and not (tmp_path / "o").exists()
