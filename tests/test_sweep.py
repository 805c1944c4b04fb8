"""Sweeps: a grid of 40+ points, progress, resume after an interrupt (only of the same scenarios),
Ray gives the same table, workers never outlive the sweep."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sunsim.analysis.sweep import load_sweep, parts_dir, run_sweep
from sunsim.cli import main

from .conftest import ROOT

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


@pytest.mark.slow
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
    kept = len([f for f in parts_dir(out).glob("*.json") if not f.name.startswith(".")])
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


@pytest.mark.slow
def test_ray_gives_the_same_table(tmp_path):
    pytest.importorskip("ray")
    path = _files(tmp_path)
    local = run_sweep(load_sweep(path), tmp_path / "local.csv", workers=2)
    ray_table = run_sweep(load_sweep(path), tmp_path / "ray.csv", executor="ray")
    pd.testing.assert_frame_equal(local.drop(columns=VOLATILE), ray_table.drop(columns=VOLATILE))


# --------------------------------------------------------------------------------------
# Resume keys on the resolved scenario; workers die with the sweep.
def _interrupted(tmp_path, path, overrides=(), after=3):
    out = tmp_path / "table.csv"

    def stop(done, total, point, rows):
        if point is not None and done >= after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_sweep(path, overrides), out, workers=1, progress=stop)
    return out


def _resume(path, out, overrides=()):
    ran = []
    table = run_sweep(load_sweep(path, overrides), out, workers=1,
                      progress=lambda d, t, p, r: ran.append(p) if p is not None else None)
    return table, ran


SMALL_GRID = {"workload.rate": [20, 40]}


def test_resume_reuses_points_of_the_same_scenario(tmp_path):
    path = _files(tmp_path, grid=SMALL_GRID, seeds=[1, 2])
    out = _interrupted(tmp_path, path)
    table, ran = _resume(path, out)
    assert len(ran) == 1 and len(table) == 8


def test_resume_recomputes_when_an_override_changes(tmp_path):
    path = _files(tmp_path, grid=SMALL_GRID, seeds=[1, 2])
    out = _interrupted(tmp_path, path)
    table, ran = _resume(path, out, ["workload.duration_s=4"])  # half the requests of every point
    assert len(ran) == 4  # nothing stale reused
    fresh = run_sweep(load_sweep(path, ["workload.duration_s=4"]), tmp_path / "fresh.csv", workers=1)
    pd.testing.assert_frame_equal(table.drop(columns=VOLATILE), fresh.drop(columns=VOLATILE))


def test_resume_recomputes_when_the_base_scenario_changes(tmp_path):
    path = _files(tmp_path, grid=SMALL_GRID, seeds=[1, 2])
    out = _interrupted(tmp_path, path)
    changed = {**SCENARIO, "prefill": {"workers": 3}}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(changed))
    table, ran = _resume(path, out)
    assert len(ran) == 4
    assert (table["prefill_gpus"] == 3 * 4).all()  # 3 prefill workers for each of the 4 models, not 2


def _children(pid: int) -> list[int]:
    kids = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat_file.parent.name))
    return kids


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # a zombie has exited (it waits for its reaper)


def _start_long_sweep(tmp_path) -> tuple[subprocess.Popen, list[int]]:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SCENARIO, "workload": {**SCENARIO["workload"],
                                                                                "duration_s": 20, "rate": 40}}))
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"name": "long", "scenario": "s.yaml", "seeds": list(range(1000))}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sunsim", "sweep", str(path), "--workers", "2",
                             "--out", str(tmp_path / "long.csv")], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):  # until both workers run (polling, not a time threshold)
        kids = _children(proc.pid)
        if len(kids) >= 2 and len(list((tmp_path / "long.csv.parts").glob("[!.]*.json"))) >= 1:
            return proc, kids
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"sweep did not start its workers: {proc.stderr.read().decode()}")


def _wait_gone(pids: list[int], tries: int = 100) -> list[int]:
    for _ in range(tries):
        alive = [p for p in pids if not _gone(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


def test_sigkill_of_a_sweep_takes_its_workers_with_it(tmp_path):
    proc, kids = _start_long_sweep(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        assert _wait_gone(kids) == []
    finally:
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_of_a_sweep_stops_workers_and_keeps_finished_points(tmp_path):
    proc, kids = _start_long_sweep(tmp_path)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 143
        assert _wait_gone(kids) == []
    finally:
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "terminated" in err
    assert list((tmp_path / "long.csv.parts").glob("[!.]*.json"))  # finished points kept for a resume
    assert not (tmp_path / "long.csv").exists()
