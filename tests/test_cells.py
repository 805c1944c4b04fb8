"""A fleet in independent cells: the partition, each cell's GPUs and requests, and an exact merge that does
not depend on where the cells ran (this process, local processes, Ray)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sunsim.analysis.cells import cell_scenarios, cell_stream, merge, run_cell, run_cells
from sunsim.analysis.runner import run_scenario
from sunsim.scenario import ScenarioError, scenario_from_dict
from sunsim.workload.stream import build_workload

FLEET = {
    "name": "cells", "seed": 3,
    "model": {"preset": "llama-3.1-8b", "tasks": ["a", "b", "c", "d"]},
    "hardware": {"gpu": "h100"},
    "prefill": {"workers": 1, "max_batch_tokens": 8192},
    "decode": {"max_batch": 4},
    "workload": {"duration_s": 20, "rate": 8, "popularity": {"kind": "zipf", "s": 1.0},
                 "prompt_tokens": {"kind": "lognormal", "mean": 512, "sigma": 0.5, "max": 4096},
                 "output_tokens": {"kind": "lognormal", "mean": 64, "sigma": 0.5, "max": 512}},
    "cells": {"count": 2},
    "variants": [
        {"name": "sun", "mode": "shared", "workers": 3},
        {"name": "ded", "mode": "dedicated", "workers": {"total": 6, "by": "popularity"},
         "rebalance": {"every_s": 5, "load_s": 1}},
        {"name": "auto", "mode": "shared", "workers": 2,
         "autoscale": {"every_s": 4, "target_load": 0.5, "load_s": 1, "min_workers": 2, "max_workers": 6}},
    ],
}


def _sc(**top):
    return scenario_from_dict({**FLEET, **top})


def _plain(summary: dict) -> str:
    """A summary without what depends on the machine (wall-clock time)."""
    return json.dumps({k: v for k, v in summary.items() if k != "sim"}, sort_keys=True, default=str)


def test_count_deals_the_models_out_by_popularity():
    # Zipf 1 over a, b, c, d: shares 12/25, 6/25, 4/25, 3/25; round-robin from the most popular
    assert _sc().cell_models() == {"cell0": ["a", "c"], "cell1": ["b", "d"]}
    assert _sc(cells={"count": 3}).cell_models() == {"cell0": ["a", "d"], "cell1": ["b"], "cell2": ["c"]}
    named = _sc(cells={"east": ["d", "a"], "west": ["b", "c"]})
    assert named.cell_models() == {"east": ["a", "d"], "west": ["b", "c"]}  # models in task order


@pytest.mark.parametrize("cells, says", [
    ({"count": 5}, "at most 4"),
    ({"x": ["a", "b"], "y": ["b", "c", "d"]}, "already in cell 'x'"),
    ({"x": ["a", "b"], "y": ["c"]}, r"models \['d'\] are in no cell"),
    ({"x": ["a", "b", "c", "d", "e"]}, "unknown model 'e'"),
    ({"x": []}, "at least one task model"),
])
def test_bad_cells_are_refused(cells, says):
    with pytest.raises(ScenarioError, match=says):
        _sc(cells=cells)


def test_closed_arrivals_are_refused_with_cells():
    wl = {**FLEET["workload"], "rate": None, "num_requests": 10, "arrivals": {"kind": "closed", "concurrency": 2}}
    with pytest.raises(ScenarioError, match="cells: not with closed arrivals"):
        _sc(workload=wl)


def test_each_cell_gets_its_models_gpus_and_its_share_of_each_pool():
    cells = cell_scenarios(_sc())
    c0, c1 = cells["cell0"], cells["cell1"]
    v0, v1 = {v.name: v for v in c0.variants}, {v.name: v for v in c1.variants}
    # traffic shares 16/25 and 9/25: 3 shared GPUs -> 1.92, 1.08 -> 1 each, the larger remainder one more
    assert (v0["sun"].workers, v1["sun"].workers) == (2, 1)
    # the dedicated split of 6 by popularity (2.88, 1.44, 0.96, 0.72 -> a 3, b 1, c 1, d 1) goes with the models
    assert c0.counts(v0["ded"].workers) == {"a": 3, "c": 1} and c1.counts(v1["ded"].workers) == {"b": 1, "d": 1}
    assert v0["ded"].rebalance is not None
    # autoscale bounds: min 2 -> 1 + 1, max 6 -> 3.84, 2.16 -> 4 + 2; the start (2 -> 1 + 1) within them
    a0, a1 = v0["auto"], v1["auto"]
    assert (a0.autoscale.min_workers, a0.autoscale.max_workers, a0.workers) == (1, 4, 1)
    assert (a1.autoscale.min_workers, a1.autoscale.max_workers, a1.workers) == (1, 2, 1)
    assert c0.prefill_counts() == {"a": 1, "c": 1} and c1.prefill_counts() == {"b": 1, "d": 1}


def test_the_cells_replay_exactly_the_fleet_stream():
    sc = _sc()
    stream = build_workload(sc)
    seen = np.zeros(len(stream), dtype=int)
    for cell in cell_scenarios(sc).values():
        idx, sub = cell_stream(stream, list(sc.model.tasks), list(cell.model.tasks))
        seen[idx] += 1
        assert (np.diff(idx) > 0).all()  # in the fleet's order
        assert np.array_equal(sub.arrival_s, stream.arrival_s[idx])
        assert np.array_equal(sub.prompt_tokens, stream.prompt_tokens[idx])
        assert np.array_equal(sub.output_tokens, stream.output_tokens[idx])
        assert [sub.models[m] for m in sub.model] == [sc.model.tasks[m] for m in stream.model[idx]]
    assert (seen == 1).all()


@pytest.fixture(scope="module")
def inline():
    return run_scenario(_sc(), keep_timeline=True)


def test_the_merge_puts_each_cells_records_back_in_place(inline):
    sc = _sc()
    stream = build_workload(sc)
    cells = cell_scenarios(sc)
    for res, summary, table in zip(inline.results, inline.summaries, inline.tables):
        assert len(table) == len(stream) and summary["requests"]["finished"] == len(stream)
        assert np.array_equal(table["arrival_s"], stream.arrival_s)
        alone = {}
        for name, cell in cells.items():
            idx, sub = cell_stream(stream, list(sc.model.tasks), list(cell.model.tasks))
            alone[name] = (idx, run_cell(cell, res.variant.name, sub, False))
        for f in ("finish_s", "first_token_s", "decode_admit_s", "preemptions"):
            for idx, r in alone.values():
                assert np.array_equal(getattr(res.records, f)[idx], getattr(r.records, f), equal_nan=True)
        # workers: the cells' starting ones in cell order, then autoscaling's additions
        (i0, r0), (i1, r1) = alone.values()
        s0, s1 = r0.start_decode_workers, r1.start_decode_workers
        e0 = len(r0.decode_stats) - s0
        w0, w1 = r0.records.decode_worker, r1.records.decode_worker
        dw = res.records.decode_worker
        assert np.array_equal(dw[i0], np.where(w0 < s0, w0, s1 + w0))  # cell0's additions after cell1's start
        assert np.array_equal(dw[i1], np.where(w1 < s1, s0 + w1, s0 + e0 + w1))
        assert len(res.decode_stats) == len(r0.decode_stats) + len(r1.decode_stats)
        assert [w.wid for w in res.decode_stats] == list(range(len(res.decode_stats)))
        # GPU-hours: each cell's GPUs over the fleet's run (the last cell's end)
        end = max(r0.end_s, r1.end_s)
        assert summary["duration_s"] == end

        assert summary["gpu_hours"] == pytest.approx((_held(r0, end) + _held(r1, end)) / 3600, rel=1e-9)


def _held(r, end: float) -> float:
    """GPU-seconds of one cell's run over ``[0, end]``, by hand from its GPU timeline."""
    pre = len(r.prefill_stats)
    if not r.decode_gpu_timeline:
        return (pre + r.start_decode_workers) * end
    t = np.array([p[0] for p in r.decode_gpu_timeline] + [end])
    n = np.array([p[1] for p in r.decode_gpu_timeline])
    return pre * end + float((n * np.diff(t)).sum())


