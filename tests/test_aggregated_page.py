"""The aggregated-serving section: every GPU count and share it states is the planned fleets' own."""

from __future__ import annotations

import pandas as pd

from sunsim.experiments.aggregated import aggregated_section, fleet_table, one_model_finding, sun_vs_aggregated


def _plan(gpus: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """Two seeds of one configuration: (total GPUs of seed 1, of seed 2) per design."""
    rows = []
    for v, by_seed in gpus.items():
        for seed, total in zip((1, 2), by_seed):
            rows.append({"model.tasks": 4, "workload.popularity.s": 1.0, "variant": v, "seed": seed, "status": "ok",
                         "total_gpus": total, "prefill_gpus": 0 if v.startswith("aggregated") else 6,
                         "goodput_rps_per_gpu": 10.0 + seed, "rate": 240})
    return pd.DataFrame(rows)


def test_fleet_table_takes_the_most_gpus_and_the_worst_goodput_over_seeds():
    lines, gpus = fleet_table(_plan({"dedicated": (20, 22), "aggregated": (24, 23), "aggregated-lora": (18, 19),
                                     "sun": (15, 16), "qsun": (13, 13)}))
    assert lines[2] == "| 4 | 1 | 22 / 11.00 | 24 / 11.00 | 19 / 11.00 | 16 / 11.00 | 13 / 11.00 |"
    said = " ".join(sun_vs_aggregated(gpus))
    assert "SUN needs 16% fewer GPUs (4 models at Zipf 1: 16 against 19)" in said  # 1 - 16/19
    assert "QSUN needs 32% fewer GPUs than aggregated multi-LoRA" in said  # 1 - 13/19
    assert "SUN against aggregated dedicated**: SUN needs 33% fewer GPUs" in said  # 1 - 16/24


def test_sun_needing_more_is_said_so():
    _, gpus = fleet_table(_plan({"aggregated-lora": (10, 10), "sun": (12, 12)}))
    assert "SUN needs 20% more GPUs (4 models at Zipf 1: 12 against 10)" in " ".join(sun_vs_aggregated(gpus))


def test_one_model_counts_disaggregation_wins_ties_and_losses():
    rows = []
    for rate, (d, a) in {100: (4, 5), 193: (8, 8), 400: (17, 16)}.items():
        for v, total, pre in (("disaggregated", d, d // 2), ("aggregated", a, 0)):
            rows.append({"workload.rate": rate, "variant": v, "seed": 1, "status": "ok", "total_gpus": total,
                         "prefill_gpus": pre, "goodput_rps_per_gpu": 1.0})
    text = one_model_finding(pd.DataFrame(rows))[0]
    assert "at 100 req/s disaggregated serving needs 4 GPUs (2 prefill + 2 decode), 20% fewer GPUs than" in text
    assert "at 193 req/s disaggregated serving needs 8 GPUs (4 prefill + 4 decode), as many GPUs as" in text
    assert "6% more GPUs than aggregated serving's 16" in text
    assert "fewer GPUs at 1, as many at 1, more at 1 of 3 rates" in text


def test_the_section_is_left_out_without_its_plans():
    assert aggregated_section({}, {}) == []


def test_suns_prefill_share_is_read_from_its_plan():
    from sunsim.experiments.aggregated import prefill_share

    text = prefill_share(_plan({"sun": (15, 16), "aggregated": (12, 12)}))[0]
    assert "4 models at Zipf 1: 6 of 16" in text  # prefill 6 (the fixture's), total the most over seeds
