"""Aggregated serving (prefill and decode on one GPU, chunked prefill): times derived by hand from the
cost model's own functions, conservation under memory pressure, the schema's refusals."""

from __future__ import annotations

import numpy as np
import pytest

from sunsim.analysis.metrics import request_table, summarize
from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import GPUS
from sunsim.costs.model import AnalyticCostModel, decode_step_time
from sunsim.scenario import ScenarioError
from sunsim.sim.aggregated import AggregatedState, AggregatedWorker
from sunsim.sim.environment import Environment
from sunsim.sim.kv_policy import KVPolicy
from sunsim.sim.records import Records
from sunsim.sim.variant import check_variant, load_profile, simulate_variant
from sunsim.workload.stream import build_workload
from tests.conftest import make_scenario

COST = AnalyticCostModel(GPUS["h100"], PRESETS["llama-3.1-8b"], "bf16")
PAGED = KVPolicy(policy="paged", watermark=0.0)


def run_worker(arrival, prompt, output, budget, capacity_tokens=1 << 40, block=16, kv=PAGED, max_batch=None):
    """One aggregated worker fed directly; returns its records and the worker."""
    env = Environment()
    prompt, output = np.asarray(prompt, np.int64), np.asarray(output, np.int64)
    rec = Records(len(prompt))
    w = AggregatedWorker(env, 0, COST, capacity_tokens, block, max_batch, budget, prompt, output, rec, kv,
                         AggregatedState(len(prompt)))

    def arrivals():
        for rid in np.argsort(arrival, kind="stable"):
            yield env.timeout(max(0.0, float(arrival[rid]) - env.now))
            w.submit(int(rid))

    env.process(arrivals())
    env.run()
    return rec, w


def test_mixed_time_meets_decode_and_prefill_at_its_ends():
    """No chunks: the decode step; one chunk without prefix: the prefill; a prompt's chunks in one pass add up
    to its causal attention ((c1 + c2)^2), as the unchunked prompt with two sampled rows."""
    for cost in (COST, AnalyticCostModel(GPUS["h100"], PRESETS["llama-3.1-8b"], "fp8")):
        assert cost.mixed_time(7, 9000, []) == pytest.approx(decode_step_time(cost, 7, 9000), rel=1e-12)
        assert cost.mixed_time(0, 0, [(900, 0)]) == pytest.approx(cost.prefill_time(900, 900 ** 2, 1), rel=1e-12)
        assert cost.mixed_time(0, 0, [(300, 0), (600, 300)]) == pytest.approx(
            cost.prefill_time(900, 900 ** 2, 2), rel=1e-12)
        # decode rows add work: more rows, more KV, never less time
        assert cost.mixed_time(8, 8000, [(500, 0)]) > cost.mixed_time(0, 0, [(500, 0)])
        assert cost.mixed_time(8, 8000, [(500, 0)]) > decode_step_time(cost, 8, 8000)


def test_mixed_time_of_the_table_model_meets_its_ends():
    sc = make_scenario()
    from sunsim.sim.variant import cost_model
    cost = cost_model(sc, load_profile(sc), "bf16")
    if not hasattr(cost, "tables"):
        pytest.skip("the default profile is not a table profile here")
    assert cost.mixed_time(5, 6000, []) == pytest.approx(decode_step_time(cost, 5, 6000), rel=1e-12)
    assert cost.mixed_time(0, 0, [(700, 0)]) == pytest.approx(cost.prefill_time(700, 700 ** 2, 1), rel=1e-12)
    a, c = cost.decode_attention(5)
    # a mixed step = the prefill pass over all rows (head over decode rows + 1) + decode attention of the rows
    expect = (cost.prefill_time(705, 700 ** 2, 6) - cost.prefill_attention(705, 700 ** 2).us * 1e-6
              + cost.prefill_attention(700, 700 ** 2).us * 1e-6 + a + c * 6000)
    assert cost.mixed_time(5, 6000, [(700, 0)]) == pytest.approx(expect, rel=1e-12)


def test_single_request_times_by_hand():
    """P <= budget: the first token after one prefill iteration, then O - 1 decode steps at batch 1 over
    P + 1, P + 2, ... KV tokens."""
    P, out, t0 = 700, 40, 0.25
    rec, w = run_worker(np.array([t0]), [P], [out], budget=2048)
    ttft = COST.prefill_time(P, P * P, 1)
    assert rec.prefill_start_s[0] == t0
    assert rec.first_token_s[0] - t0 == pytest.approx(ttft, abs=1e-12)
    assert rec.decode_start_s[0] == rec.first_token_s[0]
    steps = sum(decode_step_time(COST, 1, P + k) for k in range(1, out))
    assert rec.finish_s[0] == pytest.approx(t0 + ttft + steps, abs=1e-9)
    assert (rec.prefill_worker[0], rec.decode_worker[0]) == (0, 0)
    assert np.isnan(rec.kv_ready_s[0]) and np.isnan(rec.decode_admit_s[0])  # nothing is handed over
    assert w.tokens == out - 1 and w.iterations == out and w.mixed_iterations == 1  # decode-only run coalesced
    assert w.events == 2  # one mixed step, one decode run


