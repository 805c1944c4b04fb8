"""A slotted 16-bit KV cache and decode attention whose cost follows each sequence's own length.

A serving engine's decode attention (paged / varlen flash-decoding) reads exactly the cached
tokens of every sequence, so a step's attention time follows the batch's *total* KV tokens, not
batch size x longest sequence. Padding to the longest sequence would make mixed-length batches
look slower than the engines sunsim models, so neither backend here pads:

* ``varlen`` (CUDA): ``torch.nn.attention.varlen.varlen_attn`` over a paged view of the cache,
  with per-sequence used lengths; tensor-driven, so it can be captured in a CUDA graph.
* ``sdpa-loop`` (CPU, or CUDA fallback): one SDPA call per sequence on a view of its slot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAGE = 256  # varlen paged-KV block size (flash needs a multiple of 256)


class KVCache:
    """K and V of one layer for ``slots`` sequences of up to ``max_len`` tokens each."""

    def __init__(self, slots: int, max_len: int, kv_heads: int, head_dim: int, device: torch.device,
                 backend: str, dtype: torch.dtype = torch.bfloat16) -> None:
        self.backend = backend
        self.kv_heads, self.head_dim = kv_heads, head_dim
        if backend == "varlen":
            max_len = -(-max_len // PAGE) * PAGE
            shape = (slots, max_len, kv_heads, head_dim)
        else:
            shape = (slots, kv_heads, max_len, head_dim)  # head-first: contiguous per-head rows for SDPA
        self.max_len = max_len
        # Random contents: timing does not depend on the values, but NaNs/denormals could.
        self.k = torch.empty(shape, dtype=dtype, device=device).uniform_(-1, 1)
        self.v = torch.empty(shape, dtype=dtype, device=device).uniform_(-1, 1)

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def write(self, slots: torch.Tensor, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store one new token per sequence: ``k``, ``v`` are ``[B, kv_heads, head_dim]``."""
        if self.backend == "varlen":
            self.k[slots, positions] = k
            self.v[slots, positions] = v
        else:
            self.k[slots, :, positions] = k
            self.v[slots, :, positions] = v

    def attend(self, q: torch.Tensor, slots: list[int], lengths: list[int], slots_t: torch.Tensor,
               lengths_t: torch.Tensor) -> torch.Tensor:
        """Attention of one query token per sequence over its first ``lengths[i]`` cached tokens.

        ``q`` is ``[B, heads, head_dim]``; returns ``[B, heads * head_dim]``.
        """
        b, heads, d = q.shape
        if self.backend == "varlen":
            return self._attend_varlen(q, slots_t, lengths_t).reshape(b, heads * d)
        group = heads // self.kv_heads
        # GQA without copying K/V: the query heads sharing a KV head act as `group` query rows.
        qg = q.reshape(b, self.kv_heads, group, d)
        outs = [F.scaled_dot_product_attention(qg[i:i + 1], self.k[s:s + 1, :, :n], self.v[s:s + 1, :, :n])
                for i, (s, n) in enumerate(zip(slots, lengths))]
        return torch.cat(outs).reshape(b, heads * d)

    def _attend_varlen(self, q: torch.Tensor, slots_t: torch.Tensor, lengths_t: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention.varlen import varlen_attn

        b = q.shape[0]
        pages_per_slot = self.max_len // PAGE
        pages = self.k.view(-1, PAGE, self.kv_heads, self.head_dim)
        vpages = self.v.view(-1, PAGE, self.kv_heads, self.head_dim)
        block_table = (slots_t[:, None] * pages_per_slot
                       + torch.arange(pages_per_slot, device=q.device)[None]).to(torch.int32)
        cu_q = torch.arange(b + 1, device=q.device, dtype=torch.int32)
        return varlen_attn(q, pages, vpages, cu_q, None, 1, self.max_len, enable_gqa=True,
                           seqused_k=lengths_t.to(torch.int32), block_table=block_table)


def pick_backend(device: torch.device, kv_heads: int, head_dim: int, heads: int) -> str:
    """``varlen`` on CUDA when it runs and agrees with the per-sequence reference, else ``sdpa-loop``."""
    if device.type != "cuda":
        return "sdpa-loop"
    try:
        torch.manual_seed(0)
        ref = KVCache(3, 600, kv_heads, head_dim, device, "sdpa-loop")
        var = KVCache(3, 600, kv_heads, head_dim, device, "varlen")
        var.k[:, :600] = ref.k.transpose(1, 2)
        var.v[:, :600] = ref.v.transpose(1, 2)
        q = torch.randn(2, heads, head_dim, dtype=torch.bfloat16, device=device)
        slots, lengths = [2, 0], [513, 7]
        st = torch.tensor(slots, device=device)
        lt = torch.tensor(lengths, device=device)
        a = ref.attend(q, slots, lengths, st, lt)
        b = var.attend(q, slots, lengths, st, lt)
        if torch.allclose(a.float(), b.float(), atol=2e-2, rtol=2e-2):
            return "varlen"
    except Exception:  # noqa: BLE001 - any failure of the optional kernel means: use the fallback
        pass
    return "sdpa-loop"
