"""A disaggregated variant's prefill GPUs: their layout (checked before anything runs) and the workers and
routing of a run.

Three layouts, by the ``prefill`` section:

* a pool per model (the default): ``workers`` per model, each GPU holding one model's prefill module;
* packed (``models_per_gpu: K`` > 1, MuxServe-style): ``workers`` is the total of GPUs, each holding K
  models' prefill modules, placed as colocated decode places them (:func:`sunsim.costs.colocation.place`:
  replicas by traffic share, the popular models spread); the K-1 extra modules come out of its KV memory;
  a request goes to the GPUs hosting its model by ``prefill.routing``;
* on demand (``on_demand``): ``workers`` GPUs each holding up to ``resident`` modules (the extra ones'
  memory out of its KV), loaded when needed (:mod:`sunsim.sim.prefill_mux`); routed by
  :class:`~sunsim.sim.prefill_mux.ResidencyRouter`, ``prefill.routing`` unused.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sunsim.costs.colocation import place
from sunsim.costs.model import CostModel
from sunsim.scenario import Scenario, ScenarioError
from sunsim.scenario.document import prefill_total
from sunsim.sim.environment import Environment
from sunsim.sim.layout import PREFILL_DTYPE, kv_capacity_tokens
from sunsim.sim.prefill import PrefillWorker
from sunsim.sim.prefill_mux import Holders, ResidencyRouter, SharedPrefillWorker
from sunsim.sim.records import Records
from sunsim.sim.routing import Router
from sunsim.sim.tensor_parallel import shard


@dataclass
class PrefillLayout:
    """Where prefill runs: worker counts by pool, each GPU's KV bound, and what shared GPUs hold."""

    counts: dict[str, int]  # per model, or {"shared": N}
    kv_capacity: int | None  # the smallest GPU's KV bound (None: unbounded)
    kv_caps: list[int | None] | None = None  # shared pools: per GPU
    hosts: list[list[int]] | None = None  # packed: the models each GPU holds
    load_s: float = 0.0  # on demand: seconds to load one prefill module (one GPU's shard)


def prefill_layout(sc: Scenario, busy: set[int], adapter_bytes: float | None = None) -> PrefillLayout:
    """The checked prefill layout; ``busy``: the task models (indices) that get traffic.

    ``adapter_bytes`` (a multi-LoRA variant, whose tasks are adapters on one base): a shared GPU holds the
    base once and the tasks' adapters, so a task's module, its memory and its load are one adapter's.
    """
    spec, tasks = sc.prefill, sc.model.tasks
    shape = shard(sc, "prefill")
    if not spec.shared:
        cap = kv_capacity_tokens(sc, shape, PREFILL_DTYPE, "prefill") if spec.kv_bound else None
        counts = sc.counts(spec.workers)
        for i, t in enumerate(tasks):
            if i in busy and counts[t] == 0:
                raise ScenarioError(f"prefill.workers: model {t!r} gets traffic but has 0 prefill workers")
        return PrefillLayout(counts, cap)
    total = prefill_total(spec.workers)
    weight = shape.weight_bytes(PREFILL_DTYPE) if adapter_bytes is None else adapter_bytes
    extra = 1 if adapter_bytes is None else 0  # modules beyond the GPU's own weights: all of them for adapters
    hosts, load_s = None, 0.0
    if spec.on_demand is not None:
        held = [spec.on_demand.resident] * total
        load_s = weight / (spec.on_demand.load_GBps * 1e9)
        what = "prefill.on_demand.resident"
    else:
        hosts = place(total, spec.models_per_gpu, sc.prefill_share())
        held = [len(h) for h in hosts]
        what = "prefill.models_per_gpu"
    by_count = {k: kv_capacity_tokens(sc, shape, PREFILL_DTYPE, "prefill", extra_bytes=(k - extra) * weight,
                                      extra_what=f"{what}: {k} resident prefill modules")
                for k in sorted(set(held))}
    caps = [by_count[k] if spec.kv_bound else None for k in held]
    return PrefillLayout({"shared": total}, min(caps) if spec.kv_bound else None, caps, hosts, load_s)


@dataclass
class PrefillFleet:
    """A run's prefill workers, what each serves, and where a request is sent."""

    workers: list[PrefillWorker]
    pool_of: list[str]  # per worker: its model, "a+b" (packed) or "on_demand"
    serves: list[tuple[str, ...]]  # per worker: the models it may prefill
    submit: Callable[[int], None]  # send request ``rid`` to a prefill worker


def seconds_per_prompt_token(cost: CostModel, budget: int, mean_prompt: float) -> float:
    """Prefill seconds per prompt token in a full batch of mean-length prompts: how a router turns a GPU's
    outstanding tokens into time."""
    mean = max(1, min(budget, int(round(mean_prompt)) if mean_prompt else 1))
    n = max(1, budget // mean)
    return cost.prefill_time(n * mean, n * mean * mean, n) / (n * mean)


def build_prefill(env: Environment, sc: Scenario, layout: PrefillLayout, cost: CostModel,
                  prompt: np.ndarray, model: np.ndarray, rec: Records,
                  on_done: Callable[[int, int], None], mean_prompt: float) -> PrefillFleet:
    """The prefill workers of a run on ``layout``, and the function that routes a request to one."""
    spec, tasks = sc.prefill, sc.model.tasks
    budget = spec.max_batch_tokens
    router = Router(spec.routing, np.random.default_rng([sc.seed, 11]))
    workers: list[PrefillWorker] = []
    pools: list[list[PrefillWorker]] = []
    if not spec.shared:
        lone_times = array("d")  # the workers share one cost model: one table of lone prompts' times
        for t in tasks:
            pool = []
            for _ in range(layout.counts[t]):
                w = PrefillWorker(env, len(workers), cost, budget, prompt, rec, on_done, layout.kv_capacity, lone_times)
                workers.append(w)
                pool.append(w)
            pools.append(pool)
        pool_of = [t for t in tasks for _ in range(layout.counts[t])]
        serves = [(t,) for t in pool_of]
    else:
        caps = layout.kv_caps or []
        size = None if spec.on_demand is None else spec.on_demand.resident
        holders = None if spec.on_demand is None else Holders()
        workers = [SharedPrefillWorker(env, g, cost, budget, prompt, model, rec, on_done, caps[g], size,
                                       layout.load_s, holders) for g in range(layout.counts["shared"])]
        if layout.hosts is not None:
            pools = [[] for _ in tasks]
            for g, hosted in enumerate(layout.hosts):
                for m in hosted:
                    pools[m].append(workers[g])
            serves = [tuple(tasks[m] for m in hosted) for hosted in layout.hosts]
            pool_of = ["+".join(s) for s in serves]
        else:
            shared = ResidencyRouter(workers, seconds_per_prompt_token(cost, budget, mean_prompt), layout.load_s,
                                     holders)
            pool_of = ["on_demand"] * len(workers)
            serves = [tuple(tasks)] * len(workers)

            def submit(rid: int) -> None:
                shared.pick(int(model[rid])).submit(rid)

            return PrefillFleet(workers, pool_of, serves, submit)

    pick = router.pick

    def submit(rid: int) -> None:
        m = model[rid]
        pick(pools[m], m).submit(rid)

    return PrefillFleet(workers, pool_of, serves, submit)