def test_chunked_prefill_sequence_by_hand():
    """Budget 256 < the prompts. Iterations (decode rows | chunks as (new, prefix)):
    it0: - | r0 (256, 0);  it1: - | r0 (44, 256), r1 (200, 0) -> both first tokens;
    it2: r0@301, r1@201 | -  (r1 done; r2 arrives mid-step and waits for the boundary);
    it3: r0@302 | r2 (255, 0);  it4: r0@303 | r2 (145, 255) -> r0 done (3 decode steps), r2's first token;
    it5: r2@401 | - -> r2 done."""
    T0 = COST.mixed_time(0, 0, [(256, 0)])
    T1 = COST.mixed_time(0, 0, [(44, 256), (200, 0)])
    D2 = decode_step_time(COST, 2, 301 + 201)
    M3 = COST.mixed_time(1, 302, [(255, 0)])
    M4 = COST.mixed_time(1, 303, [(145, 255)])
    D5 = decode_step_time(COST, 1, 401)
    arrival = np.array([0.0, 0.0, T0 + T1 + D2 / 2])
    rec, w = run_worker(arrival, [300, 200, 400], [4, 2, 2], budget=256)
    first = T0 + T1
    assert rec.first_token_s[:2] == pytest.approx([first, first], abs=1e-9)
    assert rec.prefill_start_s[:2] == pytest.approx([0.0, T0], abs=1e-12)
    assert rec.finish_s[1] == pytest.approx(first + D2, abs=1e-9)
    assert rec.prefill_start_s[2] == pytest.approx(first + D2, abs=1e-9)
    assert rec.first_token_s[2] == pytest.approx(first + D2 + M3 + M4, abs=1e-9)
    assert rec.finish_s[0] == pytest.approx(first + D2 + M3 + M4, abs=1e-9)
    assert rec.finish_s[2] == pytest.approx(first + D2 + M3 + M4 + D5, abs=1e-9)
    assert w.mixed_iterations == 4 and w.iterations == 6
    assert w.tokens == (4 - 1) + (2 - 1) + (2 - 1)


def test_mid_run_arrival_cuts_the_decode_run_at_the_next_boundary():
    """A request arriving during a long decode-only run joins at the next iteration boundary: its prefill
    starts exactly when the iteration in progress ends."""
    P, out = 500, 30
    steps = np.cumsum([decode_step_time(COST, 1, P + k) for k in range(1, out)])
    ttft = COST.prefill_time(P, P * P, 1)
    t_arr = ttft + (steps[9] + steps[10]) / 2  # inside the decode step 11 (index 10)
    rec, _ = run_worker(np.array([0.0, t_arr]), [P, 64], [out, 3], budget=4096)
    assert rec.prefill_start_s[1] == pytest.approx(ttft + steps[10], abs=1e-9)
    mixed = COST.mixed_time(1, P + 12, [(64, 0)])
    assert rec.first_token_s[1] == pytest.approx(ttft + steps[10] + mixed, abs=1e-9)


def _burst(n: int, seed: int):
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, 0.5, n))
    prompt = rng.integers(50, 900, n)
    output = rng.integers(1, 300, n)
    return arrival, prompt, output


@pytest.mark.parametrize("kv", [PAGED, KVPolicy(policy="reserve")])
def test_conservation_under_memory_pressure(kv):
    """Every request finishes once; decode tokens + prompts completed = the outputs; memory never over the GPU's;
    the paged policy preempts under pressure (and the reserve one never does)."""
    arrival, prompt, output = _burst(120, 3)
    cap = 16 * 1024  # tokens: a few requests' worth
    rec, w = run_worker(arrival, prompt, output, budget=1024, capacity_tokens=cap, kv=kv)
    assert np.isfinite(rec.finish_s).all() and np.isfinite(rec.first_token_s).all()
    assert (rec.first_token_s >= arrival).all() and (rec.finish_s >= rec.first_token_s).all()
    multi = output > 1
    assert (rec.decode_start_s[multi] >= rec.first_token_s[multi]).all()
    assert w.tokens + w.prefills_done == int(output.sum())
    # a request preempted while decoding recomputes a prefill that yields its next token; one preempted
    # mid-prefill just starts its prompt again
    assert len(output) <= w.prefills_done <= len(output) + w.preemptions
    assert w.peak_blocks <= w.capacity_blocks
    assert w.ledger.used == 0 and w.batch == 0 and w.load == 0 and w.kv_load == 0
    if kv.policy == "paged":
        assert w.preemptions > 0 and int(rec.preemptions.sum()) == w.preemptions
    else:
        assert w.preemptions == 0


