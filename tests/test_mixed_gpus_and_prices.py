"""Hardware per pool (prefill on one GPU, decode on another) and the dollars of a fleet, checked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from sunsim.analysis.metrics import summarize
from sunsim.cli import main
from sunsim.costs import catalog
from sunsim.costs.hardware import GIB, GPUS
from sunsim.costs.model import decode_step_time
from sunsim.costs.prices import default_prices
from sunsim.scenario import ScenarioError, scenario_from_dict
from sunsim.sim.variant import _Plan, load_profile, simulate_variant
from sunsim.workload.stream import build_workload

from .conftest import BASE, ROOT, make_scenario, merge

MIB = 2**20
H100_BYTES = 85_017_493_504  # the H100's memory as its runtime reports it (sunsim/costs/hardware.py)
H200_BYTES = 143_771 * MIB  # nvidia-smi's 143,771 MiB


def _h200_decode(**patch):
    """Prefill on the top-level H100s, the shared pool decoding on H200s."""
    return make_scenario(workload={"duration_s": 10},
                         variants=[{"name": "sun", "mode": "shared", "workers": 2, "hardware": {"gpu": "h200"}}],
                         **patch)


def test_h200_decode_pool_takes_h200_costs_and_memory_while_prefill_stays_h100():
    sc = _h200_decode()
    v = sc.variants[0]
    plan = _Plan(sc, v, build_workload(sc), load_profile(sc))
    h200 = catalog.make_cost_model(GPUS["h200"], sc.shape, "bf16", catalog.load("vllm-h200"))
    h100 = catalog.make_cost_model(GPUS["h100"], sc.shape, "bf16", catalog.load("vllm-h100"))
    for batch, kv in [(1, 600), (16, 16 * 700), (64, 64 * 900)]:
        assert decode_step_time(plan.decode_cost, batch, kv) == decode_step_time(h200, batch, kv)
    # the two GPUs differ (H200's 4.8 TB/s against 3.35), so the check above could fail
    assert decode_step_time(h200, 16, 16 * 700) < 0.95 * decode_step_time(h100, 16, 16 * 700)
    for tokens in (512, 4096):
        assert plan.prefill_cost.prefill_time(tokens, tokens**2) == h100.prefill_time(tokens, tokens**2)
    # KV tokens per GPU: 90% of its memory, less the bf16 weights and the 4 GiB reserve, in 16-token blocks
    shape = sc.shape
    per_token = shape.kv_bytes("bf16")
    want_decode = int((H200_BYTES * 0.9 - shape.weight_bytes("bf16") - 4 * GIB) // per_token) // 16 * 16
    want_prefill = int((H100_BYTES * 0.9 - shape.weight_bytes("bf16") - 4 * GIB) // per_token) // 16 * 16
    assert plan.kv_capacity == want_decode and plan.prefill_kv_capacity == want_prefill
    assert want_decode > 1.7 * want_prefill  # 141 GB against 80 GB: a check the H100's figure would fail


def test_pool_hardware_takes_the_rest_from_the_top_level_and_survives_a_round_trip():
    sc = make_scenario(hardware={"gpu": "h100", "memory_utilization": 0.8, "iteration_overhead_ms": 0.7},
                       prefill={"workers": 1, "hardware": {"profile": "analytic"}},
                       variants=[{"name": "s", "mode": "shared", "workers": 1, "hardware": {"gpu": "l40s"}},
                                 {"name": "d", "mode": "dedicated", "workers": 1}])
    dec = sc.hardware_for("decode", sc.variants[0])
    assert (dec.gpu, dec.profile, dec.memory_utilization, dec.iteration_overhead_ms) == ("l40s", "vllm-l40s", 0.8, 0.7)
    pre = sc.hardware_for("prefill")
    assert (pre.gpu, pre.profile, pre.memory_utilization) == ("h100", "analytic", 0.8)
    assert sc.hardware_for("decode", sc.variants[1]) == sc.hardware  # no hardware of its own
    again = scenario_from_dict(sc.model_dump(mode="json"))
    assert again.hardware_for("decode", again.variants[0]) == dec and again.hardware_for("prefill") == pre


def test_usd_per_hour_and_per_million_tokens_by_hand():
    sc = _h200_decode(prices={"h100": 2.0, "h200": 3.5})
    s = summarize(simulate_variant(sc, sc.variants[0], build_workload(sc), load_profile(sc)))
    assert (s["prefill_gpu"], s["decode_gpu"]) == ("h100", "h200")
    assert s["gpus"] == {"prefill": 8, "decode": 2, "total": 10}  # 2 prefill workers for each of 4 models
    assert s["cost"]["usd_per_hour"] == pytest.approx(8 * 2.0 + 2 * 3.5)
    tokens_per_hour = s["throughput"]["output_tokens_per_s"] * 3600
    assert tokens_per_hour > 0
    assert s["cost"]["usd_per_million_output_tokens"] == pytest.approx(23.0 / (tokens_per_hour / 1e6))
    assert s["cost"]["note"] is None


def test_prices_not_named_keep_the_sourced_defaults():
    sc = make_scenario(prices={"l40s": 1.0})
    assert sc.prices["l40s"] == 1.0 and sc.prices["h100"] == default_prices()["h100"]
    import csv

    from sunsim.costs.prices import PRICES_CSV
    with PRICES_CSV.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["gpu"] for r in rows} <= set(GPUS)
    assert all(r["date"] and r["source"] and float(r["usd_per_gpu_hour"]) > 0 for r in rows)


def test_a_gpu_without_a_price_leaves_the_dollars_empty_with_a_note(tmp_path, capsys):
    data = merge(BASE, {"workload": {"duration_s": 5}, "prices": {"h200": None},
                        "variants": [{"name": "sun", "mode": "shared", "workers": 2, "hardware": {"gpu": "h200"}},
                                     {"name": "ded", "mode": "dedicated", "workers": 1}]})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-timeline"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "prices.h200" in out
    comp = pd.read_csv(tmp_path / "run" / "comparison.csv").set_index("variant")
    assert math.isnan(comp.loc["sun", "usd_per_hour"]) and math.isnan(comp.loc["sun", "usd_per_million_output_tokens"])
    assert comp.loc["ded", "usd_per_hour"] == pytest.approx(12 * default_prices()["h100"], rel=1e-5)
    assert (comp.loc["sun", "prefill_gpu"], comp.loc["sun", "decode_gpu"]) == ("h100", "h200")
    summary = json.loads((tmp_path / "run" / "sun" / "summary.json").read_text())
    assert summary["cost"]["usd_per_hour"] is None and "prices.h200" in summary["cost"]["note"]


def test_aggregated_variant_prices_only_its_own_gpus():
    sc = make_scenario(workload={"duration_s": 5}, prices={"h100": 1.0, "h200": 3.0},
                       variants=[{"name": "agg", "mode": "aggregated", "workers": 1, "hardware": {"gpu": "h200"}}])
    s = summarize(simulate_variant(sc, sc.variants[0], build_workload(sc), load_profile(sc)))
    assert (s["prefill_gpu"], s["decode_gpu"]) == ("h200", "h200") and s["gpus"]["prefill"] == 0
    assert s["cost"]["usd_per_hour"] == pytest.approx(4 * 3.0)


@pytest.mark.parametrize("patch,needles", [
    ({"prefill": {"workers": 1, "hardware": {"gpu": "tpu"}}}, ["prefill.hardware.gpu", "unknown gpu 'tpu'"]),
    ({"variants": [{"name": "q", "mode": "shared", "workers": 1, "dtype": "fp8", "hardware": {"gpu": "a100"}}]},
     ["variants.q.dtype", "fp8", "a100", "variants.q.hardware.gpu"]),
    ({"variants": [{"name": "q", "mode": "shared", "workers": 1, "hardware": {"gpu": "h100",
                                                                             "profile": "vllm-h200"}}]},
     ["variants.0.hardware", "vllm-h200"]),
    ({"prices": {"h100": -1.0}}, ["prices.h100", "greater than or equal to 0"]),
    ({"prices": {"h100": float("nan")}}, ["prices.h100"]),
    ({"prices": {"tpu": 1.0}}, ["prices.tpu", "unknown gpu"]),
])
def test_bad_pool_hardware_and_prices_name_the_field(tmp_path, capsys, patch, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, patch)))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(ScenarioError):
        scenario_from_dict(merge(BASE, patch))


def test_explicit_pool_hardware_equal_to_the_top_level_changes_nothing():
    """Naming the top-level hardware again per pool runs the same simulation: every column of the comparison but
    the wall-clock ones is equal (the default path is the per-pool path with nothing given)."""
    from sunsim.analysis.runner import run_scenario

    plain = make_scenario(workload={"duration_s": 10})
    same = make_scenario(workload={"duration_s": 10}, prefill={"workers": 2, "hardware": {"gpu": "h100"}},
                         variants=[{**v, "hardware": {"gpu": "h100"}} for v in BASE["variants"]])
    a, b = run_scenario(plain).comparison, run_scenario(same).comparison
    wall = ["sim_wall_s", "sim_requests_per_wall_s"]
    pd.testing.assert_frame_equal(a.drop(columns=wall), b.drop(columns=wall))


def test_plan_dollars_are_its_gpu_counts_times_prices(tmp_path):
    """A flat measured profile (tests/test_plan.py's): 5 decode workers at 4.5 req/s, 8 prefill GPUs on H100s and
    the decode pool on H200s, each at its own price; per million tokens at the tokens/s measured at goodput."""
    from sunsim.analysis.planning import plan, plan_rows
    from sunsim.costs.architecture import PRESETS

    step = 0.01
    prof = {"format": "sunsim-profile/1", "name": "flat", "device": {"name": "test"},
            "model": PRESETS["tiny"].as_dict(),
            "dtypes": {"bf16": {"decode": {"batch": [1, 2], "alpha_s": [step, step], "beta_s_per_kv_token": 0.0},
                                "prefill": {"tokens": [1, 1e6], "linear_s": [1e-3, 1e-3], "attn_s_per_token_sq": 0}}}}
    path = tmp_path / "flat.json"
    path.write_text(json.dumps(prof))
    sc = make_scenario(
        model={"preset": "tiny", "tasks": ["m"]}, hardware={"profile": str(path)}, prefill={"workers": 8},
        interconnect={"contention": "none"}, prices={"h100": 2.0, "h200": 5.0},
        workload={"duration_s": 200, "rate": 4.5, "arrivals": {"kind": "gamma", "cv": 0.01},
                  "prompt_tokens": {"kind": "fixed", "value": 100}, "output_tokens": {"kind": "fixed", "value": 101}},
        slo={"ttft_s": 1.0, "tpot_s": 2 * step, "attainment": 0.9},
        variants=[{"name": "d", "mode": "dedicated", "workers": 1, "max_batch": 1, "routing": "round_robin",
                   "hardware": {"gpu": "h200", "profile": str(path)}}])
    [p] = plan(sc, attainment=0.9, goodput=True)
    [row] = plan_rows(sc, [p], profile="flat")
    assert (row["prefill_gpus"], row["min_decode_gpus"]) == (8, 5)
    assert row["usd_per_hour"] == pytest.approx(8 * 2.0 + 5 * 5.0)
    tps = row["goodput_output_tokens_per_s"]
    # about goodput x 101 tokens per request (near-periodic arrivals, every request finished)
    assert tps == pytest.approx(row["goodput_rps"] * 101, rel=0.1)
    assert row["usd_per_million_output_tokens"] == pytest.approx(41.0 / (tps * 3600 / 1e6))


def test_mixed_gpus_scenario_loads_with_a_gpu_per_role():
    from sunsim.scenario import load_scenario

    sc = load_scenario(ROOT / "scenarios" / "mixed-gpus.yaml")
    gpus = {v.name: sc.hardware_for("decode", v).gpu for v in sc.variants}
    assert sc.hardware_for("prefill").gpu == "h100" and len(sc.model.tasks) == 4
    assert sorted(gpus.values()) == ["h100", "h200", "l40s", "l40s"]
    assert np.isfinite([sc.prices[g] for g in gpus.values()]).all()


def test_plan_cli_prices_the_planned_fleet_and_notes_a_missing_price(tmp_path, capsys):
    data = merge(BASE, {"prefill": {"workers": 1}, "prices": {"h100": 1.5, "l40s": None},
                        "variants": [{"name": "sun", "mode": "shared", "workers": 1, "hardware": {"gpu": "h200"}},
                                     {"name": "cheap", "mode": "shared", "workers": 1, "hardware": {"gpu": "l40s"}}]})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "plan"
    assert main(["plan", str(path), "--seeds", "1", "--duration", "5", "--no-goodput", "--max-gpus", "64",
                 "--out", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "prices.l40s" in text
    rows = pd.read_csv(out / "plan_summary.csv").set_index("variant")
    sun = rows.loc["sun"]
    assert sun["usd_per_hour"] == pytest.approx(4 * 1.5 + sun["min_decode_gpus"] * default_prices()["h200"])
    assert f"{sun['usd_per_hour']:,.2f}" in text
    assert math.isnan(rows.loc["cheap", "usd_per_hour"])
    assert rows.loc["sun", "profile"] == "vllm-h200" and rows.loc["cheap", "profile"] == "vllm-l40s"
