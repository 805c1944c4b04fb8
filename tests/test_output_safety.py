"""Outputs are safe: nothing lost (atomic files, staged folders) and nothing escapes (no clobbering).

Every check goes through the CLI where it can: exit code 2, a message naming the field or path, no
traceback, no simulation started, and files the tool did not create left exactly as they were.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import sunsim.analysis.runner
from sunsim import output
from sunsim.cli import main
from sunsim.errors import InputError
from sunsim.output import MARKER

from .conftest import BASE, ROOT, merge

TINY = {"workload": {"duration_s": 2, "rate": 20}}


def _scenario(tmp_path: Path, patch: dict | None = None) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(merge(merge(BASE, TINY), patch or {})))
    return path


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


@pytest.fixture
def no_simulation(monkeypatch):
    """Fail the test if a variant is simulated (checks must come first)."""
    def boom(*args, **kwargs):
        raise AssertionError("simulated before the output checks")
    monkeypatch.setattr(sunsim.analysis.runner, "simulate_variant", boom)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. A run replaces only what it wrote itself ----------------------------------------------
def test_run_refuses_to_replace_a_folder_it_did_not_write(tmp_path, capsys, no_simulation):
    out = tmp_path / "work"
    mine = out / "dedicated"  # a user's folder that happens to share a variant's name
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    before = _snapshot(out)
    assert main(["run", str(_scenario(tmp_path)), "--out", str(out)]) == 2
    err = _err(capsys)
    assert str(out) in err and MARKER in err  # a folder sunsim did not create is refused whole
    assert _snapshot(out) == before
    output.mark(out, {"command": "run"})  # even inside a run's own folder, a user's folder stays
    before = _snapshot(out)
    assert main(["run", str(_scenario(tmp_path)), "--out", str(out)]) == 2
    err = _err(capsys)
    assert str(mine) in err and MARKER in err
    assert _snapshot(out) == before
    assert not list(out.glob(".staging-*"))


def test_run_refuses_to_replace_top_level_files_it_did_not_write(tmp_path, capsys, no_simulation):
    out = tmp_path / "here"
    out.mkdir()
    (out / "comparison.csv").write_text("someone else's table\n")
    assert main(["run", str(_scenario(tmp_path)), "--out", str(out)]) == 2
    assert str(out) in _err(capsys)
    assert (out / "comparison.csv").read_text() == "someone else's table\n"


def test_run_replaces_its_own_results_and_leaves_the_rest(tmp_path, capsys):
    out = tmp_path / "here"
    out.mkdir()  # an empty folder is taken, and marked
    path = _scenario(tmp_path)
    assert main(["run", str(path), "--out", str(out), "--no-timeline"]) == 0
    (out / "notes.txt").write_text("keep me")
    for v in ("dedicated", "sun"):
        assert (out / v / MARKER).is_file() and (out / v / "requests.csv").is_file()
    (out / "sun" / "stale.txt").write_text("from the first run")
    assert main(["run", str(path), "--out", str(out), "--no-timeline"]) == 0  # a rerun replaces its own folders
    assert not (out / "sun" / "stale.txt").exists()
    assert (out / "notes.txt").read_text() == "keep me"
    assert not list(out.glob(".staging-*"))
    mode = stat.S_IMODE((out / "comparison.csv").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# 2. Names that become path parts ----------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "comparison.csv"])
def test_variant_names_cannot_leave_or_clobber_the_output_folder(tmp_path, capsys, no_simulation, name):
    path = _scenario(tmp_path, {"variants": [{"name": name, "mode": "shared", "workers": 4}]})
    out = tmp_path / "deep" / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = _err(capsys)
    assert "name" in err and repr(name) in err
    assert not (tmp_path / "deep" / "escape").exists() and not out.exists()


def test_output_paths_check_names_again():
    with pytest.raises(InputError, match="variants.name"):
        sunsim.analysis.runner.check_run_output(Path("x"), ["../up"])


def test_sweep_name_must_be_safe(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(merge(BASE, TINY)))
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(yaml.safe_dump({"name": "../../etc/x", "scenario": "s.yaml", "grid": {"workload.rate": [10]}}))
    assert main(["sweep", str(sweep), "--workers", "1"]) == 2
    err = _err(capsys)
    assert "name" in err and "../../etc/x" in err


# 3. Output targets checked up front -----------------------------------------------------------
def test_trace_out_refuses_a_device(tmp_path, capsys, no_simulation):
    out = tmp_path / "out"
    assert main(["run", str(_scenario(tmp_path)), "--out", str(out), "--trace-out", os.devnull]) == 2
    err = _err(capsys)
    assert "--trace-out" in err and os.devnull in err and "special file" in err
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_trace_out_refuses_folders_and_links(tmp_path, capsys, no_simulation, kind):
    target = tmp_path / "t.json"
    if kind == "folder":
        target.mkdir()
    else:
        (tmp_path / "real.json").write_text("{}")
        target.symlink_to(tmp_path / "real.json")
    assert main(["run", str(_scenario(tmp_path)), "--out", str(tmp_path / "o"), "--trace-out", str(target)]) == 2
    assert kind in _err(capsys)
    assert kind == "folder" or (tmp_path / "real.json").read_text() == "{}"


def test_out_under_a_file_fails_before_simulating(tmp_path, capsys, no_simulation):
    (tmp_path / "file").write_text("x")
    assert main(["run", str(_scenario(tmp_path)), "--out", str(tmp_path / "file" / "out")]) == 2
    err = _err(capsys)
    assert "--out" in err and "not a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_trace_folder_fails_before_simulating(tmp_path, capsys, no_simulation):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = main(["run", str(_scenario(tmp_path)), "--out", str(tmp_path / "o"),
                 "--trace-out", str(locked / "t.json")])
    assert code == 2 and "permission denied" in _err(capsys)


# 4. Interrupted writes leave nothing behind ----------------------------------------------------
def test_sigterm_mid_write_leaves_no_staging_and_no_partial_results(tmp_path, capsys, monkeypatch):
    real = output.write_table
    calls = []

    def write_then_sigterm(df, path, **kw):
        calls.append(path)
        real(df, path, **kw)
        if len(calls) == 2:
            os.kill(os.getpid(), __import__("signal").SIGTERM)  # arrives while the run is being written

    monkeypatch.setattr(sunsim.analysis.runner, "write_table", write_then_sigterm)
    out = tmp_path / "out"
    assert main(["run", str(_scenario(tmp_path)), "--out", str(out), "--no-timeline"]) == 143
    assert len(calls) == 2
    assert sorted(p.name for p in out.iterdir()) == []  # nothing published, no hidden staging folder left


def test_stale_staging_folders_are_removed(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(_scenario(tmp_path)), "--out", str(out), "--no-timeline"]) == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = out / f".staging-{dead.stdout.strip()}-abc"  # its process is gone
    (stale / "sun").mkdir(parents=True)
    (stale / output.STAGING_MARKER).write_text(f'{{"pid": {dead.stdout.strip()}, "started": 1}}')
    notes = out / ".staging-999999-notes"  # a user's folder named like one, but without the marker
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    live = out / f".staging-{os.getppid()}-live"  # a live process that started before it
    live.mkdir()
    (live / output.STAGING_MARKER).write_text(
        f'{{"pid": {os.getppid()}, "started": {output.process_start(os.getppid())}}}')
    assert main(["run", str(_scenario(tmp_path)), "--out", str(out), "--no-timeline"]) == 0
    assert not stale.exists()
    assert live.exists() and (notes / "todo.txt").read_text() == "mine"


# 7. The one atomic writer -------------------------------------------------------------------
def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        output.write_atomic(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_calibration_uses_the_sunsim_writer():
    assert not (ROOT / "calibration" / "atomic.py").exists()
    from calibration import raw

    assert raw.write_text_atomic is output.write_text


# 8. One input-error type: bad input exits 2, a bug keeps its traceback ---------------------------
@pytest.mark.parametrize("argv,needle", [
    (["cost", "--profile", "analytic-h100", "--model", "gpt-9", "--phase", "decode"], "model.preset"),
    (["cost", "--profile", "analytic-tpu", "--model", "tiny", "--phase", "decode"], "hardware.gpu"),
    (["cost", "--profile", "analytic-a100", "--model", "tiny", "--phase", "decode", "--dtype", "fp8"], "fp8"),
    (["report", "no/such/folder"], "no/such/folder"),
])
def test_bad_input_exits_2_with_a_message(capsys, argv, needle):
    assert main(argv) == 2
    assert needle in _err(capsys)


def test_a_programming_error_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("a bug, not a bad input")

    monkeypatch.setattr(sunsim.analysis.runner, "build_workload", bug)
    with pytest.raises(ValueError, match="a bug"):
        main(["run", str(_scenario(tmp_path)), "--out", str(tmp_path / "o")])


def test_project_errors_share_one_type():
    from calibration.errors import CalibrationError
    from sunsim.costs.model import ProfileError
    from sunsim.scenario import ScenarioError

    assert all(issubclass(e, InputError) for e in (ScenarioError, ProfileError, CalibrationError))


def test_cli_modules_take_consoles_from_one_place():
    modules = sorted((ROOT / "sunsim").rglob("*.py"))
    assert len(modules) > 20
    for path in modules:
        if path.name != "console.py":
            assert "Console(" not in path.read_text(), path


# 6. Local sweep flags and Ray address ------------------------------------------------------------
def _sweep(tmp_path: Path, seeds=(1,), grid=None) -> Path:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(merge(BASE, TINY)))
    path = tmp_path / "sw.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "scenario": "s.yaml", "seeds": list(seeds),
                                    "grid": grid if grid is not None else {"workload.rate": [10, 20]}}))
    return path


@pytest.mark.parametrize("workers", ["0", "-3", "two"])
def test_sweep_workers_must_be_positive(tmp_path, capsys, workers):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(_sweep(tmp_path)), "--workers", workers])
    assert exc.value.code == 2 and "--workers" in capsys.readouterr().err


def test_sweep_out_extension_is_checked(tmp_path, capsys):
    out = tmp_path / "table.xlsx"
    assert main(["sweep", str(_sweep(tmp_path)), "--out", str(out), "--workers", "1"]) == 2
    err = _err(capsys)
    assert "--out" in err and ".csv" in err and ".parquet" in err
    assert not out.exists() and not (tmp_path / "table.xlsx.parts").exists()


def test_sweep_refuses_a_parts_folder_it_did_not_create(tmp_path, capsys):
    out = tmp_path / "t.csv"
    parts = tmp_path / "t.csv.parts"
    parts.mkdir()
    (parts / "mine.json").write_text("[]")
    assert main(["sweep", str(_sweep(tmp_path)), "--out", str(out), "--workers", "1"]) == 2
    assert str(parts) in _err(capsys)
    assert (parts / "mine.json").read_text() == "[]"


def test_unreachable_ray_address_fails_fast_naming_it(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    assert main(["sweep", str(_sweep(tmp_path)), "--executor", "ray", "--address", address,
                 "--out", str(tmp_path / "t.csv")]) == 2
    assert address in _err(capsys)
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("argv", [["experiments", "--quick", "--out", "{f}"], ["report", "{d}", "-o", "{f}/r"]])
def test_other_commands_check_their_output_folder_first(tmp_path, capsys, argv):
    (tmp_path / "file").write_text("x")
    argv = [a.format(f=tmp_path / "file", d=tmp_path) for a in argv]
    assert main(argv) == 2
    err = _err(capsys)
    assert "--out" in err and str(tmp_path / "file") in err
    assert (tmp_path / "file").read_text() == "x"


def test_plan_refuses_a_target_that_is_not_a_file_before_planning(tmp_path, capsys, monkeypatch):
    import sunsim.api

    monkeypatch.setattr(sunsim.api, "plan_seeds", lambda *a, **k: (_ for _ in ()).throw(AssertionError("planned")))
    out = tmp_path / "p"
    (out / "plan.csv").mkdir(parents=True)
    assert main(["plan", str(_scenario(tmp_path)), "--out", str(out)]) == 2
    err = _err(capsys)
    assert str(out) in err and "folder" in err
    output.mark(out, {"command": "plan"})
    assert main(["plan", str(_scenario(tmp_path)), "--out", str(out)]) == 2
    err = _err(capsys)
    assert "plan.csv" in err and "not a regular file" in err


def test_report_never_replaces_a_figures_folder_it_did_not_write(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", str(_scenario(tmp_path)), "--out", str(run)]) == 0
    out = tmp_path / "mine"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "plot.py").write_text("a user's own figures")
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["report", str(run), "-o", str(out)]) == 2
    err = _err(capsys)
    assert str(out) in err and MARKER in err
    assert _snapshot(out) == before  # nothing replaced, nothing added
    # A report folder it wrote itself is replaced on the next report, and stays readable.
    fresh = tmp_path / "report"
    assert main(["report", str(run), "-o", str(fresh)]) == 0
    assert (fresh / "figures" / MARKER).is_file() and (fresh / "report.md").is_file()
    assert main(["report", str(run), "-o", str(fresh)]) == 0
    assert not [p for p in fresh.iterdir() if p.name.startswith(".staging")]
