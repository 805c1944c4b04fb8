"""Execution-time predictors: how long a prefill batch and a decode iteration take.

The simulator only talks to the :class:`CostModel` protocol, so an analytic roofline and a
profile measured on real kernels are interchangeable. Decode step time is modelled as

    step(batch, kv_tokens) = alpha(batch) + beta * kv_tokens

because the linear layers' cost depends only on how many tokens are in the batch while
attention reads every cached token once. Affinity in ``kv_tokens`` is what lets a decode
worker sum a whole run of iterations in closed form (see :mod:`sunsim.sim.cluster`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

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

    def as_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "device": self.device}
        if self.source:
            out["source"] = self.source
        return out


class CostModel(Protocol):
    info: ProfileInfo

    def prefill_time(self, tokens: int, sum_sq_tokens: int, prompts: int = 1) -> float:
        """Seconds to prefill ``prompts`` prompts of ``tokens`` tokens in all, lengths squared summing to ``sum_sq_tokens``."""

    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        """``(alpha, beta)`` so that one decode iteration takes ``alpha + beta * kv_tokens`` seconds."""


def decode_step_time(cost: CostModel, batch: int, kv_tokens: float) -> float:
    alpha, beta = cost.decode_coeffs(batch)
    return alpha + beta * kv_tokens


# --------------------------------------------------------------------------------------
# Analytic roofline
# --------------------------------------------------------------------------------------
#: Fixed per-iteration cost: launches (or graph replay), sampling, scheduling.
DECODE_STEP_OVERHEAD_S = 0.5e-3
PREFILL_BATCH_OVERHEAD_S = 2e-3
EMBED_BYTES = 2.0  # embedding, LM head and norms stay 16-bit


@dataclass(frozen=True)
class AnalyticCostModel:
    """Roofline from datasheet bandwidth and FLOPs, scaled by the GPU's :class:`~sunsim.costs.hardware.Efficiency`.

    Per pass: the layers' projections (a bf16 roofline, times the measured low-bit/bf16 time
    ratio at that many rows for a low-bit format, see :class:`~sunsim.costs.hardware.LowBitGemm`), the
    16-bit LM head over the rows that need logits (every sequence in decode, the last token of
    each prompt in prefill), the embedding rows of the pass's tokens and the norms, and attention.
    """

    gpu: GPU
    shape: ModelShape
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        self.gpu.dense_flops(self.dtype)  # fp8 on a GPU without fp8 tensor cores fails here
        eff, s, g = self.gpu.efficiency, self.shape, self.gpu
        bw, flops = g.bandwidth_Bps * eff.bandwidth, g.bf16_flops * eff.compute
        head = s.vocab * s.hidden
        norms = (2 * s.layers + 1) * s.hidden
        consts = {
            "_proj_read_s": s.linear_params * WEIGHT_BYTES["bf16"] / bw,
            "_proj_s_per_row": 2.0 * s.linear_params / flops,
            "_head_read_s": head * EMBED_BYTES / bw,
            "_head_s_per_row": 2.0 * head / flops,
            "_norm_read_s": norms * EMBED_BYTES / bw,
            "_embed_s_per_row": s.hidden * EMBED_BYTES / bw,
            "_attn_s_per_sq": 2.0 * s.layers * s.heads * s.head_dim / (g.bf16_flops * eff.attention_compute),
            "_beta": s.kv_bytes_per_token / (g.bandwidth_Bps * eff.kv_bandwidth),
        }
        for name, value in consts.items():
            object.__setattr__(self, name, value)  # frozen dataclass: derived constants set once

    @property
    def info(self) -> ProfileInfo:
        lowbit = self.gpu.lowbit
        source = f"sunsim/data/{lowbit.source}" if lowbit is not None and self.dtype in lowbit.ratio else ""
        return ProfileInfo(name=f"analytic-{self.gpu.name}", kind="analytic", device=self.gpu.name, source=source)

    def projections_time(self, rows: int) -> float:
        """The layers' projections over ``rows`` rows: bf16 roofline x the measured low-bit ratio."""
        bf16 = max(self._proj_read_s, self._proj_s_per_row * rows)
        lowbit = self.gpu.lowbit
        return bf16 if lowbit is None else bf16 * lowbit.time_ratio(self.dtype, rows)

    def _pass_time(self, rows: int, logit_rows: int) -> float:
        head = max(self._head_read_s, self._head_s_per_row * logit_rows)
        return self.projections_time(rows) + head + self._norm_read_s + self._embed_s_per_row * rows

    def prefill_time(self, tokens: int, sum_sq_tokens: int, prompts: int = 1) -> float:
        return PREFILL_BATCH_OVERHEAD_S + self._pass_time(tokens, prompts) + self._attn_s_per_sq * sum_sq_tokens

    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        return DECODE_STEP_OVERHEAD_S + self._pass_time(batch, batch), self._beta


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


def make_cost_model(gpu: GPU, shape: ModelShape, dtype: str, profile: dict | None) -> CostModel:
    """The measured cost model when a profile is given, else the analytic roofline."""
    if profile is None:
        return AnalyticCostModel(gpu, shape, dtype)
    return measured_cost_model(profile, shape, dtype)


__all__ = [
    "AnalyticCostModel", "CostModel", "MeasuredCostModel", "ProfileError", "ProfileInfo",
    "WEIGHT_BYTES", "decode_step_time", "make_cost_model", "measured_cost_model", "read_profile",
]
