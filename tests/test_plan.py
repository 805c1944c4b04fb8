"""Capacity planning against a case solved by hand, and monotone in load."""

from __future__ import annotations

import json
import math

import pytest

from sunsim.cli import main
from sunsim.planning import plan
from sunsim.scenario import ScenarioError

from .conftest import make_scenario

STEP = 0.01  # s per decode iteration, whatever the batch (a flat measured profile)
OUTPUT = 101  # tokens: 100 decode iterations = 1 s of decode per request


@pytest.fixture
def flat_profile(tmp_path):
    from sunsim.architecture import PRESETS

    prof = {"format": "sunsim-profile/1", "name": "flat", "device": {"name": "test"},
            "model": PRESETS["tiny"].as_dict(),
            "dtypes": {"bf16": {"decode": {"batch": [1, 2], "alpha_s": [STEP, STEP], "beta_s_per_kv_token": 0.0},
                                "prefill": {"tokens": [1, 1e6], "linear_s": [1e-3, 1e-3], "attn_s_per_token_sq": 0}}}}
    path = tmp_path / "flat.json"
    path.write_text(json.dumps(prof))
    return str(path)


def _scenario(rate: float, profile: str, mode: str = "dedicated"):
    # Near-periodic arrivals, one model, batch 1 per worker, round robin: worker j serves every
    # k-th request, so it keeps up iff k / rate exceeds its service time (about 1 s), and the
    # fewest workers meeting a TPOT target of 2 steps is ceil(rate x service time).
    return make_scenario(
        model={"preset": "tiny", "tasks": ["m"]},
        hardware={"profile": profile},
        prefill={"workers": 8},
        interconnect={"contention": "none"},
        workload={"duration_s": 200, "rate": rate, "arrivals": {"kind": "gamma", "cv": 0.01},
                  "prompt_tokens": {"kind": "fixed", "value": 100}, "output_tokens": {"kind": "fixed", "value": OUTPUT}},
        slo={"ttft_s": 1.0, "tpot_s": 2 * STEP, "attainment": 0.9},
        variants=[{"name": mode, "mode": mode, "workers": 1, "max_batch": 1, "routing": "round_robin"}],
    )


@pytest.mark.parametrize("rate", [2.5, 4.5, 7.5])
def test_plan_matches_hand_computed_worker_count(rate, flat_profile):
    sc = _scenario(rate, flat_profile)
    service = (OUTPUT - 1) * STEP  # + a microsecond-scale KV transfer
    expected = math.ceil(rate * service * 1.0001)
    [p] = plan(sc, attainment=0.9, goodput=False)
    assert p.decode_gpus == expected


def test_plan_is_monotone_in_load(flat_profile):
    counts = []
    for rate in [1.5, 3.5, 5.5, 9.5]:
        [p] = plan(_scenario(rate, flat_profile, mode="shared"), attainment=0.9, goodput=False)
        counts.append(p.decode_gpus)
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_shared_needs_no_more_decode_gpus_than_dedicated_under_skew():
    sc = make_scenario(workload={"rate": 120, "duration_s": 60, "popularity": {"kind": "zipf", "s": 1.5}},
                       prefill={"workers": 4})
    ded, sun = plan(sc, attainment=0.9, goodput=False)
    assert sun.decode_gpus < ded.decode_gpus


def test_unreachable_slo_is_an_error(tmp_path, capsys):
    import yaml

    from .conftest import BASE, merge

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"workload": {"duration_s": 10}})))
    code = main(["plan", str(path), "--slo-tpot", "0.001", "--max-gpus", "8", "--no-goodput",
                 "--out", str(tmp_path / "plan")])
    assert code != 0
    assert "unreachable SLO" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "plan").exists()
    with pytest.raises(ScenarioError):
        plan(make_scenario(slo={"ttft_s": 1e-4}), attainment=0.9, size_prefill=True, max_gpus=4, goodput=False)
