"""The scenario's serving sections: prefill workers, decode defaults, and the decode designs
(``variants``) a run compares, with the worker counts and splits they take."""

from __future__ import annotations

from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BeforeValidator, Field, field_validator, model_validator

from sunsim.costs.architecture import DTYPES
from sunsim.scenario.hardware import HardwareSpec
from sunsim.scenario.limits import (
    MAX_BANDWIDTH_GBPS,
    MAX_BATCH,
    MAX_BLOCK_TOKENS,
    MAX_DURATION_S,
    MAX_TASKS,
    MAX_TIME_S,
    MAX_TOKENS,
    MAX_WORKERS,
    MIN_BANDWIDTH_GBPS,
    Float,
    Int,
    StrictModel,
    no_bool,
    safe_name,
)
from sunsim.sim.routing import POLICIES

#: The names routing.POLICIES registers, so a new policy needs no edit here.
Routing = Literal[tuple(POLICIES)]

#: Decode routing of a pool whose every GPU serves every model (SUN's shared pool, and the multi-LoRA pools, which
#: take the same so that the designs differ in what they serve, not in their router): the policy that measured
#: best across the experiments' workloads (results/README.md, routing sweep: the lowest TPOT p90 in each).
POOL_ROUTING = "power_of_two_kv"
#: Decode routing within per-model pools (dedicated, colocated): join the shortest queue.
PER_MODEL_ROUTING = "least_loaded"


class Split(StrictModel):
    """``total`` workers split over the models (at least one each): ``by: popularity`` in
    proportion to their initial traffic share, as an operator provisioning dedicated pools
    would, or ``by: even`` in equal parts."""

    total: Int = Field(ge=1, le=MAX_WORKERS)
    by: Literal["popularity", "even"]


_Count = Annotated[int, BeforeValidator(no_bool), Field(ge=0, le=MAX_WORKERS)]
#: GPUs of one worker's tensor-parallel group: one node's 1, 2, 4 or 8 (the degrees the measured all-reduce
#: tables hold); whether the model's heads split that way is checked against its shape when a run is laid out.
TensorParallel = Annotated[Literal[1, 2, 4, 8], BeforeValidator(no_bool)]
#: One count for every model, a count per model, or a split; a boolean is refused before the
#: union is tried, so the message is one line.
WorkerCount = Annotated[Union[_Count, dict[str, _Count], Split], BeforeValidator(no_bool)]


def split_by_share(total: int, share: np.ndarray) -> list[int]:
    """Largest-remainder split of ``total`` by ``share`` with at least one per non-zero share."""
    need = share > 0
    if total < need.sum():
        raise ValueError(f"a split of {total} workers cannot give each of {int(need.sum())} models one")
    exact = share * total
    counts = np.maximum(np.floor(exact).astype(int), need.astype(int))
    while counts.sum() < total:
        counts[np.argmax(np.where(need, exact - counts, -np.inf))] += 1
    while counts.sum() > total:
        over = np.where(counts > 1, counts - exact, -np.inf)
        counts[np.argmax(over)] -= 1
    return counts.tolist()


#: Host-to-device copy of a prefill module, GB/s: PCIe 5 x16 per direction (as ``decode.swap_GBps`` and the
#: adapter loads of sunsim/costs/lora.py), i.e. weights kept in host DRAM, the tier ServerlessLLM (Fu et al.,
#: OSDI 2024, arXiv 2401.14351) loads checkpoints from at the link's bandwidth. Cold loads from a local NVMe
#: drive are ~7 GB/s (PCIe 4 x4 sequential read): set ``load_GBps: 7`` for those.
DEFAULT_LOAD_GBPS = 64.0


