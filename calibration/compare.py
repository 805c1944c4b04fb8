"""``sunsim validate --profile OURS --against vllm-<gpu>``: a profile calibrated here against a shipped table profile.

Where both exist (the same GPU, model and weight format) the two are independent measurements of one step: ours
times this project's kernels with ``sunsim calibrate``, the tables time vLLM's inside vLLM. The comparison
needs no device; it prices a grid of decode steps and prefills with both cost models and reports each relative
difference (ours / tables - 1), so a calibration that drifts from what an engine runs shows up before it
drives a plan.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from sunsim.costs import catalog
from sunsim.costs.hardware import gpu
from sunsim.costs.model import decode_step_time

from .errors import CalibrationError

BATCHES = (1, 8, 32, 64, 128, 256)
CONTEXTS = (128, 1024, 4096)
PREFILLS = (512, 1024, 2048, 4096, 8192)


def compare(profile_path: str | Path, against: str) -> dict:
    """Relative differences per weight format present in both: decode steps over BATCHES x CONTEXTS (where the
    KV fits the GPU) and prefills of one prompt over PREFILLS."""
    from .commands import load_profile, shape_from_dict
    from .profile_models import cost_model_for

    if against not in catalog.shipped():
        raise CalibrationError(f"against: {against!r} is not a shipped table profile "
                               f"(one of {', '.join(catalog.shipped())})")
    ours = load_profile(profile_path)
    tables = catalog.load(against)
    device = gpu(catalog.tables_gpu(tables))
    shape = shape_from_dict(ours["model"], f"profile {str(profile_path)!r}")
    report: dict = {"profile": ours["name"], "against": against, "model": shape.name, "dtypes": {}}
    for dtype in ours["dtypes"]:
        mine, _ = cost_model_for(ours, shape, dtype)
        theirs = catalog.make_cost_model(device, shape, dtype, tables)
        decode = {}
        for b in BATCHES:
            for c in CONTEXTS:
                if shape.weight_bytes(dtype) + b * c * shape.kv_bytes_per_token <= device.memory_bytes:
                    decode[f"B={b},C={c}"] = decode_step_time(mine, b, b * c) / decode_step_time(theirs, b, b * c) - 1
        prefill = {f"{t} tokens": mine.prefill_time(t, t * t) / theirs.prefill_time(t, t * t) - 1 for t in PREFILLS}
        report["dtypes"][dtype] = {
            "decode": decode, "prefill": prefill,
            "decode_median_abs": statistics.median(abs(v) for v in decode.values()),
            "prefill_median_abs": statistics.median(abs(v) for v in prefill.values()),
            "tables_note": theirs.notes(1)[0] if theirs.notes(1) else "",
        }
    return report
