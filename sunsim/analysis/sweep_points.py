"""Where a sweep's points run: local worker processes (which die with the sweep, even when it is killed
outright) or Ray tasks on a Ray cluster (an existing distributed engine, probed before use)."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from sunsim.analysis.executors import ray_connection, worker_init
from sunsim.analysis.metrics import comparison_row
from sunsim.analysis.runner import run_scenario
from sunsim.analysis.sweep_spec import Point, Sweep, SweepSpec
from sunsim.scenario import Scenario, ScenarioError


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
    plans = plan(sc, target, spec.variants, size_prefill=spec.prefill, goodput=spec.goodput, max_gpus=spec.max_gpus)
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
    pool = ProcessPoolExecutor(max_workers=workers, initializer=worker_init, initargs=(os.getpid(),))
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


def _ray(sweep: Sweep, points: list[Point], address: str | None) -> Iterator[tuple[Point, list[dict]]]:
    with ray_connection(address) as ray:
        remote = ray.remote(run_point)
        payload = ray.put(_payload(sweep))
        pending = {remote.remote(payload, p.__dict__): p for p in points}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
