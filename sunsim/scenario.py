"""The scenario file: one YAML document describing a whole experiment, validated on load.

Errors name the offending field (``workload.rate``) and what is allowed, so that a user
can fix a file without reading this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .architecture import DTYPES, PRESETS, ModelShape
from .hardware import GPUS, INTERCONNECTS
from .routing import POLICIES

#: The names routing.POLICIES registers, so a new policy needs no edit here.
Routing = Literal[tuple(POLICIES)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- model -------------------------------------------------------------------------------
class CustomShape(_Strict):
    name: str = "custom"
    hidden: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate: int = Field(gt=0)
    vocab: int = Field(gt=0)
    tied_embeddings: bool = False


class ModelSpec(_Strict):
    """The base architecture and the task models fine-tuned from it."""

    preset: str | None = "llama-3.1-8b"
    shape: CustomShape | None = None
    tasks: list[str] = Field(default_factory=lambda: ["task0"], min_length=1)

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
            if v < 1:
                raise ValueError("needs at least 1 task model")
            return [f"task{i}" for i in range(v)]
        return v

    @field_validator("tasks")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("task model names must be unique")
        return v

    def resolve(self) -> ModelShape:
        if self.shape is not None:
            return ModelShape(**self.shape.model_dump())
        return PRESETS[self.preset]  # type: ignore[index]


# --- hardware and links ----------------------------------------------------------------------
class HardwareSpec(_Strict):
    gpu: str = "h100"
    #: ``analytic`` (datasheet roofline) or the path of a measured profile.
    profile: str = "analytic"
    #: Share of GPU memory the engine may use (as vLLM's gpu_memory_utilization).
    memory_utilization: float = Field(0.9, gt=0, le=1)
    #: Memory kept free for activations and the runtime, GiB.
    reserve_gib: float = Field(4.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        if v not in GPUS:
            raise ValueError(f"unknown gpu {v!r}; allowed: {', '.join(GPUS)}")
        return v


class InterconnectSpec(_Strict):
    """KV-cache transfer from prefill to decode GPUs."""

    kind: str | None = "ib-ndr"
    bandwidth_GBps: PositiveFloat | None = None
    latency_us: float = Field(10.0, ge=0)
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

    total: int = Field(ge=1)
    by: Literal["popularity", "even"]


WorkerCount = Union[Annotated[int, Field(ge=0)], dict[str, Annotated[int, Field(ge=0)]], Split]


class PrefillSpec(_Strict):
    #: Workers per model: one number for every model, or a count per model name.
    workers: WorkerCount = 1
    max_batch_tokens: int = Field(8192, gt=0)
    routing: Routing = "least_loaded"


class DecodeDefaults(_Strict):
    block_tokens: int = Field(16, gt=0)
    max_batch: int | None = Field(None, gt=0)


class VariantSpec(_Strict):
    """One decode design to compare: dedicated per-model pools or one shared (SUN) pool."""

    name: str
    mode: Literal["dedicated", "shared"]
    #: shared: pool size; dedicated: workers per model (one number, or a count per model).
    workers: WorkerCount
    dtype: str = "bf16"
    routing: Routing = "least_loaded"
    max_batch: int | None = Field(None, gt=0)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"unknown dtype {v!r}; allowed: {', '.join(DTYPES)}")
        return v

    @model_validator(mode="after")
    def _shared_is_one_pool(self) -> VariantSpec:
        if self.mode == "shared" and not isinstance(self.workers, int):
            raise ValueError("a shared pool takes one worker count (workers: N)")
        return self


# --- workload --------------------------------------------------------------------------------
class Fixed(_Strict):
    kind: Literal["fixed"]
    value: int = Field(gt=0)


class Uniform(_Strict):
    kind: Literal["uniform"]
    low: int = Field(gt=0)
    high: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError("uniform needs low <= high")
        return self


class LogNormal(_Strict):
    """Lengths with the given mean and log-space sigma, clipped to [min, max]."""

    kind: Literal["lognormal"]
    mean: PositiveFloat
    sigma: float = Field(gt=0)
    min: int = Field(1, gt=0)
    max: int = Field(16384, gt=0)


class Geometric(_Strict):
    """Lengths 1, 2, ... with P(k) = (1-p)^(k-1) p and the given mean (memoryless, as M/M/1 needs)."""

    kind: Literal["geometric"]
    mean: float = Field(ge=1)


class FromTrace(_Strict):
    """Sample lengths from a trace file's column (with replacement)."""

    kind: Literal["trace"]
    path: str


