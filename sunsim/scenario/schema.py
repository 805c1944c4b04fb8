"""The scenario file: one YAML document describing a whole experiment, validated on load.

Errors name the offending field (``workload.rate``) and what is allowed, so that a user
can fix a file without reading this module. Every number is finite and bounded (the bounds
below say why), booleans are never taken for numbers, names that become paths are checked
with :func:`sunsim.names.check_name`, and duplicate YAML keys are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sunsim.costs.architecture import DTYPES, PRESETS, ModelShape
from sunsim.costs.hardware import GPUS, INTERCONNECTS
from sunsim.errors import InputError
from sunsim.names import ALLOWED, check_name
from sunsim.sim.routing import POLICIES

#: The names routing.POLICIES registers, so a new policy needs no edit here.
Routing = Literal[tuple(POLICIES)]
DEFAULT_PRESET = "llama-3.1-8b"

# --- bounds ------------------------------------------------------------------------------
# Generous for any real deployment, tight enough that no value overflows, divides by ~0 or
# asks numpy for an absurd allocation.
MAX_RATE = 1e6  #: req/s over all models (a large fleet serves ~1e4).
MIN_RATE = 1e-6  #: req/s; below this 1/rate is a gap of ~12 days.
MAX_DURATION_S = 1e7  #: ~116 days of simulated traffic.
MAX_TIME_S = 1e9  #: any simulated instant (horizon, shift), ~32 years.
MAX_TOKENS = 10_000_000  #: any token length or token budget.
MAX_REQUESTS = 50_000_000  #: requests in one run (see workload.check_size for the memory bound).
MAX_SEED = 2**63 - 1
MAX_WORKERS = 10_000  #: GPUs of one pool or one split.
MAX_TASKS = 1000
MAX_VARIANTS = 100
MAX_BATCH = 100_000  #: running requests on one decode GPU.
MAX_BLOCK_TOKENS = 4096
MAX_LATENCY_US = 1e7  #: 10 s per transfer.
MIN_BANDWIDTH_GBPS, MAX_BANDWIDTH_GBPS = 1e-6, 1e5  #: 1 kB/s (tiny test shapes) to 100 TB/s
MAX_RESERVE_GIB = 1e4
MIN_CV, MAX_CV = 1e-3, 100.0  #: gamma shape 1/cv^2 stays within 1e-4..1e6.
MAX_ZIPF_S = 20.0  #: 1000^-20 is still a positive float.
MAX_WEIGHT = 1e12
MIN_TIME_SCALE, MAX_TIME_SCALE = 1e-6, 1e6
MAX_SIGMA = 10.0  #: lognormal log-space sigma; exp(10 x 6 sigma) is still finite.
MAX_SLO_S = 1e6
MAX_PATH_CHARS = 4096


def _no_bool(v: Any) -> Any:
    # YAML's true/false are Python bools, which pydantic would otherwise read as 1/0.
    if isinstance(v, bool):
        raise ValueError("expected a number, not true/false")
    return v


def _path_text(v: str) -> str:
    if not v or "\0" in v:
        raise ValueError("expected a file path (non-empty, no NUL characters)")
    return v


#: An integer that is not a boolean (a count, a length, a seed).
Int = Annotated[int, BeforeValidator(_no_bool)]
#: A finite number that is not a boolean (``allow_inf_nan=False`` below refuses inf and NaN).
Float = Annotated[float, BeforeValidator(_no_bool)]
PositiveFloat = Annotated[float, BeforeValidator(_no_bool), Field(gt=0)]
PathText = Annotated[str, Field(max_length=MAX_PATH_CHARS), AfterValidator(_path_text)]


def _safe_name(v: str) -> str:
    # The field's location is added by pydantic; the message says what is allowed.
    try:
        return check_name(v, "name")
    except ValueError:
        raise ValueError(f"{v!r} is not a valid name; allowed: {ALLOWED}") from None


class ScenarioError(InputError):
    """A scenario that cannot be run; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- model -------------------------------------------------------------------------------
