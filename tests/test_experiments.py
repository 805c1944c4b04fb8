"""The experiments pipeline end to end (quick mode), the Perfetto trace, worker splits."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sunsim.cli import main
from sunsim.scenario import ScenarioError, split_by_share

from .conftest import make_scenario


@pytest.mark.slow
def test_quick_experiments_write_headline_and_figures(tmp_path):
    out = tmp_path / "results"
    assert main(["experiments", "--quick", "--out", str(out), "--workers", "2"]) == 0
    readme = (out / "README.md").read_text()
    assert "## Headline" in readme and "vllm-h100" in readme
    rows = [line for line in readme.splitlines() if re.match(r"\| \d", line)]
    assert len(rows) >= 2  # one headline row per skew value of the (quick) plan sweep
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", readme)
    assert len(figures) >= 6
    for f in figures:
        data = (out / f).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert (out / "report" / "report.md").exists()
    assert not list(out.glob(".experiments-*"))  # staging cleaned up
    kept_names = [p.name for p in (out / "sweeps").iterdir()]
    # --only reruns one experiment: the others' files stay byte for byte, the page is redrawn from all
    kept = {p: p.read_bytes() for p in [out / "sweeps" / "skew.csv", out / "paper" / "comparison.csv"]}
    rerun = out / "sweeps" / "short-outputs.csv"
    before = rerun.stat().st_mtime_ns
    assert main(["experiments", "--quick", "--out", str(out), "--workers", "2", "--only", "short-outputs"]) == 0
    assert all(p.read_bytes() == b for p, b in kept.items())
    assert rerun.stat().st_mtime_ns != before
    assert sorted(p.name for p in (out / "sweeps").iterdir()) == sorted(kept_names)
    assert (out / "README.md").read_text().count("## Headline") == 1
    assert main(["experiments", "--out", str(out), "--only", "nope"]) == 2


def test_perfetto_trace_has_every_stage(tmp_path):
    import yaml

    from .conftest import BASE, merge

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"workload": {"duration_s": 5}})))
    trace = tmp_path / "trace.json"
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--trace-out", str(trace)]) == 0
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e["name"].split()[0] for e in events if e["ph"] == "X"}
    assert names == {"prefill", "KV", "decode"}
    slices = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in slices)
    # Decode slices of one worker never overlap.
    for tid in {e["tid"] for e in slices if e["name"].startswith("decode")}:
        spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in slices if e["tid"] == tid and e["pid"] == 0
                       and e["name"].startswith("decode"))
        assert all(a[1] <= b[0] + 1e-6 for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("total", [4, 5, 9, 16, 33])
def test_split_by_share_sums_and_tracks_shares(total):
    share = 1 / np.arange(1, 5) ** 1.2
    share /= share.sum()
    counts = split_by_share(total, share)
    assert sum(counts) == total and min(counts) >= 1
    assert counts == sorted(counts, reverse=True)  # more traffic, no fewer workers


def test_split_in_a_scenario():
    sc = make_scenario(variants=[{"name": "d", "mode": "dedicated", "workers": {"total": 10, "by": "popularity"}}])
    counts = sc.counts(sc.variants[0].workers)
    assert sum(counts.values()) == 10 and counts["a"] > counts["d"]
    even = make_scenario(variants=[{"name": "d", "mode": "dedicated", "workers": {"total": 10, "by": "even"}}])
    assert sorted(even.counts(even.variants[0].workers).values()) == [2, 2, 3, 3]
    with pytest.raises(ScenarioError, match="variants.0.workers|variants\\[0\\].workers"):
        make_scenario(variants=[{"name": "d", "mode": "dedicated", "workers": {"total": 2, "by": "popularity"}}])