LengthDist = Annotated[Fixed | Uniform | LogNormal | Geometric | FromTrace, Field(discriminator="kind")]


class Poisson(_Strict):
    kind: Literal["poisson"]


class Gamma(_Strict):
    """Gamma inter-arrival times with coefficient of variation ``cv`` (cv=1 is Poisson)."""

    kind: Literal["gamma"]
    cv: PositiveFloat


class TraceArrivals(_Strict):
    """Replay a trace file: arrival times and lengths (and a ``model`` column if present)."""

    kind: Literal["trace"]
    path: str
    #: Multiply arrival times by this (0.5 doubles the rate); ignored when workload.rate is set.
    time_scale: PositiveFloat = 1.0
    #: Use the trace's prompt/output lengths (else the length distributions below).
    use_lengths: bool = True


Arrivals = Annotated[Poisson | Gamma | TraceArrivals, Field(discriminator="kind")]


class Zipf(_Strict):
    """Model i (0-based, in task order) gets weight 1/(i+1)^s; s=0 is uniform."""

    kind: Literal["zipf"]
    s: float = Field(ge=0)


class Weights(_Strict):
    kind: Literal["weights"]
    weights: dict[str, Annotated[float, Field(ge=0)]]


Popularity = Annotated[Zipf | Weights, Field(discriminator="kind")]


class PopularityShift(_Strict):
    """At ``at_s`` the popularity ranking rotates by ``rotate`` places (the hot model changes)."""

    at_s: float = Field(gt=0)
    rotate: int = Field(1, ge=1)


class Lengths(_Strict):
    prompt_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None


class WorkloadSpec(_Strict):
    duration_s: PositiveFloat | None = None
    num_requests: int | None = Field(None, gt=0)
    #: Total request rate over all models, req/s (for a trace: rescales its arrivals to this mean rate).
    rate: PositiveFloat | None = None
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
    ttft_s: PositiveFloat = 2.0
    tpot_s: PositiveFloat = 0.1
    #: Target share of requests meeting both (used by goodput and planning).
    attainment: float = Field(0.9, gt=0, le=1)


class SimSpec(_Strict):
    #: After the last arrival, keep simulating this long for requests to drain; then stop.
    drain_s: float = Field(600.0, ge=0)
    #: Hard stop (simulated seconds); default: last arrival + drain_s.
    horizon_s: PositiveFloat | None = None


class Scenario(_Strict):
    name: str = "scenario"
    seed: int = 0
    model: ModelSpec = Field(default_factory=ModelSpec)
    hardware: HardwareSpec = Field(default_factory=HardwareSpec)
    interconnect: InterconnectSpec = Field(default_factory=InterconnectSpec)
    prefill: PrefillSpec = Field(default_factory=PrefillSpec)
    decode: DecodeDefaults = Field(default_factory=DecodeDefaults)
    workload: WorkloadSpec
    slo: SLOSpec = Field(default_factory=SLOSpec)
    sim: SimSpec = Field(default_factory=SimSpec)
    variants: list[VariantSpec] = Field(min_length=1)

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
                raise ValueError(f"variants[{i}].workers: a shared pool needs at least 1 worker")
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
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc or 'scenario'}: {msg}" + (f" (got {e['input']!r})" if _short(e.get("input")) else ""))
    return "invalid scenario:\n  " + "\n  ".join(lines)


_UNION_TAGS = {"fixed", "uniform", "lognormal", "geometric", "trace", "poisson", "gamma", "zipf", "weights",
               "int", "dict[str,int]", "constrained-int", "dict[str,constrained-int]", "Split"}


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
    return path, yaml.safe_load(raw)


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


def _list_index(node: list, part: str, where: str) -> int:
    if part.lstrip("-").isdigit():
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
    return _resolve_paths(sc, base_dir) if base_dir is not None else sc


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
    return Scenario.model_validate(data)


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping (a scenario, a sweep), with errors that say which file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{what} {str(path)!r} is not valid YAML: {exc}") from None
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
    data.setdefault("name", p.stem)
    return scenario_from_dict(data, base_dir=p.parent)
