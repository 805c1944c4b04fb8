"""The one output rule, through every command: no output has the path of an input, of another output,
or of a file the tool did not write; outputs go only into new, empty or the command's own folders.

Each case is one a user hit: the command exits 2 before any work, names both paths, and every file
it did not write is left byte for byte as it was.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

import sunsim.analysis.runner
import sunsim.api
from sunsim import output
from sunsim.analysis.sweep import load_sweep
from sunsim.cli import main
from sunsim.output import LEDGER, MARKER

from .conftest import BASE, TRACE, merge

TINY = {"workload": {"duration_s": 2, "rate": 20}}


def _scenario(folder: Path, patch: dict | None = None, name: str = "s.yaml") -> Path:
    path = folder / name
    path.write_text("# my notes, which must survive\n" + yaml.safe_dump(merge(merge(BASE, TINY), patch or {})))
    return path


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if anything is simulated or planned: every refusal must come first."""
    def boom(*args, **kwargs):
        raise AssertionError("work started before the output checks")
    monkeypatch.setattr(sunsim.analysis.runner, "simulate_variant", boom)
    monkeypatch.setattr(sunsim.api, "plan_seeds", boom)  # what `sunsim plan` plans through


# Outputs never take an input's path -----------------------------------------------------------
def test_plan_out_dot_never_replaces_the_scenario(tmp_path, capsys, monkeypatch, no_work):
    path = _scenario(tmp_path, name="scenario.yaml")
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "scenario.yaml", "--out", "."]) == 2
    assert "--out" in _err(capsys)
    assert _snapshot(tmp_path) == before and path.read_text().startswith("# my notes")


def test_trace_out_never_replaces_the_scenario(tmp_path, capsys, no_work):
    path = _scenario(tmp_path)
    before = path.read_bytes()
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--trace-out", str(path)]) == 2
    err = _err(capsys)
    assert "--trace-out" in err and str(path) in err and "scenario" in err
    assert path.read_bytes() == before and not (tmp_path / "out").exists()


def test_trace_out_never_lands_inside_the_run_folder(tmp_path, capsys, no_work):
    out = tmp_path / "out"
    target = out / "sun" / "requests.csv"
    assert main(["run", str(_scenario(tmp_path)), "--out", str(out), "--trace-out", str(target)]) == 2
    err = _err(capsys)
    assert str(target) in err and str(out) in err
    assert not out.exists()


def test_run_out_never_holds_its_own_scenario(tmp_path, capsys, no_work):
    out = tmp_path / "out"
    out.mkdir()
    output.mark(out, {"command": "run"})
    path = _scenario(out)
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert "holds the scenario" in _err(capsys)


def test_sweep_table_never_replaces_its_input_trace(tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    trace.write_bytes(TRACE.read_bytes())
    _scenario(tmp_path, {"workload": {"duration_s": 2, "rate": 20,
                                      "arrivals": {"kind": "trace", "path": str(trace)}}})
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(yaml.safe_dump({"scenario": "s.yaml", "grid": {"workload.rate": [10, 20]}}))
    before = trace.read_bytes()
    assert main(["sweep", str(sweep), "--out", str(trace), "--workers", "1"]) == 2
    err = _err(capsys)
    assert str(trace) in err and "trace" in err
    assert trace.read_bytes() == before and not (tmp_path / "trace.csv.parts").exists()


def test_report_never_writes_over_its_source(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", str(_scenario(tmp_path)), "--out", str(run), "--no-timeline"]) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["report", str(run), "-o", str(run)]) == 2
    assert str(run) in _err(capsys)
    assert _snapshot(run) == before


# Outputs go only into new, empty or the command's own folders ----------------------------------
@pytest.mark.parametrize("command", ["run", "plan", "report", "experiments"])
def test_a_foreign_folder_is_refused_whole(tmp_path, capsys, no_work, command):
    user = tmp_path / "user"
    user.mkdir()
    for name in ("plan.csv", "report.md", "comparison.csv", "README.md"):
        (user / name).write_text(f"the user's {name}\n")
    before = _snapshot(user)
    src = _scenario(tmp_path)
    argv = {"run": ["run", str(src), "--out", str(user)],
            "plan": ["plan", str(src), "--out", str(user)],
            "report": ["report", str(tmp_path / "s.yaml"), "-o", str(user)],
            "experiments": ["experiments", "--quick", "--out", str(user)]}[command]
    assert main(argv) == 2
    err = _err(capsys)
    assert str(user) in err and MARKER in err
    assert _snapshot(user) == before


def test_etc_is_not_an_output_folder(tmp_path, capsys, no_work):
    assert main(["run", str(_scenario(tmp_path)), "--out", "/etc"]) == 2
    assert "/etc" in _err(capsys)


@pytest.mark.parametrize("command", ["plan", "report"])
def test_plan_and_report_never_write_into_a_run_folder(tmp_path, capsys, command):
    src = _scenario(tmp_path)
    run = tmp_path / "run"
    assert main(["run", str(src), "--out", str(run), "--no-timeline"]) == 0
    before = _snapshot(run)
    capsys.readouterr()
    other = tmp_path / "other"
    if command == "report":
        assert main(["run", str(src), "--out", str(other), "--no-timeline"]) == 0
    argv = ["plan", str(src), "--out", str(run)] if command == "plan" else ["report", str(other), "-o", str(run)]
    assert main(argv) == 2
    assert "sunsim run" in _err(capsys)
    assert _snapshot(run) == before


def test_a_trace_is_replaced_only_while_it_is_the_runs_own(tmp_path, capsys):
    src = _scenario(tmp_path)
    trace = tmp_path / "t.json"
    argv = ["run", str(src), "--out", str(tmp_path / "out"), "--no-timeline", "--trace-out", str(trace)]
    assert main(argv) == 0
    assert (tmp_path / LEDGER).is_file()
    assert main(argv) == 0  # its own trace: replaced
    trace.write_text("edited by hand")  # now the user's
    assert main(argv) == 2
    assert str(trace) in _err(capsys) and trace.read_text() == "edited by hand"
    foreign = tmp_path / "other.json"
    foreign.write_text("{}")
    assert main([*argv[:-1], str(foreign)]) == 2
    assert foreign.read_text() == "{}"


# Sweeps ------------------------------------------------------------------------------------------
def test_sweep_keys_hash_the_contents_of_input_files(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_bytes(TRACE.read_bytes())
    _scenario(tmp_path, {"workload": {"duration_s": 2, "rate": 20,
                                      "arrivals": {"kind": "trace", "path": "trace.csv"}}})
    sweep_file = tmp_path / "sw.yaml"
    sweep_file.write_text(yaml.safe_dump({"scenario": "s.yaml", "grid": {"workload.rate": [10]}}))
    before = load_sweep(sweep_file).point_key(load_sweep(sweep_file).points[0])
    lines = trace.read_text().splitlines()
    trace.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer, same path
    after = load_sweep(sweep_file).point_key(load_sweep(sweep_file).points[0])
    assert before != after


def test_address_without_ray_executor_is_refused(tmp_path, capsys):
    _scenario(tmp_path)
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(yaml.safe_dump({"scenario": "s.yaml", "grid": {"workload.rate": [10]}}))
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "t.csv"), "--address", "127.0.0.1:1"]) == 2
    assert "--executor ray" in _err(capsys)
    assert not (tmp_path / "t.csv.parts").exists()