class CustomShape(_Strict):
    """A shape given field by field; the bounds are ~10x beyond today's largest models."""

    name: str = Field("custom", min_length=1, max_length=100)
    hidden: Int = Field(gt=0, le=1_000_000)
    layers: Int = Field(gt=0, le=10_000)
    heads: Int = Field(gt=0, le=10_000)
    kv_heads: Int = Field(gt=0, le=10_000)
    head_dim: Int = Field(gt=0, le=10_000)
    intermediate: Int = Field(gt=0, le=10_000_000)
    vocab: Int = Field(gt=0, le=100_000_000)
    tied_embeddings: bool = False


class ModelSpec(_Strict):
    """The base architecture (exactly one of preset, shape, hf_config; default: the
    llama-3.1-8b preset) and the task models fine-tuned from it."""

    preset: str | None = None
    shape: CustomShape | None = None
    #: A Hugging Face ``config.json`` (relative to the scenario file).
    hf_config: PathText | None = None
    tasks: list[str] = Field(default_factory=lambda: ["task0"], min_length=1, max_length=MAX_TASKS)

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = [k for k in ("preset", "shape", "hf_config") if data.get(k) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of model.preset, model.shape, model.hf_config (got {', '.join(given)})")
        if not given:
            data = {**data, "preset": DEFAULT_PRESET}
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; allowed: {', '.join(PRESETS)} (or give model.shape)")
        return v

    @field_validator("tasks", mode="before")
    @classmethod
    def _count_to_names(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            if not 1 <= v <= MAX_TASKS:
                raise ValueError(f"a count of task models must be from 1 to {MAX_TASKS}")
            return [f"task{i}" for i in range(v)]
        return v

    @field_validator("tasks")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        for i, name in enumerate(v):
            check_name(name, f"item {i}")
        if len(set(v)) != len(v):
            raise ValueError("task model names must be unique")
        return v

    def resolve(self) -> ModelShape:
        if self.shape is not None:
            return ModelShape(**self.shape.model_dump())
        if self.hf_config is not None:
            from sunsim.scenario.hf_config import read_hf_config

            return read_hf_config(self.hf_config)
        return PRESETS[self.preset]  # type: ignore[index]


# --- hardware and links ----------------------------------------------------------------------
class HardwareSpec(_Strict):
    gpu: str = "h100"
    #: ``analytic`` (datasheet roofline) or the path of a measured profile.
    profile: PathText = "analytic"
    #: Share of GPU memory the engine may use (as vLLM's gpu_memory_utilization).
    memory_utilization: Float = Field(0.9, gt=0, le=1)
    #: Memory kept free for activations and the runtime, GiB (at most 10,000).
    reserve_gib: Float = Field(4.0, ge=0, le=MAX_RESERVE_GIB)

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        if v not in GPUS:
            raise ValueError(f"unknown gpu {v!r}; allowed: {', '.join(GPUS)}")
        return v


class InterconnectSpec(_Strict):
    """KV-cache transfer from prefill to decode GPUs."""

    kind: str | None = "ib-ndr"
    #: GB/s per link, from 0.001 to 100,000 (overrides ``kind``).
    bandwidth_GBps: Float | None = Field(None, ge=MIN_BANDWIDTH_GBPS, le=MAX_BANDWIDTH_GBPS)
    #: Fixed latency per transfer, microseconds (at most 10 s).
    latency_us: Float = Field(10.0, ge=0, le=MAX_LATENCY_US)
    #: ``none``: transfers never wait; ``per_decode_worker``: one NIC per decode GPU, transfers
    #: into it queue FIFO; ``per_link``: each prefill->decode GPU pair is a FIFO link.
    contention: Literal["none", "per_decode_worker", "per_link"] = "per_decode_worker"

    @model_validator(mode="after")
    def _bandwidth_known(self) -> InterconnectSpec:
        if self.bandwidth_GBps is None:
            if self.kind not in INTERCONNECTS:
                raise ValueError(
                    f"interconnect.kind must be one of {', '.join(INTERCONNECTS)} unless bandwidth_GBps is given"
                )
        return self

    @property
    def bandwidth_Bps(self) -> float:
        if self.bandwidth_GBps is not None:
            return self.bandwidth_GBps * 1e9
        return INTERCONNECTS[self.kind]  # type: ignore[index]


# --- serving ---------------------------------------------------------------------------------
class Split(_Strict):
    """``total`` workers split over the models (at least one each): ``by: popularity`` in
    proportion to their initial traffic share, as an operator provisioning dedicated pools
    would, or ``by: even`` in equal parts."""

    total: Int = Field(ge=1, le=MAX_WORKERS)
    by: Literal["popularity", "even"]


_Count = Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=MAX_WORKERS)]
#: One count for every model, a count per model, or a split; a boolean is refused before the
#: union is tried, so the message is one line.
WorkerCount = Annotated[Union[_Count, dict[str, _Count], Split], BeforeValidator(_no_bool)]


