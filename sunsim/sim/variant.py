"""Assemble the cluster of one variant and run it on a request stream.

This is where scenario numbers become workers: memory budgets, pools, routers and the
hand-offs between prefill, interconnect and decode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import simpy

from sunsim.costs import catalog
from sunsim.costs.architecture import ModelShape
from sunsim.costs.colocation import place, round_coeffs
from sunsim.costs.hardware import GIB
from sunsim.costs.hardware import gpu as gpu_spec
from sunsim.costs.lora import DEFAULT_BAND, DEFAULT_RANK, AdapterCache, LoraCost, LoraPrefillCost
from sunsim.costs.lora import step_coeffs as lora_step_coeffs
from sunsim.costs.model import CostModel, ProfileInfo
from sunsim.scenario import Scenario, ScenarioError, VariantSpec
from sunsim.sim.clients import ClosedLoopClients, closed_loop_clients
from sunsim.sim.decode import DecodeWorker
from sunsim.sim.interconnect import Interconnect
from sunsim.sim.kv_policy import KVPolicy, PagedState
from sunsim.sim.prefill import PrefillWorker
from sunsim.sim.rebalance import Rebalancer
from sunsim.sim.records import Records
from sunsim.sim.routing import Router
from sunsim.sim.stats import DecodeStats, InterconnectStats, PrefillStats
from sunsim.workload.stream import RequestStream

PREFILL_DTYPE = "bf16"  # prefill modules stay 16-bit in SUN and QSUN alike


@dataclass
class VariantResult:
    """Everything a run of one variant leaves behind, for metrics and reports."""

    scenario: Scenario
    variant: VariantSpec
    stream: RequestStream
    records: Records
    profile: ProfileInfo
    prefill_workers: list[PrefillWorker]
    decode_workers: list[DecodeWorker]
    decode_pool_of: list[str]  # per decode worker: its pool's name (a model, "shared", or "a+b" colocated)
    prefill_pool_of: list[str]  # per prefill worker: its model
    kv_capacity_tokens: int
    prefill_kv_capacity_tokens: int | None
    end_s: float
    wall_s: float
    events: int
    interconnect: Interconnect
    # Plain end-of-run records of the same workers and links: what metrics, timelines and traces read.
    prefill_stats: list[PrefillStats]
    decode_stats: list[DecodeStats]
    interconnect_stats: InterconnectStats
    #: rebalanced dedicated pools: (time, worker, from model, to model) of each move.
    moves: list[tuple[float, int, int, int]] = field(default_factory=list)
    #: per decode worker: the models its pool serves (at the start; a rebalanced worker moves, see ``moves``).
    #: Per-model figures read this, never the pool names, which a model may share ("shared").
    decode_serves: list[tuple[str, ...]] = field(default_factory=list)
    #: closed-loop arrivals: when the first client stopped (the end of the window with all clients active).
    clients_stop_s: float | None = None


def kv_dtype(sc: Scenario, role: str) -> str:
    """The KV-cache element type of a role's GPUs (``decode`` or ``prefill``)."""
    return sc.decode.kv_dtype if role == "decode" else sc.prefill.kv_dtype


def cost_model(sc: Scenario, profile: catalog.Profile, dtype: str, role: str = "decode") -> CostModel:
    """The cost model of a role's GPUs in a weight format, under the scenario's loaded profile."""
    return catalog.make_cost_model(gpu_spec(sc.hardware.gpu), sc.shape, dtype, profile, kv_dtype(sc, role))


