"""The fleet-at-scale section: every GPU count, dollar figure and share it states is the planned fleets' own."""

from __future__ import annotations

import pandas as pd
import pytest

from sunsim.experiments.fleet import (
    fleet_section,
    fleet_table,
    mixed_gpu_finding,
    multiplexing_finding,
    plans,
    prices,
    versus,
)
from sunsim.experiments.pipeline import EXPERIMENTS, OPTIONAL, SWEEPS

H100, H200 = 6.0, 8.0  # USD per GPU-hour of the synthetic plans
ON_DEMAND = '{"resident": 4, "load_GBps": 64}'  # the CSV cell of a multiplexed point


def _plan(fleets: dict[tuple[int, bool], dict[str, tuple[int, int]]]) -> pd.DataFrame:
    """Plan rows from (models, multiplexed) -> design -> (prefill GPUs, decode GPUs), priced like the planner:
    prefill on H100, decode on H100 except the mixed variant's (H200)."""
    rows = []
    for (tasks, mux), designs in fleets.items():
        for v, (pre, dec) in designs.items():
            usd = pre * H100 + dec * (H200 if v == "sun-h200" else H100)
            rows.append({"model.tasks": tasks, "prefill.on_demand": ON_DEMAND if mux else None, "variant": v,
                         "seed": 1, "status": "ok", "rate": 400, "prefill_gpus": pre, "min_decode_gpus": dec,
                         "total_gpus": pre + dec, "usd_per_hour": usd,
                         "usd_per_million_output_tokens": usd / 3.6})
    return pd.DataFrame(rows)


FLEETS = {
    (16, False): {"dedicated": (20, 30), "multi-lora": (20, 10), "sun": (20, 5), "qsun": (20, 4), "sun-h200": (20, 3)},
    (16, True): {"dedicated": (12, 30), "multi-lora": (12, 10), "sun": (12, 5), "qsun": (12, 4), "sun-h200": (12, 3)},
    (256, False): {"dedicated": (257, 256), "multi-lora": (257, 40), "sun": (257, 20), "qsun": (257, 16),
                   "sun-h200": (257, 15)},
    (256, True): {"dedicated": (30, 256), "multi-lora": (30, 40), "sun": (32, 20), "qsun": (30, 16),
                  "sun-h200": (30, 20)},
}


def test_the_table_lists_gpus_and_dollars_per_design():
    lines = fleet_table(plans(_plan(FLEETS)))
    assert lines[0] == "| models | prefill | dedicated | multi-LoRA | SUN | QSUN (int4) | SUN, decode on H200 |"
    assert lines[2] == ("| 16 | a pool per model | 50 (20 + 30) / $300 | 30 (20 + 10) / $180 | 25 (20 + 5) / $150 | "
                        "24 (20 + 4) / $144 | 23 (20 + 3) / $144 |")  # 20 x 6 + 3 x 8
    assert lines[5].startswith("| 256 | multiplexed | 286 (30 + 256) / $1,716 |")


def test_sun_against_dedicated_and_multi_lora_per_prefill_setting():
    p = plans(_plan(FLEETS))
    said = " ".join(versus(p, "sun", "dedicated"))
    # 16 models, a pool per model: 1 - 25/50 = 50%; 256: 1 - 277/513 = 46%; decode 1 - 5/30, 1 - 20/256; dollars
    # the same shares as GPUs (all H100)
    assert ("prefill a pool per model: SUN needs 46% to 50% fewer GPUs (decode alone: 83% to 92% fewer) and costs "
            "46% to 50% less per hour") in said
    assert "16 models: 25 against 50 GPUs, $150 against $300 per hour; 256 models: 277 against 513 GPUs" in said
    said = " ".join(versus(p, "sun", "multi-lora"))
    assert "prefill multiplexed: SUN needs 23% to 26% fewer GPUs" in said  # 1 - 17/22, 1 - 52/70
    said = " ".join(versus(p, "qsun", "sun"))
    assert "prefill multiplexed: QSUN (int4) needs 6% to 12% fewer GPUs" in said  # 1 - 16/17, 1 - 46/52
    # a design needing more is said so
    more = dict(FLEETS)
    more[(16, True)] = {**FLEETS[(16, True)], "sun": (12, 14)}
    said = " ".join(versus(plans(_plan(more)), "sun", "multi-lora"))
    assert "prefill multiplexed: SUN needs from 26% fewer to 18% more GPUs" in said  # 1 - 52/70; 26/22 - 1


