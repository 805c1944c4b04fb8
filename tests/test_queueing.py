"""The simulator against queueing theory nobody here wrote.

One model, one decode worker limited to batch 1, so the decode worker is a single FCFS
server whose service is KV transfer plus the request's decode iterations. Many prefill
workers start every prompt at once and take the same time for every prompt, so requests
reach the decode worker as a Poisson stream shifted by a constant.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload

from .conftest import make_scenario


def _single_server(output: dict, rate: float, n: int, seed: int, profile=None):
    sc = make_scenario(
        seed=seed,
        model={"preset": "tiny" if profile else "llama-3.1-8b", "tasks": ["a"]},
        prefill={"workers": 64, "routing": "least_loaded"},
        interconnect={"contention": "none"},
        hardware={"profile": profile or "analytic"},
        workload={"duration_s": None, "num_requests": n, "rate": rate,
                  "prompt_tokens": {"kind": "fixed", "value": 256}, "output_tokens": output,
                  "popularity": {"kind": "zipf", "s": 0.0}},
        variants=[{"name": "d", "mode": "dedicated", "workers": 1, "max_batch": 1}],
        sim={"drain_s": 1e6},
    )
    stream = build_workload(sc)
    prof = json.loads(open(profile).read()) if profile else None
    res = simulate_variant(sc, sc.variants[0], stream, prof)
    r = res.records
    transfer = res.interconnect.duration(256)  # the prompt's KV moves
    service_start = r.decode_start_s - transfer
    wait = service_start - r.first_token_s
    service = r.finish_s - service_start
    assert np.all(np.isfinite(r.finish_s))  # every request finished
    return wait, service


def _pilot_service(output: dict, profile=None) -> float:
    _, service = _single_server(output, rate=1e-3, n=3, seed=0, profile=profile)
    return float(service.mean())


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait_matches_pollaczek_khinchine(rho):
    out = {"kind": "fixed", "value": 64}
    d = _pilot_service(out)
    waits = []
    for seed in range(4):
        wait, service = _single_server(out, rate=rho / d, n=60_000, seed=seed)
        np.testing.assert_allclose(service, d, rtol=1e-9)  # deterministic service
        waits.append(wait.mean())
    theory = rho * d / (2 * (1 - rho))  # Pollaczek-Khinchine for M/D/1
    print(f"rho={rho} simulated {np.mean(waits):.5f} theory {theory:.5f}")
    assert abs(np.mean(waits) / theory - 1) < 0.05, (np.mean(waits), theory)


@pytest.fixture
def flat_profile(tmp_path):
    """A profile whose decode step takes a constant 10 ms whatever the batch's KV."""
    from sunsim.costs.architecture import PRESETS

    prof = {
        "format": "sunsim-profile/1", "name": "flat-10ms", "kind": "measured",
        "device": {"name": "test-device"}, "model": PRESETS["tiny"].as_dict(),
        "dtypes": {"bf16": {
            "decode": {"batch": [1, 2], "alpha_s": [0.01, 0.01], "beta_s_per_kv_token": 0.0},
            "prefill": {"tokens": [1, 100000], "linear_s": [1e-3, 1e-3], "attn_s_per_token_sq": 0.0},
        }},
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(prof))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mm1_like_geometric_service(rho, flat_profile):
    """Geometric output lengths x a constant step: memoryless service, where P-K is exact.

    A request of L output tokens spends L - 1 steps of 10 ms in decode (its first token comes
    from prefill; L = 1 never reaches decode). Given L >= 2, G = L - 1 is again geometric, so the
    decode server sees Poisson arrivals at lambda (1 - p) and service S = transfer + 10 ms x G.
    The P-K mean wait lambda' E[S^2] / (2 (1 - rho)) is exact for this M/G/1 and is within a
    percent of M/M/1's rho / (mu - lambda') because the service is nearly exponential.
    """
    mean_len = 100.0
    p, step = 1 / mean_len, 0.01
    transfer = _pilot_service({"kind": "fixed", "value": 2}, profile=flat_profile) - step
    eg, eg2 = 1 / p, (2 - p) / p**2
    es = transfer + step * eg
    es2 = transfer**2 + 2 * transfer * step * eg + step**2 * eg2
    lam_server = rho / es
    waits = []
    for seed in range(4):
        wait, _ = _single_server({"kind": "geometric", "mean": mean_len}, rate=lam_server / (1 - p), n=60_000,
                                 seed=seed, profile=flat_profile)
        waits.append(np.nanmean(wait))
    theory = lam_server * es2 / (2 * (1 - rho))
    print(f"rho={rho} simulated {np.mean(waits):.5f} theory {theory:.5f}")
    assert abs(np.mean(waits) / theory - 1) < 0.05, (np.mean(waits), theory)
    mm1 = rho / (1 / es - lam_server)
    assert abs(theory / mm1 - 1) < 0.02
