"""A real Llama-style decoder built from a :class:`sunsim.costs.architecture.ModelShape` with random weights.

The kernels are those a serving engine runs (RMSNorm fused with the residual add, fused QKV, RoPE
fused with the KV write, batched GQA decode attention, output projection, gated SiLU MLP, embedding,
LM head, greedy sampling), so their timings stand in for a real checkpoint of the same shape: GEMM
and attention cost depend on the shapes, not on the weight values. Nothing is downloaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sunsim.costs.architecture import ModelShape

from .formats import ACT_DTYPE, make_linear
from .fusion import Elementwise, elementwise, rms_norm
from .kvcache import KVCache

ROPE_THETA = 500_000.0


class Rope:
    """Rotary position embedding tables (half-split convention, as in Llama/HF)."""

    def __init__(self, head_dim: int, max_pos: int, device: torch.device) -> None:
        inv = 1.0 / ROPE_THETA ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
        ang = torch.outer(torch.arange(max_pos, device=device, dtype=torch.float32), inv)
        self.cos = torch.cat([ang.cos(), ang.cos()], -1).to(ACT_DTYPE)
        self.sin = torch.cat([ang.sin(), ang.sin()], -1).to(ACT_DTYPE)


def _weight(out_f: int, in_f: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(out_f, in_f, device=device, generator=gen) * in_f ** -0.5


class DecoderLayer(nn.Module):
    """One pre-norm decoder layer; linear projections in weight format ``fmt``; ``fuse`` fuses the elementwise work."""

    def __init__(self, shape: ModelShape, fmt: str, device: torch.device, gen: torch.Generator,
                 fuse: bool = False) -> None:
        super().__init__()
        s = shape
        self.heads, self.kv_heads, self.head_dim = s.heads, s.kv_heads, s.head_dim
        self.q_dim, self.kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
        self.norm1 = torch.ones(s.hidden, dtype=ACT_DTYPE, device=device)
        self.norm2 = torch.ones(s.hidden, dtype=ACT_DTYPE, device=device)
        self.qkv = make_linear(_weight(self.q_dim + 2 * self.kv_dim, s.hidden, device, gen), fmt, fuse)
        self.o = make_linear(_weight(s.hidden, self.q_dim, device, gen), fmt, fuse)
        self.gate_up = make_linear(_weight(2 * s.intermediate, s.hidden, device, gen), fmt, fuse)
        self.down = make_linear(_weight(s.hidden, s.intermediate, device, gen), fmt, fuse)
        self.ew: Elementwise = elementwise(fuse)

    @property
    def linears(self) -> tuple[nn.Module, ...]:
        return (self.qkv, self.o, self.gate_up, self.down)

    @property
    def weight_bytes(self) -> int:
        return sum(m.weight_bytes for m in self.linears)

    def kernels_for(self, rows: int) -> str:
        """The GEMM kernel(s) this layer runs at ``rows`` rows (one name when all four agree)."""
        return " | ".join(dict.fromkeys(m.kernel_for(rows) for m in self.linears))

    def gemms(self, x: torch.Tensor, attn: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Only the four projections, on ready inputs: the GEMM share of a layer's time."""
        self.qkv(x)
        self.o(attn)
        self.gate_up(x)
        return self.down(act)

    def prefill(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        """``x`` is ``[n, s, hidden]``: n prompts of s tokens, causal attention within each."""
        n, s, hidden = x.shape
        ew = self.ew
        x = x.reshape(n * s, hidden)
        q, k, v = ew.rope_prefill(self.qkv(ew.rms_norm(x, self.norm1)), rope.cos, rope.sin, n, s, self.heads,
                                  self.kv_heads, self.head_dim)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        h, x = ew.add_rms_norm(self.o(a.transpose(1, 2).reshape(n * s, self.q_dim)), x, self.norm2)
        return (x + self.down(ew.silu_mul(self.gate_up(h)))).reshape(n, s, hidden)

    def decode(self, x: torch.Tensor, rope: Rope, cache: KVCache, step: DecodeBatch) -> torch.Tensor:
        """One token per sequence: ``x`` is ``[B, hidden]``; writes its K/V, attends over the slot."""
        ew = self.ew
        q = ew.rope_store(self.qkv(ew.rms_norm(x, self.norm1)), rope.cos, rope.sin, step.positions_t, step.slots_t,
                          cache.k, cache.v, self.heads, self.kv_heads, self.head_dim)
        a = cache.attend(q, step.slots, step.lengths, step.slots_t, step.lengths_t)
        h, x = ew.add_rms_norm(self.o(a), x, self.norm2)
        return x + self.down(ew.silu_mul(self.gate_up(h)))


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

    def update(self, slots: list[int], held: list[int]) -> None:
        """Refill the same tensors in place (a captured CUDA graph keeps reading them)."""
        self.slots, self.lengths = list(slots), [c + 1 for c in held]
        dev = self.slots_t.device
        self.slots_t.copy_(torch.tensor(slots, dtype=torch.long), non_blocking=dev.type == "cuda")
        self.positions_t.copy_(torch.tensor(held, dtype=torch.long), non_blocking=dev.type == "cuda")
        self.lengths_t.copy_(self.positions_t + 1)

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
        self.norm = torch.ones(shape.hidden, dtype=ACT_DTYPE, device=device)

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.embed)

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(rms_norm(x, self.norm), self.head).argmax(-1)

    def decode_part(self, tokens: torch.Tensor) -> torch.Tensor:
        """The non-layer work of a decode step, for timing on its own."""
        return self.sample(self.lookup(tokens))

    def prefill_part(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed every prompt token, sample from each prompt's last position."""
        return self.sample(self.lookup(tokens)[:, -1])


class Stack(nn.Module):
    """Embedding, ``layers`` decoder layers, LM head: the full-stack path the composition is checked against."""

    def __init__(self, shape: ModelShape, fmt: str, layers: int, device: torch.device, max_pos: int,
                 seed: int = 0, fuse: bool = False) -> None:
        super().__init__()
        gen = torch.Generator(device=device).manual_seed(seed)
        self.shape, self.fmt, self.device = shape, fmt, device
        self.io = EmbedHead(shape, device, gen)
        self.layers = nn.ModuleList(DecoderLayer(shape, fmt, device, gen, fuse) for _ in range(layers))
        self.rope = Rope(shape.head_dim, max_pos, device)

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