def test_multiplexing_and_mixed_gpu_findings_follow_the_plans():
    p = plans(_plan(FLEETS))
    text = multiplexing_finding(p)[0]
    # 16 models: prefill 12 everywhere instead of 20; totals 42/50 (16%) ... 15/23 (35%); dollars 252/300 (16%)
    # ... 96/144 (33%)
    assert ("at 16 models prefill takes 12 GPUs instead of 20, 16% to 35% fewer GPUs in all, 16% to 33% less "
            "per hour") in text
    assert "at 256 models prefill takes 30 to 32 GPUs instead of 257" in text
    assert "load only adapters: 12, 30 GPUs at 16, 256 models, against 12, 32 for SUN's" in text
    text = mixed_gpu_finding(p)[0]
    # decode 3 vs 5 (40% fewer), 15 vs 20 (25%), 20 vs 20 (0%); dollars 144 vs 150 (4% less), 96 vs 102 (6%
    # less), 1662 vs 1662, 340 vs 312 (9% more)
    assert "it needs 0% to 40% fewer decode GPUs" in text
    assert "16 models, prefill multiplexed: 3 decode GPUs against 5, $96 against $102 per hour" in text
    assert "costs from 6% less to 9% more per hour" in text
    assert prices(p) == "H100 at $6.000 per GPU-hour, H200 at $8.000"


def test_sentences_change_with_the_data():
    p = plans(_plan(FLEETS))
    cheap = {k: {**v, "sun": (v["sun"][0], v["sun"][1] * 2)} for k, v in FLEETS.items()}
    assert versus(p, "sun", "dedicated") != versus(plans(_plan(cheap)), "sun", "dedicated")
    assert mixed_gpu_finding(p) != mixed_gpu_finding(plans(_plan(cheap)))


def test_the_worst_seed_counts_and_failed_points_are_left_out():
    two = pd.concat([_plan(FLEETS), _plan(FLEETS).assign(seed=2, total_gpus=lambda d: d.total_gpus + 1,
                                                          usd_per_hour=lambda d: d.usd_per_hour + 6)])
    bad = _plan(FLEETS).assign(status="error", total_gpus=999)
    p = plans(pd.concat([two, bad]))
    sun = p[(p.variant == "sun") & (p["model.tasks"] == 16) & ~p.multiplexed].iloc[0]
    assert (sun.total, sun.usd) == (26, 156)


def test_the_section_is_left_out_without_its_plans_and_written_with_them():
    assert fleet_section({}, {}) == []
    lines = fleet_section({}, {"plan-fleet": _plan(FLEETS)})
    assert lines[0] == "## Fleet at scale"
    assert "16, 256 task models" in lines[2] and "at 400 req/s" in lines[2] and "1 seed(s)" in lines[2]


def test_the_sweep_is_registered_optional_and_parses():
    from sunsim.analysis.sweep import load_sweep

    assert "plan-fleet" in SWEEPS and "plan-fleet" in OPTIONAL
    sweep = load_sweep(EXPERIMENTS / "plan-fleet.yaml")
    assert sweep.spec.mode == "plan" and sweep.spec.prefill
    scenarios = [sweep.scenario(pt) for pt in sweep.points]
    assert sorted({len(sc.model.tasks) for sc in scenarios}) == [16, 64, 256]
    assert sorted(sc.prefill.shared for sc in scenarios) == [False] * 3 + [True] * 3
    mixed = [v for v in scenarios[0].variants if v.name == "sun-h200"]
    assert mixed and scenarios[0].hardware_for("decode", mixed[0]).gpu == "h200"
    assert {v.name for v in scenarios[0].variants} >= {"dedicated", "multi-lora", "sun", "qsun"}


@pytest.mark.parametrize("column", ["prefill.on_demand", "prefill.models_per_gpu"])
def test_either_multiplexing_column_is_read(column):
    from sunsim.experiments.fleet import multiplexed

    df = pd.DataFrame({column: [None, ON_DEMAND] if column == "prefill.on_demand" else [1, 4]})
    assert multiplexed(df).tolist() == [False, True]


def test_equal_fleets_are_said_to_be_equal():
    same = {k: {**v, "qsun": v["sun"]} for k, v in FLEETS.items()}
    said = " ".join(versus(plans(_plan(same)), "qsun", "sun"))
    assert "QSUN (int4) needs as many GPUs (decode alone: as many) and costs the same per hour" in said
