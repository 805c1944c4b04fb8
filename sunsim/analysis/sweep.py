"""Sweeps: a base scenario x a grid of parameter values x seeds, in parallel, resumable.

Each grid point runs all (or the chosen) variants of its scenario and yields one row per
variant. Points run in local worker processes by default, or as Ray tasks on a Ray cluster.
Finished points are kept as small part files next to the output table, so an interrupted
sweep resumes where it stopped; the table itself is written only when every point has run.
A part is keyed by a hash of its point's fully resolved scenario, so a changed base scenario or
override recomputes the point instead of reusing a stale result. Worker processes die with the
sweep, even when it is killed outright.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from sunsim.analysis.executors import probe_address
from sunsim.analysis.options import EXECUTORS, TABLE_SUFFIXES
from sunsim.analysis.sweep_points import _local, _ray
from sunsim.analysis.sweep_spec import Point, Sweep, SweepSpec, expand_points, load_sweep
from sunsim.errors import InputError
from sunsim.output import Output, check_file_target, claim_outputs, mark, record_file, write_json, write_table

__all__ = ["EXECUTORS", "TABLE_SUFFIXES", "Point", "Sweep", "SweepSpec", "check_sweep_output", "expand_points",
           "load_sweep", "parts_dir", "probe_address", "run_sweep"]


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def check_sweep_output(out: Path, inputs: Iterable[tuple[Path, str]] = ()) -> Path:
    """Refuse, before any point runs, a table path that is not ``.csv``/``.parquet``, that is an input, or
    that is a file (or has a parts folder) ``sunsim sweep`` did not write: the project's one output rule."""
    out = check_file_target(Path(out), "--out", TABLE_SUFFIXES)
    claim_outputs("sweep", [Output(out, "--out", "file"), Output(parts_dir(out), "--out (finished points)")],
                  inputs)
    return out


def run_sweep(sweep: Sweep, out: Path, executor: str = "local", workers: int | None = None,
              address: str | None = None,
              progress: Callable[[int, int, Point, list[dict]], None] | None = None) -> pd.DataFrame:
    """Run every point not already finished, then write the whole table to ``out``."""
    if executor not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"--workers must be a positive integer, got {workers!r}")
    if executor == "ray" and address:
        probe_address(address)
    if executor == "local" and address:
        raise InputError("--address names a Ray cluster; it needs --executor ray")
    out = check_sweep_output(out, sweep.inputs())
    parts = parts_dir(out)
    fresh = not parts.exists()
    try:
        parts.mkdir(parents=True, exist_ok=True)
        mark(parts, {"command": "sweep", "sweep": sweep.spec.name})
    except OSError as exc:
        raise InputError(f"--out: cannot write next to {str(out)!r} ({exc.strerror})") from None
    try:
        return _run_parts(sweep, out, parts, executor, workers, address, progress)
    except BaseException:
        if fresh and not any(f.suffix == ".json" and not f.name.startswith(".") for f in parts.iterdir()):
            shutil.rmtree(parts, ignore_errors=True)  # nothing finished: leave nothing behind
        raise


def _run_parts(sweep: Sweep, out: Path, parts: Path, executor: str, workers: int | None, address: str | None,
               progress: Callable[[int, int, Point, list[dict]], None] | None) -> pd.DataFrame:
    """Run the points not kept in ``parts``, keeping each as it finishes; then the whole table."""
    keys = {p.index: sweep.point_key(p) for p in sweep.points}
    done: dict[str, list[dict]] = {}
    for f in parts.glob("*.json"):
        if f.name.startswith("."):
            continue  # the marker
        try:
            rows = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # unreadable: run that point again
        if isinstance(rows, list) and rows and all(isinstance(r, dict) and r.get("status") == "ok" for r in rows):
            done[f.stem] = rows
    todo = [p for p in sweep.points if keys[p.index] not in done]
    total, finished = len(sweep.points), len(sweep.points) - len(todo)
    if progress:
        progress(finished, total, None, [])  # type: ignore[arg-type]
    stream = _ray(sweep, todo, address) if executor == "ray" else _local(sweep, todo, workers or os.cpu_count() or 1)
    for point, rows in stream:
        write_json(parts / f"{keys[point.index]}.json", rows, indent=None)
        done[keys[point.index]] = rows
        finished += 1
        if progress:
            progress(finished, total, point, rows)
    # Point numbers follow this sweep file, also for points resumed from parts.
    table = pd.DataFrame([{**r, "point": p.index} for p in sweep.points for r in done[keys[p.index]]])
    table.insert(0, "sweep", sweep.spec.name)
    write_table(table, out, float_format="%.6g")
    record_file(out, "sweep")
    shutil.rmtree(parts, ignore_errors=True)
    return table
