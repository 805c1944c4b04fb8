"""A real Llama-style decoder built from a :class:`sunsim.architecture.ModelShape` with random weights.

The kernels are those a serving engine runs (RMSNorm, fused QKV, RoPE, GQA attention via SDPA,
output projection, gated SiLU MLP, residuals, embedding, LM head, greedy sampling), so their
timings stand in for a real checkpoint of the same shape: GEMM and attention cost depend on the
shapes, not on the weight values. Nothing is downloaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sunsim.architecture import ModelShape

from .formats import ACT_DTYPE, make_linear
from .kvcache import KVCache

ROPE_THETA = 500_000.0
NORM_EPS = 1e-5


class RMSNorm(nn.Module):
    def __init__(self, hidden: int, device: torch.device) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden, dtype=ACT_DTYPE, device=device), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + NORM_EPS)).to(x.dtype) * self.weight


class Rope:
    """Rotary position embedding tables (half-split convention, as in Llama/HF)."""

    def __init__(self, head_dim: int, max_pos: int, device: torch.device) -> None:
        inv = 1.0 / ROPE_THETA ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
        ang = torch.outer(torch.arange(max_pos, device=device, dtype=torch.float32), inv)
        self.cos = torch.cat([ang.cos(), ang.cos()], -1).to(ACT_DTYPE)
        self.sin = torch.cat([ang.sin(), ang.sin()], -1).to(ACT_DTYPE)

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x`` is ``[..., T, H, D]`` with ``positions`` broadcastable to ``[..., T]``."""
        cos, sin = self.cos[positions].unsqueeze(-2), self.sin[positions].unsqueeze(-2)
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin


