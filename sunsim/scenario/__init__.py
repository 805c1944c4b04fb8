"""The scenario: a validated description of one experiment (model, hardware, serving, workload, SLO,
variants), read from YAML with ``--set`` overrides, and the files it names.

Callers import from here; the modules hold one part each:

* :mod:`~sunsim.scenario.limits`: the bounds, number and path types, safe names, the strict base
  model and :class:`ScenarioError`, shared by every section;
* :mod:`~sunsim.scenario.shape`: a model shape given field by field;
* :mod:`~sunsim.scenario.hf_config`: a model shape read from a Hugging Face ``config.json``;
* :mod:`~sunsim.scenario.model`, :mod:`~sunsim.scenario.hardware`, :mod:`~sunsim.scenario.serving`,
  :mod:`~sunsim.scenario.workload`: one section of the file each (a trace's format and columns in
  :mod:`~sunsim.scenario.trace_layout`);
* :mod:`~sunsim.scenario.document`: the whole :class:`Scenario` and the checks across sections;
* :mod:`~sunsim.scenario.safe_yaml`, :mod:`~sunsim.scenario.overrides`, :mod:`~sunsim.scenario.load`:
  reading YAML safely, ``--set`` overrides, and a file or mapping turned into a :class:`Scenario`;
* :mod:`~sunsim.scenario.inputs`: the files a scenario names, and their digests.

The modules import one another directly, never this package, so that importing any one of them
cannot come back here half-initialised.
"""

from sunsim.scenario.document import Scenario, SimSpec, SLOSpec
from sunsim.scenario.hardware import HardwareSpec, InterconnectSpec
from sunsim.scenario.hf_config import read_hf_config, shape_from_hf
from sunsim.scenario.inputs import file_digest, input_files, scenario_inputs
from sunsim.scenario.limits import MAX_BATCH, MAX_REQUESTS, MAX_TOKENS, ScenarioError
from sunsim.scenario.load import load_scenario, scenario_from_dict
from sunsim.scenario.model import ModelSpec
from sunsim.scenario.overrides import apply_override, parse_override
from sunsim.scenario.rate_curve import Diurnal, Piecewise, RateCurve
from sunsim.scenario.safe_yaml import read_yaml_mapping, safe_load_unique
from sunsim.scenario.serving import (
    AGGREGATED_MODES,
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    PER_MODEL_MODES,
    POOL_MODES,
    Autoscale,
    DecodeDefaults,
    OnDemand,
    PrefillSpec,
    Rebalance,
    Routing,
    Split,
    VariantSpec,
    WorkerCount,
    split_by_share,
)
from sunsim.scenario.shape import CustomShape
from sunsim.scenario.trace_layout import DEFAULT_LAYOUT, TraceColumns, TraceLayout, TraceSource
from sunsim.scenario.workload import (
    Arrivals,
    ClosedArrivals,
    Fixed,
    FromTrace,
    Gamma,
    Geometric,
    LengthDist,
    Lengths,
    LogNormal,
    Poisson,
    Popularity,
    PopularityShift,
    TraceArrivals,
    Uniform,
    Weights,
    WorkloadSpec,
    Zipf,
)

__all__ = [
    # the document, its error and its loaders
    "Scenario", "ScenarioError", "load_scenario", "scenario_from_dict",
    "read_yaml_mapping", "safe_load_unique", "parse_override", "apply_override",
    # sections
    "ModelSpec", "CustomShape", "read_hf_config", "shape_from_hf",
    "HardwareSpec", "InterconnectSpec",
    "PrefillSpec", "OnDemand", "DecodeDefaults", "VariantSpec", "Rebalance", "Autoscale", "Split", "WorkerCount", "Routing", "POOL_MODES",
    "AGGREGATED_MODES", "PER_MODEL_MODES", "DEFAULT_MAX_NUM_BATCHED_TOKENS",
    "split_by_share",
    "WorkloadSpec", "Arrivals", "Poisson", "Gamma", "TraceArrivals", "ClosedArrivals", "Popularity", "Zipf", "Weights",
    "PopularityShift", "RateCurve", "Diurnal", "Piecewise", "Lengths", "LengthDist", "Fixed", "Uniform", "LogNormal", "Geometric", "FromTrace",
    "TraceSource", "TraceColumns", "TraceLayout", "DEFAULT_LAYOUT",
    "SLOSpec", "SimSpec",
    # bounds other code relies on
    "MAX_BATCH", "MAX_REQUESTS", "MAX_TOKENS",
    # the files a scenario names
    "scenario_inputs", "input_files", "file_digest",
]