class OnDemand(StrictModel):
    """One shared prefill pool loading models' prefill modules on demand (ServerlessLLM, Aegaeon style):
    each GPU holds at most ``resident`` of them (least recently used evicted), and a batch of a model not
    resident first waits for its load, ``weight bytes / load_GBps``."""

    resident: Int = Field(ge=1, le=MAX_TASKS)
    load_GBps: Float = Field(DEFAULT_LOAD_GBPS, ge=MIN_BANDWIDTH_GBPS, le=MAX_BANDWIDTH_GBPS)


class PrefillSpec(StrictModel):
    #: Workers per model: one number for every model, or a count per model name. When prefill GPUs are
    #: shared (``models_per_gpu`` > 1 or ``on_demand``) it is the pool's total instead: ``N`` or
    #: ``{total: N, by: popularity | even}`` (``by`` is the share the placement spreads replicas by).
    workers: WorkerCount = 1
    max_batch_tokens: Int = Field(8192, gt=0, le=MAX_TOKENS)
    routing: Routing = "least_loaded"
    #: Prefilled KV waits in the prefill GPU's memory until handed to decode; ``true`` bounds it by
    #: that memory (a batch that would not fit stalls), ``false`` lets it grow without limit.
    kv_bound: bool = True
    #: KV-cache element type: ``bf16`` or ``fp8`` (vLLM ``--kv-cache-dtype fp8``: half the bytes per token, and
    #: attention timed with an fp8 cache where the profile measured one).
    kv_dtype: Literal["bf16", "fp8"] = "bf16"
    #: GPUs per prefill worker (tensor parallel): a worker is a group of ``tp`` GPUs holding one shard each.
    tp: TensorParallel = 1
    #: The prefill GPUs' own GPU and profile (the fields of the top-level ``hardware``; what it leaves out comes
    #: from there, see :func:`~sunsim.scenario.hardware.pool_hardware`). Left out: the top-level ``hardware``.
    hardware: HardwareSpec | None = None
    #: Task models whose prefill modules each prefill GPU holds (MuxServe-style packing; 1: a pool per model).
    #: A GPU batches one model's prompts at a time, taking the models' queues FCFS by their oldest request.
    models_per_gpu: Int = Field(1, ge=1, le=MAX_TASKS)
    #: Load prefill modules on demand into one shared pool (see :class:`OnDemand`); excludes ``models_per_gpu``.
    on_demand: OnDemand | None = None

    @property
    def shared(self) -> bool:
        """Whether prefill GPUs serve several models (then ``workers`` is the pool's total)."""
        return self.models_per_gpu > 1 or self.on_demand is not None

    @model_validator(mode="after")
    def _shared_total(self) -> PrefillSpec:
        if self.on_demand is not None and self.models_per_gpu > 1:
            raise ValueError("prefill.on_demand and prefill.models_per_gpu > 1 exclude each other: on-demand GPUs "
                             "hold up to on_demand.resident models; leave models_per_gpu at 1")
        if self.shared and isinstance(self.workers, dict):
            what = "on_demand" if self.on_demand is not None else f"models_per_gpu: {self.models_per_gpu}"
            raise ValueError(f"prefill.workers: with prefill.{what} the prefill GPUs are shared, so workers is "
                             f"their total (N or {{total: N, by: popularity}}), not a count per model")
        return self


class DecodeDefaults(StrictModel):
    block_tokens: Int = Field(16, gt=0, le=MAX_BLOCK_TOKENS)
    #: KV-cache element type of the decode GPUs: ``bf16`` or ``fp8`` (half the bytes: twice the tokens fit).
    kv_dtype: Literal["bf16", "fp8"] = "bf16"
    max_batch: Int | None = Field(None, gt=0, le=MAX_BATCH)
    #: ``paged``: blocks allocated as tokens are generated, preemption when they run out (vLLM);
    #: ``reserve``: prompt + true output reserved at admission (clairvoyant, never preempts).
    kv_policy: Literal["paged", "reserve"] = "paged"
    #: What a preempted request loses: ``recompute`` (vLLM's default) or ``swap`` (KV to host memory).
    preemption: Literal["recompute", "swap"] = "recompute"
    #: Share of a decode GPU's KV blocks that admission keeps free (vLLM's watermark).
    watermark: Float = Field(0.01, ge=0, lt=1)
    #: Host link for swapped KV, GB/s per direction (PCIe 5 x16).
    swap_GBps: Float = Field(64.0, ge=MIN_BANDWIDTH_GBPS, le=MAX_BANDWIDTH_GBPS)