def test_unbounded_memory_never_preempts_and_conserves():
    arrival, prompt, output = _burst(80, 5)
    rec, w = run_worker(arrival, prompt, output, budget=512)
    assert w.preemptions == 0 and w.prefills_done == 80
    assert w.tokens == int((output - 1).sum())


def test_variant_end_to_end_counts_pool_gpus_and_repeats():
    """Through the scenario: per-model and LoRA pools finish everything, count only their GPUs (no prefill
    GPUs), and the same seed gives the same records."""
    sc = make_scenario(
        workload={"duration_s": 4, "rate": 20},
        variants=[{"name": "agg", "mode": "aggregated", "workers": {"a": 2, "b": 1, "c": 1, "d": 1},
                   "max_num_batched_tokens": 1024},
                  {"name": "agg-lora", "mode": "aggregated_lora", "workers": 3}])
    stream, profile = build_workload(sc), load_profile(sc)
    for v, n in zip(sc.variants, (5, 3)):
        assert check_variant(sc, v, stream, profile) == {"prefill": 0, "decode": n, "total": n}
        res = simulate_variant(sc, v, stream, profile)
        again = simulate_variant(sc, v, stream, profile)
        for col in ("prefill_start_s", "first_token_s", "decode_start_s", "finish_s"):
            np.testing.assert_array_equal(getattr(res.records, col), getattr(again.records, col))
        s = summarize(res)
        assert s["gpus"] == {"prefill": 0, "decode": n, "total": n}
        assert s["requests"]["unfinished"] == 0
        df = request_table(res)
        assert (df["prefill_worker"] == df["decode_worker"]).all()
        done = sum(w.tokens + w.prefills_done for w in res.decode_workers)
        assert done == int(stream.output_tokens.sum())
        if v.mode == "aggregated":  # each request on a GPU of its own model's pool
            pool = np.asarray(res.decode_pool_of)[df["decode_worker"].to_numpy()]
            assert (pool == df["model"].to_numpy()).all()


@pytest.mark.parametrize("field, value", [("models_per_gpu", 2), ("rebalance", {"every_s": 10})])
def test_fields_that_do_not_apply_are_refused(field, value):
    with pytest.raises(ScenarioError, match=field):
        make_scenario(variants=[{"name": "agg", "mode": "aggregated", "workers": 1, field: value}])


def test_schema_refusals():
    with pytest.raises(ScenarioError, match="max_num_batched_tokens"):
        make_scenario(variants=[{"name": "sun", "mode": "shared", "workers": 2, "max_num_batched_tokens": 512}])
    with pytest.raises(ScenarioError, match="one worker count"):
        make_scenario(variants=[{"name": "l", "mode": "aggregated_lora", "workers": {"a": 1}}])
    with pytest.raises(ScenarioError, match="unknown models"):
        make_scenario(variants=[{"name": "agg", "mode": "aggregated", "workers": {"zz": 1}}])
    sc = make_scenario(decode={"preemption": "swap"},
                       variants=[{"name": "agg", "mode": "aggregated", "workers": 1}])
    with pytest.raises(ScenarioError, match="decode.preemption"):
        check_variant(sc, sc.variants[0], build_workload(sc), load_profile(sc))
    ok = make_scenario(variants=[{"name": "l", "mode": "aggregated_lora", "workers": 2, "rank": 8,
                                  "max_num_batched_tokens": 2048}])
    assert ok.variants[0].max_num_batched_tokens == 2048


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def reference_aggregated(arrival, prompt, output, budget, capacity_tokens, block, watermark=0.0, max_batch=None):
    """The same scheduler stepped one iteration at a time, one loop turn per request inside: at each boundary
    the decode rows (each reading prompt + generated KV) and the prefilling requests' chunks get their blocks,
    the latest admitted being preempted until they fit; then, if nobody was, waiting requests join FCFS."""
    n = len(arrival)
    order = sorted(range(n), key=lambda i: (arrival[i], i))
    cap, wm = capacity_tokens // block, int(watermark * (capacity_tokens // block))
    max_run = min(max_batch or budget, budget)
    gen, done, seq = [0] * n, [0] * n, [0] * n
    first, finish, pstart = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    preempt = np.zeros(n, dtype=int)
    waiting, pf, dec = [], [], []  # request ids, FCFS / admission order
    t, nxt, admitted, left_n = 0.0, 0, 0, n
    while left_n:
        while nxt < n and arrival[order[nxt]] <= t:
            waiting.append(order[nxt])
            nxt += 1
        if not (waiting or pf or dec):
            t = float(arrival[order[nxt]])
            continue
        preempted = False
        while True:
            left, chunks = budget - len(dec), []
            for r in pf:
                c = min(prompt[r] + gen[r] - done[r], left)
                if c > 0:
                    chunks.append((r, c, done[r]))
                    left -= c
            used = sum(_ceil(prompt[r] + gen[r], block) for r in dec)
            used += sum(_ceil(done[r], block) for r in pf if all(r != q for q, _, _ in chunks))
            used += sum(_ceil(p + c, block) for _, c, p in chunks)
            if used <= cap:
                break
            victim = max(dec + pf, key=lambda r: seq[r])
            (dec if victim in dec else pf).remove(victim)
            done[victim] = 0
            waiting.insert(0, victim)
            preempt[victim] += 1
            preempted = True
        if not preempted or not (chunks or dec):
            while waiting and left > 0 and len(dec) + len(pf) < max_run:
                r = waiting[0]
                c = min(prompt[r] + gen[r], left)
                if cap - used - _ceil(c, block) < wm:
                    break
                waiting.pop(0)
                admitted += 1
                seq[r], done[r] = admitted, 0
                pf.append(r)
                chunks.append((r, c, 0))
                used += _ceil(c, block)
                left -= c
                if np.isnan(pstart[r]):
                    pstart[r] = t
        kv = sum(prompt[r] + gen[r] for r in dec)
        t += COST.mixed_time(len(dec), kv, [(c, p) for _, c, p in chunks]) if chunks else \
            decode_step_time(COST, len(dec), kv)
        for r in list(dec):
            gen[r] += 1
            if gen[r] == output[r]:
                dec.remove(r)
                finish[r] = t
                left_n -= 1
        for r, c, _ in chunks:
            done[r] += c
            if done[r] == prompt[r] + gen[r]:
                pf.remove(r)
                gen[r] += 1
                if np.isnan(first[r]):
                    first[r] = t
                if gen[r] == output[r]:
                    finish[r] = t
                    left_n -= 1
                else:
                    dec.append(r)
    return pstart, first, finish, preempt