class PrefillSpec(_Strict):
    #: Workers per model: one number for every model, or a count per model name.
    workers: WorkerCount = 1
    max_batch_tokens: Int = Field(8192, gt=0, le=MAX_TOKENS)
    routing: Routing = "least_loaded"
    #: Prefilled KV waits in the prefill GPU's memory until handed to decode; ``true`` bounds it by
    #: that memory (a batch that would not fit stalls), ``false`` lets it grow without limit.
    kv_bound: bool = True


class DecodeDefaults(_Strict):
    block_tokens: Int = Field(16, gt=0, le=MAX_BLOCK_TOKENS)
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


class Rebalance(_Strict):
    """Dedicated pools that move GPUs between models as traffic changes (see :mod:`sunsim.sim.rebalance`)."""

    #: Every ``every_s`` seconds the split is recomputed from the last interval's arrival rates.
    every_s: Float = Field(gt=0, le=MAX_TIME_S)
    #: Seconds a moved GPU spends loading the new model's weights (serving nothing).
    load_s: Float = Field(0.0, ge=0, le=MAX_DURATION_S)


class VariantSpec(_Strict):
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
    #: multi_lora: adapters resident per GPU, LRU (default: the number of task models).
    max_adapters: Int | None = Field(None, ge=1, le=MAX_TASKS)
    #: dedicated: move GPUs between the models' pools as traffic changes.
    rebalance: Rebalance | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return _safe_name(v)

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
                "rebalance": "dedicated"}
        for field, mode in only.items():
            if getattr(self, field) is not None and self.mode != mode:
                raise ValueError(f"{field} applies only to mode: {mode} (this variant is mode: {self.mode})")
        return self


# --- workload --------------------------------------------------------------------------------
class Fixed(_Strict):
    kind: Literal["fixed"]
    value: Int = Field(gt=0, le=MAX_TOKENS)


