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

import ctypes
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator

from sunsim.analysis.metrics import comparison_row
from sunsim.analysis.planning import MAX_GPUS_LIMIT
from sunsim.analysis.runner import run_scenario
from sunsim.errors import InputError
from sunsim.names import check_name
from sunsim.output import Output, check_file_target, claim_outputs, mark, record_file, write_json, write_table
from sunsim.scenario.inputs import file_digest, input_files, scenario_inputs
from sunsim.scenario.schema import (
    Scenario,
    ScenarioError,
    apply_override,
    parse_override,
    read_yaml_mapping,
    scenario_from_dict,
)

EXECUTORS = ("local", "ray")
#: Table formats a sweep can write, by extension.
TABLE_SUFFIXES = (".csv", ".parquet")
#: Seconds to wait for a TCP connection to a Ray cluster before giving up.
RAY_PROBE_TIMEOUT_S = 3.0


class SweepSpec(BaseModel):
    """The sweep file: which scenario, which parameters over which values, which seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "sweep"
    scenario: str
    #: Parameter path -> values; the grid is their Cartesian product.
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    #: Overrides applied to every point (parameter path -> value).
    set: dict[str, Any] = Field(default_factory=dict)
    #: Seeds 0..2^63-1, whole numbers (``true`` is not a seed), at most 10,000 of them.
    seeds: list[StrictInt] = Field(default_factory=lambda: [0], min_length=1, max_length=10_000)
    variants: list[str] | None = None
    #: ``run``: simulate each point; ``plan``: find each point's fewest GPUs and goodput.
    mode: Literal["run", "plan"] = "run"
    #: For ``plan``: SLO attainment target (default: the scenario's), GPU cap, goodput search.
    attainment: StrictFloat | StrictInt | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_gpus: StrictInt = Field(256, ge=1, le=MAX_GPUS_LIMIT)
    goodput: bool = True

    @field_validator("seeds")
    @classmethod
    def _seed_range(cls, v: list[int]) -> list[int]:
        for seed in v:
            if not 0 <= seed < 2**63:
                raise ValueError(f"seeds: {seed} is outside 0..2^63-1")
        return v

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_name(v, "name")  # becomes the default table's file name

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"grid.{key} has no values")
        return v


@dataclass(frozen=True)
class Point:
    index: int
    params: dict[str, Any]
    seed: int


@dataclass
class Sweep:
    spec: SweepSpec
    base: dict  # the base scenario as read from YAML
    base_dir: Path
    points: list[Point] = field(default_factory=list)
    path: Path = Path("sweep.yaml")  # the sweep file
    base_file: str = "scenario.yaml"  # the base scenario's file name, in base_dir

    @property
    def base_path(self) -> Path:
        return self.base_dir / self.base_file

    def inputs(self) -> list[tuple[Path, str]]:
        """The sweep file, its base scenario and every file any point's scenario names."""
        found = [(self.path, "sweep file"), (self.base_path, "scenario")]
        for point in self.points:
            try:
                found += scenario_inputs(self.base_path, self.scenario(point))[1:]
            except ScenarioError:
                continue
        return list(dict.fromkeys(found))

    def scenario_data(self, point: Point) -> dict:
        data = json.loads(json.dumps(self.base))  # deep copy of plain YAML data
        for path, value in {**self.spec.set, **point.params}.items():
            apply_override(data, path.split("."), value)
        data["seed"] = point.seed
        return data

    def scenario(self, point: Point) -> Scenario:
        return scenario_from_dict(self.scenario_data(point), base_dir=self.base_dir)

    def point_key(self, point: Point) -> str:
        """Identity of a point's result: a hash of its fully resolved scenario and of what is computed.

        Grid values and seed alone are not enough: a changed base scenario or ``--set`` gives the
        same values a different result. Files the scenario names (a trace, a profile, an HF config)
        enter by their contents, so an edited trace recomputes the points that read it.
        """
        spec = self.spec
        what = {"mode": spec.mode, "variants": spec.variants, "attainment": spec.attainment,
                "max_gpus": spec.max_gpus, "goodput": spec.goodput}
        files: dict[str, str] = {}
        try:
            sc = self.scenario(point)
            resolved: Any = sc.model_dump(mode="json")
            files = {str(f): file_digest(f) for f in input_files(scenario_inputs(self.base_path, sc)[1:])}
        except ScenarioError:  # an invalid point is recorded as an error row; key it by its inputs
            resolved = {"invalid": self.scenario_data(point)}
        blob = json.dumps({"scenario": resolved, "computes": what, "files": files}, sort_keys=True,
                          separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_sweep(path: str | Path, overrides: Iterable[str] = ()) -> Sweep:
    """Read a sweep file, expand its grid and check every point's scenario before anything runs."""
    p = Path(path)
    raw = read_yaml_mapping(p, "sweep")
    for text in overrides:
        keypath, value = parse_override(text)
        raw.setdefault("set", {})[".".join(keypath)] = value
    raw.setdefault("name", p.stem)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        lines = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()]
        raise ScenarioError("invalid sweep:\n  " + "\n  ".join(lines)) from None
    base_path = (p.parent / spec.scenario) if not Path(spec.scenario).is_absolute() else Path(spec.scenario)
    if not base_path.exists() and Path(spec.scenario).exists():
        base_path = Path(spec.scenario)
    if not base_path.exists():
        raise ScenarioError(f"sweep.scenario: no scenario file at {spec.scenario!r}")
    base = read_yaml_mapping(base_path, "scenario")
    base.setdefault("name", base_path.stem)
    if not spec.grid and len(spec.seeds) < 2:
        raise ScenarioError("sweep.grid is empty: give at least one parameter with values (or several seeds)")
    sweep = Sweep(spec, base, base_path.parent, expand_points(spec), path=p, base_file=base_path.name)
    _check_points(sweep)
    return sweep


