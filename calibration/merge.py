"""Merge finished one-format profile directories into one multi-format profile (written atomically)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sunsim.output import mark, marker_command
from sunsim.output import write_json as write_json_atomic
from sunsim.output import write_text as write_text_atomic

from .errors import CalibrationError
from .raw import read_rows, write_rows


def merge_profiles(dirs: list[Path], out: Path, name: str, status: dict[str, str]) -> dict:
    """``out`` gets the union of the formats in ``dirs``: profile, metadata, timings and validation."""
    from .validate import render_markdown, write_targets

    profiles = [json.loads((d / "profile.json").read_text()) for d in dirs]
    metas = [json.loads((d / "metadata.json").read_text()) for d in dirs]
    merged = dict(profiles[0], name=name, dtypes={}, skipped_dtypes={})
    figs = dict(profiles[0]["device_figures"], dtypes={})
    merged["kernels_by_rows"] = {}
    for p in profiles:
        merged["dtypes"].update(p["dtypes"])
        merged["skipped_dtypes"].update(p.get("skipped_dtypes", {}))
        figs["dtypes"].update(p["device_figures"]["dtypes"])
        merged["kernels_by_rows"].update(p.get("kernels_by_rows", {}))
    for fmt, st in status.items():  # formats that cannot run on this device
        if st.startswith("skipped:"):
            merged["skipped_dtypes"][fmt] = st.removeprefix("skipped:").strip()
    merged["device_figures"] = figs
    meta = dict(metas[0], name=name, dtypes=list(merged["dtypes"]), format_status=status,
                format_dirs={m["dtypes"][0]: str(d) for m, d in zip(metas, dirs)})
    for key in ("kernels", "kernels_by_rows", "layer_weight_bytes"):
        meta[key] = {k: v for m in metas for k, v in m.get(key, {}).items()}
    meta["skipped_points"] = [p for m in metas for p in m.get("skipped_points", [])]

    partial = out.parent / f".{out.name}.partial"
    if partial.exists() and marker_command(partial) != "calibrate":
        raise CalibrationError(f"out: {str(partial)!r} is in the way of the merged profile's staging folder and "
                               "was not written by sunsim calibrate; move it away")
    shutil.rmtree(partial, ignore_errors=True)  # a killed merge's own leftovers
    partial.mkdir(parents=True)
    mark(partial, {"command": "calibrate"})  # out is replaced by it: the rule's marker goes with it
    write_rows(partial / "timings.csv", [r for d in dirs for r in read_rows(d / "timings.csv")])
    write_json_atomic(partial / "metadata.json", meta)
    write_json_atomic(partial / "profile.json", merged)
    reports = [json.loads((d / "validation.json").read_text()) for d in dirs if (d / "validation.json").exists()]
    if reports:
        report = dict(reports[0], profile=name, dtypes={k: v for r in reports for k, v in r["dtypes"].items()})
        report["meets_targets"] = all(v["meets_targets"] for v in report["dtypes"].values())
        write_json_atomic(partial / "validation.json", report)
        write_text_atomic(partial / "validation.md", render_markdown(report))
    write_targets(partial, merged, meta)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return merged
