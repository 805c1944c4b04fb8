"""Assemble and run an aggregated variant: pools of GPUs that prefill and decode (no prefill pools, no links).

``aggregated`` gives each task model its own pool (counts as for ``dedicated``); ``aggregated_lora`` is one
pool where every task is a LoRA adapter on the base, priced as multi-LoRA decode prices it
(:mod:`sunsim.costs.lora`), prefill chunks included. Both run the variant's weight format for prefill and
decode alike (one copy of the weights per GPU) and count only the pool's GPUs.
"""

from __future__ import annotations

import time

import numpy as np

from sunsim.costs import catalog
from sunsim.costs.hardware import gpu as gpu_spec
from sunsim.costs.lora import DEFAULT_BAND, DEFAULT_RANK, AdapterCache, LoraCost
from sunsim.scenario import DEFAULT_MAX_NUM_BATCHED_TOKENS, Scenario, ScenarioError, VariantSpec
from sunsim.sim.aggregated import AggregatedState, AggregatedWorker
from sunsim.sim.in_flight import RecordSink, RunFrame
from sunsim.sim.interconnect import Interconnect
from sunsim.sim.kv_policy import KVPolicy
from sunsim.sim.layout import (
    VariantResult,
    check_horizon,
    check_largest_fits,
    cost_model,
    kv_capacity_tokens,
    role_hardware,
)
from sunsim.sim.routing import Router
from sunsim.sim.tensor_parallel import gpu_counts, shard
from sunsim.workload.stream import RequestSource


class AggregatedPlan:
    """The checked layout of an aggregated variant, made before anything runs."""

    def __init__(self, sc: Scenario, variant: VariantSpec, stream: RequestSource, profile: catalog.Profile) -> None:
        check_horizon(sc, stream)
        d, tasks = sc.decode, sc.model.tasks
        shape = shard(sc, "decode", variant)  # what one GPU of a worker holds (the whole model at tp 1)
        self.tp = variant.tp
        if d.kv_policy == "paged" and d.preemption != "recompute":
            raise ScenarioError(f"decode.preemption: variant {variant.name!r} is mode: {variant.mode}, whose "
                                f"preempted requests are recomputed (vLLM V1 has no swap); set decode.preemption: "
                                f"recompute or leave the variant out")
        try:
            self.cost = cost_model(sc, profile, variant.dtype, variant=variant)
        except ScenarioError:
            raise
        except ValueError as exc:
            raise ScenarioError(f"variants.{variant.name}.dtype: {exc}") from None
        self.lora: LoraCost | None = None
        self.max_adapters = 0
        if variant.mode == "aggregated":
            self.counts = sc.counts(variant.workers)
            busy = stream.facts.busy_models
            for i, t in enumerate(tasks):
                if i in busy and self.counts[t] == 0:
                    raise ScenarioError(f"variants.{variant.name}.workers: model {t!r} gets traffic but has 0 "
                                        f"aggregated workers")
            self.kv_capacity = kv_capacity_tokens(sc, shape, variant.dtype, variant=variant)
        else:
            self.counts = {"shared": int(variant.workers)}
            self.lora = LoraCost(shape, gpu_spec(role_hardware(sc, "decode", variant).gpu), DEFAULT_RANK if variant.rank is None
                                 else variant.rank, variant.lora_band or DEFAULT_BAND)
            self.max_adapters = variant.max_adapters or len(tasks)
            self.kv_capacity = kv_capacity_tokens(
                sc, shape, variant.dtype, extra_bytes=self.max_adapters * self.lora.adapter_bytes,
                extra_what=f"variants.{variant.name}.max_adapters: {self.max_adapters} resident "
                           f"rank-{self.lora.rank} adapters", variant=variant)
        check_largest_fits(sc, stream, self.kv_capacity, f"an aggregated {variant.dtype} GPU of variant {variant.name!r}")
        self.budget = variant.max_num_batched_tokens or DEFAULT_MAX_NUM_BATCHED_TOKENS
        self.max_batch = variant.max_batch or d.max_batch
        self.kv_bytes = shape.kv_bytes(d.kv_dtype)
        self.kv_policy = KVPolicy(policy=d.kv_policy, preemption="recompute", watermark=d.watermark,
                                  swap_Bps=d.swap_GBps * 1e9, kv_bytes_per_token=self.kv_bytes)

    @property
    def gpus(self) -> dict[str, int]:
        return gpu_counts(0, sum(self.counts.values()), 1, self.tp)


def check_aggregated(sc: Scenario, variant: VariantSpec, stream: RequestSource,
                     profile: catalog.Profile) -> dict[str, int]:
    """Validate an aggregated variant's layout against the stream; returns its GPU counts."""
    return AggregatedPlan(sc, variant, stream, profile).gpus


def simulate_aggregated(sc: Scenario, variant: VariantSpec, stream: RequestSource, profile: catalog.Profile,
                        keep_timeline: bool = False, sink: RecordSink | None = None) -> VariantResult:
    """Run an aggregated variant over the whole stream until every request finished or the horizon."""
    plan = AggregatedPlan(sc, variant, stream, profile)
    wall0 = time.perf_counter()
    frame = RunFrame(sc, stream, sink)
    env, live, tasks = frame.env, frame.in_flight, sc.model.tasks
    rec = live.records
    prompt, output, model = live.prompt, live.output, live.model
    router = Router(variant.routing, np.random.default_rng([sc.seed, 12]))
    count_finished = frame.count_finished
    state = AggregatedState(alloc=live.per_request)
    lora = plan.lora
    workers: list[AggregatedWorker] = []
    pool_of: list[str] = []
    serves: list[tuple[str, ...]] = []
    pools: list[list[AggregatedWorker]] = []
    for pool_name, count in plan.counts.items():
        pool = []
        for _ in range(count):
            cache = AdapterCache(plan.max_adapters, lora.load_s) if lora is not None and lora.rank else None
            w = AggregatedWorker(env, len(workers), plan.cost, plan.kv_capacity, sc.decode.block_tokens,
                                 plan.max_batch, plan.budget, prompt, output, rec, plan.kv_policy, state,
                                 on_finished=count_finished, timeline=[] if keep_timeline else None, lora=lora,
                                 model=model, n_models=len(tasks), adapters=cache)
            workers.append(w)
            pool.append(w)
            pool_of.append(pool_name)
            serves.append(tuple(tasks) if lora is not None else (pool_name,))
        pools.append(pool)
    pool_for_model = [0] * len(tasks) if lora is not None else list(range(len(tasks)))

    def send(rid: int) -> None:
        p = pool_for_model[int(model[rid])]
        router.pick(pools[p], p).submit(rid)

    frame.run(send)
    clients = frame.clients
    stream, records = frame.outcome()
    ic = sc.interconnect  # carries nothing: kept so every result has the same fields
    link = Interconnect(env, ic.bandwidth_Bps, ic.latency_us * 1e-6, ic.contention, plan.kv_bytes)
    return VariantResult(
        scenario=sc, variant=variant, stream=stream, records=records, profile=plan.cost.info,
        prefill_workers=[], decode_workers=workers, decode_pool_of=pool_of, prefill_pool_of=[],
        kv_capacity_tokens=plan.kv_capacity, prefill_kv_capacity_tokens=None, end_s=env.now,
        wall_s=time.perf_counter() - wall0, events=live.admitted + sum(w.events for w in workers), interconnect=link,
        decode_serves=serves, prefill_stats=[], decode_stats=[w.stats() for w in workers],
        interconnect_stats=link.stats(), clients_stop_s=clients.first_stop_s if clients else None,
        peak_in_flight=live.peak,
    )
