"""How much memory a calibration needs, checked before anything is allocated.

A shape too large for the device would otherwise fail deep inside torch (a 262 GB ``randn`` for an
8M-token vocabulary) with a traceback, or, on a GPU, only after minutes of other formats. The
estimate adds what is alive at the peak of one format's grid (formats are built one after another;
the KV caches are shared by all): the instantiated layers' weights, embedding and LM head, the KV
caches of :meth:`calibration.measure.Runner.caches`, the largest prefill point's activations, and
the fp32 temporaries a weight is built from. It is meant to be a little high, never far low.
"""

from __future__ import annotations

import os
from pathlib import Path

from sunsim.costs.architecture import ModelShape

from .errors import CalibrationError
from .grid import Grid

#: Bytes per stored weight element; fp32 temporaries are counted separately.
FORMAT_BYTES = {"bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5 + 4.0 / 128}
BF16, FP32 = 2, 4
#: Share of the device's memory a calibration may plan to use (allocator slack, other tenants, CUDA context).
USABLE = 0.9


def estimate_bytes(shape: ModelShape, grid: Grid, layers: int, dtypes: list[str], device_type: str,
                   rotate: int | None = None) -> dict[str, int]:
    """Peak bytes by component (and ``total``) for calibrating ``shape`` on ``grid`` with ``layers`` layers."""
    s = shape
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    rotate = rotate or (layers if device_type == "cpu" else 1)
    per_param = max(FORMAT_BYTES.get(d, 2.0) for d in dtypes)
    biggest = max((q + 2 * kv) * s.hidden, q * s.hidden, 2 * s.intermediate * s.hidden)
    slots_big = max(grid.decode_batches[-1], *(b for b, _ in grid.attention), 1)
    len_big = grid.max_context + 1
    slots_small = max((b for b, _ in grid.stack_decode), default=1)
    len_small = max((c for _, c in grid.stack_decode), default=1) + 1
    per_slot_token = 2 * kv * BF16  # K and V
    tokens = max(n * t for n, t in grid.prefill_points)
    prompts, seq = max(grid.prefill_points, key=lambda p: (p[0] * p[1], p[1]))
    max_pos = max(grid.max_context, grid.max_seq) + 2
    out = {
        "layer weights": int(layers * s.layer_linear_params * per_param),
        # a weight is drawn in fp32 and scaled (two tensors), then quantized through fp32 copies
        "weight build temporaries": 4 * biggest * FP32,
        "embedding and LM head": s.vocab * s.hidden * BF16 * (1 if s.tied_embeddings else 2)
        + 2 * s.vocab * s.hidden * FP32,
        "KV cache": per_slot_token * (min(rotate, layers) * slots_big * len_big
                                      + max(0, layers - rotate) * slots_small * len_small),
        # hidden states (bf16 + fp32 norm copies), QKV, gate/up and SiLU outputs, the LM head's logits
        "activations": tokens * (10 * s.hidden + 4 * (q + 2 * kv) + 6 * s.intermediate)
        + max(prompts, slots_big) * s.vocab * FP32,
        "rope tables": max_pos * s.head_dim * 3 * FP32,
    }
    if device_type == "cpu":  # the CPU's SDPA may materialise the causal scores of a prompt
        out["prefill attention scores"] = prompts * s.heads * seq * seq * FP32
    out["total"] = sum(out.values())
    return out


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def device_memory(device) -> tuple[int, str]:
    """Bytes a calibration may plan to use on ``device`` (a ``torch.device``), and how that was found."""
    if device.type == "cuda":
        import torch

        props = torch.cuda.get_device_properties(device)
        try:
            free, total = torch.cuda.mem_get_info(device)
        except RuntimeError:
            free, total = props.total_memory, props.total_memory
        return int(free * USABLE), (f"{USABLE:.0%} of the {free / 1e9:.1f} GB free of {total / 1e9:.1f} GB on "
                                    f"{props.name}")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    if limit is not None and limit < total:
        return int(limit * USABLE), f"{USABLE:.0%} of this container's {limit / 1e9:.1f} GB memory limit"
    return int(total * USABLE), f"{USABLE:.0%} of this machine's {total / 1e9:.1f} GB RAM"


#: The shape fields each component grows with (and the options that shrink it), for the message.
FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    "layer weights": (("layers", "hidden", "intermediate", "heads", "kv_heads", "head_dim"), "--layers"),
    "weight build temporaries": (("hidden", "intermediate", "heads", "head_dim"), ""),
    "embedding and LM head": (("vocab", "hidden"), ""),
    "KV cache": (("kv_heads", "head_dim", "layers"), "the grid's batches and contexts"),
    "activations": (("hidden", "intermediate", "vocab"), "--max-prefill-tokens"),
    "rope tables": (("head_dim",), "the grid's contexts"),
    "prefill attention scores": (("heads",), "--max-prefill-tokens"),
}


def check_memory(shape: ModelShape, grid: Grid, layers: int, dtypes: list[str], device) -> dict[str, int]:
    """Refuse (:class:`CalibrationError`) a calibration whose estimate exceeds the device's memory."""
    est = estimate_bytes(shape, grid, layers, dtypes, device.type)
    cap, how = device_memory(device)
    if est["total"] > cap:
        parts = sorted(((v, k) for k, v in est.items() if k != "total"), reverse=True)

        def grows(k: str) -> str:
            fields, options = FIELDS[k]
            named = [f"model.{f}={getattr(shape, f)}" for f in fields]
            return ", ".join(named + ([options] if options else []))

        detail = "; ".join(f"{k} {v / 1e9:.1f} GB ({grows(k)})" for v, k in parts if v >= 0.01 * est["total"])
        raise CalibrationError(
            f"model: calibrating {shape.name!r} needs about {est['total'] / 1e9:.1f} GB ({est['total']:,} bytes) on "
            f"{device.type}, more than its cap of {cap / 1e9:.1f} GB ({how}): {detail}; shrink those fields, "
            "instantiate fewer --layers or trim the grid")
    return est
