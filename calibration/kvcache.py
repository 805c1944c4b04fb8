"""A slotted 16-bit KV cache and decode attention whose cost follows each sequence's own length.

A serving engine's decode attention (paged / varlen flash-decoding) is one kernel per layer over
the whole batch that reads exactly the cached tokens of every sequence, so a step's attention
time follows the batch's *total* KV tokens. Backends, in order of preference:

* ``triton-paged`` (GPU): :mod:`calibration.triton_attention`, one launch per layer, lengths and
  slots from tensors (CUDA-graph safe);
* ``sdpa-masked`` (GPU fallback): one batched SDPA call over the batch's slots with a length mask;
  one call, but it reads every slot up to the cache's length (padding);
* ``sdpa-loop`` (CPU, and the reference): one SDPA call per sequence on a view of its slot.

:func:`pick_backend` runs each candidate against the per-sequence reference at start-up and takes
the first within :data:`MAX_ABS_ERR`; the check's errors are recorded in ``metadata.json``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import triton_attention
from .errors import CalibrationError

BACKENDS = ("triton-paged", "sdpa-masked", "sdpa-loop")
MAX_ABS_ERR = 3e-2  # bf16 outputs of attention over values in [-1, 1]


class KVCache:
    """K and V of one layer for ``slots`` sequences of up to ``max_len`` tokens, ``[slots, kv_heads, max_len, D]``."""

    def __init__(self, slots: int, max_len: int, kv_heads: int, head_dim: int, device: torch.device,
                 backend: str, dtype: torch.dtype = torch.bfloat16) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"attention backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend = backend
        self.kv_heads, self.head_dim, self.max_len = kv_heads, head_dim, max_len
        shape = (slots, kv_heads, max_len, head_dim)  # head-first: contiguous per-head rows
        # Random contents: timing does not depend on the values, but NaNs/denormals could.
        self.k = torch.empty(shape, dtype=dtype, device=device).uniform_(-1, 1)
        self.v = torch.empty(shape, dtype=dtype, device=device).uniform_(-1, 1)

    def write(self, slots: torch.Tensor, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store one new token per sequence: ``k``, ``v`` are ``[B, kv_heads, head_dim]``."""
        self.k[slots, :, positions] = k
        self.v[slots, :, positions] = v

    def attend(self, q: torch.Tensor, slots: list[int], lengths: list[int], slots_t: torch.Tensor,
               lengths_t: torch.Tensor) -> torch.Tensor:
        """Attention of one query token per sequence over its first ``lengths[i]`` cached tokens.

        ``q`` is ``[B, heads, head_dim]``; returns ``[B, heads * head_dim]``. The list arguments are
        used by ``sdpa-loop`` only; the other backends read the tensors (so they can be graphed).
        """
        b, heads, d = q.shape
        if self.backend == "triton-paged":
            return triton_attention.paged_decode_attention(q, self.k, self.v, slots_t, lengths_t).reshape(b, heads * d)
        group = heads // self.kv_heads
        # GQA without copying K/V: the query heads sharing a KV head act as `group` query rows.
        qg = q.reshape(b, self.kv_heads, group, d)
        if self.backend == "sdpa-masked":
            mask = torch.arange(self.max_len, device=q.device)[None, :] < lengths_t[:, None]
            out = F.scaled_dot_product_attention(qg, self.k[slots_t], self.v[slots_t], attn_mask=mask[:, None, None])
            return out.reshape(b, heads * d)
        outs = [F.scaled_dot_product_attention(qg[i:i + 1], self.k[s:s + 1, :, :n], self.v[s:s + 1, :, :n])
                for i, (s, n) in enumerate(zip(slots, lengths))]
        return torch.cat(outs).reshape(b, heads * d)


def check_backend(backend: str, device: torch.device, kv_heads: int, head_dim: int, heads: int,
                  dtype: torch.dtype = torch.bfloat16) -> dict:
    """Run ``backend`` on a mixed-length batch against ``sdpa-loop``: ``{"ok", "max_abs_err"}`` or ``{"ok", "error"}``."""
    try:
        gen = torch.Generator(device="cpu").manual_seed(0)
        ref = KVCache(3, 600, kv_heads, head_dim, device, "sdpa-loop", dtype)
        ref.k.copy_(torch.rand(ref.k.shape, generator=gen).mul_(2).sub_(1))
        ref.v.copy_(torch.rand(ref.v.shape, generator=gen).mul_(2).sub_(1))
        cand = KVCache(3, 600, kv_heads, head_dim, device, backend, dtype)
        cand.k.copy_(ref.k)
        cand.v.copy_(ref.v)
        q = torch.randn(3, heads, head_dim, generator=gen).to(device=device, dtype=dtype)
        slots, lengths = [2, 0, 1], [513, 7, 64]
        st, lt = torch.tensor(slots, device=device), torch.tensor(lengths, device=device)
        err = (ref.attend(q, slots, lengths, st, lt).float() - cand.attend(q, slots, lengths, st, lt).float()).abs().max()
        err = float(err)
        return {"ok": err <= MAX_ABS_ERR, "max_abs_err": err}
    except Exception as exc:  # noqa: BLE001 - any failure of an optional kernel means: try the next
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}


def pick_backend(device: torch.device, kv_heads: int, head_dim: int, heads: int,
                 prefer: str = "auto") -> tuple[str, dict]:
    """The first backend that runs and agrees with the reference; returns it and every check made.

    ``prefer`` names one backend to use (still checked; a failing choice is an error), or ``auto``:
    the batched backends on a GPU, ``sdpa-loop`` on a CPU (whose per-sequence calls already read
    only each sequence's tokens, and where Triton only runs in its slow interpreter).
    """
    if prefer != "auto":
        if prefer not in BACKENDS:
            raise CalibrationError(f"attention: must be auto or one of {', '.join(BACKENDS)}, got {prefer!r}")
        check = check_backend(prefer, device, kv_heads, head_dim, heads) if prefer != "sdpa-loop" else {"ok": True}
        if not check["ok"]:
            why = check.get("error") or f"max abs error {check.get('max_abs_err'):.3g} > {MAX_ABS_ERR}"
            raise CalibrationError(f"attention: backend {prefer!r} failed its start-up check on {device} ({why}); "
                                   "use --attention auto to fall back to the first backend that passes")
        return prefer, {prefer: check}
    if device.type != "cuda":
        return "sdpa-loop", {"sdpa-loop": {"ok": True, "reference": True}}
    checks: dict = {}
    for cand in ("triton-paged", "sdpa-masked"):
        if cand == "triton-paged" and not triton_attention.available():
            checks[cand] = {"ok": False, "error": f"triton is not importable ({triton_attention.unavailable_reason()})"}
            continue
        checks[cand] = check_backend(cand, device, kv_heads, head_dim, heads)
        if checks[cand]["ok"]:
            return cand, checks
        _device_still_usable(device, checks)
    checks["sdpa-loop"] = {"ok": True, "reference": True}
    return "sdpa-loop", checks


def _device_still_usable(device: torch.device, checks: dict) -> None:
    """After a failed check: a kernel fault (illegal address) poisons the CUDA context for good, and every
    later kernel would fail with a confusing error; say so now, with the checks made."""
    try:
        torch.cuda.synchronize(device)
        torch.zeros(1, device=device).add_(1).item()
    except Exception as exc:  # noqa: BLE001 - any failure here means the context is gone
        raise CalibrationError(f"attention: the GPU is unusable after a failed start-up check ({exc}); checks: "
                               f"{checks}; rerun with --attention sdpa-loop") from None
