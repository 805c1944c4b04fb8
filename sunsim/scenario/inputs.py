"""The files a command reads, so that no output of it can ever be written over one of them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sunsim.costs import catalog
from sunsim.scenario.document import Scenario


def scenario_inputs(path: Path | str, sc: Scenario) -> list[tuple[Path, str]]:
    """The scenario file and every file it names (traces, a measured profile, a Hugging Face config)."""
    found = [(Path(path), "scenario")]
    wl = sc.workload
    if wl.arrivals.kind == "trace":
        found.append((Path(wl.arrivals.path), "workload.arrivals.path trace"))
    if wl.rate_curve is not None and wl.rate_curve.kind == "piecewise":
        found.append((Path(wl.rate_curve.path), "workload.rate_curve.path"))
    dists = [("workload.prompt_tokens", wl.prompt_tokens), ("workload.output_tokens", wl.output_tokens)]
    for model, lengths in wl.per_model.items():
        for key in ("prompt_tokens", "output_tokens"):
            dists.append((f"workload.per_model.{model}.{key}", getattr(lengths, key, None)))
    for where, dist in dists:
        if dist is not None and getattr(dist, "kind", None) == "trace":
            found.append((Path(dist.path), f"{where}.path trace"))
    pools = [("hardware", sc.hardware), ("prefill.hardware", sc.prefill.hardware),
             *((f"variants.{v.name}.hardware", v.hardware) for v in sc.variants)]
    for where, hw in pools:
        if hw is not None and catalog.is_path(hw.profile):
            found.append((Path(hw.profile), f"{where}.profile"))
    if sc.model.hf_config is not None:
        found.append((Path(sc.model.hf_config), "model.hf_config"))
    return found


def input_files(inputs: list[tuple[Path, str]]) -> list[Path]:
    """The existing regular files among ``inputs`` (what a result's identity must hash)."""
    return [p for p, _ in inputs if p.is_file()]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (memoised by path, size and modification time)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
