"""Step costs summed from per-operation tables measured inside a serving engine (:mod:`sunsim.costs.tables`).

One forward pass over ``rows`` tokens costs, per layer, the four projection GEMMs (QKV, output, gate+up,
down) from the GEMM table at ``m = rows`` in the weight format, attention from the attention table, and the
elementwise kernels between them; then the 16-bit LM head over the rows that need logits, and the engine's
per-iteration overhead:

* **GEMMs**: the table's own format: bf16; fp8 W8A8 with per-tensor static scales, input quantization
  included (the format of NVIDIA's and Neural Magic's FP8 checkpoints); fp8 block-scaled; nvfp4. A format
  the tables lack on this GPU (int4 / int8 weight-only on Hopper) is the measured bf16 time times the analytic
  model's format-over-bf16 ratio at the same rows and shapes (:mod:`sunsim.costs.efficiency`, Marlin/Machete
  class), and the profile's info says so.
* **Decode attention**: per batch ``B``, the table's times over the measured KV lengths whose cache fits the
  GPU are fitted (least squares in relative error) to ``a(B) + c(B) * B * kv_len``, so a decode iteration
  stays ``alpha(B) + beta(B) * kv_tokens`` and a run of iterations at one batch sums in closed form. How well
  that form fits is checked by ``tests/test_table_model.py`` and published in ``calibration/README.md``.
* **Prefill attention**: the table at the batch's equivalent uniform prompts (``L = sum L_i^2 / tokens``,
  ``tokens / L`` of them), which keeps both the linear and the quadratic term of mixed lengths.
* **Elementwise** (two add+RMSNorm, RoPE and SiLU-and-mul per layer, the final norm, the embedding gather):
  not in the tables; each kernel costs aiconfigurator's stated memory-op model, a constant latency plus its
  bytes at a fraction of datasheet bandwidth (``mem_empirical_constant_latency`` and
  ``mem_bw_empirical_scaling_factor`` from the system file, recorded in the profile's metadata).
* **Tensor parallelism** (``tp`` > 1): one GPU's shard (:meth:`~sunsim.costs.architecture.ModelShape.shard`):
  the GEMM tables looked up at the sharded widths (QKV and gate+up columns, output and down inputs, LM head
  vocabulary divided by ``tp``), attention at the per-GPU heads and KV heads (the tables hold those shapes:
  aiconfigurator measures attention per GPU of a TP group), elementwise kernels at the sharded widths; plus two
  all-reduces per layer from the profile's measured ``allreduce.csv`` (:mod:`sunsim.costs.allreduce`; the ring
  model where the profile has none).
* **Engine overhead** per iteration (scheduling, sampling, graph launch) and per prefill batch: the analytic
  profiles' assumed figures (:data:`sunsim.costs.model.DECODE_STEP_OVERHEAD_S`), not measured; stated in
  every output's notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sunsim.costs.allreduce import message_bytes, ring_allreduce_s, ring_source
from sunsim.costs.architecture import KV_DTYPES, ModelShape
from sunsim.costs.hardware import GPU
from sunsim.costs.model import (
    DECODE_STEP_OVERHEAD_S,
    MEMO_ENTRIES,
    PREFILL_BATCH_OVERHEAD_S,
    AnalyticCostModel,
    ProfileError,
    ProfileInfo,
    chunk_sq,
    projection_gemms,
)
from sunsim.costs.tables import Estimate, MeasuredTables, TableMiss, bracket

#: sunsim weight format -> the GEMM table's format (``None``: not a table format; priced by ratio over bf16).
TABLE_FORMAT = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "fp8_block": "fp8_block", "nvfp4": "nvfp4",
                "int8": None, "int4": None}
#: Decode KV lengths shorter than this are left out of the attention fit (no served prompt is that short).
MIN_FIT_KV_LEN = 127
ACT_BYTES = 2.0  # activations stay 16-bit between kernels


def _sum(parts: list[Estimate]) -> tuple[float, bool]:
    return sum(e.us for e in parts) * 1e-6, any(e.extrapolated for e in parts)


@dataclass(frozen=True)
class _Grid:
    """A sum of piecewise-linear lookups tabulated at every breakpoint, so any row count is one ``np.interp``."""

    xs: np.ndarray
    ys: np.ndarray  # seconds
    lo: float  # measured range of the underlying rows
    hi: float

    def at(self, x: float) -> float:
        if x <= self.xs[-1]:
            return float(np.interp(x, self.xs, self.ys))
        slope = (self.ys[-1] - self.ys[-2]) / (self.xs[-1] - self.xs[-2])
        return float(self.ys[-1] + slope * (x - self.xs[-1]))


@dataclass(frozen=True)
class TableCostModel:
    """A :class:`~sunsim.costs.model.CostModel` from a table profile (see the module docstring)."""

    tables: MeasuredTables
    gpu: GPU
    shape: ModelShape
    dtype: str
    kv_dtype: str = "bf16"
    tp: int = 1
    _alpha_beta: dict[int, tuple[float, float]] = field(default_factory=dict, compare=False, repr=False)
    _attention: dict[int, tuple[float, float]] = field(default_factory=dict, compare=False, repr=False)
    _pass_memo: dict[tuple[int, int], float] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.dtype not in TABLE_FORMAT:
            raise ProfileError(f"dtype must be one of {', '.join(TABLE_FORMAT)}, got {self.dtype!r}")
        if self.kv_dtype not in KV_DTYPES:
            raise ProfileError(f"kv_dtype must be one of {', '.join(KV_DTYPES)}, got {self.kv_dtype!r}")
        t, s = self.tables, self.shape.shard(self.tp)
        fmt = TABLE_FORMAT[self.dtype]
        if fmt is not None and fmt not in t.gemm_formats:
            fmt = None  # not measured here: the ratio over measured bf16
        ratio = None
        if fmt is None:
            try:
                ratio = (AnalyticCostModel(self.gpu, s, self.dtype), AnalyticCostModel(self.gpu, s, "bf16"))
            except (ValueError, ProfileError) as exc:
                raise ProfileError(f"hardware.profile {t.name!r}: no {self.dtype} GEMMs measured and no model for "
                                   f"them on {self.gpu.name} ({exc})") from None
        for phase in ("decode", "prefill"):
            if not t.attention_heads(phase, self.kv_dtype, s.kv_heads, s.head_dim):
                have = ", ".join(t.kv_dtypes(phase)) or "none"
                raise ProfileError(f"hardware.profile {t.name!r}: no {phase} attention measured with a "
                                   f"{self.kv_dtype} KV cache for kv_heads={s.kv_heads}, head_dim={s.head_dim} "
                                   f"(KV dtypes measured: {have})")
        yaml = t.metadata["device"]["datasheet"]["gpu_yaml"]
        mem_bw = float(yaml["mem_bw"]) * float(yaml["mem_bw_empirical_scaling_factor"])
        call_s = float(yaml["mem_empirical_constant_latency"])
        q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
        # per token, bytes read + written: 2 x (add + RMSNorm: 2h in, 2h out), RoPE on q and k, SiLU-and-mul
        per_layer = 2 * 4 * s.hidden + 2 * (q + kv) + 3 * s.intermediate
        consts = {
            "_s": s, "_fmt": fmt, "_ratio": ratio,
            "_ar_measured": self.tp > 1 and self.tp in t.allreduce_gpus(),
            "_proj": self._tabulate(fmt or "bf16", projection_gemms(s)),
            "_head": self._tabulate("bf16", ((s.hidden, s.vocab),)),
            "_elem_calls_s": (4 * s.layers + 2) * call_s,
            "_elem_s_per_row": (s.layers * per_layer + 3 * s.hidden) * ACT_BYTES / mem_bw,
            "_mem_model": (call_s, float(yaml["mem_bw_empirical_scaling_factor"])),
        }
        for name, value in consts.items():
            object.__setattr__(self, name, value)

    def _tabulate(self, fmt: str, gemms: tuple[tuple[int, int], ...]) -> _Grid:
        """Sum of ``gemms`` (K x N) at every measured row count (a layer's projections, or the head)."""
        t = self.tables
        ms = t.gemm_rows(fmt)
        if not ms:
            raise TableMiss(f"{t.name}: no {fmt} GEMMs")
        ys = []
        for m in ms:
            ys.append(_sum([t.gemm(fmt, m, n, k) for k, n in gemms])[0])
        return _Grid(np.asarray(ms, float), np.asarray(ys), ms[0], ms[-1])

    # -- components --------------------------------------------------------------------------
    @property
    def info(self) -> ProfileInfo:
        meta, t = self.tables.metadata, self.tables
        src = meta["source"]
        engines = ", ".join(f"{e['backend']} {e['version']}" for e in src.get("engines", []))
        kernels = meta["tables"]["gemm.csv"].get("kernels", {}).get(f"{self._fmt or 'bf16'}_us", {})
        attn = meta["tables"]["attention_decode.csv"].get("kernels", {}).get(f"kv_{self.kv_dtype}_us", {})
        kernel = f"GEMMs: {' / '.join(kernels) or 'as measured'}; attention: {' / '.join(attn) or 'as measured'}"
        note = (f"elementwise kernels priced by aiconfigurator's memory-op model ({self._mem_model[0] * 1e6:g} us "
                f"+ bytes at {self._mem_model[1]:g} x datasheet bandwidth); engine overhead "
                f"{DECODE_STEP_OVERHEAD_S * 1e3:g} ms per decode iteration and {PREFILL_BATCH_OVERHEAD_S * 1e3:g} ms "
                "per prefill batch assumed (not measured)")
        if max(self._s.vocab, self._s.hidden) > min(t.widest_gemm()):
            n_max, k_max = t.widest_gemm()
            note += (f"; GEMMs wider than the measured n <= {n_max}, k <= {k_max} (the LM head's {self._s.vocab} "
                     "columns) scaled in proportion from the widest measured")
        if self.tp > 1:
            note += (f"; tensor parallel {self.tp}: one GPU's shard plus 2 all-reduces per layer, " +
                     (f"from {t.name}'s allreduce.csv (the faster of vLLM's custom all-reduce and NCCL)"
                      if self._ar_measured else f"by the ring model ({ring_source(self.gpu)}; not measured)"))
        if self._fmt is None:
            note += (f"; {self.dtype} GEMMs not in {t.name}'s tables: measured bf16 times x the analytic "
                     f"{self.dtype}/bf16 ratio ({self._ratio[0].info.kernel})")
        return ProfileInfo(name=t.name, kind="measured", device=self.gpu.name,
                           source=f"{meta.get('attribution', '')}: {src.get('package')} {src.get('package_version')}, "
                                  f"{src.get('system')}, {engines}", kernel=kernel, note=note)

    def projections_time(self, rows: float) -> float:
        """All layers' projection GEMMs over ``rows`` rows in the weight format."""
        t = self._s.layers * self._proj.at(rows)
        if self._ratio is not None:
            low, bf16 = self._ratio
            t *= low.projections_time(rows) / bf16.projections_time(rows)
        return t

    def head_time(self, logit_rows: float) -> float:
        return self._head.at(logit_rows)

    def elementwise_time(self, rows: float) -> float:
        return self._elem_calls_s + self._elem_s_per_row * rows

    def allreduce_time(self, phase: str, rows: float) -> float:
        """The pass's 2 x layers all-reduces of ``rows`` rows on a ``tp``-way group (0 on one GPU)."""
        if self.tp == 1:
            return 0.0
        nbytes = message_bytes(rows, self._s.hidden)
        one = (self.tables.allreduce(phase, self.tp, nbytes).us * 1e-6 if self._ar_measured
               else ring_allreduce_s(self.gpu, self.tp, nbytes))
        return 2 * self._s.layers * one

    def decode_attention(self, batch: int) -> tuple[float, float]:
        """``(a, c)`` of all layers' decode attention at ``batch``: ``a + c * kv_tokens`` seconds."""
        t, s = self.tables, self._s
        heads = (self.kv_dtype, s.kv_heads, s.head_dim)
        h0 = t.attention_heads("decode", *heads)[0]
        grid = t.batches("decode", *heads, h0)
        lengths = sorted(set.intersection(*(set(t.lengths("decode", *heads, h0, b)) for b in bracket(grid, batch))))
        kv_bytes = s.kv_bytes(self.kv_dtype)
        held = [n for n in lengths if batch * n * kv_bytes <= self.gpu.memory_bytes]
        held = held if len(held) >= 2 else lengths[:2]
        fits = [n for n in held if n >= MIN_FIT_KV_LEN]
        fits = fits if len(fits) >= 2 else held[-2:]
        x = np.array([batch * n for n in fits], float)
        y = np.array([t.attention("decode", batch, n, s.heads, *heads[1:], kv_dtype=self.kv_dtype).us
                      for n in fits]) * 1e-6
        a = np.c_[np.ones_like(x), x] / y[:, None]
        (a0, c0), *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
        return s.layers * float(a0), s.layers * max(float(c0), 0.0)

    # -- the CostModel protocol --------------------------------------------------------------
    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        c = self._alpha_beta.get(batch)
        if c is None:
            a, beta = self.decode_attention(batch)
            alpha = (DECODE_STEP_OVERHEAD_S + self.projections_time(batch) + self.head_time(batch)
                     + self.elementwise_time(batch) + a)
            if self.tp > 1:
                alpha += self.allreduce_time("decode", batch)
            c = self._alpha_beta[batch] = (alpha, beta)
        return c

    def prefill_time(self, tokens: int, sum_sq_tokens: int, prompts: int = 1) -> float:
        return self._prefill_pass(tokens, prompts) + self.prefill_attention(tokens, sum_sq_tokens).us * 1e-6

    def _prefill_pass(self, tokens: int, prompts: int) -> float:
        """A prefill batch's time but its attention: remembered per (tokens, prompts), as a run prefills batches
        of the same sizes over and over."""
        t = self._pass_memo.get((tokens, prompts))
        if t is None:
            t = (PREFILL_BATCH_OVERHEAD_S + self.projections_time(tokens) + self.head_time(prompts)
                 + self.elementwise_time(tokens))
            if self.tp > 1:
                t += self.allreduce_time("prefill", tokens)
            if len(self._pass_memo) < MEMO_ENTRIES:
                self._pass_memo[(tokens, prompts)] = t
        return t

    def mixed_time(self, decode_batch: int, decode_kv_tokens: int, chunks: Sequence[tuple[int, int]]) -> float:
        """One aggregated iteration from the same parts: projections and elementwise kernels over all its
        rows, the LM head over the decode rows and one row per chunk (vLLM V1 samples every scheduled
        request), decode attention at ``decode_batch`` over its KV, and the chunks' prefill attention at their
        causal work against their prefixes (:func:`~sunsim.costs.model.chunk_sq`). The tables time decode and
        prefill attention as separate kernels, so a mixed iteration pays both call floors (a unified varlen
        kernel would pay one: the mixed step is priced at most that floor high); the overhead is the prefill
        batch's when chunks run, else the decode step's, so the two ends equal :meth:`decode_coeffs` and
        :meth:`prefill_time`."""
        if not chunks:
            alpha, beta = self.decode_coeffs(decode_batch)
            return alpha + beta * decode_kv_tokens
        new, sq = chunk_sq(chunks)
        rows = decode_batch + new
        t = (PREFILL_BATCH_OVERHEAD_S + self.projections_time(rows) + self.head_time(decode_batch + len(chunks))
             + self.elementwise_time(rows) + self.prefill_attention(new, sq).us * 1e-6)
        if decode_batch:
            ac = self._attention.get(decode_batch)
            if ac is None:
                ac = self._attention[decode_batch] = self.decode_attention(decode_batch)
            t += ac[0] + ac[1] * decode_kv_tokens
        return t

    def prefill_attention(self, tokens: int, sum_sq_tokens: int) -> Estimate:
        """All layers' causal attention over prompts of ``tokens`` tokens whose lengths' squares sum to
        ``sum_sq_tokens``, as that many uniform prompts of the equivalent length."""
        s = self._s
        length = sum_sq_tokens / tokens
        est = self.tables.attention("prefill", tokens / length, length, s.heads, s.kv_heads, s.head_dim,
                                    kv_dtype=self.kv_dtype)
        return Estimate(s.layers * est.us, est.extrapolated)

    def parts(self, batch: int, kv_tokens: float) -> dict[str, float]:
        """A decode iteration's seconds by part: what the tables price and what the stated models add."""
        a, c = self.decode_attention(batch)
        out = {"projections": self.projections_time(batch), "lm_head": self.head_time(batch),
               "attention": a + c * kv_tokens, "elementwise": self.elementwise_time(batch),
               "overhead": DECODE_STEP_OVERHEAD_S}
        if self.tp > 1:
            out["allreduce"] = self.allreduce_time("decode", batch)
        return out

    def notes(self, rows: int, kv_tokens_per_seq: int | None = None, prompt_tokens: int | None = None,
              logit_rows: int | None = None) -> list[str]:
        """What a pass of ``rows`` rows takes from outside the tables (the same contract as the analytic
        model's :meth:`~sunsim.costs.model.AnalyticCostModel.notes`); the stated models every pass uses are in
        :attr:`info` instead."""
        out, s, t = [], self._s, self.tables
        if not self._proj.lo <= rows <= self._proj.hi:
            out.append(f"projection GEMMs at {rows} rows: {t.name} measured {self._proj.lo:g}..{self._proj.hi:g} "
                       "rows; extended linearly")
        if self._fmt is None:
            out.append(f"{self.dtype} GEMMs: not measured in {t.name}; measured bf16 x the analytic {self.dtype}/bf16 "
                       "ratio")
        if kv_tokens_per_seq is not None:
            est = t.attention("decode", rows, kv_tokens_per_seq, s.heads, s.kv_heads, s.head_dim, self.kv_dtype)
            if est.extrapolated:
                out.append(f"decode attention at batch {rows}, {kv_tokens_per_seq} KV tokens per sequence: outside "
                           f"{t.name}'s measured batches and lengths; extended linearly")
        if prompt_tokens is not None:
            n = logit_rows or 1
            est = self.prefill_attention(n * prompt_tokens, n * prompt_tokens ** 2)
            if est.extrapolated:
                out.append(f"prefill attention at {n} x {prompt_tokens}-token prompts: outside {t.name}'s measured "
                           "batches and lengths; extended linearly")
        return out

