"""The results page's sentences follow their tables: change a table, the sentence changes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunsim.experiments.beyond import routing_finding, run_findings, short_outputs_finding
from sunsim.experiments.claims import claims
from sunsim.experiments.paper import baselines_finding
from sunsim.experiments.wording import versus


def test_versus_picks_the_word_from_the_data():
    assert versus([10, 11], [7, 8]) == "beats"
    assert versus([7, 8], [10, 11]) == "loses to"
    assert versus([7, 10], [9, 12]) == "is within the spread of"
    assert versus([7, 8], [10, 11], higher_is_better=False) == "beats"  # lower latency wins
    assert versus([100], [100.4], tol=0.005, within="is within 1% of") == "is within 1% of"


def _routing(tpot: dict[str, list[float]], met: float = 1.0) -> pd.DataFrame:
    rows = []
    for policy, values in tpot.items():
        for seed, v in enumerate(values):
            for variant in ("sun", "qsun"):
                rows.append({"status": "ok", "seed": seed, "variant": variant, "variants.sun.routing": policy,
                             "variants.qsun.routing": policy, "tpot_p90_s": v, "slo_attainment": met,
                             "requests_per_s": 320.0})
    return pd.DataFrame(rows)


def test_routing_sentence_follows_the_table():
    s = routing_finding(_routing({"round_robin": [0.0146, 0.0148], "least_kv": [0.0139, 0.0141]}))
    assert "`least_kv` beats round robin" in s and "from 14.0 ms (`least_kv`) to 14.7 ms (`round_robin`)" in s
    assert "the SLO holds with all of them" in s and "320 req/s completed" in s
    # Swap which policy is faster: the numbers and the word change with it.
    s = routing_finding(_routing({"round_robin": [0.0139, 0.0141], "least_kv": [0.0146, 0.0148]}))
    assert "`least_kv` loses to round robin" in s and "from 14.0 ms (`round_robin`) to 14.7 ms (`least_kv`)" in s
    s = routing_finding(_routing({"round_robin": [0.0139, 0.0146], "least_kv": [0.0140, 0.0147]}, met=0.5))
    assert "`least_kv` is within the seed spread of round robin" in s and "the SLO fails with all of them" in s


def _plan(sun_goodput: float, sun_gpus: int = 4) -> pd.DataFrame:
    rows = []
    for s in (0.0, 1.0):
        for seed in (1, 2):
            for v, g, n in (("dedicated", 10.0, 5), ("dedicated-even", 8.0, 5), ("sun", sun_goodput, sun_gpus),
                            ("qsun", sun_goodput, sun_gpus)):
                rows.append({"status": "ok", "seed": seed, "model.tasks": 4, "workload.popularity.s": s,
                             "variant": v, "goodput_rps_per_gpu": g * (1 + 0.01 * seed), "min_decode_gpus": n,
                             "rate": 240, "goodput_gpus": 32, "prefill_gpus": 24})
    return pd.DataFrame(rows)


def _skew(sun_tpot: float) -> pd.DataFrame:
    rows = []
    for s in (0.0, 1.0):
        for seed in (1, 2):
            for v, t in (("dedicated", 0.010), ("sun", sun_tpot), ("qsun", 0.005)):
                rows.append({"status": "ok", "seed": seed, "model.preset": "llama-3.1-8b", "model.tasks": 4,
                             "workload.popularity.s": s, "variant": v, "tpot_mean_s": t, "slo_attainment": 1.0})
    return pd.DataFrame(rows)


def test_claims_are_restated_with_intervals_and_verdicts():
    rows = dict(claims({"plan-skew": _plan(25.0), "skew": _skew(0.0101)}))
    thr = rows["up to 2.0x throughput per GPU"]
    assert "up to 2.50x" in thr and "over 4 plans: 2 configurations x 2 seed(s)" in thr and "exceeds" in thr
    assert "+1% to +1%" in rows["TPOT within 5%"] and "; holds" in rows["TPOT within 5%"]
    assert "up to 20% fewer" in rows["up to 50% fewer decode GPUs"]
    assert "falls short of" in rows["up to 50% fewer decode GPUs"]
    # the paper's measure: TPOT 1 - 5.0 / 10.1 = 50% lower, the speed-up 10.1 / 5.0 = 2.02x beside it
    assert "50% lower than SUN's" in rows["QSUN: TPOT reduced by up to 45%"]
    assert "a 2.02x speed-up" in rows["QSUN: TPOT reduced by up to 45%"]
    assert "exceeds" in rows["QSUN: TPOT reduced by up to 45%"]
    # Other data, other numbers and words.
    rows = dict(claims({"plan-skew": _plan(12.0, sun_gpus=2), "skew": _skew(0.0120)}))
    assert "up to 1.20x" in rows["up to 2.0x throughput per GPU"]
    assert "falls short of" in rows["up to 2.0x throughput per GPU"]
    assert "does not hold" in rows["TPOT within 5%"] and "+20%" in rows["TPOT within 5%"]
    assert "up to 60% fewer" in rows["up to 50% fewer decode GPUs"] and "exceeds" in rows["up to 50% fewer decode GPUs"]


def _fixed_layout(even_attainment: float) -> pd.DataFrame:
    """Skew-sweep rows on one fixed layout of 8 decode GPUs, 4 and 8 models at Zipf 0 and 2."""
    rows = []
    for models in (4, 8):
        for s in (0.0, 2.0):
            for v, att in (("dedicated", 0.6), ("dedicated-even", even_attainment), ("sun", 1.0)):
                rows.append({"status": "ok", "seed": 1, "model.preset": "llama-3.1-8b", "model.tasks": models,
                             "workload.popularity.s": s, "variant": v, "slo_attainment": att,
                             "tokens_per_s_per_gpu": 2000.0 * att, "tpot_p90_s": 0.012 / att, "decode_gpus": 8})
    return pd.DataFrame(rows)


def test_baselines_sentence_is_per_model_count_on_the_fixed_layout():
    s = baselines_finding(_fixed_layout(0.3))
    assert "(fixed layout, Zipf 2)" in s
    assert "4 models: 30.0% of requests in SLO evenly split against 60.0% sized to traffic (600 against 1,200" in s
    assert "8 models: 30.0%" in s
    assert "80.0% of requests in SLO evenly split" in baselines_finding(_fixed_layout(0.8))


def test_fixed_layout_finding_computes_the_saturating_pool():
    from sunsim.experiments.paper import fixed_layout_finding, zipf_shares
    from sunsim.scenario import split_by_share

    s = fixed_layout_finding(_fixed_layout(0.3))
    shares = zipf_shares(8, 2.0)  # 8 models on 8 GPUs: one each, the hottest carries 1 / H(8, 2) of the traffic
    assert split_by_share(8, np.array(shares)) == [1] * 8
    assert f"carries {shares[0]:.1%} of the traffic on 1 of them" in s
    assert f"saturates at 1/{shares[0] * 8:.2f} of the load" in s and "1/5.24" in s
    assert "dedicated 60.0% in SLO" in s


def _short(kv_short: float, sun_gain_short: float) -> pd.DataFrame:
    rows = []
    for out, kv, batch, gain in ((24, kv_short, 5.0, sun_gain_short), (200, 0.05, 69.0, 0.03)):
        for seed in (1, 2):
            for v in ("dedicated", "sun"):
                tpot = 0.010 * (1 - gain if v == "sun" else 1)
                rows.append({"status": "ok", "seed": seed, "variant": v, "workload.output_tokens.value": out,
                             "tpot_mean_s": tpot, "kv_wait_mean_s": kv * (tpot * (out - 1)),
                             "decode_mean_batch": batch})
    return pd.DataFrame(rows)


def test_short_outputs_finding_is_computed_from_its_table():
    s = short_outputs_finding(_short(kv_short=0.4, sun_gain_short=0.01))
    assert "takes 40% of a request's time after its first token" in s
    assert "the KV link, not decode compute" in s and "batches average 5.0 requests against 69.0" in s
    assert "SUN's mean-TPOT gain over dedicated pools (1.0%) is smaller than the 200-token one (3.0%)" in s
    s = short_outputs_finding(_short(kv_short=0.01, sun_gain_short=0.10))
    assert "takes 1% of" in s and "decode compute still dominates" in s and "(10.0%) is larger than" in s


def test_run_findings_follow_the_comparison(tmp_path):
    def write(sun_tpot: float, sun_met: float) -> None:
        d = tmp_path / "shift"
        d.mkdir(exist_ok=True)
        pd.DataFrame({"variant": ["dedicated", "sun"], "tpot_p90_s": [0.294, sun_tpot],
                      "slo_attainment": [0.731, sun_met], "requests_per_s": [200.0, 200.0]}).to_csv(
            d / "comparison.csv", index=False)

    write(0.010, 1.0)
    [s] = run_findings({"shift": tmp_path / "shift"})
    assert "SUN's TPOT p90 (10.0 ms) beats dedicated pools' (294.0 ms)" in s
    assert "SLO attainment 100.0% (SUN) vs 73.1% (dedicated)" in s
    write(0.500, 0.5)
    [s] = run_findings({"shift": tmp_path / "shift"})
    assert "(500.0 ms) loses to" in s and "50.0% (SUN)" in s


def _headline_rows(sun_x: dict[float, float]) -> pd.DataFrame:
    """Headline rows where multi-LoRA is the strongest alternative at 10 req/s per GPU and SUN gets ``x`` of it."""
    from sunsim.experiments.claims import _strongest

    rows = []
    for s, x in sun_x.items():
        row = {"models": "4", "zipf_s": s, "goodput_per_gpu_dedicated": 6.0,
               "goodput_per_gpu_colocated": 8.0, "goodput_per_gpu_multi-lora": 10.0, "goodput_per_gpu_sun": 10.0 * x,
               "total_gpus_dedicated": 32, "total_gpus_colocated": 30, "total_gpus_multi-lora": 25,
               "total_gpus_sun": 20}
        row.update(_strongest(row))
        rows.append(row)
    return pd.DataFrame(rows)


def test_strongest_alternative_sentence_follows_the_table():
    from sunsim.experiments.paper import strongest_alternative_finding

    table = _headline_rows({0.0: 1.01, 1.0: 1.30})
    assert list(table["strongest_goodput"]) == ["multi-lora", "multi-lora"]
    assert list(table["fewest_gpus"]) == ["multi-lora", "multi-lora"]
    s = strongest_alternative_finding(table)
    assert "it is multi-lora in 2 of 2 configurations" in s and "1.01 to 1.30x of it" in s
    assert "wins by more than 2% in 1 (most at 4 models at Zipf 1 (1.30x vs multi-lora))" in s
    assert "within 2% in 1" in s and "loses in 0" in s and "SUN saves 20% against" in s
    # SUN falls behind at high skew: the sentence names where it loses.
    s = strongest_alternative_finding(_headline_rows({0.0: 1.01, 2.0: 0.80}))
    assert "wins by more than 2% in 0" in s and "loses in 1 (4 models at Zipf 2 (0.80x vs multi-lora))" in s


def test_qsun_load_finding_reports_the_papers_measure_at_light_and_heavy_load():
    from sunsim.experiments.paper import qsun_load_finding

    rows = []
    for rate, sun, qsun, met in ((60, 0.010, 0.006, 1.0), (240, 0.020, 0.016, 0.95), (480, 0.050, 0.030, 0.5)):
        for variant, tpot in (("sun", sun), ("qsun", qsun)):
            rows.append({"workload.output_tokens.mean": 200, "workload.rate": rate, "variant": variant,
                         "tpot_p50_s": tpot, "slo_attainment": met, "decode_mean_batch": rate / 10,
                         "status": "ok"})
    text = qsun_load_finding(pd.DataFrame(rows))
    assert "light load (60 req/s" in text and "10.0 -> 6.0 ms, 40% lower (1.67x)" in text
    # under load: the heaviest rate at which both still meet the SLO (240, not 480)
    assert "under load (240 req/s" in text and "20.0 -> 16.0 ms, 20% lower (1.25x)" in text
    assert "480 req/s" not in text


def test_routing_across_workloads_names_the_policy_that_measures_best():
    from sunsim.experiments.beyond import routing_across_workloads

    rows = []
    # least_kv is best at both rates, round_robin 10% and 30% behind
    from sunsim.scenario.serving import POOL_ROUTING

    for rate, tpots in ((240, {"least_kv": 0.010, "round_robin": 0.011, POOL_ROUTING: 0.0105}),
                        (320, {"least_kv": 0.020, "round_robin": 0.026, POOL_ROUTING: 0.021})):
        for policy, t in tpots.items():
            for seed in (1, 2):
                rows.append({"status": "ok", "seed": seed, "variant": "sun", "variants.sun.routing": policy,
                             "workload.rate": rate, "tpot_p90_s": t, "slo_attainment": 1.0, "requests_per_s": rate})
    text = routing_across_workloads(pd.DataFrame(rows))
    assert "Across the 2 workloads (workload.rate), `least_kv` measures best" in text
    assert f"`round_robin` {np.sqrt(1.1 * 1.3):.3f}" in text and "`least_kv` 1.000" in text
    assert "best in 2 of 2" in text and f"the scenario default is `{POOL_ROUTING}` (+5.0% against" in text
    assert routing_across_workloads(pd.DataFrame(rows)[lambda d: d["workload.rate"] == 240]) == ""
