"""Execution-time predictors: how long a prefill batch and a decode iteration take.

The simulator only talks to the :class:`CostModel` protocol, so an analytic roofline and a
profile measured on real kernels are interchangeable. Decode step time is modelled as

    step(batch, kv_tokens) = alpha(batch) + beta * kv_tokens

because the linear layers' cost depends only on how many tokens are in the batch while
attention reads every cached token once. Affinity in ``kv_tokens`` is what lets a decode
worker sum a whole run of iterations in closed form (see :mod:`sunsim.sim.coalesced_runs`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sunsim.costs import efficiency as eff
from sunsim.costs.allreduce import message_bytes, ring_allreduce_s, ring_source
from sunsim.costs.architecture import DTYPES, WEIGHT_BYTES, ModelShape
from sunsim.costs.hardware import GPU
from sunsim.errors import InputError

PROFILE_FORMAT = "sunsim-profile/1"


@dataclass(frozen=True)
class ProfileInfo:
    """Which profile produced the numbers: every output carries this."""

    name: str
    kind: str  # "analytic" | "measured"
    device: str
    source: str = ""  # measurements an analytic profile takes figures from
    kernel: str = ""  # the kernel class an analytic profile prices
    note: str = ""  # what an analytic profile assumes beyond its measurements

    def as_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "device": self.device}
        for key in ("source", "kernel", "note"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


class CostModel(Protocol):
    info: ProfileInfo

    def prefill_time(self, tokens: int, sum_sq_tokens: int, prompts: int = 1) -> float:
        """Seconds to prefill ``prompts`` prompts of ``tokens`` tokens in all, lengths squared summing to ``sum_sq_tokens``."""

    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        """``(alpha, beta)`` so that one decode iteration takes ``alpha + beta * kv_tokens`` seconds."""

    def mixed_time(self, decode_batch: int, decode_kv_tokens: int, chunks: Sequence[tuple[int, int]]) -> float:
        """Seconds of one aggregated (chunked-prefill) iteration: ``decode_batch`` decode rows reading
        ``decode_kv_tokens`` KV tokens in all, plus prefill ``chunks`` of ``(new tokens, prefix tokens)``.

        Without chunks it is the decode step; a lone chunk with no prefix is the prompt's prefill."""


