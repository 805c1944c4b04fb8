"""Where aiconfigurator-core's files are, which release they are, and which table of a family to read.

The importer reads the package's files only (never imports it): the version names the data snapshot, and
``query_versions.yaml`` names the engine version aiconfigurator itself queries, which the import follows.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

PACKAGE = "aiconfigurator-core"
MODULE = "aiconfigurator_core"
#: Backends tried, in order, for an op family the requested backend has no table for.
FALLBACK_BACKENDS: tuple[str, ...] = ("vllm", "sglang", "trtllm")


class AicImportError(ValueError):
    """The package or a table is missing or malformed; the message says which file."""


def jsonable(value: Any) -> Any:
    """YAML dates and numpy scalars as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@dataclass(frozen=True)
class Package:
    """Where the package's files are and which release they are (the version names the data snapshot)."""

    root: Path
    version: str

    @property
    def systems(self) -> Path:
        return self.root / "systems"

    def rel(self, path: Path) -> str:
        """``path`` as it lies inside the package (``aiconfigurator_core/systems/...``): no machine paths."""
        return f"{MODULE}/{path.relative_to(self.root).as_posix()}"


def locate_package(package_dir: Path | None = None, version: str | None = None) -> Package:
    """The installed package (found without importing it) or ``package_dir`` (an unpacked wheel)."""
    if package_dir is None:
        spec = importlib.util.find_spec(MODULE)
        if spec is None or not spec.submodule_search_locations:
            raise AicImportError(f"{PACKAGE} is not installed: `pip install {PACKAGE}` or pass --package-dir")
        root = Path(next(iter(spec.submodule_search_locations)))
        found = version or importlib.metadata.version(PACKAGE)
    else:
        root = Path(package_dir)
        if (root / MODULE).is_dir():
            root = root / MODULE
        found = version or _dist_info_version(root)
    if not (root / "systems" / "data").is_dir():
        raise AicImportError(f"{root} is not an {PACKAGE} package: it has no systems/data folder")
    if not found:
        raise AicImportError(f"cannot tell the {PACKAGE} version of {root}: pass --package-version")
    return Package(root, found)


def _dist_info_version(root: Path) -> str | None:
    """The version in a ``*.dist-info/METADATA`` beside an unpacked package, else None."""
    for meta in sorted(root.parent.glob(f"{MODULE}-*.dist-info/METADATA")):
        for line in meta.read_text(encoding="utf-8").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return None


def version_key(version: str) -> tuple:
    """Sort key for versions such as ``0.24.0``, ``1.3.0rc20``, ``0.5.6.post2`` (dev < rc < final < post)."""
    m = re.match(r"^(\d+(?:\.\d+)*)\.?(dev|a|b|rc|post)?(\d*)", version)
    if not m:
        return ((-1,), 0, 0, version)
    nums = tuple(int(x) for x in m.group(1).split("."))
    rank = {"dev": -4, "a": -3, "b": -2, "rc": -1, None: 0, "post": 1}[m.group(2)]
    return (nums + (0,) * (4 - len(nums)), rank, int(m.group(3) or 0), version)


@functools.lru_cache(maxsize=64)
def load_yaml(path: Path) -> Any:
    """A YAML file's content (read once per run; the package's files do not change under us)."""
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None


def current_version(pkg: Package, system: str, backend: str) -> str | None:
    """The version aiconfigurator itself queries for (``query_versions.yaml``: the ``current`` slot)."""
    doc = load_yaml(pkg.systems / "query_versions.yaml") or {}
    over = ((doc.get("overrides") or {}).get(system) or {}).get(backend) or {}
    default = (doc.get("defaults") or {}).get(backend) or {}
    cur = over.get("current") or default.get("current")
    return str(cur) if cur else None


@dataclass(frozen=True)
class Source:
    """One parquet table chosen for a profile file, and why that backend and version."""

    path: Path
    family: str
    backend: str
    version: str
    reason: str

    @property
    def meta_path(self) -> Path:
        return self.path.parent / "collection_meta.yaml"