POOL_MODES = ("shared", "colocated", "multi_lora", "aggregated_lora")  # one pool of ``workers`` GPUs
#: Prefill and decode on the same GPUs (vLLM V1 continuous batching with chunked prefill; see
#: :mod:`sunsim.sim.aggregated`): no prefill pools, no KV transfer. ``aggregated``: a pool per model,
#: sized like ``dedicated``; ``aggregated_lora``: one pool serving every task as an adapter on the base.
AGGREGATED_MODES = ("aggregated", "aggregated_lora")
#: Modes whose ``workers`` is per model (a count for all, a count per model, or a split).
PER_MODEL_MODES = ("dedicated", "aggregated")
#: Token budget of one aggregated iteration when ``max_num_batched_tokens`` is left out: vLLM's default for
#: its OpenAI server on GPUs with at least 70 GiB that are not A100s (H100, H200, MI300X); smaller GPUs and
#: A100s get 2048 (vllm-project/vllm, ``vllm/engine/arg_utils.py``, ``EngineArgs._set_default_args``:
#: ``default_max_num_batched_tokens``, UsageContext.OPENAI_API_SERVER 8192 / 2048; the LLM class 16384 / 8192).
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192


class Rebalance(StrictModel):
    """Dedicated pools that move GPUs between models as traffic changes (see :mod:`sunsim.sim.rebalance`)."""

    #: Every ``every_s`` seconds the split is recomputed from the last interval's arrival rates.
    every_s: Float = Field(gt=0, le=MAX_TIME_S)
    #: Seconds a moved GPU spends loading the new model's weights (serving nothing).
    load_s: Float = Field(0.0, ge=0, le=MAX_DURATION_S)


class Autoscale(StrictModel):
    """A shared pool sized to its load (see :mod:`sunsim.sim.autoscale`): every ``every_s`` seconds the pool
    becomes ``ceil(load / target_load)`` GPUs, ``load`` being the GPUs' worth of KV memory (and, with a
    ``max_batch``, of batch slots) its requests held on average over the interval, within
    ``[min_workers, max_workers]``. ``workers`` is the size it starts with."""

    every_s: Float = Field(gt=0, le=MAX_TIME_S)
    #: Share of each GPU's KV memory (and batch slots) the pool aims to fill on average, in (0, 1].
    target_load: Float = Field(gt=0, le=1)
    #: Seconds a new GPU spends loading the weights before it serves (counted as in service: it is held).
    load_s: Float = Field(0.0, ge=0, le=MAX_DURATION_S)
    min_workers: Int = Field(1, ge=1, le=MAX_WORKERS)
    max_workers: Int = Field(ge=1, le=MAX_WORKERS)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscale:
        if self.min_workers > self.max_workers:
            raise ValueError(f"autoscale: min_workers {self.min_workers} is more than max_workers {self.max_workers}")
        return self


