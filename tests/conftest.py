"""Shared helpers: small scenarios built in code, and the path of the real trace."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from sunsim.scenario import Scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "scenarios" / "traces" / "azure-conv-2023.csv"

BASE: dict = {
    "name": "t",
    "seed": 7,
    "model": {"preset": "llama-3.1-8b", "tasks": ["a", "b", "c", "d"]},
    "hardware": {"gpu": "h100"},
    "interconnect": {"kind": "ib-ndr", "contention": "per_decode_worker"},
    "prefill": {"workers": 2, "max_batch_tokens": 8192},
    "workload": {
        "duration_s": 30,
        "rate": 40,
        "arrivals": {"kind": "poisson"},
        "popularity": {"kind": "zipf", "s": 1.0},
        "prompt_tokens": {"kind": "lognormal", "mean": 512, "sigma": 0.5, "max": 4096},
        "output_tokens": {"kind": "lognormal", "mean": 128, "sigma": 0.7, "max": 1024},
    },
    "slo": {"ttft_s": 1.0, "tpot_s": 0.025},
    "variants": [
        {"name": "dedicated", "mode": "dedicated", "workers": 1},
        {"name": "sun", "mode": "shared", "workers": 4},
    ],
}


def merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and "kind" not in v:
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_scenario(**patch) -> Scenario:
    return scenario_from_dict(merge(BASE, patch))


@pytest.fixture
def base_dict() -> dict:
    return copy.deepcopy(BASE)
