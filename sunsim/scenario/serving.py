"""The scenario's serving sections: prefill workers, decode defaults, and the decode designs
(``variants``) a run compares, with the worker counts and splits they take."""

from __future__ import annotations

from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BeforeValidator, Field, field_validator, model_validator

from sunsim.costs.architecture import DTYPES
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


class PrefillSpec(StrictModel):
    #: Workers per model: one number for every model, or a count per model name.
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


POOL_MODES = ("shared", "colocated", "multi_lora")  # one decode pool of ``workers`` GPUs


class Rebalance(StrictModel):
    """Dedicated pools that move GPUs between models as traffic changes (see :mod:`sunsim.sim.rebalance`)."""

    #: Every ``every_s`` seconds the split is recomputed from the last interval's arrival rates.
    every_s: Float = Field(gt=0, le=MAX_TIME_S)
    #: Seconds a moved GPU spends loading the new model's weights (serving nothing).
    load_s: Float = Field(0.0, ge=0, le=MAX_DURATION_S)


class VariantSpec(StrictModel):
    """One decode design to compare: dedicated per-model pools, one shared (SUN) pool, or a baseline:
    ``colocated`` (several models' weights per GPU, per-model batches) or ``multi_lora`` (one base model
    serving every task as a low-rank adapter)."""

    name: str
    mode: Literal["dedicated", "shared", "colocated", "multi_lora"]
    #: shared, colocated, multi_lora: pool size; dedicated: workers per model (one number, or a count per model).
    workers: WorkerCount
    dtype: str = "bf16"
    routing: Routing = "least_loaded"
    max_batch: Int | None = Field(None, gt=0, le=MAX_BATCH)
    #: colocated: task models whose decode weights each GPU holds (default 2).
    models_per_gpu: Int | None = Field(None, ge=1, le=MAX_TASKS)
    #: multi_lora: adapter rank (default 16; 0 makes adapters free, for checks).
    rank: Int | None = Field(None, ge=0, le=65536)
    #: multi_lora: the adapter-cost band (``low`` / ``central`` / ``high``, default central; see sunsim/costs/lora.py).
    lora_band: Literal["low", "central", "high"] | None = None
    #: multi_lora: adapters resident per GPU, LRU (default: the number of task models).
    max_adapters: Int | None = Field(None, ge=1, le=MAX_TASKS)
    #: dedicated: move GPUs between the models' pools as traffic changes.
    rebalance: Rebalance | None = None
    #: GPUs per decode worker (tensor parallel); ``workers`` counts workers, so the variant runs on
    #: ``workers x tp`` decode GPUs. Not modelled for multi_lora (adapter sharding).
    tp: TensorParallel = 1

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
        only = {"models_per_gpu": "colocated", "rank": "multi_lora", "max_adapters": "multi_lora",
                "lora_band": "multi_lora", "rebalance": "dedicated"}
        for field, mode in only.items():
            if getattr(self, field) is not None and self.mode != mode:
                raise ValueError(f"{field} applies only to mode: {mode} (this variant is mode: {self.mode})")
        if self.tp != 1 and self.mode == "multi_lora":
            raise ValueError("tp: tensor parallelism is not modelled for mode: multi_lora (sharded adapters); use tp: 1")
        return self
