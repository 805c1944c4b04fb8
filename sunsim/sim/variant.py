"""Assemble the cluster of one variant and run it on a request stream.

This is where scenario numbers become workers: memory budgets, pools, routers and the
hand-offs between prefill, interconnect and decode.
"""

from __future__ import annotations

import time

import numpy as np

from sunsim.costs import catalog
from sunsim.costs.colocation import place, round_coeffs
from sunsim.costs.hardware import gpu as gpu_spec
from sunsim.costs.lora import DEFAULT_BAND, DEFAULT_RANK, AdapterCache, LoraCost, LoraPrefillCost
from sunsim.costs.lora import step_coeffs as lora_step_coeffs
from sunsim.costs.model import CostModel
from sunsim.scenario import AGGREGATED_MODES, Scenario, ScenarioError, VariantSpec
from sunsim.sim.aggregated_variant import check_aggregated, simulate_aggregated
from sunsim.sim.autoscale import Autoscaler
from sunsim.sim.decode import DecodeWorker
from sunsim.sim.in_flight import RecordSink, RunFrame
from sunsim.sim.interconnect import Interconnect
from sunsim.sim.kv_policy import KVPolicy, PagedState
from sunsim.sim.layout import (  # noqa: F401  (re-exported: callers import them from here)
    PREFILL_DTYPE,
    VariantResult,
    check_horizon,
    check_largest_fits,
    cost_model,
    kv_capacity_tokens,
    kv_dtype,
    load_profile,
    profile_info,
    role_hardware,
)
from sunsim.sim.prefill_pools import build_prefill, prefill_layout
from sunsim.sim.rebalance import Rebalancer
from sunsim.sim.routing import Router
from sunsim.sim.tensor_parallel import gpu_counts, link_kv_bytes, shard
from sunsim.workload.stream import RequestSource

#: Decode GPUs admit a mid-run arrival for their next boundary on arrival when that cannot change the run
#: (:meth:`DecodeWorker._cut_if_admissible`); ``False`` cuts the run there instead: the same results, more
#: events (the tests compare the two).
ADMIT_AHEAD = True


class _Plan:
    """The checked layout of one variant, made before anything runs (so bad input writes nothing)."""

    def __init__(self, sc: Scenario, variant: VariantSpec, stream: RequestSource, profile: catalog.Profile) -> None:
        check_horizon(sc, stream)
        facts = stream.facts
        shape = shard(sc, "decode", variant)  # what one decode GPU holds (the whole model at tp 1)
        self.tp = {"prefill": sc.prefill.tp, "decode": variant.tp}
        gpu = gpu_spec(role_hardware(sc, "decode", variant).gpu)  # the decode GPUs' own (prefill's may differ)
        self.prefill_cost: CostModel = cost_model(sc, profile, PREFILL_DTYPE, "prefill")
        try:
            self.decode_cost: CostModel = cost_model(sc, profile, variant.dtype, variant=variant)
        except ScenarioError:
            raise
        except ValueError as exc:
            raise ScenarioError(f"variants.{variant.name}.dtype: {exc}") from None
        self.kv_capacity = kv_capacity_tokens(sc, shape, variant.dtype, variant=variant)
        tasks = sc.model.tasks
        busy = set(facts.busy_models)
        self.prefill = prefill_layout(sc, busy)
        self.prefill_kv_capacity = self.prefill.kv_capacity
        self.prefill_counts = self.prefill.counts
        if variant.mode == "dedicated":
            self.decode_counts = sc.counts(variant.workers)
            for i, t in enumerate(tasks):
                if i in busy and self.decode_counts[t] == 0:
                    raise ScenarioError(
                        f"variants.{variant.name}.workers: model {t!r} gets traffic but has 0 decode workers"
                    )
        else:
            self.decode_counts = {"shared": int(variant.workers)}
        self.hosts: list[list[int]] | None = None  # colocated: the models each GPU hosts
        self.kv_caps: list[int] | None = None  # per decode GPU, where they differ
        if variant.mode == "colocated":
            k = variant.models_per_gpu or min(2, len(tasks))
            self.hosts = place(int(variant.workers), k, sc.popularity())
            self.kv_caps = [kv_capacity_tokens(sc, shape, variant.dtype, extra_bytes=(len(h) - 1) * shape.weight_bytes(variant.dtype),
                                               extra_what=f"variants.{variant.name}.models_per_gpu: {len(h)} resident models",
                                               variant=variant)
                            for h in self.hosts]
            self.kv_capacity = min(self.kv_caps)
        self.lora: LoraCost | None = None
        if variant.mode == "multi_lora":
            self.lora = LoraCost(shape, gpu, DEFAULT_RANK if variant.rank is None else variant.rank,
                                 variant.lora_band or DEFAULT_BAND)
            self.max_adapters = variant.max_adapters or len(tasks)
            self.kv_capacity = kv_capacity_tokens(
                sc, shape, variant.dtype, extra_bytes=self.max_adapters * self.lora.adapter_bytes,
                extra_what=f"variants.{variant.name}.max_adapters: {self.max_adapters} resident rank-{self.lora.rank} adapters",
                variant=variant)
            self.prefill_cost = LoraPrefillCost(self.prefill_cost, self.lora)
            if sc.prefill.shared:  # a shared prefill GPU holds the base once and the tasks as adapters
                self.prefill = prefill_layout(sc, busy, self.lora.adapter_bytes)
                self.prefill_kv_capacity = self.prefill.kv_capacity

        check_largest_fits(sc, stream, self.kv_capacity, f"a {variant.dtype} decode worker of variant {variant.name!r}")
        longest = facts.longest_prompt
        if self.prefill_kv_capacity is not None and longest > self.prefill_kv_capacity:
            raise ScenarioError(
                f"workload: a prompt needs {longest} KV tokens but a prefill GPU holds at most "
                f"{self.prefill_kv_capacity}; shorten prompt_tokens.max or set prefill.kv_bound: false"
            )
        self.max_batch = variant.max_batch or sc.decode.max_batch
        d = sc.decode
        self.kv_policy = KVPolicy(policy=d.kv_policy, preemption=d.preemption, watermark=d.watermark,
                                  swap_Bps=d.swap_GBps * 1e9, kv_bytes_per_token=shape.kv_bytes(d.kv_dtype))

    @property
    def gpus(self) -> dict[str, int]:
        """GPUs of the layout: workers times their tensor-parallel GPUs."""
        return gpu_counts(sum(self.prefill_counts.values()), sum(self.decode_counts.values()), self.tp["prefill"],
                          self.tp["decode"])