class Uniform(_Strict):
    kind: Literal["uniform"]
    low: Int = Field(gt=0, le=MAX_TOKENS)
    high: Int = Field(gt=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError("uniform needs low <= high")
        return self


class LogNormal(_Strict):
    """Lengths with the given mean and log-space sigma, clipped to [min, max]
    (min <= mean <= max; sigma at most 10)."""

    kind: Literal["lognormal"]
    mean: Float = Field(gt=0, le=MAX_TOKENS)
    sigma: Float = Field(gt=0, le=MAX_SIGMA)
    min: Int = Field(1, gt=0, le=MAX_TOKENS)
    max: Int = Field(16384, gt=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _possible(self) -> LogNormal:
        if self.min > self.max:
            raise ValueError(f"lognormal needs min <= max (got min {self.min}, max {self.max})")
        if not self.min <= self.mean <= self.max:
            raise ValueError(f"lognormal mean {self.mean:g} must lie within [min, max] = [{self.min}, {self.max}]")
        return self


class Geometric(_Strict):
    """Lengths 1, 2, ... with P(k) = (1-p)^(k-1) p and the given mean (memoryless, as M/M/1 needs)."""

    kind: Literal["geometric"]
    mean: Float = Field(ge=1, le=MAX_TOKENS)


class FromTrace(_Strict):
    """Sample lengths from a trace file's column (with replacement)."""

    kind: Literal["trace"]
    path: PathText


LengthDist = Annotated[Fixed | Uniform | LogNormal | Geometric | FromTrace, Field(discriminator="kind")]


class Poisson(_Strict):
    kind: Literal["poisson"]


class Gamma(_Strict):
    """Gamma inter-arrival times with coefficient of variation ``cv`` (cv=1 is Poisson)."""

    kind: Literal["gamma"]
    cv: Float = Field(ge=MIN_CV, le=MAX_CV)


class TraceArrivals(_Strict):
    """Replay a trace file: arrival times and lengths (and a ``model`` column if present).

    Rows are replayed in arrival order, times shifted so that the first is 0 and scaled; rows at
    or after ``workload.duration_s``, and past ``workload.num_requests``, are dropped (a longer
    trace is cut to the run, as a shorter run of a Poisson stream would be)."""

    kind: Literal["trace"]
    path: PathText
    #: Multiply arrival times by this (0.5 doubles the rate); ignored when workload.rate is set.
    time_scale: Float = Field(1.0, ge=MIN_TIME_SCALE, le=MAX_TIME_SCALE)
    #: Use the trace's prompt/output lengths (else the length distributions below).
    use_lengths: bool = True


Arrivals = Annotated[Poisson | Gamma | TraceArrivals, Field(discriminator="kind")]


class Zipf(_Strict):
    """Model i (0-based, in task order) gets weight 1/(i+1)^s; s=0 is uniform."""

    kind: Literal["zipf"]
    s: Float = Field(ge=0, le=MAX_ZIPF_S)


class Weights(_Strict):
    kind: Literal["weights"]
    weights: dict[str, Annotated[float, BeforeValidator(_no_bool), Field(ge=0, le=MAX_WEIGHT)]]


Popularity = Annotated[Zipf | Weights, Field(discriminator="kind")]


class PopularityShift(_Strict):
    """At ``at_s`` the popularity ranking rotates by ``rotate`` places (the hot model changes)."""

    at_s: Float = Field(gt=0, le=MAX_TIME_S)
    rotate: Int = Field(1, ge=1, le=MAX_TASKS)


class Lengths(_Strict):
    prompt_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None


class WorkloadSpec(_Strict):
    #: Simulated seconds of arrivals, at most 1e7 (~116 days).
    duration_s: Float | None = Field(None, gt=0, le=MAX_DURATION_S)
    #: At most 50 million (and the run's arrays must fit in ~8 GiB: workload.check_size).
    num_requests: Int | None = Field(None, gt=0, le=MAX_REQUESTS)
    #: Total request rate over all models, req/s, from 1e-6 to 1e6 (for a trace: rescales its
    #: arrivals to this mean rate).
    rate: Float | None = Field(None, ge=MIN_RATE, le=MAX_RATE)
    arrivals: Arrivals = Field(default_factory=lambda: Poisson(kind="poisson"))
    popularity: Popularity = Field(default_factory=lambda: Zipf(kind="zipf", s=1.0))
    shift: PopularityShift | None = None
    prompt_tokens: LengthDist = Field(default_factory=lambda: LogNormal(kind="lognormal", mean=1024, sigma=0.6))
    output_tokens: LengthDist = Field(default_factory=lambda: LogNormal(kind="lognormal", mean=200, sigma=0.8))
    per_model: dict[str, Lengths] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounded(self) -> WorkloadSpec:
        if self.duration_s is None and self.num_requests is None:
            raise ValueError("give workload.duration_s or workload.num_requests")
        if self.rate is None and not isinstance(self.arrivals, TraceArrivals):
            raise ValueError("workload.rate is required for poisson and gamma arrivals")
        return self


class SLOSpec(_Strict):
    ttft_s: Float = Field(2.0, gt=0, le=MAX_SLO_S)
    tpot_s: Float = Field(0.1, gt=0, le=MAX_SLO_S)
    #: Target share of requests meeting both (used by goodput and planning).
    attainment: Float = Field(0.9, gt=0, le=1)


class SimSpec(_Strict):
    #: After the last arrival, keep simulating this long for requests to drain; then stop.
    drain_s: Float = Field(600.0, ge=0, le=MAX_DURATION_S)
    #: Hard stop (simulated seconds, at most 1e9); default: last arrival + drain_s.
    horizon_s: Float | None = Field(None, gt=0, le=MAX_TIME_S)
    #: Throughput is measured from this share of the arrival span (warm-up excluded) to the last arrival.
    warmup_fraction: Float = Field(0.1, ge=0, lt=1)


class Scenario(_Strict):
    #: Becomes the results folder: a safe name (:data:`sunsim.names.ALLOWED`).
    name: str = "scenario"
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    model: ModelSpec = Field(default_factory=ModelSpec)
    hardware: HardwareSpec = Field(default_factory=HardwareSpec)
    interconnect: InterconnectSpec = Field(default_factory=InterconnectSpec)
    prefill: PrefillSpec = Field(default_factory=PrefillSpec)
    decode: DecodeDefaults = Field(default_factory=DecodeDefaults)
    workload: WorkloadSpec
    slo: SLOSpec = Field(default_factory=SLOSpec)
    sim: SimSpec = Field(default_factory=SimSpec)
    variants: list[VariantSpec] = Field(min_length=1, max_length=MAX_VARIANTS)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return _safe_name(v)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        tasks = self.model.tasks
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variants: names must be unique")
        _check_counts("prefill.workers", self.prefill.workers, tasks)
        if isinstance(self.prefill.workers, Split):
            try:
                self.counts(self.prefill.workers)
            except ValueError as exc:
                raise ValueError(f"prefill.workers: {exc}") from None
        for i, v in enumerate(self.variants):
            if v.mode == "dedicated":
                _check_counts(f"variants[{i}].workers", v.workers, tasks)
                if isinstance(v.workers, Split):
                    try:
                        self.counts(v.workers)
                    except ValueError as exc:
                        raise ValueError(f"variants[{i}].workers: {exc}") from None
            elif v.workers < 1:
                raise ValueError(f"variants[{i}].workers: a {v.mode} pool needs at least 1 worker")
            if v.models_per_gpu is not None and v.models_per_gpu > len(tasks):
                raise ValueError(f"variants[{i}].models_per_gpu: at most the number of task models ({len(tasks)}), "
                                 f"got {v.models_per_gpu}")
            k = v.models_per_gpu or min(2, len(tasks))
            if v.mode == "colocated" and v.workers * k < len(tasks):
                raise ValueError(f"variants[{i}].workers: {v.workers} GPUs x models_per_gpu "
                                 f"{k} cannot host the {len(tasks)} task models")
        if isinstance(self.workload.popularity, Weights):
            unknown = set(self.workload.popularity.weights) - set(tasks)
            if unknown:
                raise ValueError(f"workload.popularity.weights: unknown models {sorted(unknown)}; models are {tasks}")
            if sum(self.workload.popularity.weights.values()) <= 0:
                raise ValueError("workload.popularity.weights must not all be zero")
        unknown = set(self.workload.per_model) - set(tasks)
        if unknown:
            raise ValueError(f"workload.per_model: unknown models {sorted(unknown)}; models are {tasks}")
        return self

    @property
    def shape(self) -> ModelShape:
        return self.model.resolve()

    def popularity(self) -> np.ndarray:
        """Each task model's share of the traffic (before any shift), in task order."""
        tasks = self.model.tasks
        pop = self.workload.popularity
        if isinstance(pop, Zipf):
            w = 1.0 / np.arange(1, len(tasks) + 1) ** pop.s
        else:
            w = np.array([pop.weights.get(t, 0.0) for t in tasks])
        return w / w.sum()

    def counts(self, workers: int | dict[str, int] | Split) -> dict[str, int]:
        """Per-model worker counts from a count-for-all, a per-model mapping or a split."""
        tasks = self.model.tasks
        if isinstance(workers, int):
            return {t: workers for t in tasks}
        if isinstance(workers, Split):
            share = self.popularity() if workers.by == "popularity" else np.full(len(tasks), 1 / len(tasks))
            return dict(zip(tasks, split_by_share(workers.total, share)))
        return {t: workers.get(t, 0) for t in tasks}


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


def _check_counts(field: str, workers: int | dict[str, int] | Split, tasks: list[str]) -> None:
    if isinstance(workers, dict):
        unknown = set(workers) - set(tasks)
        if unknown:
            raise ValueError(f"{field}: unknown models {sorted(unknown)}; models are {tasks}")


# --- loading ---------------------------------------------------------------------------------
def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not _is_union_tag(p))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc or 'scenario'}: {msg}" + (f" (got {e['input']!r})" if _short(e.get("input")) else ""))
    return "invalid scenario:\n  " + "\n  ".join(lines)


