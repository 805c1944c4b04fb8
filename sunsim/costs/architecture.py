"""Model shapes: the numbers of a decoder-only Transformer that set its memory and cost.

Every task model of a scenario shares one base shape (they are fine-tuned from one base),
so one :class:`ModelShape` describes them all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sunsim.errors import InputError

#: Bytes per weight element for each decode weight format. Low-bit formats add their
#: scales: int8 keeps one bf16 scale per output channel (negligible), int4 keeps a bf16
#: scale and zero point per group of 128 weights (AWQ-style W4A16).
WEIGHT_BYTES: dict[str, float] = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5 + 4.0 / 128,
    # fp8 with one fp32 scale per 128 x 128 block (DeepSeek-style; vLLM weight_block_size=[128, 128])
    "fp8_block": 1.0 + 4.0 / (128 * 128),
    # NVFP4: 4-bit elements, one fp8 scale per 16 (Blackwell)
    "nvfp4": 0.5 + 1.0 / 16,
}
DTYPES = tuple(WEIGHT_BYTES)
#: Bytes per KV-cache element: 16-bit (the default in every weight format) or fp8 (vLLM ``--kv-cache-dtype fp8``).
KV_ELEMENT_BYTES: dict[str, int] = {"bf16": 2, "fp8": 1}
KV_DTYPES = tuple(KV_ELEMENT_BYTES)


@dataclass(frozen=True)
class ModelShape:
    """The shape of a decoder-only Transformer with grouped-query attention and a gated MLP."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False

    def __post_init__(self) -> None:
        for field in ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "vocab"):
            if getattr(self, field) <= 0:
                raise InputError(f"model.{field} must be a positive integer, got {getattr(self, field)}")
        if self.heads % self.kv_heads:
            raise InputError(
                f"model.heads ({self.heads}) must be a multiple of model.kv_heads ({self.kv_heads})"
            )

    # --- parameter counts -------------------------------------------------------------
    @property
    def layer_linear_params(self) -> int:
        """Weights of one layer's linear projections (QKV, output, gated MLP)."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        attn = self.hidden * (q + 2 * kv) + q * self.hidden
        mlp = 3 * self.hidden * self.intermediate
        return attn + mlp

    @property
    def linear_params(self) -> int:
        """All quantizable weights: the layers' projections (embedding and LM head stay 16-bit)."""
        return self.layers * self.layer_linear_params

    @property
    def embedding_params(self) -> int:
        """Embedding plus LM head (one matrix when tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def params(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        return self.linear_params + self.embedding_params + norms

    def weight_bytes(self, dtype: str) -> float:
        """Bytes of weights on one GPU for a weight format (embedding, head and norms in 16-bit)."""
        if dtype not in WEIGHT_BYTES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        return self.linear_params * WEIGHT_BYTES[dtype] + (self.params - self.linear_params) * 2.0

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer in a 16-bit cache: 2 x layers x kv_heads x head_dim x 2 bytes."""
        return self.kv_bytes("bf16")

    def kv_bytes(self, kv_dtype: str) -> int:
        """K and V for every layer, per token, in a ``kv_dtype`` cache."""
        if kv_dtype not in KV_ELEMENT_BYTES:
            raise InputError(f"kv_dtype must be one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
        return 2 * self.layers * self.kv_heads * self.head_dim * KV_ELEMENT_BYTES[kv_dtype]

    def as_dict(self) -> dict:
        return asdict(self)

    def shard(self, tp: int, field: str = "tp") -> ModelShape:
        """The part of the model one GPU of a ``tp``-way tensor-parallel group holds and computes.

        Megatron-style, as vLLM splits a Llama/Qwen layer: QKV and gate+up are column-parallel (query and
        KV heads, MLP columns divided by ``tp``), output and down row-parallel (their inputs divided), the
        embedding and LM head vocab-parallel (vocabulary divided, padded up). Each GPU keeps whole heads, so
        ``heads`` and ``intermediate`` must divide by ``tp``; KV heads divide too, or, when fewer than
        ``tp``, are replicated (one per GPU; ``tp`` a multiple of them), as vLLM does. Norms stay whole on
        every GPU. ``tp`` 1 is the model itself. A split that cannot be made is an :class:`InputError`
        naming ``field`` (the scenario field that asked for it).
        """
        if tp == 1:
            return self
        if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
            raise InputError(f"{field} must be a positive integer, got {tp!r}")
        for dim in ("heads", "intermediate"):
            if getattr(self, dim) % tp:
                raise InputError(f"{field}: {tp}-way tensor parallelism needs model.{dim} ({getattr(self, dim)}) "
                                 f"divisible by {tp}; {self.name} splits {self._ways()}-way")
        if self.kv_heads % tp and tp % self.kv_heads:
            raise InputError(f"{field}: {tp}-way tensor parallelism needs model.kv_heads ({self.kv_heads}) divisible "
                             f"by {tp}, or {tp} a multiple of it (replicated KV heads); {self.name} splits "
                             f"{self._ways()}-way")
        return ModelShape(
            name=f"{self.name}/tp{tp}", hidden=self.hidden, layers=self.layers, heads=self.heads // tp,
            kv_heads=max(self.kv_heads // tp, 1), head_dim=self.head_dim, intermediate=self.intermediate // tp,
            vocab=-(-self.vocab // tp), tied_embeddings=self.tied_embeddings,
        )

    def _ways(self) -> str:
        """The tensor-parallel degrees (1 to 8) this shape splits into, for an error message."""
        ok = [t for t in (1, 2, 4, 8) if not self.heads % t and not self.intermediate % t
              and (not self.kv_heads % t or not t % self.kv_heads)]
        return "/".join(map(str, ok))


PRESETS: dict[str, ModelShape] = {
    "llama-3.1-8b": ModelShape(
        name="llama-3.1-8b", hidden=4096, layers=32, heads=32, kv_heads=8, head_dim=128,
        intermediate=14336, vocab=128256,
    ),
    "qwen3-8b": ModelShape(
        name="qwen3-8b", hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128,
        intermediate=12288, vocab=151936,
    ),
    # meta-llama/Llama-3.1-70B config.json: hidden_size 8192, num_hidden_layers 80, num_attention_heads 64,
    # num_key_value_heads 8, intermediate_size 28672, vocab_size 128256, tie_word_embeddings false.
    "llama-3.1-70b": ModelShape(
        name="llama-3.1-70b", hidden=8192, layers=80, heads=64, kv_heads=8, head_dim=128,
        intermediate=28672, vocab=128256,
    ),
    # Qwen/Qwen3-32B config.json: hidden_size 5120, num_hidden_layers 64, num_attention_heads 64,
    # num_key_value_heads 8, head_dim 128, intermediate_size 25600, vocab_size 151936, tie_word_embeddings false.
    "qwen3-32b": ModelShape(
        name="qwen3-32b", hidden=5120, layers=64, heads=64, kv_heads=8, head_dim=128,
        intermediate=25600, vocab=151936,
    ),
    # Qwen/Qwen2.5-72B config.json: hidden_size 8192, num_hidden_layers 80, num_attention_heads 64,
    # num_key_value_heads 8, intermediate_size 29568, vocab_size 152064, tie_word_embeddings false.
    # Its QKV biases (80 x 10240 numbers, 0.001% of the weights) are not counted.
    "qwen2.5-72b": ModelShape(
        name="qwen2.5-72b", hidden=8192, layers=80, heads=64, kv_heads=8, head_dim=128,
        intermediate=29568, vocab=152064,
    ),
    # A toy shape that calibrates in seconds on a CPU; used by tests.
    "tiny": ModelShape(
        name="tiny", hidden=256, layers=2, heads=4, kv_heads=2, head_dim=64,
        intermediate=512, vocab=1024,
    ),
}


def preset(name: str) -> ModelShape:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"model.preset must be one of {', '.join(PRESETS)}, got {name!r}") from None
