"""The Python API (``sunsim.run`` / ``plan`` / ``sweep``): the tables the CLI writes, as DataFrames; the example
script runs; bad input is an InputError naming the field; ``run.write`` keeps the output rule."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sunsim
from sunsim.analysis.metrics import REQUEST_COLUMNS
from sunsim.api import override_texts, resolve_scenario

from .conftest import BASE, ROOT, make_scenario, merge

DEFAULT = ROOT / "scenarios" / "default.yaml"
EXAMPLE = ROOT / "examples" / "python_api.py"
SHORT_S = 5  # simulated seconds: enough requests per variant, a second or two of wall time


@pytest.fixture(scope="module")
def run() -> sunsim.Run:
    return sunsim.run(DEFAULT, overrides={"workload.duration_s": SHORT_S})


def test_the_example_runs_and_prints_the_comparison(run: sunsim.Run) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(SHORT_S)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT / "tests")  # any folder: the example finds its scenario
    assert proc.returncode == 0, proc.stderr[-2000:]
    header = proc.stdout.splitlines()[0].split()
    assert header == ["variant", *run.variants]  # the comparison, one column per variant
    found = re.search(r"^sun: (\d+) requests", proc.stdout, re.M)
    assert found and int(found.group(1)) == len(run["sun"].requests)  # same seed, same requests


def test_requests_are_one_row_per_finished_request(run: sunsim.Run) -> None:
    sun = run["sun"]
    assert isinstance(sun.requests, pd.DataFrame)
    counts = sun.summary["requests"]
    assert counts["unfinished"] == 0 and counts["finished"] > 100
    assert len(sun.requests) == counts["finished"] == sun.requests["finish_s"].notna().sum()
    assert list(sun.requests.columns) == list(REQUEST_COLUMNS)
    assert sun.requests["request_id"].is_unique
    # each variant serves the same request stream
    assert all(len(v.requests) == len(sun.requests) for v in run)


def test_comparison_is_one_row_per_variant(run: sunsim.Run) -> None:
    names = [v.name for v in run.scenario.variants]
    assert run.variants == names and len(run) == len(names)
    assert isinstance(run.comparison, pd.DataFrame)
    assert list(run.comparison["variant"]) == names
    sun = run.comparison.set_index("variant").loc["sun"]
    assert sun["slo_attainment"] == pytest.approx(run["sun"].summary["slo"]["attainment"])


def test_an_unknown_variant_is_a_key_error_naming_the_variants(run: sunsim.Run) -> None:
    with pytest.raises(KeyError) as exc:
        run["nope"]
    assert "nope" in str(exc.value) and all(name in str(exc.value) for name in run.variants)
    assert "sun" in run and "nope" not in run


def test_write_writes_what_sunsim_run_writes(run: sunsim.Run, tmp_path: Path) -> None:
    from sunsim.cli import main

    assert main(["run", str(DEFAULT), "--set", f"workload.duration_s={SHORT_S}", "--out", str(tmp_path / "cli")]) == 0
    written = run.write(tmp_path / "api")
    assert {p.name for p in written} == {"comparison.csv", "scenario.yaml", *run.variants}

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    assert files(tmp_path / "api") == files(tmp_path / "cli")
    for name in run.variants:
        assert (tmp_path / "api" / name / "requests.csv").read_bytes() == \
               (tmp_path / "cli" / name / "requests.csv").read_bytes()
    run.write(tmp_path / "api")  # a folder sunsim run wrote is replaced, as on the command line


def test_write_keeps_the_output_rule(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"workload": {"duration_s": 2}})))
    small = sunsim.run(path)
    with pytest.raises(sunsim.InputError, match="input"):
        small.write(tmp_path)  # the folder holding the scenario
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(sunsim.InputError):
        small.write(tmp_path / "mine")  # a folder of someone's files
    with pytest.raises(sunsim.InputError, match="format"):
        small.write(tmp_path / "out", format="xlsx")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and not (tmp_path / "out").exists()


def test_overrides_are_read_back_as_the_values_given() -> None:
    texts = override_texts({"workload.rate": 30, "name": "10", "workload.arrivals": {"kind": "gamma", "cv": 2},
                            "slo.tpot_s": 0.025, "variants.sun.workers": 6, "model.tasks": ["a", "b"]})
    assert texts == ["workload.rate=30", "name='10'", "workload.arrivals={kind: gamma, cv: 2}", "slo.tpot_s=0.025",
                     "variants.sun.workers=6", "model.tasks=[a, b]"]
    assert override_texts(["workload.rate=30"]) == ["workload.rate=30"]  # --set texts pass as they are
    sc, source = resolve_scenario(make_scenario(), {"workload.rate": 12, "variants.sun.workers": 2})
    assert source is None and sc.workload.rate == 12 and sc.variants[1].workers == 2


@pytest.mark.parametrize(("overrides", "field"), [
    ({"workload.duration_s": "soon"}, "workload.duration_s"),
    ({"workload.nope": 1}, "workload.nope"),
    ({"workload.rate=3": 1}, "workload.rate=3"),
    ({3: 1}, "overrides"),
    ("workload.rate=3", "overrides"),
    ({"workload.rate": object()}, "workload.rate"),
])
def test_bad_overrides_are_input_errors_naming_the_field(overrides, field: str) -> None:
    with pytest.raises(sunsim.InputError, match=re.escape(field)):
        sunsim.run(DEFAULT, overrides=overrides)


def test_a_bad_scenario_argument_is_an_input_error() -> None:
    with pytest.raises(sunsim.InputError, match="scenario"):
        sunsim.run(42)  # type: ignore[arg-type]
    with pytest.raises(sunsim.ScenarioError, match="no-such.yaml"):
        sunsim.run(ROOT / "no-such.yaml")


def test_plan_returns_its_tables_as_dataframes() -> None:
    notes: list[str] = []
    planned = sunsim.plan(make_scenario(workload={"duration_s": 5}), seeds=1, goodput=False, on_warning=notes.append)
    assert isinstance(planned.summary, pd.DataFrame) and isinstance(planned.probes, pd.DataFrame)
    assert list(planned.summary["variant"]) == ["dedicated", "sun"]
    assert len(planned.probes) >= 2 and planned.probes["meets_slo"].any()
    assert (planned.summary["min_decode_gpus"] >= 1).all()
    assert notes == planned.warnings and "fewer than" in notes[0]  # 5 s is a short run for a plan
    with pytest.raises(sunsim.InputError, match="attainment"):
        sunsim.plan(make_scenario(), attainment=1.5)


def test_sweep_returns_its_table_and_leaves_no_files(tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(merge(BASE, {"workload": {"duration_s": 3}})))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "scenario": "small.yaml", "grid": {"workload.rate": [20, 30]},
                                    "seeds": [1]}))
    table = sunsim.sweep(path, overrides={"workload.popularity.s": 0.5}, workers=1)
    assert isinstance(table, pd.DataFrame) and len(table) == 2 * 2  # points x variants
    assert (table["status"] == "ok").all() and set(table["workload.rate"]) == {20, 30}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.yaml", "sweep.yaml"]
    with pytest.raises(sunsim.ScenarioError, match="workload.nope"):
        sunsim.sweep(path, overrides={"workload.nope": 1}, workers=1)
    with pytest.raises(sunsim.InputError, match="workers"):
        sunsim.sweep(path, workers="2")  # type: ignore[arg-type]