_UNION_TAGS = {"fixed", "uniform", "lognormal", "geometric", "trace", "poisson", "gamma", "zipf", "weights",
               "int", "dict[str,int]", "constrained-int", "dict[str,constrained-int]", "Split"}


def _is_union_tag(part: Any) -> bool:
    """Pydantic names the union member tried (``function-before[...]``); the user never wrote it."""
    return isinstance(part, str) and (part in _UNION_TAGS or "[" in part or part.startswith("constrained-"))


def _short(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and len(repr(v)) < 60


def parse_override(text: str) -> tuple[list[str], Any]:
    """``workload.rate=30`` -> (["workload", "rate"], 30); the value is parsed as YAML."""
    if "=" not in text:
        raise ScenarioError(f"--set {text!r}: expected KEY=VALUE, e.g. workload.rate=30")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ScenarioError(f"--set {text!r}: empty key")
    try:
        return path, safe_load_unique(raw)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"--set {key.strip()}: the value is not valid YAML: {' '.join(str(exc).split())}") from None
    except ValueError as exc:  # an integer of more than 4300 digits, a date such as 2023-02-30
        raise ScenarioError(f"--set {key.strip()}: the value is not readable: {_value_error(exc)}") from None


def _value_error(exc: ValueError) -> str:
    """int()'s message ends with advice on sys.set_int_max_str_digits, which is not the user's to take."""
    return str(exc).split("; use sys.", 1)[0]