def check_variant(sc: Scenario, variant: VariantSpec, stream: RequestSource, profile: catalog.Profile) -> dict[str, int]:
    """Validate a variant's layout against the stream; returns its GPU counts."""
    if variant.mode in AGGREGATED_MODES:  # prefill and decode on one pool: assembled in its own module
        return check_aggregated(sc, variant, stream, profile)
    return _Plan(sc, variant, stream, profile).gpus


def simulate_variant(sc: Scenario, variant: VariantSpec, stream: RequestSource, profile: catalog.Profile = None,
                     keep_timeline: bool = False, sink: RecordSink | None = None) -> VariantResult:
    """Run one variant over the whole stream until every request finished or the horizon.

    ``sink`` takes each request's row as it finishes (default: whole-run arrays, the result's ``records``)."""
    if variant.mode in AGGREGATED_MODES:
        return simulate_aggregated(sc, variant, stream, profile, keep_timeline, sink)
    plan = _Plan(sc, variant, stream, profile)
    wall0 = time.perf_counter()
    frame = RunFrame(sc, stream, sink)
    env, live = frame.env, frame.in_flight
    rec = live.records
    prompt, output, model = live.prompt, live.output, live.model
    tasks = sc.model.tasks
    ic = sc.interconnect
    # the prompt's KV travels in the prefill GPUs' cache format, each GPU's shard over its own link
    link = Interconnect(env, ic.bandwidth_Bps, ic.latency_us * 1e-6, ic.contention, link_kv_bytes(sc, variant))
    decode_router = Router(variant.routing, np.random.default_rng([sc.seed, 12]))
    count_finished = frame.count_finished

    # Decode pools.
    decode_workers: list[DecodeWorker] = []
    pool_of: list[str] = []
    serves: list[tuple[str, ...]] = []
    # One paged bookkeeping for the variant: a request lives on one worker (per request, not per GPU).
    paged = PagedState(alloc=live.per_request) if plan.kv_policy.policy == "paged" else None
    pools: list[list[DecodeWorker]] = []

    def start_transfer(rid: int, worker: DecodeWorker, at: float) -> float:
        # The prompt's KV moves (the first output token's KV is computed by the first decode step); returns when it
        # is in the decode GPU's memory and, multi-LoRA, its adapter too.
        src, tokens = int(rec.prefill_worker[rid]), prompt[rid]
        t = link.transfer(tokens, src, worker.wid, at)
        prefill_workers[src].release_at(t, tokens)  # the prefill GPU's copy is freed then
        if adapters:
            ready = adapters[worker.wid].ready_at(int(model[rid]), at)
            if ready > t:  # its adapter is still loading (a timer set at t would fire at t + (ready - t))
                t += ready - t
        return t

    watched = variant.rebalance is not None or variant.autoscale is not None
    # Admissions for a decode GPU's next boundary decided on arrival (the same run, fewer events): KV transfers
    # take time, and nobody (a rebalancer, an autoscaler) routes waiting requests elsewhere meanwhile.
    ahead = ADMIT_AHEAD and not watched and link.duration(1) > 0

    if plan.hosts is not None:  # colocated: a pool per model of the GPUs hosting it
        step = round_coeffs(plan.decode_cost)
        for g, hosted in enumerate(plan.hosts):
            decode_workers.append(DecodeWorker(
                env, g, plan.decode_cost, plan.kv_caps[g], sc.decode.block_tokens, plan.max_batch, prompt, output,
                rec, start_transfer, timeline=[] if keep_timeline else None, on_finished=count_finished,
                kv=plan.kv_policy, step_coeffs=step, model=model, n_models=len(tasks), paged_state=paged,
                admit_ahead=ahead))
            pool_of.append("+".join(tasks[m] for m in hosted))
            serves.append(tuple(tasks[m] for m in hosted))
        pools = [[w for w, h in zip(decode_workers, plan.hosts) if m in h] for m in range(len(tasks))]
    watcher: list[Rebalancer | Autoscaler] = []  # moves or resizes pools: told when a worker's requests finish

    def finished_on(wid: int):
        def finished(slots: list[int]) -> None:
            count_finished(slots)
            watcher[0].check(wid)
        return finished

    hook = {} if plan.lora is None else {"step_coeffs": lora_step_coeffs(plan.decode_cost, plan.lora),
                                         "model": model, "n_models": len(tasks)}
    adapters = [] if plan.lora is None or plan.lora.rank == 0 else \
        [AdapterCache(plan.max_adapters, plan.lora.load_s) for _ in range(sum(plan.decode_counts.values()))]
    def make_worker(pool_name: str) -> DecodeWorker:
        wid = len(decode_workers)
        w = DecodeWorker(env, wid, plan.decode_cost, plan.kv_capacity, sc.decode.block_tokens,
                         plan.max_batch, prompt, output, rec, start_transfer,
                         timeline=[] if keep_timeline else None,
                         on_finished=finished_on(wid) if watched else count_finished,
                         kv=plan.kv_policy, paged_state=paged, admit_ahead=ahead, **hook)
        decode_workers.append(w)
        pool_of.append(pool_name)
        serves.append(tuple(tasks) if variant.mode != "dedicated" else (pool_name,))
        return w

    for pool_name, count in ({} if plan.hosts is not None else plan.decode_counts).items():
        pools.append([make_worker(pool_name) for _ in range(count)])
    start_workers = len(decode_workers)
    if variant.mode in ("shared", "multi_lora"):
        decode_pool_for_model = [0] * len(tasks)
    else:
        decode_pool_for_model = list(range(len(tasks)))

    if variant.rebalance is not None:
        watcher.append(Rebalancer(
            env, variant.rebalance.every_s, variant.rebalance.load_s, pools,
            lambda rid, p: decode_router.pick(pools[p], p).submit(rid)))
    if variant.autoscale is not None:
        watcher.append(Autoscaler(
            env, variant.autoscale, pools[0], lambda: make_worker("shared"), plan.kv_capacity,
            variant.max_batch or sc.decode.max_batch, variant.tp,
            lambda rid: decode_router.pick(pools[0], 0).submit(rid)))

    def prefill_done(rid: int, pw: int) -> None:
        if output[rid] <= 1:  # the only token came from prefill
            prefill_workers[pw].release(int(prompt[rid]))
            rec.finish_s[rid] = env.now
            count_finished([rid])
            return
        p = decode_pool_for_model[model[rid]]
        decode_router.pick(pools[p], p).submit(rid)

    fleet = build_prefill(env, sc, plan.prefill, plan.prefill_cost, prompt, model, rec, prefill_done,
                          stream.facts.mean_prompt)
    prefill_workers = fleet.workers
    if variant.rebalance is not None:  # it counts the arrivals of each model
        rebalancer = watcher[0]

        def send(rid: int) -> None:
            rebalancer.arrived(int(model[rid]))
            fleet.submit(rid)
    else:
        send = fleet.submit
    frame.run(send)
    end = env.now
    wall = time.perf_counter() - wall0
    events = live.admitted + sum(w.batches for w in prefill_workers) + sum(w.events for w in decode_workers)
    clients = frame.clients
    stream, records = frame.outcome()
    return VariantResult(
        scenario=sc, variant=variant, stream=stream, records=records, profile=plan.decode_cost.info,
        prefill_workers=prefill_workers, decode_workers=decode_workers, decode_pool_of=pool_of,
        prefill_pool_of=fleet.pool_of, prefill_serves=fleet.serves,
        kv_capacity_tokens=plan.kv_capacity, prefill_kv_capacity_tokens=plan.prefill_kv_capacity, end_s=end, wall_s=wall, events=events, interconnect=link,
        moves=watcher[0].moves if variant.rebalance is not None else [], decode_serves=serves,
        decode_gpu_timeline=watcher[0].timeline if variant.autoscale is not None else [],
        start_decode_workers=start_workers,
        prefill_stats=[w.stats() for w in prefill_workers], decode_stats=[w.stats() for w in decode_workers],
        interconnect_stats=link.stats(), clients_stop_s=clients.first_stop_s if clients else None,
        peak_in_flight=live.peak,
    )