def expand_points(spec: SweepSpec) -> list[Point]:
    """The grid's Cartesian product x seeds, numbered in order."""
    keys = list(spec.grid)
    combos = list(itertools.product(*(spec.grid[k] for k in keys)))
    return [Point(i, dict(zip(keys, combo)), seed)
            for i, (combo, seed) in enumerate(itertools.product(combos, spec.seeds))]


def _check_points(sweep: Sweep) -> None:
    """Fail fast on an unknown parameter path or an impossible point, naming the point."""
    checked: set[str] = set()
    for point in sweep.points:
        sig = json.dumps(point.params, sort_keys=True, default=str)
        if sig in checked:
            continue  # seeds do not change validity
        checked.add(sig)
        where = ", ".join(f"{k}={v!r}" for k, v in point.params.items()) or "base"
        try:
            sc = sweep.scenario(point)
            if sweep.spec.variants:
                unknown = set(sweep.spec.variants) - {v.name for v in sc.variants}
                if unknown:
                    raise ScenarioError(f"sweep.variants: unknown {sorted(unknown)}")
        except ScenarioError as exc:
            raise ScenarioError(f"sweep point {where}: {exc}") from None


# --------------------------------------------------------------------------------------
def run_point(sweep_data: dict, point: dict) -> list[dict]:
    """Run one grid point; never raises: a failure becomes rows with ``status=error``.

    Takes plain data (not objects) so that it ships to worker processes and Ray tasks alike.
    """
    sweep = Sweep(SweepSpec.model_validate(sweep_data["spec"]), sweep_data["base"], Path(sweep_data["base_dir"]))
    pt = Point(point["index"], point["params"], point["seed"])
    head = {"point": pt.index, "seed": pt.seed, **{k: _cell(v) for k, v in pt.params.items()}}
    t0 = time.perf_counter()
    try:
        sc = sweep.scenario(pt)
        if sweep.spec.mode == "plan":
            rows = [{**head, **r, "status": "ok", "error": ""} for r in _plan_rows(sweep.spec, sc)]
        else:
            run = run_scenario(sc, sweep.spec.variants)
            rows = [{**head, **comparison_row(s), "status": "ok", "error": ""} for s in run.summaries]
    except Exception as exc:  # a failing point is recorded; the sweep goes on
        msg = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, (ScenarioError, ValueError)):
            msg += " | " + traceback.format_exc(limit=3).replace("\n", " ")
        rows = [{**head, "variant": "", "status": "error", "error": msg}]
    for r in rows:
        r["point_wall_s"] = time.perf_counter() - t0
    return rows


def _plan_rows(spec: SweepSpec, sc: Scenario) -> list[dict]:
    from sunsim.analysis.planning import plan, plan_rows
    from sunsim.sim.variant import profile_info

    target = spec.attainment or sc.slo.attainment
    plans = plan(sc, target, spec.variants, goodput=spec.goodput, max_gpus=spec.max_gpus)
    return plan_rows(sc, plans, profile=profile_info(sc).name)


def _cell(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)


def _payload(sweep: Sweep) -> dict:
    return {"spec": sweep.spec.model_dump(), "base": sweep.base, "base_dir": str(sweep.base_dir)}


def _local(sweep: Sweep, points: list[Point], workers: int) -> Iterator[tuple[Point, list[dict]]]:
    payload = _payload(sweep)
    if workers <= 1:
        for p in points:
            yield p, run_point(payload, p.__dict__)
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(os.getpid(),))
    finished = False
    try:
        pending = {pool.submit(run_point, payload, p.__dict__): p for p in points}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), fut.result()
        finished = True
    finally:
        if not finished:  # interrupted: stop the running points now instead of waiting for them
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_init(parent: int) -> None:
    """Make a worker process die with the sweep, however the sweep ends.

    On Linux the kernel kills the worker when its parent dies (``PR_SET_PDEATHSIG``); everywhere a
    watchdog thread exits when the parent id changes (the worker was re-parented). SIGTERM gets its
    default action back (the parent's handler turns it into an exception, which a worker must not catch).
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="sunsim-parent-watch").start()


def _watch_parent(parent: int, every_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def probe_address(address: str, timeout_s: float = RAY_PROBE_TIMEOUT_S) -> None:
    """Fail within seconds, naming the address, when nothing answers at a Ray cluster address.

    ``ray.init`` would otherwise retry for minutes. ``auto``/``local`` (Ray finds or starts a cluster)
    are left to Ray.
    """
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address: {address!r} is not HOST:PORT (or ray://HOST:PORT, auto, local)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise InputError(f"--address: no Ray cluster answers at {address!r} ({reason} within "
                         f"{timeout_s:g} s)") from None


def _ray(sweep: Sweep, points: list[Point], address: str | None) -> Iterator[tuple[Point, list[dict]]]:
    if address:
        probe_address(address)
    try:
        import ray
    except ImportError:
        raise ScenarioError("--executor ray needs Ray: pip install 'sunsim[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
            raise InputError(f"--address: Ray could not connect to {address or 'a local cluster'!r}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        remote = ray.remote(run_point)
        payload = ray.put(_payload(sweep))
        pending = {remote.remote(payload, p.__dict__): p for p in points}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


# --------------------------------------------------------------------------------------
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
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be a positive integer, got {workers}")
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
