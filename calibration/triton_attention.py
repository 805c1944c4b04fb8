"""Batched paged decode attention in Triton: one launch per layer over the whole batch's KV cache.

This is the flash-decoding scheme serving engines use: every (sequence, KV head, split) program
reads only that sequence's own cached tokens (its length comes from a tensor, so the launch is
CUDA-graph safe), the query heads sharing a KV head (GQA) are one small matrix, and long
sequences are split along the tokens so a small batch still fills the GPU; a short reduction
merges the splits by their log-sum-exp. Runs under ``TRITON_INTERPRET=1`` on a CPU for tests.
"""

from __future__ import annotations

import math

import torch

try:  # optional: the calibration falls back to SDPA without it
    import triton
    import triton.language as tl

    _UNAVAILABLE: str | None = None
except Exception as exc:  # noqa: BLE001 - not installed, or installed but broken (no driver, bad build)
    triton = None
    _UNAVAILABLE = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'import failed'}"

BLOCK_N = 64


def available() -> bool:
    return triton is not None


def unavailable_reason() -> str | None:
    """Why triton cannot be imported here (recorded with the attention checks), or ``None``."""
    return _UNAVAILABLE


if triton is not None:

    @triton.jit
    def _decode_kernel(Q, K, V, Lens, Slots, Out, Lse,
                       stride_qb, stride_qh, stride_ks, stride_kh, stride_kt, stride_vs, stride_vh, stride_vt,
                       stride_ob, stride_oh, stride_os, stride_lb, stride_lh, sm_scale,
                       GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr,
                       SPLITS: tl.constexpr, MAX_BLOCKS: tl.constexpr):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        sp = tl.program_id(2)
        n = tl.load(Lens + b).to(tl.int32)
        slot = tl.load(Slots + b).to(tl.int64)
        chunk = tl.cdiv(tl.cdiv(n, SPLITS), BLOCK) * BLOCK
        start = sp * chunk
        end = tl.minimum(start + chunk, n)
        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, D)
        gmask = g < GROUP
        heads = kvh * GROUP + g
        q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=gmask[:, None], other=0.0)
        m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, D], tl.float32)
        kbase = K + slot * stride_ks + kvh * stride_kh
        vbase = V + slot * stride_vs + kvh * stride_vh
        for i in range(0, MAX_BLOCKS):  # constant trip count (CUDA-graph and interpreter safe); skip past the end
            if start + i * BLOCK < end:
                t = start + i * BLOCK + tl.arange(0, BLOCK)
                tmask = t < end
                k = tl.load(kbase + t[:, None] * stride_kt + d[None, :], mask=tmask[:, None], other=0.0)
                v = tl.load(vbase + t[:, None] * stride_vt + d[None, :], mask=tmask[:, None], other=0.0)
                s = tl.dot(q, tl.trans(k)) * sm_scale
                s = tl.where(tmask[None, :], s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                p = tl.exp(s - m_new[:, None])
                alpha = tl.exp(m_i - m_new)
                l_i = l_i * alpha + tl.sum(p, 1)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
                m_i = m_new
        has = l_i > 0
        out = acc / tl.where(has, l_i, 1.0)[:, None]
        lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
        tl.store(Out + b * stride_ob + heads[:, None] * stride_oh + sp * stride_os + d[None, :], out, mask=gmask[:, None])
        tl.store(Lse + b * stride_lb + heads * stride_lh + sp, lse, mask=gmask)


def default_splits(batch: int, kv_heads: int, max_len: int, device: torch.device) -> int:
    """Token splits per sequence so about two programs per streaming multiprocessor run."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8
    want = math.ceil(2 * sms / max(1, batch * kv_heads))
    return max(1, min(want, 16, math.ceil(max_len / (4 * BLOCK_N))))


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor,
                           lengths: torch.Tensor, splits: int | None = None) -> torch.Tensor:
    """``q`` ``[B, heads, D]``; caches ``[slots, kv_heads, max_len, D]``; returns ``[B, heads, D]``.

    Sequence ``i`` attends the first ``lengths[i]`` tokens of cache slot ``slots[i]``.
    """
    if triton is None:
        raise RuntimeError(f"triton is not importable ({_UNAVAILABLE})")
    b, heads, d = q.shape
    kv_heads, max_len = k_cache.shape[1], k_cache.shape[2]
    group = heads // kv_heads
    splits = splits or default_splits(b, kv_heads, max_len, q.device)
    o = torch.empty(b, heads, splits, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, heads, splits, dtype=torch.float32, device=q.device)
    q = q.contiguous()
    _decode_kernel[(b, kv_heads, splits)](
        q, k_cache, v_cache, lengths, slots, o, lse,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        o.stride(0), o.stride(1), o.stride(2), lse.stride(0), lse.stride(1), 1.0 / math.sqrt(d),
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), D=d, BLOCK=BLOCK_N, SPLITS=splits,
        MAX_BLOCKS=triton.cdiv(triton.cdiv(max_len, splits), BLOCK_N) + 1,
        num_warps=4)
    w = torch.softmax(lse, dim=-1)  # empty splits have lse -inf: weight 0
    return (o * w[..., None]).sum(2).to(q.dtype)
