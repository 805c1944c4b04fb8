"""The Python API behind ``sunsim.run``, ``sunsim.plan`` and ``sunsim.sweep``: the CLI's three main commands as
calls that return pandas tables instead of printing them.

Each call does what its command does, through the same functions (:func:`~sunsim.analysis.runner.run_scenario`
and :func:`~sunsim.analysis.runner.write_run`, :func:`~sunsim.analysis.planning.plan_seeds`,
:func:`~sunsim.analysis.sweep.run_sweep`), so a table here is the table the command writes, and
:meth:`Run.write` goes through the project's one output rule. Overrides are a mapping of dotted keys to values
(``{"workload.rate": 30}``), turned into the ``--set KEY=VALUE`` texts the loaders take, so they are parsed and
validated exactly like ``--set``. Bad input raises :class:`~sunsim.errors.InputError` (or its subclass
:class:`~sunsim.scenario.ScenarioError`) naming the field, never a traceback from deep inside.

This module imports pandas and the simulator; ``sunsim/__init__.py`` loads it on first use only, so that
``import sunsim`` stays light.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from sunsim.analysis.planning import SeededPlan, plan_seeds, seeded_rows
from sunsim.analysis.runner import ScenarioRun, run_scenario, write_run
from sunsim.analysis.sweep import load_sweep, run_sweep
from sunsim.analysis.vllm_metrics import parse_percentiles
from sunsim.errors import InputError
from sunsim.output import Output, claim_outputs
from sunsim.scenario import (
    Scenario,
    VariantSpec,
    apply_override,
    load_scenario,
    parse_override,
    scenario_from_dict,
    scenario_inputs,
)

if TYPE_CHECKING:
    from sunsim.sim.variant import VariantResult

#: Dotted scenario key -> value (``{"workload.rate": 30}``), or ``--set`` texts (``["workload.rate=30"]``).
Overrides = Mapping[str, Any] | Iterable[str] | None
#: A scenario file, or a scenario already loaded (``sunsim.load_scenario``, ``sunsim.scenario_from_dict``).
ScenarioSource = str | os.PathLike | Scenario

__all__ = ["Overrides", "Plan", "Run", "ScenarioSource", "VariantRun", "override_texts", "plan", "resolve_scenario",
           "run", "sweep"]


def override_texts(overrides: Overrides) -> list[str]:
    """The ``--set`` texts for ``overrides``: each value written as YAML, which ``--set`` reads back as the same
    value (``10`` stays an integer, ``"10"`` a string, a dict a mapping)."""
    if overrides is None:
        return []
    if isinstance(overrides, (str, bytes)):
        raise InputError(f"overrides: expected a mapping of dotted keys to values, got the string {overrides!r}")
    if not isinstance(overrides, Mapping):
        texts = list(overrides)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise InputError(f"overrides: a list holds KEY=VALUE strings, got {bad[0]!r}")
        return texts
    return [f"{_key(k)}={_yaml_value(k, v)}" for k, v in overrides.items()]


def _key(key: object) -> str:
    if not isinstance(key, str) or not key.strip(". "):
        raise InputError(f"overrides: a key is a dotted scenario path such as 'workload.rate', got {key!r}")
    if "=" in key:  # ``--set`` splits at the first '=': the key would be cut there
        raise InputError(f"overrides: key {key!r} holds '='; give the value as the mapping's value")
    return key


def _yaml_value(key: str, value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    elif type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()  # np.float64(0.5) from a grid of values -> 0.5
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        raise InputError(f"overrides[{key!r}]: {type(value).__name__} is not a plain value (give a number, "
                         "string, bool, None, or a list or dict of them)") from None
    return text.removesuffix("...\n").strip()


def resolve_scenario(source: ScenarioSource, overrides: Overrides = None) -> tuple[Scenario, Path | None]:
    """The scenario to work on and the file it came from (None for a scenario given as an object)."""
    texts = override_texts(overrides)
    if isinstance(source, (str, os.PathLike)):
        return load_scenario(source, texts), Path(source)
    if not isinstance(source, Scenario):
        raise InputError(f"scenario: expected a scenario file path or a sunsim.Scenario, got {type(source).__name__}")
    if not texts:
        return source, None
    data = source.model_dump(mode="json")  # validated again below, as a file with these --set would be
    for text in texts:
        apply_override(data, *parse_override(text))
    return scenario_from_dict(data), None


# -- run ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VariantRun:
    """One variant of a run: what ``<out>/<variant>/`` holds."""

    name: str
    spec: VariantSpec
    #: The simulator's own record (per-worker statistics, timelines).
    result: VariantResult = field(repr=False)
    #: ``summary.json``: counts, latency percentiles, SLO attainment, per-model figures, GPUs, profile.
    summary: dict = field(repr=False)
    #: ``requests.csv``: one row per request that arrived before the run stopped, in arrival order
    #: (a request still unfinished has NaN ``finish_s``; ``summary["requests"]`` counts both).
    requests: pd.DataFrame = field(repr=False)


class Run:
    """Every variant of a scenario on the same requests, as ``sunsim run`` computes them.

    ``run["sun"]`` is one variant (:class:`VariantRun`), ``run.comparison`` the side-by-side table
    (``comparison.csv``), ``run.write(out)`` the files ``sunsim run --out out`` writes."""

    def __init__(self, scenario_run: ScenarioRun, source: Path | None = None) -> None:
        #: The runner's result, for the functions that take one (``sunsim.write_run``, traces).
        self.scenario_run = scenario_run
        #: The scenario file, whose inputs no output may overwrite (None for a scenario given as an object).
        self.source = source
        self._by_name = {res.variant.name: VariantRun(res.variant.name, res.variant, res, summary, table)
                         for res, summary, table in zip(scenario_run.results, scenario_run.summaries,
                                                        scenario_run.tables)}
        self._comparison: pd.DataFrame | None = None

    @property
    def scenario(self) -> Scenario:
        return self.scenario_run.scenario

    @property
    def variants(self) -> list[str]:
        """The variants run, in the scenario's order."""
        return list(self._by_name)

    @property
    def comparison(self) -> pd.DataFrame:
        """One row per variant: the table ``sunsim run`` prints and writes as ``comparison.csv``."""
        if self._comparison is None:
            self._comparison = self.scenario_run.comparison
        return self._comparison

    def __getitem__(self, name: str) -> VariantRun:
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise KeyError(f"no variant {name!r} in this run; its variants are {self.variants}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[VariantRun]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        requests = len(self.scenario_run.stream)
        return f"<sunsim.Run {self.scenario.name!r}: {requests} requests, variants {self.variants}>"

    def write(self, out: str | os.PathLike, format: str = "csv") -> list[Path]:
        """Write what ``sunsim run --out OUT`` writes (per variant ``requests``, ``summary.json`` and the timeline;
        ``comparison.csv``, ``scenario.yaml``) and return the paths published.

        The output rule holds as on the command line: ``out`` is new, empty or a folder ``sunsim run`` wrote,
        never an input (the scenario file, its traces, profile or HF config); files are staged and published
        together, so a failure leaves nothing half-written."""
        if format not in ("csv", "parquet"):
            raise InputError(f"format: must be csv or parquet, got {format!r}")
        inputs = scenario_inputs(self.source or Path("."), self.scenario)
        if self.source is None:
            inputs = inputs[1:]  # no scenario file: only the files the scenario names
        out_dir = Path(out)
        claim_outputs("run", [Output(out_dir, "--out")], inputs)
        return write_run(self.scenario_run, out_dir, format)


def run(scenario: ScenarioSource, overrides: Overrides = None, *, variants: list[str] | None = None,
        timeline: bool = True, percentiles: Sequence[float] = (99,)) -> Run:
    """Simulate every variant (or the named ``variants``) of a scenario on the same request stream, in memory.

    ``timeline=False`` skips the per-worker batch/KV timeline, as ``sunsim run --no-timeline`` does;
    ``percentiles`` choose the ``p{q}_*_ms`` keys of each summary's ``vllm`` block (``--percentiles``)."""
    sc, source = resolve_scenario(scenario, overrides)
    qs = parse_percentiles(",".join(map(str, percentiles)), "percentiles")
    return Run(run_scenario(sc, variants, keep_timeline=timeline, percentiles=qs), source)


# -- plan --------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What ``sunsim plan`` computes: the plan over seeds, and every configuration simulated to find it."""

    scenario: Scenario
    #: The SLO attainment every model had to reach.
    attainment: float
    #: ``plan_summary.csv``: one row per variant (GPUs on every seed, spread, baseline, goodput).
    summary: pd.DataFrame
    #: ``plan.csv``: one row per probe (variant, seed, rate, GPUs, attainment, whether it met the SLO).
    probes: pd.DataFrame
    #: The planner's objects behind ``summary``, one per variant.
    plans: list[SeededPlan] = field(repr=False)
    #: What ``sunsim plan`` prints as warnings (too few requests per model for a steady plan).
    warnings: list[str] = field(default_factory=list)


def plan(scenario: ScenarioSource, overrides: Overrides = None, *, seeds: int = 3, prefill: bool = False,
         goodput: bool = True, attainment: float | None = None, variants: list[str] | None = None,
         max_gpus: int = 256, on_probe: Callable[[dict], None] | None = None,
         on_warning: Callable[[str], None] | None = None) -> Plan:
    """Fewest decode (and, with ``prefill``, prefill) GPUs per variant meeting the scenario's SLO on every one of
    ``seeds`` seeds, and goodput on the planned fleet: ``sunsim plan`` without files.

    ``attainment`` defaults to the scenario's ``slo.attainment``; ``on_probe`` sees each probe's row as it is
    simulated; a warning goes to ``on_warning``, or else to :func:`warnings.warn`, and is kept in
    :attr:`Plan.warnings` either way."""
    sc, _ = resolve_scenario(scenario, overrides)
    target = sc.slo.attainment if attainment is None else attainment
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise InputError(f"attainment: must be a number in (0, 1], got {target!r}")
    probes: list[dict] = []
    notes: list[str] = []

    def probed(row: dict) -> None:
        probes.append(row)
        if on_probe:
            on_probe(row)

    def warned(msg: str) -> None:
        notes.append(msg)
        if on_warning:
            on_warning(msg)
        else:
            warnings.warn(msg, stacklevel=4)

    plans = plan_seeds(sc, target, seeds, variants, size_prefill=prefill, goodput=goodput, max_gpus=max_gpus,
                       on_probe=probed, on_warning=warned)
    # each variant's decode profile, as its probes reported it (pools may run on GPUs of their own)
    summary = pd.DataFrame(seeded_rows(sc, plans, {r["variant"]: r["profile"] for r in probes}))
    return Plan(sc, float(target), summary, pd.DataFrame(probes), plans, notes)


# -- sweep -------------------------------------------------------------------------------------------------
def sweep(path: str | os.PathLike, overrides: Overrides = None, *, workers: int | None = None,
          executor: str = "local", address: str | None = None, out: str | os.PathLike | None = None,
          progress: Callable | None = None) -> pd.DataFrame:
    """Run a sweep file (base scenario x grid x seeds) and return its table: one row per point and variant.

    ``overrides`` apply to every point, like ``sunsim sweep --set``. With ``out`` the table (``.csv`` or
    ``.parquet``) is written there under the output rule and an interrupted sweep resumes from the points
    it kept, as on the command line; without it the sweep runs in a temporary folder that is removed
    afterwards, so nothing is left on disk."""
    loaded = load_sweep(path, override_texts(overrides))
    if out is not None:
        return run_sweep(loaded, Path(out), executor=executor, workers=workers, address=address, progress=progress)
    with tempfile.TemporaryDirectory(prefix="sunsim-sweep-") as tmp:
        return run_sweep(loaded, Path(tmp) / f"{loaded.spec.name}.csv", executor=executor, workers=workers,
                         address=address, progress=progress)
