"""The whole scenario document: its sections, the SLO and run-length settings, and the checks that
span sections (worker counts name only known task models, splits and colocation are possible,
popularity weights and a trace's model mapping refer to known models).

A section is validated on its own in its module; what needs two sections (the task models of
``model`` against the counts of ``prefill`` and ``variants``) is checked here, once all are read.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from sunsim.costs.architecture import ModelShape
from sunsim.costs.hardware import GPUS
from sunsim.costs.prices import default_prices
from sunsim.scenario.cells import Cells, cell_models
from sunsim.scenario.hardware import HardwareSpec, InterconnectSpec, pool_hardware
from sunsim.scenario.limits import (
    MAX_DURATION_S,
    MAX_SEED,
    MAX_SLO_S,
    MAX_TIME_S,
    MAX_USD_PER_GPU_HOUR,
    MAX_VARIANTS,
    Float,
    Int,
    StrictModel,
    no_bool,
    safe_name,
)
from sunsim.scenario.model import ModelSpec
from sunsim.scenario.serving import (
    PER_MODEL_MODES,
    DecodeDefaults,
    PrefillSpec,
    Split,
    VariantSpec,
    split_by_share,
)
from sunsim.scenario.workload import TraceArrivals, Weights, WorkloadSpec, Zipf

#: USD per GPU-hour: from 0 (owned GPUs) to a bound far above any listed price.
Price = Annotated[float, BeforeValidator(no_bool), Field(ge=0, le=MAX_USD_PER_GPU_HOUR)]


class SLOSpec(StrictModel):
    ttft_s: Float = Field(2.0, gt=0, le=MAX_SLO_S)
    tpot_s: Float = Field(0.1, gt=0, le=MAX_SLO_S)
    #: Target share of requests meeting both (used by goodput and planning).
    attainment: Float = Field(0.9, gt=0, le=1)


class SimSpec(StrictModel):
    #: After the last arrival, keep simulating this long for requests to drain; then stop.
    drain_s: Float = Field(600.0, ge=0, le=MAX_DURATION_S)
    #: Hard stop (simulated seconds, at most 1e9); default: last arrival + drain_s.
    horizon_s: Float | None = Field(None, gt=0, le=MAX_TIME_S)
    #: Throughput is measured from this share of the arrival span (warm-up excluded) to the last arrival.
    warmup_fraction: Float = Field(0.1, ge=0, lt=1)


class Scenario(StrictModel):
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
    #: USD per GPU-hour by GPU name (0 to 1e6; null: no price). What it names replaces the example defaults of
    #: sunsim/costs/data/gpu_prices.csv (public on-demand list prices, dated and sourced there); the rest stay.
    prices: dict[str, Price | None] = Field(default_factory=default_prices)
    #: Split the fleet into independent cells (see :mod:`sunsim.scenario.cells`); left out: one fleet.
    cells: Cells | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return safe_name(v)

    @field_validator("prices", mode="before")
    @classmethod
    def _over_defaults(cls, v):
        return {**default_prices(), **v} if isinstance(v, dict) else v

    @field_validator("prices")
    @classmethod
    def _known_prices(cls, v: dict[str, float | None]) -> dict[str, float | None]:
        unknown = [gpu for gpu in v if gpu not in GPUS]
        if unknown:
            raise ValueError(f"unknown gpu {unknown[0]!r} (prices.{unknown[0]}); allowed: {', '.join(GPUS)}")
        return v

    @model_validator(mode="after")
    def _pool_hardware(self) -> Scenario:
        """Resolve each pool's own hardware against the top-level one, once (frozen: set here), and refuse an
        fp8 decode format on a GPU without fp8 tensor cores, naming the variant and the GPU's field."""
        pools = [("prefill.hardware", self.prefill)] + [(f"variants[{i}].hardware", v)
                                                         for i, v in enumerate(self.variants)]
        for field, owner in pools:
            if owner.hardware is not None:
                try:
                    object.__setattr__(owner, "hardware", pool_hardware(self.hardware, owner.hardware))
                except ValidationError as err:
                    msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
                    raise ValueError(f"{field}: {msg}") from None
        for v in self.variants:
            gpu = self.hardware_for("decode", v).gpu
            if v.dtype.startswith("fp8") and GPUS[gpu].fp8_flops is None:
                where = f"variants.{v.name}.hardware.gpu" if v.hardware is not None else "hardware.gpu"
                raise ValueError(f"variants.{v.name}.dtype: {v.dtype} needs fp8 tensor cores, which the {gpu} "
                                 f"GPUs of {where} lack; give another dtype (bf16, int8, int4) or a GPU with fp8 "
                                 f"({', '.join(g for g, spec in GPUS.items() if spec.fp8_flops)})")
        return self

    def hardware_for(self, role: str, variant: VariantSpec | None = None) -> HardwareSpec:
        """The hardware of a role's GPUs: ``prefill``'s own or the top-level; ``decode``, the variant's own or
        the top-level (an aggregated variant's GPUs prefill too: theirs is the variant's)."""
        own = self.prefill.hardware if role == "prefill" else variant.hardware if variant is not None else None
        return own or self.hardware

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        tasks = self.model.tasks
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variants: names must be unique")
        _check_counts("prefill.workers", self.prefill.workers, tasks)
        if self.prefill.shared:
            _check_shared_prefill(self.prefill, tasks)
        elif isinstance(self.prefill.workers, Split):
            try:
                self.counts(self.prefill.workers)
            except ValueError as exc:
                raise ValueError(f"prefill.workers: {exc}") from None
        for i, v in enumerate(self.variants):
            if v.mode in PER_MODEL_MODES:
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
        arrivals = self.workload.arrivals
        if self.cells is not None:
            if arrivals.kind == "closed":
                raise ValueError("cells: not with closed arrivals (the clients send on the whole fleet's "
                                 "speed, which independent cells do not share); drop cells")
            cell_models(self.cells, tasks, self.popularity())
        if isinstance(arrivals, TraceArrivals):
            for trace_name, task in arrivals.models.items():
                if task not in tasks:
                    raise ValueError(f"workload.arrivals.models: trace model {trace_name!r} maps to {task!r}, "
                                     f"which is not one of model.tasks {tasks}")
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

    def cell_models(self) -> dict[str, list[str]]:
        """Each cell's task models by cell name (no ``cells``: one cell, ``fleet``, of every model)."""
        if self.cells is None:
            return {"fleet": list(self.model.tasks)}
        return cell_models(self.cells, list(self.model.tasks), self.popularity())

    def prefill_counts(self) -> dict[str, int]:
        """Prefill workers by pool: per model, or ``{"shared": N}`` when prefill GPUs are shared."""
        if self.prefill.shared:
            return {"shared": prefill_total(self.prefill.workers)}
        return self.counts(self.prefill.workers)

    def prefill_share(self) -> np.ndarray:
        """The traffic share a shared prefill pool's placement spreads replicas by (``by: even``: equal)."""
        w = self.prefill.workers
        if isinstance(w, Split) and w.by == "even":
            return np.full(len(self.model.tasks), 1 / len(self.model.tasks))
        return self.popularity()

    def counts(self, workers: int | dict[str, int] | Split) -> dict[str, int]:
        """Per-model worker counts from a count-for-all, a per-model mapping or a split."""
        tasks = self.model.tasks
        if isinstance(workers, int):
            return {t: workers for t in tasks}
        if isinstance(workers, Split):
            share = self.popularity() if workers.by == "popularity" else np.full(len(tasks), 1 / len(tasks))
            return dict(zip(tasks, split_by_share(workers.total, share)))
        return {t: workers.get(t, 0) for t in tasks}