# A full disk ---------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 192 KiB tmpfs: room for the command's checks, not for its results. Skipped where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot mount a tmpfs here")
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


@pytest.mark.parametrize("command", ["run", "plan", "sweep"])
def test_a_full_disk_exits_2_and_leaves_nothing_half_written(tmp_path, capsys, small_disk, command):
    src = _scenario(tmp_path, {"workload": {"duration_s": 20, "rate": 40}})
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(yaml.safe_dump({"scenario": "s.yaml", "grid": {"workload.rate": [40, 41]},
                                     "seeds": [1, 2, 3, 4]}))
    ballast = small_disk / "ballast"
    ballast.write_bytes(os.urandom(184 * 1024))  # leave 8 KiB free: less than any result needs
    argv = {"run": ["run", str(src), "--out", str(small_disk / "out")],
            "plan": ["plan", str(src), "--out", str(small_disk / "plan"), "--seeds", "1", "--no-goodput",
                     "--variant", "sun"],
            "sweep": ["sweep", str(sweep), "--out", str(small_disk / "t.csv"), "--workers", "1"]}[command]
    assert main(argv) == 2
    err = _err(capsys)
    assert "No space left on device" in err
    left = sorted(p.name for p in small_disk.rglob("*") if p != ballast)
    if command == "sweep":  # finished points are kept for a resume, complete ones only, never the table
        assert not (small_disk / "t.csv").exists()
        assert all(name.endswith(".json") or name == "t.csv.parts" for name in left)
    else:
        assert left == [] or left == [argv[3].rsplit("/", 1)[-1]] and not any(
            (small_disk / left[0]).iterdir()), left


@pytest.mark.parametrize("patch, field", [({"seeds": [True, 2]}, "seeds"), ({"mode": "plan", "attainment": True}, "attainment"),
                                          ({"mode": "plan", "max_gpus": 10**30}, "max_gpus"), ({"seeds": [-1]}, "seeds")])
def test_sweep_settings_are_checked(tmp_path, capsys, patch, field):
    _scenario(tmp_path)
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(yaml.safe_dump({"scenario": "s.yaml", "grid": {"workload.rate": [10]}, **patch}))
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "t.csv")]) == 2
    assert field in _err(capsys)


def test_workers_are_bounded(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(tmp_path / "sw.yaml"), "--workers", "100000"])
    assert exc.value.code == 2 and "--workers" in capsys.readouterr().err


def test_calibrate_never_replaces_files_in_a_foreign_folder(tmp_path, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "profile.json").write_text('{"mine": true}')
    (user / "timings.csv").write_text("my,timings\n")
    before = _snapshot(user)
    assert main(["calibrate", "--model", "tiny", "--out", str(user), "--device", "cpu"]) == 2
    err = _err(capsys)
    assert str(user) in err and MARKER in err
    assert _snapshot(user) == before
