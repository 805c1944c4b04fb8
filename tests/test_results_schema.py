"""The results schema is defined once: comparison rows, the CLI table and the reports all follow it."""

from __future__ import annotations

import json

import pytest

from sunsim.analysis.metrics import comparison_row
from sunsim.analysis.schema import BY_COLUMN, COMPARISON_COLUMNS, COMPARISON_ROWS, FIELDS, METRIC_COLUMNS
from sunsim.cli import main
from sunsim.report.markdown import KEY_METRICS, METRICS

from .conftest import BASE, merge


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import yaml

    tmp = tmp_path_factory.mktemp("schema")
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"workload": {"duration_s": 10}})))
    assert main(["run", str(path), "--out", str(tmp / "run")]) == 0
    return tmp / "run"


def test_report_metric_names_are_exactly_the_schema_columns() -> None:
    assert list(METRICS) == list(METRIC_COLUMNS)
    assert all(METRICS[c] == (BY_COLUMN[c].label, BY_COLUMN[c].scale) for c in METRICS)
    assert set(KEY_METRICS) <= set(METRIC_COLUMNS)


def test_columns_are_unique_and_cli_rows_name_schema_columns() -> None:
    columns = [f.column for f in FIELDS]
    assert len(columns) == len(set(columns))
    assert {c for _, cols, _, _ in COMPARISON_ROWS for c in cols} <= set(COMPARISON_COLUMNS)


def test_comparison_row_reads_every_field_from_summary_json(run_dir) -> None:
    """Each column equals the summary.json value its source names, checked by hand for a few."""
    s = json.loads((run_dir / "sun" / "summary.json").read_text())
    row = comparison_row(s)
    assert list(row) == list(COMPARISON_COLUMNS)
    assert row["tpot_p90_s"] == s["tpot_s"]["p90"] and row["profile_kind"] == s["profile"]["kind"]
    assert row["tokens_per_s_per_gpu"] == s["throughput"]["output_tokens_per_s_per_gpu"]
    assert row["decode_busy_min"] == s["decode_utilization"]["min_busy_fraction"]
    assert row["finished"] + row["unfinished"] == row["arrived"] == s["requests"]["arrived"]
    header = (run_dir / "comparison.csv").read_text().splitlines()[0].split(",")
    assert header == list(COMPARISON_COLUMNS)


def test_cli_table_rows_follow_the_schema(run_dir, capsys) -> None:
    import pandas as pd

    from sunsim.cli.console import console
    from sunsim.cli.main import comparison_table

    comp = pd.read_csv(run_dir / "comparison.csv")
    with console.capture() as cap:
        console.print(comparison_table(comp, "t"))
    text = cap.get()
    for label, *_ in COMPARISON_ROWS:
        assert label in text
    tpot = comp.loc[comp["variant"] == "sun", ["tpot_p50_s", "tpot_p90_s"]].iloc[0] * 1e3
    assert f"{tpot.iloc[0]:.1f} / {tpot.iloc[1]:.1f}" in text  # the TPOT row is scaled to ms


def test_variant_result_carries_frozen_stats_matching_the_workers() -> None:
    """The end-of-run records equal the live workers' counters and cannot be changed afterwards."""
    import dataclasses

    from sunsim.analysis.metrics import summarize
    from sunsim.sim.variant import load_profile, simulate_variant
    from sunsim.workload.stream import build_workload

    from .conftest import make_scenario

    sc = make_scenario(workload={"duration_s": 10})
    res = simulate_variant(sc, sc.variants[1], build_workload(sc), load_profile(sc), keep_timeline=True)
    assert [d.wid for d in res.decode_stats] == [w.wid for w in res.decode_workers]
    for d, w in zip(res.decode_stats, res.decode_workers):
        assert (d.busy_s, d.tokens, d.iterations, d.peak_blocks, d.preemptions) == \
            (w.busy_s, w.tokens, w.iterations, w.peak_blocks, w.preemptions)
    for p, w in zip(res.prefill_stats, res.prefill_workers, strict=True):
        assert (p.busy_s, p.batches, p.peak_held_tokens, p.stalled_s) == (w.busy_s, w.batches, w.peak_held_tokens,
                                                                         w.stalled_s)
    assert res.interconnect_stats.duration(1000) == res.interconnect.duration(1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.decode_stats[0].tokens = 0
    s = summarize(res)
    assert sum(d["tokens"] for d in s["decode_workers"]) == sum(d.tokens for d in res.decode_stats)
    assert [d["worker"] for d in s["prefill_workers"]] == [p.wid for p in res.prefill_stats]