def apply_override(data: dict, path: list[str], value: Any) -> None:
    """Set a nested key; list items are addressed by index or, for variants, by name."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        node = _child(node, part, create=True, where=".".join(path[: i + 1]))
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, ".".join(path))] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ScenarioError(f"--set {'.'.join(path)}: {'.'.join(path[:-1])} is not a mapping")


#: A list index in a ``--set`` key: ASCII digits only ('²'.isdigit() is true, int('²') fails).
_INDEX = re.compile(r"-?[0-9]{1,9}")


def _list_index(node: list, part: str, where: str) -> int:
    if _INDEX.fullmatch(part):
        idx = int(part)
        if -len(node) <= idx < len(node):
            return idx
    for idx, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return idx
    raise ScenarioError(f"--set {where}: no list item {part!r}")


def _child(node: Any, part: str, create: bool, where: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, where)]
    if not isinstance(node, dict):
        raise ScenarioError(f"--set {where}: parent is not a mapping")
    if part not in node or node[part] is None:
        if not create:
            raise ScenarioError(f"--set {where}: no such field")
        node[part] = {}
    return node[part]


def scenario_from_dict(data: Any, base_dir: Path | None = None) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError("invalid scenario: the file must hold a mapping at the top level")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(_format_error(err)) from None
    if base_dir is not None:
        sc = _resolve_paths(sc, base_dir)
    _check_shape(sc)
    return sc


def _check_shape(sc: Scenario) -> None:
    """Resolve the model shape now (reading an ``hf_config``), so a bad one stops the run up front."""
    try:
        sc.model.resolve()
    except ScenarioError:
        raise
    except ValueError as exc:
        where = "model.shape" if sc.model.shape is not None else "model"
        raise ScenarioError(f"invalid scenario:\n  {where}: {exc}") from None


def _resolve_paths(sc: Scenario, base: Path) -> Scenario:
    """Relative trace/profile paths are relative to the scenario file (or, failing that, the cwd)."""

    def fix(p: str) -> str:
        path = Path(p)
        if path.is_absolute() or path.exists():
            return p
        candidate = base / path
        return str(candidate) if candidate.exists() else p

    data = sc.model_dump()
    wl = data["workload"]
    if wl["arrivals"]["kind"] == "trace":
        wl["arrivals"]["path"] = fix(wl["arrivals"]["path"])
    for dist in [wl["prompt_tokens"], wl["output_tokens"]] + [
        d for lengths in wl["per_model"].values() for d in lengths.values() if d
    ]:
        if dist["kind"] == "trace":
            dist["path"] = fix(dist["path"])
    if data["hardware"]["profile"] != "analytic":
        data["hardware"]["profile"] = fix(data["hardware"]["profile"])
    if data["model"]["hf_config"] is not None:
        data["model"]["hf_config"] = fix(data["model"]["hf_config"])
    return Scenario.model_validate(data)


#: Limits on a YAML document (a scenario or sweep is a few KiB, a few levels deep, a few hundred
#: nodes): a larger file (the pure-Python scanner takes ~2 s per MiB), deeper nesting (Python's
#: recursion limit) or aliases expanding to more nodes ("billion laughs": a few lines that expand
#: to 10^9) is refused before it is built.
MAX_YAML_BYTES = 2**20
MAX_YAML_DEPTH = 100
MAX_YAML_NODES = 100_000


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (not "last one wins"),
    and a document nested deeper than :data:`MAX_YAML_DEPTH` or expanding (aliases counted as
    often as they are used) to more than :data:`MAX_YAML_NODES` nodes is refused while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0  # nodes so far, an alias counting as the whole subtree it names
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size, once the node is complete

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:  # (an undefined alias is reported by the base class)
                if id(node) not in self._sizes:
                    raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refers to itself "
                                                      "(a recursive structure)", event.start_mark)
                self._count(self._sizes[id(node)], event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                              self.peek_event().start_mark)
        before = self._expanded
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, node.start_mark)
        self._sizes[id(node)] = self._expanded - before
        return node

    def _count(self, n: int, mark: Any) -> None:
        self._expanded += n
        if self._expanded > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(None, None, f"aliases expand the document to more than "
                                              f"{MAX_YAML_NODES:,} values; write it out without aliases", mark)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys, deep nesting and alias bombs (a ``YAMLError``)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping (a scenario, a sweep), with errors that say which file."""
    try:
        with path.open("rb") as f:  # at most MAX_YAML_BYTES + 1: /dev/zero or a huge file is not read whole
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ScenarioError(f"{what} {str(path)!r} is larger than {MAX_YAML_BYTES // 2**20} MiB; not a {what} file")
    try:
        data = safe_load_unique(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ScenarioError(f"{what} {str(path)!r} is not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{what} {str(path)!r} is not valid YAML: {exc}") from None
    except ValueError as exc:  # an integer of more than 4300 digits, a date such as 2023-02-30
        raise ScenarioError(f"{what} {str(path)!r} holds a value YAML cannot read: {_value_error(exc)}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{what} {str(path)!r}: the file must hold a mapping at the top level")
    return data


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, override (``--set``) and validate a scenario file."""
    p = Path(path)
    data = read_yaml_mapping(p, "scenario")
    for text in overrides:
        keypath, value = parse_override(text)
        apply_override(data, keypath, value)
    if "name" not in data:
        try:
            data["name"] = check_name(p.stem, "name")
        except ValueError:
            raise ScenarioError(f"name: the scenario has no name and its file name {p.stem!r} is not a valid "
                                f"one; give name: (allowed: {ALLOWED})") from None
    return scenario_from_dict(data, base_dir=p.parent)