def pick_source(pkg: Package, system: str, family: str, table: str, backend: str,
                fallbacks: Sequence[str] = FALLBACK_BACKENDS) -> Source | None:
    """The table ``family/<backend>/<version>/table`` to import, or None when no backend has it.

    The requested backend's ``current`` version is preferred; without it the newest older version (the backward
    fill aiconfigurator applies), else the newest; another backend only when the requested one has no such table.
    """
    order = [backend] + [b for b in fallbacks if b != backend]
    for b in order:
        base = pkg.systems / "data" / system / family / b
        versions = sorted((d.name for d in base.iterdir() if (d / table).is_file()), key=version_key) \
            if base.is_dir() else []
        if not versions:
            continue
        cur = current_version(pkg, system, b)
        if cur in versions:
            chosen, why = cur, f"query_versions.yaml current slot for {b} on {system}"
        elif cur and any(version_key(v) < version_key(cur) for v in versions):
            chosen = max((v for v in versions if version_key(v) < version_key(cur)), key=version_key)
            why = f"newest {b} version older than the current slot {cur} (no {cur} table; backward fill)"
        else:
            chosen, why = versions[-1], f"newest {b} version (no current slot applies)"
        if b != backend:
            why += f"; fallback: {backend} has no {family}/{table} for {system}"
        return Source(base / chosen / table, family, b, chosen, why)
    return None


def nccl_source(pkg: Package, system: str) -> Source | None:
    """NCCL's all-reduce at the NCCL version the system file names (aiconfigurator's choice), else the newest."""
    base = pkg.systems / "data" / system / "comm" / "nccl"
    versions = sorted((d.name for d in base.iterdir() if (d / "nccl_perf.parquet").is_file()), key=version_key) \
        if base.is_dir() else []
    if not versions:
        return None
    doc = load_yaml(pkg.systems / f"{system}.yaml")
    wanted = str(((doc or {}).get("misc") or {}).get("nccl_version") or "")
    if wanted in versions:
        return Source(base / wanted / "nccl_perf.parquet", "comm", "nccl", wanted,
                      f"misc.nccl_version of {system}.yaml")
    return Source(base / versions[-1] / "nccl_perf.parquet", "comm", "nccl", versions[-1],
                  f"newest nccl version ({system}.yaml names {wanted or 'none'}, which is absent)")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_table(src: Source, columns: Sequence[str] | None = None) -> pd.DataFrame:
    try:
        df = pd.read_parquet(src.path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise AicImportError(f"cannot read {src.path}: {exc}") from None
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise AicImportError(f"{src.path} lacks columns {missing}")
    return df


def collection_meta(src: Source) -> dict[str, Any]:
    """The parts of ``collection_meta.yaml`` that say what measured this table (engine, image, status)."""
    doc = load_yaml(src.meta_path) or {}
    runtime = doc.get("runtime") or {}
    out: dict[str, Any] = {k: runtime[k] for k in ("framework", "version", "image") if k in runtime}
    if "provenance" in doc:
        out["provenance"] = doc["provenance"]
    table = ((doc.get("tables") or {}).get(src.path.stem))
    if table is not None:
        out["table"] = table
    return jsonable(out)


def datasheet(pkg: Package, system: str) -> tuple[dict[str, Any], Path]:
    path = pkg.systems / f"{system}.yaml"
    if not path.exists():
        raise AicImportError(f"{pkg.rel(path)} is missing: unknown system {system!r}")
    doc = load_yaml(path) or {}
    gpu = doc.get("gpu") or {}
    sheet = {
        "memory_bytes": gpu.get("mem_capacity"),
        "memory_bandwidth_Bps": gpu.get("mem_bw"),
        "bf16_flops": gpu.get("bfloat16_tc_flops"),
        "fp8_flops": gpu.get("fp8_tc_flops"),
        "int8_ops": gpu.get("int8_tc_flops"),
        "fp4_flops": gpu.get("fp4_tc_flops"),
        "power_w": gpu.get("power"),
        "sm_version": gpu.get("sm_version"),
        "gpu_yaml": gpu,
        "node_yaml": doc.get("node") or {},
        "note": "dense tensor-core peaks and bandwidth as aiconfigurator's system file states them; its "
                "*_empirical_* keys are aiconfigurator's own corrections, not datasheet figures",
    }
    return jsonable(sheet), path
