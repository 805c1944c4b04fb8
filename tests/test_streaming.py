"""Streaming runs: requests drawn block by block, rows written as requests finish, memory that follows the
requests in flight. A streamed run must be the same run as the one in memory: same request table, same
summary, for every kind of variant (rebalanced, aggregated, closed loop, preempting, cut by a horizon)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sunsim.analysis.metrics import request_table, summarize
from sunsim.analysis.record_file import ParquetRecordSink
from sunsim.analysis.runner import stream_scenario
from sunsim.errors import InputError
from sunsim.scenario import ScenarioError, scenario_from_dict
from sunsim.sim.in_flight import InFlight, MemorySink
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import BLOCK, StreamedRequests, build_workload, check_size, workload_chunks

from .conftest import BASE, ROOT, merge

CLOSED = {"workload": {"rate": None, "duration_s": None, "num_requests": 400,
                       "arrivals": {"kind": "closed", "concurrency": 24}}}
CASES = {
    "shared": ({}, "sun"),
    "dedicated": ({}, "dedicated"),
    "rebalanced": ({"variants": [{"name": "reb", "mode": "dedicated", "workers": 1,
                                  "rebalance": {"every_s": 5, "load_s": 1}}]}, "reb"),
    "multi-lora": ({"variants": [{"name": "lora", "mode": "multi_lora", "workers": 3}]}, "lora"),
    "aggregated-lora": ({"variants": [{"name": "agg", "mode": "aggregated_lora", "workers": 4}]}, "agg"),
    "closed-loop": (CLOSED, "sun"),
    "preempting": ({"hardware": {"gpu": "h100", "memory_utilization": 0.27}, "workload": {"rate": 60},
                    "variants": [{"name": "sun", "mode": "shared", "workers": 2}]}, "sun"),
    "horizon": ({"sim": {"horizon_s": 12}}, "sun"),
}


def both_ways(d: dict, variant: str, tmp_path):
    sc = scenario_from_dict(d)
    v = next(x for x in sc.variants if x.name == variant)
    whole = simulate_variant(sc, v, build_workload(sc))
    source = StreamedRequests(sc)
    sink = ParquetRecordSink(tmp_path / "requests.parquet", source.models)
    streamed = simulate_variant(sc, v, source, sink=sink)
    sink.close()
    return whole, replace(streamed, records_file=str(sink.path))


def comparable(summary: dict) -> str:
    summary = copy.deepcopy(summary)
    for key in ("wall_s", "requests_per_wall_s"):
        summary["sim"].pop(key)
    return json.dumps(summary, sort_keys=True)


@pytest.mark.parametrize("case", CASES)
def test_streamed_run_is_the_run_in_memory(case, tmp_path):
    patch, variant = CASES[case]
    d = merge(BASE, patch)
    if case == "closed-loop":
        d["workload"] = {k: v for k, v in d["workload"].items() if v is not None}
    whole, streamed = both_ways(d, variant, tmp_path)
    a, b = request_table(whole), request_table(streamed)
    assert len(a) > 100
    b["model"] = b["model"].astype(object)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert comparable(summarize(whole)) == comparable(summarize(streamed))
    if case == "preempting":
        assert a["preemptions"].sum() > 0  # the case exercises retired slots
    if case == "horizon":
        assert a["finish_s"].isna().any()  # the case stops with requests in flight


def test_memory_follows_the_requests_in_flight():
    """A long, lightly loaded run holds a few slots, not one per request."""
    sc = scenario_from_dict(merge(BASE, {"workload": {"duration_s": 300, "rate": 20}}))
    stream = build_workload(sc)
    res = simulate_variant(sc, sc.variants[1], stream)
    assert len(stream) > 5000
    assert 0 < res.peak_in_flight < len(stream) / 20
    # Little's law bounds what is in flight on average; the peak is a few times that, not the total
    df = request_table(res)
    mean_in_system = 20 * df["e2e_s"].mean()
    assert res.peak_in_flight < 10 * mean_in_system + 50


def test_slots_grow_in_place_and_preempted_slots_are_retired():
    stream = scenario_from_dict(BASE)
    live = InFlight(MemorySink(build_workload(stream)), capacity=4)
    prompt, finish = live.prompt, live.records.finish_s
    slots = [live.admit(i, float(i), 0, 100 + i, 10) for i in range(10)]
    assert live.capacity >= 10 and prompt is live.prompt and finish is live.records.finish_s  # same arrays
    assert [int(live.prompt[s]) for s in slots] == [100 + i for i in range(10)]
    live.records.preemptions[slots[3]] = 1
    live.finished(slots[:5])
    live.close()
    assert slots[3] not in live._free and slots[0] in live._free
    sink = live.sink
    assert list(sink.records.preemptions[:10]) == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]


def test_blocks_join_into_the_whole_stream():
    """A stream longer than a block is the same drawn whole or block by block; the blocks are seeded per block."""
    sc = scenario_from_dict(merge(BASE, {"workload": {"duration_s": None, "num_requests": BLOCK + 500,
                                                      "rate": 5000}}))
    whole = build_workload(sc)
    chunks = list(workload_chunks(sc))
    assert [c.start for c in chunks] == [0, BLOCK]
    for name in ("arrival_s", "model", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(whole, name), np.concatenate([getattr(c, name) for c in chunks]))
    assert np.all(np.diff(whole.arrival_s) > 0)
    # the second block is not a copy of the first (its own generators)
    assert not np.array_equal(chunks[1].prompt_tokens[:500], chunks[0].prompt_tokens[:500])
    assert StreamedRequests(sc).facts == whole.facts


def test_size_limits_name_the_way_out():
    big = scenario_from_dict(merge(BASE, {"workload": {"duration_s": None, "num_requests": 60_000_000}}))
    with pytest.raises(ScenarioError, match="--stream"):
        check_size(big)  # in memory: too many arrays, and the message says how to stream
    check_size(big, streaming=True)  # streamed, the same run fits
    huge = scenario_from_dict(merge(BASE, {"workload": {"duration_s": None, "num_requests": 9_000_000_000}}))
    with pytest.raises(ScenarioError, match="half this machine's memory"):
        check_size(huge, streaming=True)


def test_stream_scenario_checks_the_disk_first(tmp_path, monkeypatch):
    import shutil

    sc = scenario_from_dict(BASE)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(InputError, match="GB of request rows"):
        stream_scenario(sc, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_cli_stream_writes_the_same_summaries(tmp_path):
    scenario = ROOT / "scenarios" / "default.yaml"
    common = [sys.executable, "-m", "sunsim", "run", str(scenario), "--set", "workload.duration_s=8"]
    subprocess.run([*common, "--out", str(tmp_path / "mem"), "--no-timeline"], check=True, capture_output=True)
    out = subprocess.run([*common, "--out", str(tmp_path / "str"), "--stream"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "GB of request rows" in out.stdout
    for v in ("dedicated", "sun", "qsun"):
        a = json.loads((tmp_path / "mem" / v / "summary.json").read_text())
        b = json.loads((tmp_path / "str" / v / "summary.json").read_text())
        assert comparable(a) == comparable(b)
        rows = pd.read_parquet(tmp_path / "str" / v / "requests.parquet")
        assert rows["request_id"].is_unique and len(rows) == a["requests"]["arrived"]
    refused = subprocess.run([*common, "--stream", "--json"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--stream: not with --json" in refused.stderr
    assert "Traceback" not in refused.stderr
