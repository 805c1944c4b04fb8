"""The Chrome/Perfetto trace of a run shows what was simulated: slices equal the request records, no two
slices share a track at the same time, and slices say what they are."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from sunsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
#: Records are written with 9 significant digits (a few ns at 10 s); slices are compared within 1 µs.
TOL_US = 1.0


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("trace")
    out, trace = tmp / "run", tmp / "t.json"
    assert main(["run", str(ROOT / "scenarios" / "default.yaml"), "--set", "workload.duration_s=10",
                 "--out", str(out), "--trace-out", str(trace)]) == 0
    return out, json.loads(trace.read_text())


def slices(trace: dict) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def thread_names(trace: dict) -> dict[tuple[int, int], str]:
    return {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}


def variants(trace: dict) -> dict[int, str]:
    return {e["pid"]: e["args"]["name"].removeprefix("variant ") for e in trace["traceEvents"]
            if e["ph"] == "M" and e["name"] == "process_name"}


def test_no_two_slices_overlap_on_a_track(traced) -> None:
    _, trace = traced
    tracks: dict[tuple[int, int], list[tuple[float, float, str]]] = defaultdict(list)
    for e in slices(trace):
        assert e["dur"] >= 0, e
        tracks[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    assert tracks
    overlaps = []
    for key, spans in tracks.items():
        spans.sort()
        overlaps += [(key, a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1] - 1e-6]
    assert not overlaps, f"{len(overlaps)} overlapping slices, e.g. {overlaps[:3]}"


def _records(out: Path, variant: str) -> pd.DataFrame:
    return pd.read_csv(out / variant / "requests.csv")


def test_transfer_slices_equal_the_records(traced) -> None:
    """Each KV slice ends when the request's KV was ready on its decode worker, and lasts what the records say
    the transfer took: the links are FIFO into each decode worker (the scenario's contention), so a transfer
    starts at its admission or when the previous one into that worker ended, whichever is later."""
    out, trace = traced
    names = thread_names(trace)
    for pid, variant in variants(trace).items():
        req = _records(out, variant)
        moved = req[req["kv_ready_s"].notna()].sort_values(["decode_admit_s", "kv_ready_s"])
        expected: dict[int, tuple[float, float, int]] = {}
        prev_end: dict[int, float] = {}
        for r in moved.itertuples(index=False):
            start = max(r.decode_admit_s, prev_end.get(r.decode_worker, 0.0))
            expected[int(r.request_id)] = (r.kv_ready_s - start, r.kv_ready_s, int(r.decode_worker))
            prev_end[r.decode_worker] = r.kv_ready_s
        got = {int(m.group(1)): e for e in slices(trace)
               if e["pid"] == pid and (m := re.match(r"KV r(\d+)\b", e["name"]))}
        assert set(got) == set(expected), variant
        for rid, (dur, end, worker) in expected.items():
            e = got[rid]
            assert abs(e["dur"] - dur * 1e6) <= TOL_US, (variant, rid, e["dur"], dur * 1e6)
            assert abs(e["ts"] + e["dur"] - end * 1e6) <= TOL_US, (variant, rid)
            assert names[(pid, e["tid"])].startswith(f"KV in -> decode {worker}"), (variant, rid)


def test_prefill_slices_equal_the_records(traced) -> None:
    """One slice per prefill batch (the requests that started together on a worker), from their start to
    their first token, named by its size."""
    out, trace = traced
    names = thread_names(trace)
    for pid, variant in variants(trace).items():
        req = _records(out, variant)
        done = req[req["prefill_start_s"].notna() & req["first_token_s"].notna()]
        got: dict[int, list[dict]] = defaultdict(list)  # per prefill worker, from its track's name
        for e in slices(trace):
            track = re.match(r"prefill (\d+)\b", names[(e["pid"], e["tid"])])
            if e["pid"] == pid and track:
                got[int(track.group(1))].append(e)
        batches = done.groupby(["prefill_worker", "prefill_start_s"])
        assert sum(map(len, got.values())) == batches.ngroups, variant
        for (worker, start), b in batches:
            e = min(got[int(worker)], key=lambda e: abs(e["ts"] - start * 1e6))
            assert abs(e["ts"] - start * 1e6) <= TOL_US
            assert abs(e["dur"] - (b["first_token_s"].iloc[0] - start) * 1e6) <= TOL_US
            n, tokens = len(b), int(b["prompt_tokens"].sum())
            assert e["name"] == f"prefill batch ({n} req{'s' if n != 1 else ''}, {tokens} tokens)"
            assert sorted(e["args"]["request_ids"]) == sorted(b["request_id"].tolist())


def test_decode_slices_cover_the_timeline(traced) -> None:
    """Decode slices are the timeline's stretches with a non-empty batch, named by that batch."""
    out, trace = traced
    for pid, variant in variants(trace).items():
        tl = pd.read_csv(out / variant / "timeline.csv")
        got = [e for e in slices(trace) if e["pid"] == pid and e["name"].startswith("decode")]
        assert got
        for e in got:
            assert e["name"] == f"decode batch of {e['args']['batch']}"
        busy = sum(e["dur"] for e in got) / 1e6
        assert busy > 0 and len(got) <= len(tl)