def _weight(out_f: int, in_f: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(out_f, in_f, device=device, generator=gen) * in_f ** -0.5


class DecoderLayer(nn.Module):
    """One pre-norm decoder layer; linear projections in weight format ``fmt``."""

    def __init__(self, shape: ModelShape, fmt: str, device: torch.device, gen: torch.Generator) -> None:
        super().__init__()
        s = shape
        self.heads, self.kv_heads, self.head_dim = s.heads, s.kv_heads, s.head_dim
        self.q_dim, self.kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
        self.norm1, self.norm2 = RMSNorm(s.hidden, device), RMSNorm(s.hidden, device)
        self.qkv = make_linear(_weight(self.q_dim + 2 * self.kv_dim, s.hidden, device, gen), fmt)
        self.o = make_linear(_weight(s.hidden, self.q_dim, device, gen), fmt)
        self.gate_up = make_linear(_weight(2 * s.intermediate, s.hidden, device, gen), fmt)
        self.down = make_linear(_weight(s.hidden, s.intermediate, device, gen), fmt)
        self.intermediate = s.intermediate

    @property
    def weight_bytes(self) -> int:
        return sum(m.weight_bytes for m in (self.qkv, self.o, self.gate_up, self.down))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).split(self.intermediate, dim=-1)
        return self.down(F.silu(gate) * up)

    def gemms(self, x: torch.Tensor, attn: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Only the four projections, on ready inputs: the GEMM share of a layer's time."""
        self.qkv(x)
        self.o(attn)
        self.gate_up(x)
        return self.down(act)

    def prefill(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        """``x`` is ``[n, s, hidden]``: n prompts of s tokens, causal attention within each."""
        n, s, hidden = x.shape
        h = self.norm1(x).reshape(n * s, hidden)
        q, k, v = self.qkv(h).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        pos = torch.arange(s, device=x.device)
        q = rope.apply(q.reshape(n, s, self.heads, self.head_dim), pos).transpose(1, 2)
        k = rope.apply(k.reshape(n, s, self.kv_heads, self.head_dim), pos).transpose(1, 2)
        v = v.reshape(n, s, self.kv_heads, self.head_dim).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(n * s, self.q_dim)).reshape(n, s, hidden)
        return x + self._mlp(self.norm2(x).reshape(n * s, hidden)).reshape(n, s, hidden)

    def decode(self, x: torch.Tensor, rope: Rope, cache: KVCache, step: DecodeBatch) -> torch.Tensor:
        """One token per sequence: ``x`` is ``[B, hidden]``; writes its K/V, attends over the slot."""
        b = x.shape[0]
        q, k, v = self.qkv(self.norm1(x)).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        q = _rope_one(rope, q.reshape(b, self.heads, self.head_dim), step.positions_t)
        k = _rope_one(rope, k.reshape(b, self.kv_heads, self.head_dim), step.positions_t)
        cache.write(step.slots_t, step.positions_t, k, v.reshape(b, self.kv_heads, self.head_dim))
        a = cache.attend(q, step.slots, step.lengths, step.slots_t, step.lengths_t)
        x = x + self.o(a)
        return x + self._mlp(self.norm2(x))


def _rope_one(rope: Rope, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """RoPE for one token per sequence: ``x`` is ``[B, H, D]``, ``positions`` ``[B]``."""
    cos, sin = rope.cos[positions][:, None], rope.sin[positions][:, None]
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


class DecodeBatch:
    """Who is in a decode step: cache slot, write position and attended length per sequence.

    A sequence holding ``c`` KV tokens writes its new token at position ``c`` and attends ``c + 1``.
    """

    def __init__(self, slots: list[int], held: list[int], device: torch.device) -> None:
        self.slots = list(slots)
        self.lengths = [c + 1 for c in held]
        self.slots_t = torch.tensor(slots, device=device, dtype=torch.long)
        self.positions_t = torch.tensor(held, device=device, dtype=torch.long)
        self.lengths_t = self.positions_t + 1

    @property
    def kv_tokens(self) -> int:
        """KV tokens held before the step (the simulator's convention)."""
        return sum(self.lengths) - len(self.lengths)


class EmbedHead(nn.Module):
    """Token embedding, final norm, 16-bit LM head and greedy sampling (never quantized)."""

    def __init__(self, shape: ModelShape, device: torch.device, gen: torch.Generator) -> None:
        super().__init__()
        self.embed = (torch.randn(shape.vocab, shape.hidden, device=device, generator=gen) * 0.02).to(ACT_DTYPE)
        self.head = self.embed if shape.tied_embeddings else _weight(shape.vocab, shape.hidden, device, gen).to(ACT_DTYPE)
        self.norm = RMSNorm(shape.hidden, device)

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.embed)

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(x), self.head).argmax(-1)

    def decode_part(self, tokens: torch.Tensor) -> torch.Tensor:
        """The non-layer work of a decode step, for timing on its own."""
        return self.sample(self.lookup(tokens))

    def prefill_part(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed every prompt token, sample from each prompt's last position."""
        return self.sample(self.lookup(tokens)[:, -1])


class Stack(nn.Module):
    """Embedding, ``layers`` decoder layers, LM head: the full-stack path the composition is checked against."""

    def __init__(self, shape: ModelShape, fmt: str, layers: int, device: torch.device, max_pos: int,
                 seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator(device=device).manual_seed(seed)
        self.shape, self.fmt, self.device = shape, fmt, device
        self.io = EmbedHead(shape, device, gen)
        self.layers = nn.ModuleList(DecoderLayer(shape, fmt, device, gen) for _ in range(layers))
        self.rope = Rope(shape.head_dim, max_pos, device)

    @property
    def layer_weight_bytes(self) -> int:
        return self.layers[0].weight_bytes

    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.io.lookup(tokens)
        for layer in self.layers:
            x = layer.prefill(x, self.rope)
        return self.io.sample(x[:, -1])

    def decode(self, tokens: torch.Tensor, caches: list[KVCache], step: DecodeBatch) -> torch.Tensor:
        x = self.io.lookup(tokens)
        for layer, cache in zip(self.layers, caches):
            x = layer.decode(x, self.rope, cache, step)
        return self.io.sample(x)
