"""Sweeps: a grid of 40+ points, progress, resume after an interrupt, Ray gives the same table."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from sunsim.cli import main
from sunsim.sweep import load_sweep, parts_dir, run_sweep

SCENARIO = {
    "name": "small",
    "seed": 0,
    "model": {"preset": "llama-3.1-8b", "tasks": 4},
    "prefill": {"workers": 2},
    "workload": {"duration_s": 8, "rate": 30, "popularity": {"kind": "zipf", "s": 1.0},
                 "prompt_tokens": {"kind": "lognormal", "mean": 512, "sigma": 0.5, "max": 4096},
                 "output_tokens": {"kind": "lognormal", "mean": 64, "sigma": 0.5, "max": 512}},
    "variants": [{"name": "dedicated", "mode": "dedicated", "workers": 1},
                 {"name": "sun", "mode": "shared", "workers": 4}],
}
GRID = {"workload.popularity.s": [0.0, 0.5, 1.0, 1.5, 2.0], "workload.rate": [20, 40, 60, 80]}
VOLATILE = ["point_wall_s", "sim_wall_s", "sim_requests_per_wall_s"]


def _files(tmp_path, grid=None, seeds=(1, 2), extra=None):
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(SCENARIO))
    sweep = {"name": "grid", "scenario": "small.yaml", "grid": GRID if grid is None else grid,
             "seeds": list(seeds), **(extra or {})}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_local_sweep_resumes_after_interrupt(tmp_path):
    path = _files(tmp_path)
    sweep = load_sweep(path)
    assert len(sweep.points) == 40
    out = tmp_path / "table.csv"
    seen = []

    def interrupt_after_12(done, total, point, rows):
        seen.append(done)
        if done >= 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, workers=2, progress=interrupt_after_12)
    assert not out.exists()  # no partial table presented as complete
    kept = len(list(parts_dir(out).glob("*.json")))
    assert kept >= 12

    ran = []
    table = run_sweep(load_sweep(path), out, workers=2,
                      progress=lambda d, t, p, r: ran.append(p) if p is not None else None)
    assert len(ran) == 40 - kept  # finished points were skipped
    assert out.exists() and not parts_dir(out).exists()
    assert len(table) == 80 and (table["status"] == "ok").all()
    assert set(table["workload.rate"]) == {20, 40, 60, 80}
    # Same table as an uninterrupted sweep.
    fresh = run_sweep(load_sweep(path), tmp_path / "fresh.csv", workers=1)
    pd.testing.assert_frame_equal(table.drop(columns=VOLATILE), fresh.drop(columns=VOLATILE))


def test_failing_point_is_recorded_and_the_rest_go_on(tmp_path, capsys):
    # A prompt that cannot fit in KV memory at one grid value only (every point is a valid scenario).
    path = _files(tmp_path, grid={"workload.prompt_tokens.max": [900000],
                                  "workload.prompt_tokens.mean": [512, 800000],
                                  "workload.output_tokens.mean": [32, 64]}, seeds=[1])
    out = tmp_path / "t.csv"
    code = main(["sweep", str(path), "--out", str(out), "--workers", "1"])
    assert code == 3
    table = pd.read_csv(out)
    assert set(table["status"]) == {"ok", "error"}
    assert table.loc[table["status"] == "error", "error"].str.contains("KV tokens").all()
    assert (table["status"] == "ok").sum() == 2 * 2  # two good points, two variants each


@pytest.mark.parametrize("grid,needle", [
    ({"workload.rat": [1, 2]}, "workload.rat"),
    ({"workload.rate": []}, "grid.workload.rate"),
    ({}, "grid is empty"),
])
def test_bad_sweep_input(tmp_path, capsys, grid, needle):
    path = _files(tmp_path, grid=grid, seeds=[1])
    out = tmp_path / "t.csv"
    assert main(["sweep", str(path), "--out", str(out)]) != 0
    assert needle in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def test_ray_gives_the_same_table(tmp_path):
    pytest.importorskip("ray")
    path = _files(tmp_path)
    local = run_sweep(load_sweep(path), tmp_path / "local.csv", workers=2)
    ray_table = run_sweep(load_sweep(path), tmp_path / "ray.csv", executor="ray")
    pd.testing.assert_frame_equal(local.drop(columns=VOLATILE), ray_table.drop(columns=VOLATILE))