def _check_counts(field: str, workers: int | dict[str, int] | Split, tasks: list[str]) -> None:
    if isinstance(workers, dict):
        unknown = set(workers) - set(tasks)
        if unknown:
            raise ValueError(f"{field}: unknown models {sorted(unknown)}; models are {tasks}")


def prefill_total(workers: int | dict[str, int] | Split) -> int:
    """The GPUs of a shared prefill pool: ``N`` or a split's total (a per-model mapping is refused earlier)."""
    return workers.total if isinstance(workers, Split) else int(workers)  # type: ignore[arg-type]


def _check_shared_prefill(prefill: PrefillSpec, tasks: list[str]) -> None:
    """A shared prefill pool's total against the task models it must host."""
    total = prefill_total(prefill.workers)
    if total < 1:
        raise ValueError("prefill.workers: a shared prefill pool needs at least 1 GPU")
    k = prefill.models_per_gpu
    if k > len(tasks):
        raise ValueError(f"prefill.models_per_gpu: at most the number of task models ({len(tasks)}), got {k}")
    if prefill.on_demand is None and total * k < len(tasks):
        raise ValueError(f"prefill.workers: {total} GPUs x prefill.models_per_gpu {k} cannot host the "
                         f"{len(tasks)} task models; give at least {-(-len(tasks) // k)} GPUs")
    if prefill.on_demand is not None and prefill.on_demand.resident > len(tasks):
        raise ValueError(f"prefill.on_demand.resident: at most the number of task models ({len(tasks)}), "
                         f"got {prefill.on_demand.resident}")