@pytest.mark.parametrize("seed, budget, cap_tokens, watermark, max_batch, pressed", [
    (1, 512, 1 << 30, 0.0, None, False),  # no memory pressure: long coalesced decode runs, cut by arrivals
    (2, 256, 12 * 1024, 0.0, None, True),  # tight memory: preemption of decoding and prefilling requests
    (4, 1024, 4 * 1024, 0.05, 8, True),  # watermark and a running cap, under pressure
    (5, 1024, 10 * 1024, 0.05, 6, False),  # the running cap alone keeps memory in bounds
])
def test_coalesced_worker_matches_per_iteration_reference(seed, budget, cap_tokens, watermark, max_batch, pressed):
    arrival, prompt, output = _burst(60, seed)
    kv = KVPolicy(policy="paged", watermark=watermark)
    rec, w = run_worker(arrival, prompt, output, budget=budget, capacity_tokens=cap_tokens, kv=kv,
                        max_batch=max_batch)
    pstart, first, finish, preempt = reference_aggregated(arrival, prompt.tolist(), output.tolist(), budget,
                                                          cap_tokens, 16, watermark, max_batch)
    np.testing.assert_array_equal(rec.preemptions, preempt)
    np.testing.assert_allclose(rec.prefill_start_s, pstart, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rec.first_token_s, first, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rec.finish_s, finish, rtol=1e-9, atol=1e-9)
    assert (preempt.sum() > 0) == pressed  # each case is under the pressure it is meant to be
    assert w.iterations > w.events  # decode-only iterations were coalesced


def test_plan_sizes_aggregated_pools_without_prefill_gpus():
    """``sunsim plan`` searches an aggregated variant's pool like any other: the answer meets the SLO, one GPU
    fewer in a pool does not, and no prefill GPUs are counted."""
    from sunsim.analysis.planning.search import Planner, plan

    sc = make_scenario(workload={"duration_s": 6, "rate": 60}, slo={"ttft_s": 0.3, "tpot_s": 0.03},
                       variants=[{"name": "agg-lora", "mode": "aggregated_lora", "workers": 1}])
    (vp,) = plan(sc, 0.9, goodput=False, max_gpus=16)
    assert vp.prefill_gpus == 0 and vp.prefill_counts == {t: 0 for t in sc.model.tasks}
    n = vp.decode_counts["shared"]
    planner = Planner(sc, 0.9, 16)
    v = sc.variants[0]
    _, ok = planner.probe(v.model_copy(update={"workers": n}), vp.prefill_counts)
    assert ok["meets_slo"] and ok["prefill_gpus"] == 0 and ok["total_gpus"] == n
    if n > 1:
        _, short = planner.probe(v.model_copy(update={"workers": n - 1}), vp.prefill_counts)
        assert not short["meets_slo"]
