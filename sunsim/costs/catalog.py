"""Which cost model a ``hardware.profile`` names, and the profiles sunsim ships.

A profile is one of:

* ``analytic``: datasheet peaks times efficiency curves fitted to measurements (:class:`AnalyticCostModel`);
  ``analytic-<gpu>`` (``analytic-h100``, ``analytic-l40s``, ``analytic-b200``, ...) is the same profile with
  the GPU named (a scenario that names no ``hardware.gpu`` gets that GPU);
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
from sunsim.costs.hardware import GPU, GPUS
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


def analytic_gpu(profile: str) -> str | None:
    """The GPU an ``analytic-<gpu>`` profile name sets (``None``: not such a name)."""
    gpu = profile.removeprefix(f"{ANALYTIC}-")
    return gpu if gpu != profile and gpu in GPUS else None


def is_analytic(profile: str) -> bool:
    """Whether ``hardware.profile`` names the analytic profile (``analytic`` or ``analytic-<gpu>``)."""
    return profile == ANALYTIC or analytic_gpu(profile) is not None


def is_path(profile: str) -> bool:
    """Whether ``hardware.profile`` names a file or folder (not an analytic or a shipped name)."""
    return not is_analytic(profile) and profile not in shipped()


def load(profile: str) -> Profile:
    """Read the profile ``hardware.profile`` names (an :class:`InputError` naming the field when it cannot)."""
    if is_analytic(profile):
        return None
    if profile in shipped():
        return load_tables(PROFILES_DIR / profile)
    if is_table_profile(profile):
        return load_tables(profile)
    return read_profile(profile)


def tables_gpu(tables: MeasuredTables) -> str:
    """The sunsim GPU a table profile was measured on (its system: ``h200_sxm`` -> ``h200``)."""
    return str(tables.metadata["source"]["system"]).split("_")[0]


def make_cost_model(gpu: GPU, shape: ModelShape, dtype: str, profile: Profile, kv_dtype: str = "bf16",
                    tp: int = 1) -> CostModel:
    """The cost model of one weight format (and KV-cache dtype) under a loaded profile, for one GPU of a
    ``tp``-way tensor-parallel worker (its shard and its all-reduces)."""
    if profile is None:
        return AnalyticCostModel(gpu, shape, dtype, kv_dtype, tp)
    if isinstance(profile, MeasuredTables):
        return TableCostModel(profile, gpu, shape, dtype, kv_dtype, tp)
    if tp != 1:
        raise ProfileError(f"tp {tp}: profile {profile['name']!r} was calibrated on one GPU (no all-reduces); use a "
                           "table profile (vllm-<gpu>) or the analytic one for tensor parallelism")
    if kv_dtype != "bf16":
        raise ProfileError(f"kv_dtype {kv_dtype}: profile {profile['name']!r} was calibrated with a 16-bit KV cache "
                           "only; use a table profile (vllm-<gpu>) or the analytic one")
    return measured_cost_model(profile, shape, dtype)


__all__ = ["ANALYTIC", "PROFILES_DIR", "Profile", "analytic_gpu", "default_profile", "is_analytic", "is_path", "load",
           "make_cost_model", "shipped", "tables_gpu"]