def chunk_sq(chunks: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """``(new tokens, causal work)`` of prefill chunks: a chunk of ``c`` new tokens after ``p`` cached ones
    attends like the last ``c`` rows of a ``p + c`` prompt, ``(p + c)^2 - p^2 = c^2 + 2cp`` in the units of
    ``sum_sq_tokens``, so a prompt's chunks add up to its unchunked attention work."""
    return sum(c for c, _ in chunks), sum(c * c + 2 * c * p for c, p in chunks)


def decode_step_time(cost: CostModel, batch: int, kv_tokens: float) -> float:
    alpha, beta = cost.decode_coeffs(batch)
    return alpha + beta * kv_tokens


# --------------------------------------------------------------------------------------
# Analytic roofline
# --------------------------------------------------------------------------------------
#: Fixed per-iteration cost: launches (or graph replay), sampling, scheduling.
DECODE_STEP_OVERHEAD_S = 0.5e-3
PREFILL_BATCH_OVERHEAD_S = 2e-3
#: Pass times a cost model remembers (per (rows, logit rows)); beyond, it computes them again.
MEMO_ENTRIES = 1 << 16
EMBED_BYTES = 2.0  # embedding, LM head and norms stay 16-bit


def projection_gemms(s: ModelShape) -> tuple[tuple[int, int], ...]:
    """``(K, N)`` of one layer's four projection GEMMs as engines fuse them: QKV, output, gate+up, down."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return (s.hidden, q + 2 * kv), (q, s.hidden), (s.hidden, 2 * s.intermediate), (s.intermediate, s.hidden)


@dataclass(frozen=True)
class AnalyticCostModel:
    """Datasheet peaks times kernel efficiency curves fitted to measurements (:mod:`sunsim.costs.efficiency`).

    Per pass: the layers' projection GEMMs on the weight format's curve (cuBLAS bf16; W8A8 fp8 plus vLLM's
    per-token activation quantization; W4A16 / W8A16 Marlin/Machete class), the 16-bit LM head (AWQ keeps
    it and the embeddings 16-bit) on the bf16 curve over the rows that need logits (every sequence in
    decode, the last token of each prompt in prefill), the embedding rows and norms, and attention: in
    decode one call per layer (its fitted floor) plus the KV bytes at the fitted bandwidth (``beta``), in
    prefill FlashAttention-3's fitted causal rate. :meth:`notes` says what lies outside the measurements.

    ``tp`` > 1: one GPU of a tensor-parallel group, costed on its shard (:meth:`ModelShape.shard`: sharded
    GEMM widths, heads and KV heads, vocabulary) plus two ring all-reduces per layer
    (:mod:`sunsim.costs.allreduce`).
    """

    gpu: GPU
    shape: ModelShape
    dtype: str
    kv_dtype: str = "bf16"
    tp: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.dtype not in eff.KERNEL_FORMAT:
            raise ValueError(f"dtype {self.dtype} is priced from measured tables only (hardware.profile vllm-<gpu> "
                             f"where the GPU runs it); the analytic profiles price {', '.join(eff.KERNEL_FORMAT)}")
        self.gpu.dense_flops(self.dtype)  # fp8 on a GPU without fp8 tensor cores fails here
        s, g, f = self.shape.shard(self.tp), self.gpu, eff.fits()
        bw_x, fl_x = g.bandwidth_Bps / eff.FIT_BANDWIDTH, g.bf16_flops / eff.FIT_BF16_FLOPS
        fmt = eff.KERNEL_FORMAT[self.dtype]
        bf16 = f.gemm["bf16"].scaled(bw_x, fl_x)
        proj = bf16 if fmt == "bf16" else f.gemm[fmt].scaled(
            bw_x, g.dense_flops("fp8") / eff.FIT_FP8_FLOPS if fmt == "fp8" else fl_x)
        att = f.attention
        gemms = projection_gemms(s)
        ar0 = ring_allreduce_s(g, self.tp, 0.0)
        consts = {
            "_s": s, "_fmt": fmt, "_gemms": gemms, "_proj": proj, "_bf16": bf16,
            # two all-reduces per layer, affine in the rows: a fixed part and a part per row
            "_ar_fixed_s": 2 * s.layers * ar0,
            "_ar_s_per_row": 2 * s.layers * (ring_allreduce_s(g, self.tp, message_bytes(1, s.hidden)) - ar0),
            # fp8: each GEMM input quantized per token (read 16-bit, write fp8) in one small kernel
            "_quant_fixed_s": len(gemms) * eff.ACT_QUANT_CALL_S if fmt == "fp8" else 0.0,
            "_quant_s_per_row": sum(k for k, _ in gemms) * 3.0 / bf16.bandwidth_Bps if fmt == "fp8" else 0.0,
            "_norm_read_s": (2 * s.layers + 1) * s.hidden * EMBED_BYTES / bf16.bandwidth_Bps,
            "_embed_s_per_row": s.hidden * EMBED_BYTES / bf16.bandwidth_Bps,
            "_attn_calls_s": s.layers * att.decode_call_s,
            "_attn_s_per_sq": 2.0 * s.layers * s.heads * s.head_dim / (att.prefill_rate_max * fl_x),
            "_beta": s.kv_bytes(self.kv_dtype) / (att.decode_bandwidth_Bps * bw_x),
        }
        for name, value in consts.items():
            object.__setattr__(self, name, value)  # frozen dataclass: derived constants set once

    @property
    def info(self) -> ProfileInfo:
        fmt = self._fmt
        ids = {"bf16": "P1", "fp8": "P1", "w4a16": "H2 V1 P1", "w8a16": "H2 P1"}[fmt]
        source = f"{eff.cite(eff.GEMM_FILE, ids)}; {eff.cite(eff.ATTENTION_FILE, 'P1 FA3')}"
        if self.gpu.source:
            source += f"; datasheet figures: {self.gpu.source}"
        note = "" if self.gpu.measured else (
            f"not measured on {self.gpu.name}: the H100 fits' fractions of datasheet bandwidth and FLOP/s, "
            f"applied to {self.gpu.name}'s datasheet figures (assumed)")
        if self.tp > 1:
            source += f"; {ring_source(self.gpu)}"
            note = "; ".join(filter(None, (note, f"tensor parallel {self.tp}: one GPU's shard plus 2 ring "
                                                  "all-reduces per layer (the ring model, not measured)")))
        return ProfileInfo(name=f"analytic-{self.gpu.name}", kind="analytic", device=self.gpu.name, source=source,
                           kernel=eff.KERNEL_CLASS[fmt], note=note)

    def projections_time(self, rows: int) -> float:
        """The layers' projection GEMMs over ``rows`` rows in the weight format (fp8: with activation quant)."""
        wb = WEIGHT_BYTES[self.dtype]
        per_layer = self._proj.total(self._gemms, rows, wb) + self._quant_fixed_s + self._quant_s_per_row * rows
        return self._s.layers * per_layer

    def head_time(self, logit_rows: int) -> float:
        """The 16-bit LM head (its vocabulary shard) over ``logit_rows`` rows."""
        return self._bf16.time(self._s.hidden, self._s.vocab, logit_rows, EMBED_BYTES)

    def allreduce_time(self, rows: float) -> float:
        """The pass's 2 x layers all-reduces over ``rows`` rows (0 on one GPU)."""
        return self._ar_fixed_s + self._ar_s_per_row * rows

    def _pass_time(self, rows: int, logit_rows: int) -> float:
        """One pass's GEMMs, norms, embeddings (and all-reduces) over ``rows`` rows: remembered per shape, as a
        run prefills batches of the same sizes over and over."""
        memo = self.__dict__.setdefault("_pass_memo", {})
        t = memo.get((rows, logit_rows))
        if t is None:
            t = self.projections_time(rows) + self.head_time(logit_rows) + self._norm_read_s + self._embed_s_per_row * rows
            if self.tp > 1:
                t += self.allreduce_time(rows)
            if len(memo) < MEMO_ENTRIES:
                memo[(rows, logit_rows)] = t
        return t

    def prefill_time(self, tokens: int, sum_sq_tokens: int, prompts: int = 1) -> float:
        half = eff.fits().attention.prefill_half_len
        attn = self._attn_calls_s + self._attn_s_per_sq * (sum_sq_tokens + half * tokens)
        return PREFILL_BATCH_OVERHEAD_S + self._pass_time(tokens, prompts) + attn

    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        return DECODE_STEP_OVERHEAD_S + self._pass_time(batch, batch) + self._attn_calls_s, self._beta

    def mixed_time(self, decode_batch: int, decode_kv_tokens: int, chunks: Sequence[tuple[int, int]]) -> float:
        """One pass over every token of the iteration (projections at ``m`` = all rows; the LM head over the
        decode rows and one row per chunk, as vLLM V1 samples each scheduled request), one attention call per
        layer (a varlen kernel takes decode rows and chunks together), decode rows' KV at ``beta``, and each
        chunk's causal work against its prefix (:func:`chunk_sq`) at the prefill rate. The per-iteration
        overhead is the prefill batch's when chunks run, the decode step's otherwise, so the two ends equal
        :meth:`decode_coeffs` and :meth:`prefill_time`."""
        new, sq = chunk_sq(chunks)
        overhead = PREFILL_BATCH_OVERHEAD_S if chunks else DECODE_STEP_OVERHEAD_S
        attn = self._attn_calls_s + self._beta * decode_kv_tokens
        if chunks:
            attn += self._attn_s_per_sq * (sq + eff.fits().attention.prefill_half_len * new)
        return overhead + self._pass_time(decode_batch + new, decode_batch + len(chunks)) + attn

    def notes(self, rows: int, kv_tokens_per_seq: int | None = None, prompt_tokens: int | None = None,
              logit_rows: int | None = None) -> list[str]:
        """What a pass of ``rows`` rows takes from outside the measurements (empty: all inside).

        Decode: ``kv_tokens_per_seq`` is each sequence's context (one attention call reads rows x it per
        layer); prefill: ``prompt_tokens`` is each prompt's length and ``logit_rows`` the prompts (the LM
        head's rows; default ``rows``, as in decode)."""
        f, out = eff.fits(), []
        lo, hi = f.measured_rows[self._fmt]
        if not lo <= rows <= hi:
            out.append(f"{self.dtype} projection GEMMs at {rows} rows: measured {lo}..{hi} rows only; beyond, the "
                       f"fitted curve (its compute term: {'parity with bf16' if self._fmt[0] == 'w' else 'fitted'})")
        lo, hi = f.measured_rows["bf16"]
        head_rows = rows if logit_rows is None else logit_rows
        if not lo <= head_rows <= hi:
            out.append(f"LM head at {head_rows} rows: bf16 curve measured {lo}..{hi} rows only")
        if kv_tokens_per_seq is not None:
            lo, hi = f.decode_kv_tokens
            if not lo <= rows * kv_tokens_per_seq <= hi:
                out.append(f"decode attention over {rows * kv_tokens_per_seq} KV tokens per layer: measured {lo}..{hi}")
        if prompt_tokens is not None:
            lo, hi = f.prefill_lengths
            if not lo <= prompt_tokens <= hi:
                out.append(f"prefill attention at {prompt_tokens}-token prompts: FlashAttention-3 measured {lo}..{hi}")
        if self._fmt == "fp8":
            out.append(f"fp8 activation quantization: {eff.ACT_QUANT_CALL_S * 1e6:g} us per GEMM input assumed")
        if not self.gpu.measured:
            out.append(self.info.note)
        return out


# --------------------------------------------------------------------------------------
# Measured profile
# --------------------------------------------------------------------------------------
def _interp_extrapolate(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """Piecewise-linear interpolation, extended linearly past the last grid point."""
    if x <= xs[-1] or len(xs) < 2:
        return float(np.interp(x, xs, ys))
    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    return float(ys[-1] + slope * (x - xs[-1]))


class ProfileError(InputError):
    """A measured profile is missing, corrupt, or does not fit the scenario."""


@dataclass(frozen=True)
class MeasuredCostModel:
    """Cost model fitted from real kernel timings (see ``calibration/``).

    The profile file holds, per weight format, a decode table ``alpha_s`` over ``batch``
    with one ``beta_s_per_kv_token``, and a prefill table ``linear_s`` over ``tokens``
    with one ``attn_s_per_token_sq``.
    """

    info: ProfileInfo
    shape: ModelShape
    dtype: str
    decode_batch: np.ndarray
    decode_alpha: np.ndarray
    decode_beta: float
    prefill_tokens: np.ndarray
    prefill_linear: np.ndarray
    prefill_attn: float

    def prefill_time(self, tokens: int, sum_sq_tokens: int, prompts: int = 1) -> float:
        # The measured table is per token count (its LM-head share as calibrated).
        return _interp_extrapolate(tokens, self.prefill_tokens, self.prefill_linear) + self.prefill_attn * sum_sq_tokens

    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        return _interp_extrapolate(batch, self.decode_batch, self.decode_alpha), self.decode_beta

    def mixed_time(self, decode_batch: int, decode_kv_tokens: int, chunks: Sequence[tuple[int, int]]) -> float:
        """Decode-only: the decode step. With chunks: the prefill table's linear time at all the iteration's
        tokens, the decode rows' KV at ``beta`` and the chunks' causal work (:func:`chunk_sq`) at the prefill
        attention rate (the table has no mixed rows to say more)."""
        if not chunks:
            alpha, beta = self.decode_coeffs(decode_batch)
            return alpha + beta * decode_kv_tokens
        new, sq = chunk_sq(chunks)
        linear = _interp_extrapolate(decode_batch + new, self.prefill_tokens, self.prefill_linear)
        return linear + self.decode_beta * decode_kv_tokens + self.prefill_attn * sq


def read_profile(path: str | Path) -> dict:
    """Load and check a profile file; a directory means its ``profile.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / "profile.json"
    if not p.exists():
        raise ProfileError(f"hardware.profile: no profile at {str(p)!r}")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"hardware.profile: {str(p)!r} is not a readable profile ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"hardware.profile: {str(p)!r} is not a {PROFILE_FORMAT} file")
    for key in ("name", "device", "model", "dtypes"):
        if key not in data:
            raise ProfileError(f"hardware.profile: {str(p)!r} lacks the field {key!r}")
    return data


def measured_cost_model(profile: dict, shape: ModelShape, dtype: str) -> MeasuredCostModel:
    """Build the cost model for one weight format from a loaded profile."""
    pshape = profile["model"]
    mismatched = [k for k in ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "vocab")
                  if pshape.get(k) != getattr(shape, k)]
    if mismatched:
        raise ProfileError(
            f"hardware.profile {profile['name']!r} was measured for model {pshape.get('name')!r}, "
            f"which differs from the scenario's model {shape.name!r} in {', '.join(mismatched)}"
        )
    if dtype not in profile["dtypes"]:
        have = ", ".join(sorted(profile["dtypes"]))
        raise ProfileError(f"hardware.profile {profile['name']!r} has no {dtype!r} timings (it has: {have})")
    try:
        d = profile["dtypes"][dtype]
        dec, pre = d["decode"], d["prefill"]
        model = MeasuredCostModel(
            info=ProfileInfo(name=profile["name"], kind="measured", device=profile["device"]["name"]),
            shape=shape,
            dtype=dtype,
            decode_batch=np.asarray(dec["batch"], dtype=float),
            decode_alpha=np.asarray(dec["alpha_s"], dtype=float),
            decode_beta=float(dec["beta_s_per_kv_token"]),
            prefill_tokens=np.asarray(pre["tokens"], dtype=float),
            prefill_linear=np.asarray(pre["linear_s"], dtype=float),
            prefill_attn=float(pre["attn_s_per_token_sq"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"hardware.profile {profile['name']!r}: {dtype} tables are corrupt ({exc})") from None
    for label, xs, ys in (("decode", model.decode_batch, model.decode_alpha),
                          ("prefill", model.prefill_tokens, model.prefill_linear)):
        if len(xs) == 0 or len(xs) != len(ys) or np.any(np.diff(xs) <= 0) or not np.all(np.isfinite(ys)) or np.any(ys < 0):
            raise ProfileError(f"hardware.profile {profile['name']!r}: {dtype} {label} table is corrupt")
    return model


__all__ = [
    "AnalyticCostModel", "CostModel", "MeasuredCostModel", "ProfileError", "ProfileInfo",
    "WEIGHT_BYTES", "chunk_sq", "decode_step_time", "measured_cost_model", "read_profile",
]
