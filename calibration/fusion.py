"""The elementwise work of a decoder layer, eager or fused as serving engines fuse it.

Engines run RMSNorm with the residual add, RoPE with the KV-cache write, and SiLU-and-multiply as
a few fused kernels between the GEMMs instead of a dozen small ones each. :class:`Elementwise`
holds these pieces either as plain torch code (``fuse=False``: the CPU path, and the reference)
or compiled by ``torch.compile`` (inductor generates one Triton kernel per piece on a GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORM_EPS = 1e-5


def rms_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + NORM_EPS)).to(x.dtype) * w


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual + x`` and its RMSNorm: the residual add fused into the next norm."""
    r = residual + x
    return rms_norm(r, w), r


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def rope_store(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
               slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int, kv_heads: int,
               head_dim: int) -> torch.Tensor:
    """Decode: split the fused QKV output ``[B, ...]``, rotate q and k, write k and v to the cache; returns q."""
    b = qkv.shape[0]
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    c, s = cos[positions][:, None], sin[positions][:, None]
    q = _rotate(q.reshape(b, heads, head_dim), c, s)
    k = _rotate(k.reshape(b, kv_heads, head_dim), c, s)
    k_cache[slots, :, positions] = k
    v_cache[slots, :, positions] = v.reshape(b, kv_heads, head_dim)
    return q


def rope_prefill(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n: int, s: int, heads: int,
                 kv_heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefill: q, k, v as ``[n, heads, s, head_dim]`` (q, k rotated) from the fused QKV output ``[n * s, ...]``."""
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    c, sn = cos[:s][None, :, None], sin[:s][None, :, None]
    q = _rotate(q.reshape(n, s, heads, head_dim), c, sn).transpose(1, 2)
    k = _rotate(k.reshape(n, s, kv_heads, head_dim), c, sn).transpose(1, 2)
    return q, k, v.reshape(n, s, kv_heads, head_dim).transpose(1, 2)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class Elementwise:
    """The layer's elementwise pieces; ``fuse`` compiles each (``name`` says which path ran)."""

    def __init__(self, fuse: bool) -> None:
        self.fuse = fuse
        self.name = "torch.compile(inductor, dynamic shapes)" if fuse else "eager"
        wrap = (lambda f: torch.compile(f, dynamic=True, fullgraph=True)) if fuse else (lambda f: f)
        self.rms_norm = wrap(rms_norm)
        self.add_rms_norm = wrap(add_rms_norm)
        self.rope_store = wrap(rope_store)
        self.rope_prefill = wrap(rope_prefill)
        self.silu_mul = wrap(silu_mul)


_CACHE: dict[bool, Elementwise] = {}


def elementwise(fuse: bool) -> Elementwise:
    """One shared instance per mode, so compiled code is reused by every layer and format."""
    if fuse not in _CACHE:
        _CACHE[fuse] = Elementwise(fuse)
    return _CACHE[fuse]
