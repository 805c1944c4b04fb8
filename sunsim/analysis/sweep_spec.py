"""A sweep's definition: the sweep file (base scenario x grid x seeds), its points and their identity.

A point is keyed by a hash of its fully resolved scenario and of the contents of every file it
reads, so a changed base scenario, override or trace recomputes the point instead of reusing a
stale result.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator

from sunsim.analysis.options import MAX_GPUS_LIMIT
from sunsim.names import check_name
from sunsim.scenario import (
    Scenario,
    ScenarioError,
    apply_override,
    file_digest,
    input_files,
    parse_override,
    read_yaml_mapping,
    scenario_from_dict,
    scenario_inputs,
)

#: Seconds to wait for a TCP connection to a Ray cluster before giving up.
RAY_PROBE_TIMEOUT_S = 3.0


class SweepSpec(BaseModel):
    """The sweep file: which scenario, which parameters over which values, which seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "sweep"
    scenario: str
    #: Parameter path -> values; the grid is their Cartesian product.
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    #: Overrides applied to every point (parameter path -> value).
    set: dict[str, Any] = Field(default_factory=dict)
    #: Seeds 0..2^63-1, whole numbers (``true`` is not a seed), at most 10,000 of them.
    seeds: list[StrictInt] = Field(default_factory=lambda: [0], min_length=1, max_length=10_000)
    variants: list[str] | None = None
    #: ``run``: simulate each point; ``plan``: find each point's fewest GPUs and goodput.
    mode: Literal["run", "plan"] = "run"
    #: For ``plan``: SLO attainment target (default: the scenario's), GPU cap, goodput search.
    attainment: StrictFloat | StrictInt | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_gpus: StrictInt = Field(256, ge=1, le=MAX_GPUS_LIMIT)
    goodput: bool = True
    #: For ``plan``: also size the prefill GPUs per model (the fleet's total counts both stages).
    prefill: bool = False

    @field_validator("seeds")
    @classmethod
    def _seed_range(cls, v: list[int]) -> list[int]:
        for seed in v:
            if not 0 <= seed < 2**63:
                raise ValueError(f"seeds: {seed} is outside 0..2^63-1")
        return v

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_name(v, "name")  # becomes the default table's file name

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"grid.{key} has no values")
        return v


@dataclass(frozen=True)
class Point:
    index: int
    params: dict[str, Any]
    seed: int


@dataclass
class Sweep:
    spec: SweepSpec
    base: dict  # the base scenario as read from YAML
    base_dir: Path
    points: list[Point] = field(default_factory=list)
    path: Path = Path("sweep.yaml")  # the sweep file
    base_file: str = "scenario.yaml"  # the base scenario's file name, in base_dir
    #: Validated scenarios by point index: checking, keying and listing inputs each need them.
    _resolved: dict[int, Scenario] = field(default_factory=dict, repr=False, compare=False)

    @property
    def base_path(self) -> Path:
        return self.base_dir / self.base_file

    def inputs(self) -> list[tuple[Path, str]]:
        """The sweep file, its base scenario and every file any point's scenario names."""
        found = [(self.path, "sweep file"), (self.base_path, "scenario")]
        for point in self.points:
            try:
                found += scenario_inputs(self.base_path, self.scenario(point))[1:]
            except ScenarioError:
                continue
        return list(dict.fromkeys(found))

    def scenario_data(self, point: Point) -> dict:
        data = json.loads(json.dumps(self.base))  # deep copy of plain YAML data
        for path, value in {**self.spec.set, **point.params}.items():
            apply_override(data, path.split("."), value)
        data["seed"] = point.seed
        return data

    def scenario(self, point: Point) -> Scenario:
        if point.index not in self._resolved:
            self._resolved[point.index] = scenario_from_dict(self.scenario_data(point), base_dir=self.base_dir)
        return self._resolved[point.index]

    def point_key(self, point: Point) -> str:
        """Identity of a point's result: a hash of its fully resolved scenario and of what is computed.

        Grid values and seed alone are not enough: a changed base scenario or ``--set`` gives the
        same values a different result. Files the scenario names (a trace, a profile, an HF config)
        enter by their contents, so an edited trace recomputes the points that read it.
        """
        spec = self.spec
        what = {"mode": spec.mode, "variants": spec.variants, "attainment": spec.attainment,
                "max_gpus": spec.max_gpus, "goodput": spec.goodput,
                **({"prefill": True} if spec.prefill else {})}
        files: dict[str, str] = {}
        try:
            sc = self.scenario(point)
            resolved: Any = sc.model_dump(mode="json")
            files = {str(f): file_digest(f) for f in input_files(scenario_inputs(self.base_path, sc)[1:])}
        except ScenarioError:  # an invalid point is recorded as an error row; key it by its inputs
            resolved = {"invalid": self.scenario_data(point)}
        blob = json.dumps({"scenario": resolved, "computes": what, "files": files}, sort_keys=True,
                          separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_sweep(path: str | Path, overrides: Iterable[str] = ()) -> Sweep:
    """Read a sweep file, expand its grid and check every point's scenario before anything runs."""
    p = Path(path)
    raw = read_yaml_mapping(p, "sweep")
    for text in overrides:
        keypath, value = parse_override(text)
        raw.setdefault("set", {})[".".join(keypath)] = value
    raw.setdefault("name", p.stem)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        lines = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()]
        raise ScenarioError("invalid sweep:\n  " + "\n  ".join(lines)) from None
    base_path = (p.parent / spec.scenario) if not Path(spec.scenario).is_absolute() else Path(spec.scenario)
    if not base_path.exists() and Path(spec.scenario).exists():
        base_path = Path(spec.scenario)
    if not base_path.exists():
        raise ScenarioError(f"sweep.scenario: no scenario file at {spec.scenario!r}")
    base = read_yaml_mapping(base_path, "scenario")
    base.setdefault("name", base_path.stem)
    if not spec.grid and len(spec.seeds) < 2:
        raise ScenarioError("sweep.grid is empty: give at least one parameter with values (or several seeds)")
    sweep = Sweep(spec, base, base_path.parent, expand_points(spec), path=p, base_file=base_path.name)
    _check_points(sweep)
    return sweep


def expand_points(spec: SweepSpec) -> list[Point]:
    """The grid's Cartesian product x seeds, numbered in order."""
    keys = list(spec.grid)
    combos = list(itertools.product(*(spec.grid[k] for k in keys)))
    return [Point(i, dict(zip(keys, combo)), seed)
            for i, (combo, seed) in enumerate(itertools.product(combos, spec.seeds))]


def _check_points(sweep: Sweep) -> None:
    """Fail fast on an unknown parameter path or an impossible point, naming the point."""
    checked: set[str] = set()
    for point in sweep.points:
        sig = json.dumps(point.params, sort_keys=True, default=str)
        if sig in checked:
            continue  # seeds do not change validity
        checked.add(sig)
        where = ", ".join(f"{k}={v!r}" for k, v in point.params.items()) or "base"
        try:
            sc = sweep.scenario(point)
            if sweep.spec.variants:
                unknown = set(sweep.spec.variants) - {v.name for v in sc.variants}
                if unknown:
                    raise ScenarioError(f"sweep.variants: unknown {sorted(unknown)}")
        except ScenarioError as exc:
            raise ScenarioError(f"sweep point {where}: {exc}") from None