def kv_capacity_tokens(sc: Scenario, shape: ModelShape, dtype: str, role: str = "decode",
                       extra_bytes: float = 0.0, extra_what: str = "") -> int:
    """KV tokens one GPU holds: usable memory minus its weights (by dtype) minus the reserve, over the
    bytes a token's KV takes in the role's KV dtype.

    ``extra_bytes``: more resident weights (colocated models, LoRA adapters), named by ``extra_what``.
    """
    hw = sc.hardware
    free = gpu_spec(hw.gpu).memory_bytes * hw.memory_utilization - shape.weight_bytes(dtype) - hw.reserve_gib * GIB
    if extra_bytes:
        free -= extra_bytes
    block = sc.decode.block_tokens
    tokens = int(free // shape.kv_bytes(kv_dtype(sc, role))) // block * block
    if tokens < block and extra_bytes:
        raise ScenarioError(
            f"{extra_what} ({extra_bytes / GIB:.1f} GiB beside the {dtype} weights of {shape.name}) leave no KV "
            f"memory on a {hw.gpu} (memory_utilization={hw.memory_utilization}, reserve_gib={hw.reserve_gib})"
        )
    if tokens < block:
        raise ScenarioError(
            f"hardware: the {dtype} {role} weights of {shape.name} ({shape.weight_bytes(dtype) / GIB:.1f} GiB) "
            f"leave no KV memory on a {hw.gpu} (memory_utilization={hw.memory_utilization}, "
            f"reserve_gib={hw.reserve_gib})"
        )
    return tokens


def load_profile(sc: Scenario) -> catalog.Profile:
    return catalog.load(sc.hardware.profile)


def profile_info(sc: Scenario) -> ProfileInfo:
    """Which profile a scenario's costs come from (name, analytic or measured, device)."""
    return cost_model(sc, load_profile(sc), PREFILL_DTYPE, "prefill").info


class _Plan:
    """The checked layout of one variant, made before anything runs (so bad input writes nothing)."""

    def __init__(self, sc: Scenario, variant: VariantSpec, stream: RequestStream, profile: catalog.Profile) -> None:
        horizon = sc.sim.horizon_s
        first = 0.0 if stream.closed else float(stream.arrival_s[0]) if len(stream) else 0.0
        if horizon is not None and len(stream) and horizon <= first:
            raise ScenarioError(f"sim.horizon_s: the run would stop at {horizon:g} s, before the first request "
                                f"arrives ({first:.6g} s); give a later horizon or none")
        shape = sc.shape
        gpu = gpu_spec(sc.hardware.gpu)
        self.prefill_cost: CostModel = cost_model(sc, profile, PREFILL_DTYPE, "prefill")
        try:
            self.decode_cost: CostModel = cost_model(sc, profile, variant.dtype)
        except ValueError as exc:
            raise ScenarioError(f"variants.{variant.name}.dtype: {exc}") from None
        self.kv_capacity = kv_capacity_tokens(sc, shape, variant.dtype)
        self.prefill_kv_capacity = kv_capacity_tokens(sc, shape, PREFILL_DTYPE, "prefill") \
            if sc.prefill.kv_bound else None
        tasks = sc.model.tasks
        busy = set(np.unique(stream.model).tolist())

        self.prefill_counts = sc.counts(sc.prefill.workers)
        for i, t in enumerate(tasks):
            if i in busy and self.prefill_counts[t] == 0:
                raise ScenarioError(f"prefill.workers: model {t!r} gets traffic but has 0 prefill workers")
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
                                               extra_what=f"variants.{variant.name}.models_per_gpu: {len(h)} resident models")
                            for h in self.hosts]
            self.kv_capacity = min(self.kv_caps)
        self.lora: LoraCost | None = None
        if variant.mode == "multi_lora":
            self.lora = LoraCost(shape, gpu, DEFAULT_RANK if variant.rank is None else variant.rank,
                                 variant.lora_band or DEFAULT_BAND)
            self.max_adapters = variant.max_adapters or len(tasks)
            self.kv_capacity = kv_capacity_tokens(
                sc, shape, variant.dtype, extra_bytes=self.max_adapters * self.lora.adapter_bytes,
                extra_what=f"variants.{variant.name}.max_adapters: {self.max_adapters} resident rank-{self.lora.rank} adapters")
            self.prefill_cost = LoraPrefillCost(self.prefill_cost, self.lora)

        block = sc.decode.block_tokens
        need = -(-(stream.prompt_tokens + stream.output_tokens) // block) * block
        # Paged admission also keeps the watermark free.
        room = self.kv_capacity
        if sc.decode.kv_policy == "paged":
            room -= int(sc.decode.watermark * (self.kv_capacity // block)) * block
        worst = int(np.argmax(need))
        if need[worst] > room:
            raise ScenarioError(
                f"workload: request {worst} needs {int(need[worst])} KV tokens (prompt {stream.prompt_tokens[worst]} + "
                f"output {stream.output_tokens[worst]}) but a {variant.dtype} decode worker of variant "
                f"{variant.name!r} holds at most {room} (after the decode.watermark); shorten the lengths (prompt_tokens.max, "
                f"output_tokens.max) or free memory (hardware.reserve_gib, hardware.memory_utilization, decode.watermark)"
            )
        longest = int(stream.prompt_tokens.max())
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
        prefill = sum(self.prefill_counts.values())
        decode = sum(self.decode_counts.values())
        return {"prefill": prefill, "decode": decode, "total": prefill + decode}


def check_variant(sc: Scenario, variant: VariantSpec, stream: RequestStream, profile: catalog.Profile) -> dict[str, int]:
    """Validate a variant's layout against the stream; returns its GPU counts."""
    return _Plan(sc, variant, stream, profile).gpus


def simulate_variant(sc: Scenario, variant: VariantSpec, stream: RequestStream, profile: catalog.Profile = None,
                     keep_timeline: bool = False) -> VariantResult:
    """Run one variant over the whole stream until every request finished or the horizon."""
    plan = _Plan(sc, variant, stream, profile)
    if stream.closed:  # the clients fill in this run's own arrival times
        stream = replace(stream, arrival_s=np.full(len(stream), np.inf))
    clients: ClosedLoopClients | None = None
    wall0 = time.perf_counter()
    env = simpy.Environment()
    n = len(stream)
    rec = Records(n)
    prompt, output, model = stream.prompt_tokens, stream.output_tokens, stream.model
    tasks = sc.model.tasks
    shape = sc.shape
    ic = sc.interconnect
    # the prompt's KV travels in the prefill GPUs' cache format
    link = Interconnect(env, ic.bandwidth_Bps, ic.latency_us * 1e-6, ic.contention, shape.kv_bytes(sc.prefill.kv_dtype))
    prefill_router = Router(sc.prefill.routing, np.random.default_rng([sc.seed, 11]))
    decode_router = Router(variant.routing, np.random.default_rng([sc.seed, 12]))
    finished = [0]
    all_done = env.event()

    def count_finished(k: int) -> None:
        finished[0] += k
        if clients is not None:
            clients.finished(k)  # frees k clients
        elif finished[0] == n:
            all_done.succeed()

    # Decode pools.
    decode_workers: list[DecodeWorker] = []
    pool_of: list[str] = []
    serves: list[tuple[str, ...]] = []
    # One paged bookkeeping for the variant: a request lives on one worker (per request, not per GPU).
    paged = PagedState(n) if plan.kv_policy.policy == "paged" else None
    pools: list[list[DecodeWorker]] = []

    def start_transfer(rid: int, worker: DecodeWorker) -> None:
        # The prompt's KV moves; the first output token's KV is computed by the first decode step.
        src = int(rec.prefill_worker[rid])

        ready = adapters[worker.wid].ready_at(int(model[rid]), env.now) if adapters else 0.0

        def arrived() -> None:
            prefill_workers[src].release(int(prompt[rid]))  # the prefill GPU's copy is freed
            if ready > env.now:  # its adapter is still loading
                env.timeout(ready - env.now).callbacks.append(lambda _ev: worker.kv_arrived(rid))
                return
            worker.kv_arrived(rid)

        link.transfer(int(prompt[rid]), src, worker.wid, arrived)

    if plan.hosts is not None:  # colocated: a pool per model of the GPUs hosting it
        step = round_coeffs(plan.decode_cost)
        for g, hosted in enumerate(plan.hosts):
            decode_workers.append(DecodeWorker(
                env, g, plan.decode_cost, plan.kv_caps[g], sc.decode.block_tokens, plan.max_batch, prompt, output,
                rec, start_transfer, timeline=[] if keep_timeline else None, on_finished=count_finished,
                kv=plan.kv_policy, step_coeffs=step, model=model, n_models=len(tasks), paged_state=paged))
            pool_of.append("+".join(tasks[m] for m in hosted))
            serves.append(tuple(tasks[m] for m in hosted))
        pools = [[w for w, h in zip(decode_workers, plan.hosts) if m in h] for m in range(len(tasks))]
    rebalancer: list[Rebalancer] = []

    def finished_on(wid: int):
        def finished(k: int) -> None:
            count_finished(k)
            rebalancer[0].check(wid)
        return finished

    hook = {} if plan.lora is None else {"step_coeffs": lora_step_coeffs(plan.decode_cost, plan.lora),
                                         "model": model, "n_models": len(tasks)}
    adapters = [] if plan.lora is None or plan.lora.rank == 0 else \
        [AdapterCache(plan.max_adapters, plan.lora.load_s) for _ in range(plan.gpus["decode"])]
    for pool_name, count in ({} if plan.hosts is not None else plan.decode_counts).items():
        pool = []
        for _ in range(count):
            w = DecodeWorker(env, len(decode_workers), plan.decode_cost, plan.kv_capacity, sc.decode.block_tokens,
                             plan.max_batch, prompt, output, rec, start_transfer,
                             timeline=[] if keep_timeline else None,
                             on_finished=count_finished if variant.rebalance is None else finished_on(len(decode_workers)),
                             kv=plan.kv_policy, paged_state=paged, **hook)
            decode_workers.append(w)
            pool_of.append(pool_name)
            serves.append(tuple(tasks) if variant.mode != "dedicated" else (pool_name,))
            pool.append(w)
        pools.append(pool)
    if variant.mode in ("shared", "multi_lora"):
        decode_pool_for_model = [0] * len(tasks)
    else:
        decode_pool_for_model = list(range(len(tasks)))

    if variant.rebalance is not None:
        rebalancer.append(Rebalancer(
            env, variant.rebalance.every_s, variant.rebalance.load_s, pools, stream.arrival_s, model, prompt, output,
            rec.preemptions, lambda rid, p: decode_router.pick(pools[p], p).submit(rid)))

    def prefill_done(rid: int, pw: int) -> None:
        if output[rid] <= 1:  # the only token came from prefill
            prefill_workers[pw].release(int(prompt[rid]))
            rec.finish_s[rid] = env.now
            count_finished(1)
            return
        p = decode_pool_for_model[model[rid]]
        decode_router.pick(pools[p], p).submit(rid)

    prefill_workers: list[PrefillWorker] = []
    prefill_pools: list[list[PrefillWorker]] = []
    for t in tasks:
        pool = []
        for _ in range(plan.prefill_counts[t]):
            w = PrefillWorker(env, len(prefill_workers), plan.prefill_cost, sc.prefill.max_batch_tokens,
                              prompt, rec, prefill_done, plan.prefill_kv_capacity)
            prefill_workers.append(w)
            pool.append(w)
        prefill_pools.append(pool)

    arrival = stream.arrival_s

    def send(rid: int) -> None:
        m = int(model[rid])
        prefill_router.pick(prefill_pools[m], m).submit(rid)

    def arrivals():
        timeout = env.timeout
        for rid in range(n):
            delay = arrival[rid] - env.now
            if delay > 0:
                yield timeout(delay)
            send(rid)

    if stream.closed:
        clients = closed_loop_clients(env, sc, arrival, send)
        clients.start()
        env.run(until=clients.until(sc.sim.horizon_s))
    else:
        env.process(arrivals())
        horizon = sc.sim.horizon_s or (float(arrival[-1]) + sc.sim.drain_s)
        env.run(until=env.any_of([all_done, env.timeout(horizon)]))
    end = env.now
    wall = time.perf_counter() - wall0
    events = n + sum(w.batches for w in prefill_workers) + sum(w.events for w in decode_workers)
    return VariantResult(
        scenario=sc, variant=variant, stream=stream, records=rec, profile=plan.decode_cost.info,
        prefill_workers=prefill_workers, decode_workers=decode_workers, decode_pool_of=pool_of,
        prefill_pool_of=[t for t in tasks for _ in range(plan.prefill_counts[t])],
        kv_capacity_tokens=plan.kv_capacity, prefill_kv_capacity_tokens=plan.prefill_kv_capacity, end_s=end, wall_s=wall, events=events, interconnect=link,
        moves=rebalancer[0].moves if rebalancer else [], decode_serves=serves,
        prefill_stats=[w.stats() for w in prefill_workers], decode_stats=[w.stats() for w in decode_workers],
        interconnect_stats=link.stats(), clients_stop_s=clients.first_stop_s if clients else None,
    )
