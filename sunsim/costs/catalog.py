"""Which cost model a ``hardware.profile`` names, and the profiles sunsim ships.

A profile is one of:

* ``analytic``: datasheet peaks times efficiency curves fitted to measurements (:class:`AnalyticCostModel`);
* a shipped table profile by name (``vllm-h100``, ``vllm-h200``, ``vllm-a100``, ``vllm-l40s``, ``vllm-b200``):
  per-operation timings measured inside vLLM on that GPU, imported from NVIDIA aiconfigurator-core
  (:class:`TableCostModel`; ``sunsim/costs/profiles/<name>/metadata.json`` holds their provenance);
* a path: a table profile folder, or a ``sunsim-profile/1`` profile from ``sunsim calibrate`` on a GPU.

The default is the shipped table profile of the scenario's GPU: its costs are measurements of the kernels a
serving engine runs on that GPU, where the analytic curves are fitted on one H100 and scaled by datasheet
figures to the others (``calibration/README.md`` has the error table of one against the other).
"""

from __future__ import annotations

import functools
from pathlib import Path

from sunsim.costs.architecture import ModelShape
from sunsim.costs.hardware import GPU
from sunsim.costs.model import AnalyticCostModel, CostModel, ProfileError, measured_cost_model, read_profile
from sunsim.costs.table_model import TableCostModel
from sunsim.costs.tables import MeasuredTables, is_table_profile, load_tables

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
ANALYTIC = "analytic"

#: What a loaded profile is: ``None`` (analytic), a calibrated profile's JSON, or measured tables.
Profile = dict | MeasuredTables | None


@functools.lru_cache(maxsize=1)
def shipped() -> dict[str, str]:
    """Shipped table profiles: name -> the sunsim GPU name it was measured on."""
    out = {}
    for folder in sorted(PROFILES_DIR.iterdir()) if PROFILES_DIR.is_dir() else []:
        if is_table_profile(folder):
            out[folder.name] = folder.name.rsplit("-", 1)[-1]
    return out


def default_profile(gpu: str) -> str:
    """The profile a scenario gets when it names none: the shipped tables of its GPU, else analytic."""
    return next((name for name, g in shipped().items() if g == gpu and name.startswith("vllm-")), ANALYTIC)


def is_path(profile: str) -> bool:
    """Whether ``hardware.profile`` names a file or folder (not ``analytic`` or a shipped name)."""
    return profile != ANALYTIC and profile not in shipped()


def load(profile: str) -> Profile:
    """Read the profile ``hardware.profile`` names (an :class:`InputError` naming the field when it cannot)."""
    if profile == ANALYTIC:
        return None
    if profile in shipped():
        return load_tables(PROFILES_DIR / profile)
    if is_table_profile(profile):
        return load_tables(profile)
    return read_profile(profile)


def tables_gpu(tables: MeasuredTables) -> str:
    """The sunsim GPU a table profile was measured on (its system: ``h200_sxm`` -> ``h200``)."""
    return str(tables.metadata["source"]["system"]).split("_")[0]


def make_cost_model(gpu: GPU, shape: ModelShape, dtype: str, profile: Profile, kv_dtype: str = "bf16") -> CostModel:
    """The cost model of one weight format (and KV-cache dtype) under a loaded profile."""
    if profile is None:
        return AnalyticCostModel(gpu, shape, dtype, kv_dtype)
    if isinstance(profile, MeasuredTables):
        return TableCostModel(profile, gpu, shape, dtype, kv_dtype)
    if kv_dtype != "bf16":
        raise ProfileError(f"kv_dtype {kv_dtype}: profile {profile['name']!r} was calibrated with a 16-bit KV cache "
                           "only; use a table profile (vllm-<gpu>) or the analytic one")
    return measured_cost_model(profile, shape, dtype)


__all__ = ["ANALYTIC", "PROFILES_DIR", "Profile", "default_profile", "is_path", "load", "make_cost_model", "shipped", "tables_gpu"]