class VariantSpec(StrictModel):
    """One decode design to compare: dedicated per-model pools, one shared (SUN) pool, or a baseline:
    ``colocated`` (several models' weights per GPU, per-model batches), ``multi_lora`` (one base model
    serving every task as a low-rank adapter), or aggregated serving, where prefill and decode share the
    GPUs (:data:`AGGREGATED_MODES`: ``prefill.workers`` does not apply to them)."""

    name: str
    mode: Literal["dedicated", "shared", "colocated", "multi_lora", "aggregated", "aggregated_lora"]
    #: shared, colocated, multi_lora, aggregated_lora: pool size; dedicated, aggregated: workers per model
    #: (one number, a count per model, or a split).
    workers: WorkerCount
    dtype: str = "bf16"
    #: Default: ``POOL_ROUTING`` for shared and multi_lora pools, ``PER_MODEL_ROUTING`` for the others.
    routing: Routing = PER_MODEL_ROUTING
    max_batch: Int | None = Field(None, gt=0, le=MAX_BATCH)
    #: colocated: task models whose decode weights each GPU holds (default 2).
    models_per_gpu: Int | None = Field(None, ge=1, le=MAX_TASKS)
    #: multi_lora, aggregated_lora: adapter rank (default 16; 0 makes adapters free, for checks).
    rank: Int | None = Field(None, ge=0, le=65536)
    #: multi_lora, aggregated_lora: the adapter-cost band (``low`` / ``central`` / ``high``, default central;
    #: see sunsim/costs/lora.py).
    lora_band: Literal["low", "central", "high"] | None = None
    #: multi_lora, aggregated_lora: adapters resident per GPU, LRU (default: the number of task models).
    max_adapters: Int | None = Field(None, ge=1, le=MAX_TASKS)
    #: dedicated: move GPUs between the models' pools as traffic changes.
    rebalance: Rebalance | None = None
    #: shared: size the pool to its load over time (see :class:`Autoscale`).
    autoscale: Autoscale | None = None
    #: aggregated modes: tokens one iteration may run, decode rows and prefill chunks together (vLLM's
    #: ``--max-num-batched-tokens``; default :data:`DEFAULT_MAX_NUM_BATCHED_TOKENS`).
    max_num_batched_tokens: Int | None = Field(None, gt=0, le=MAX_TOKENS)
    #: GPUs per decode worker (tensor parallel); ``workers`` counts workers, so the variant runs on
    #: ``workers x tp`` decode GPUs. Not modelled for the adapter modes (sharded adapters).
    tp: TensorParallel = 1
    #: This variant's decode GPUs (aggregated modes: its only GPUs), as ``prefill.hardware``: prefill on one GPU
    #: type, decode on another. Left out: the top-level ``hardware``.
    hardware: HardwareSpec | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return safe_name(v)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"unknown dtype {v!r}; allowed: {', '.join(DTYPES)}")
        return v

    @model_validator(mode="after")
    def _shared_is_one_pool(self) -> VariantSpec:
        if self.mode in POOL_MODES and not isinstance(self.workers, int):
            raise ValueError(f"a {self.mode} pool takes one worker count (workers: N)")
        lora = ("multi_lora", "aggregated_lora")
        only = {"models_per_gpu": ("colocated",), "rank": lora, "max_adapters": lora, "lora_band": lora,
                "rebalance": ("dedicated",), "autoscale": ("shared",), "max_num_batched_tokens": AGGREGATED_MODES}
        for field, modes in only.items():
            if getattr(self, field) is not None and self.mode not in modes:
                raise ValueError(f"{field} applies only to mode: {' or '.join(modes)} "
                                 f"(this variant is mode: {self.mode})")
        a = self.autoscale
        if a is not None and isinstance(self.workers, int) and not a.min_workers <= self.workers <= a.max_workers:
            raise ValueError(f"workers: the pool starts with {self.workers} GPUs, outside autoscale's "
                             f"[min_workers, max_workers] = [{a.min_workers}, {a.max_workers}]")
        if self.tp != 1 and self.mode in ("multi_lora", "aggregated_lora"):
            raise ValueError(f"tp: tensor parallelism is not modelled for mode: {self.mode}; use tp: 1")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_routing(cls, data):
        """A variant that names no routing gets its kind of pool's default (see ``POOL_ROUTING``)."""
        if isinstance(data, dict) and data.get("routing") is None:
            pool = data.get("mode") in ("shared", "multi_lora", "aggregated_lora")
            data = {**data, "routing": POOL_ROUTING if pool else PER_MODEL_ROUTING}
        return data