def test_one_fleet_through_the_task_path_is_the_plain_run():
    sc = _sc(cells=None)
    plain = run_scenario(sc, ["ded", "auto"])
    stream = build_workload(sc)
    via = run_cells(sc, [v for v in sc.variants if v.name in ("ded", "auto")], stream)
    for a, b in zip(plain.results, via):
        for f in ("finish_s", "decode_worker", "prefill_worker", "decode_start_s"):
            assert np.array_equal(getattr(a.records, f), getattr(b.records, f), equal_nan=True)
        assert a.decode_gpu_timeline == b.decode_gpu_timeline and a.moves == b.moves


def _same(a, b):
    for ta, tb in zip(a.tables, b.tables):
        pd.testing.assert_frame_equal(ta, tb)
    assert [_plain(s) for s in a.summaries] == [_plain(s) for s in b.summaries]


def test_local_processes_give_the_same_fleet(inline):
    _same(inline, run_scenario(_sc(), keep_timeline=True, executor="local", workers=2))


@pytest.mark.slow
def test_ray_gives_the_same_fleet(inline):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        _same(inline, run_scenario(_sc(), keep_timeline=True, executor="ray"))
    finally:
        ray.shutdown()


def test_merge_of_one_cell_keeps_its_numbers():
    sc = _sc(cells=None)
    stream = build_workload(sc)
    r = run_cell(sc, "auto", stream, False)
    m = merge(sc, sc.variants[2], stream, [(np.arange(len(stream)), r)])
    assert m.decode_gpu_timeline == r.decode_gpu_timeline and m.end_s == r.end_s
    assert [w.wid for w in m.decode_stats] == [w.wid for w in r.decode_stats]


def test_the_command_line_runs_the_cells_on_local_processes(tmp_path, capsys):
    import yaml

    from sunsim.cli.main import main

    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({**FLEET, "variants": FLEET["variants"][:1]}))
    assert main(["run", str(path), "--out", str(tmp_path / "inline"), "--no-timeline"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "local"), "--no-timeline", "--executor", "local",
                 "--workers", "2"]) == 0
    a, b = (pd.read_csv(tmp_path / d / "comparison.csv") for d in ("inline", "local"))
    volatile = ["sim_wall_s", "sim_requests_per_wall_s"]
    pd.testing.assert_frame_equal(a.drop(columns=volatile), b.drop(columns=volatile))
    assert a["gpu_hours"].iloc[0] > 0 and a["peak_gpus"].iloc[0] == 4 + 3
    ra, rb = (pd.read_csv(tmp_path / d / "sun" / "requests.csv") for d in ("inline", "local"))
    pd.testing.assert_frame_equal(ra, rb)
    with pytest.raises(SystemExit):
        main(["run", str(path), "--executor", "nowhere"])
    capsys.readouterr()
