"""Kernel efficiency curves of the analytic profiles, fitted to measured timings (``sunsim/costs/data/``).

GEMM. One GEMM of a ``K x N`` weight matrix over ``m`` rows takes

    t(m) = ((t_fixed + bytes(m) / BW) ** p + (2 m K N / R) ** p) ** (1 / p)

with ``bytes(m)`` its weights plus ``m`` rows of input and output activations. ``BW`` and ``R`` are the
bandwidth and FLOP/s the kernel class reaches, ``p`` how sharply it turns from memory- to compute-bound (a
plain roofline is ``p = inf``; measured GEMMs slow down well before the ridge, which a finite ``p`` gives
while passing smoothly through it). Per weight format:

* bf16 (cuBLAS): ``BW``, ``R`` and ``p`` fitted to the H100 probe's projection timings of one Llama-3.1-8B
  layer (1..1024 rows); no fixed term.
* fp8 (W8A8, row-wise weight scales, ``torch._scaled_mm``): the same form fitted to the probe's fp8 timings
  (activations already fp8, fp8 tensor-core FLOP/s). The dynamic per-token activation quantization vLLM runs
  before each linear layer is added by the cost model (:data:`ACT_QUANT_CALL_S` plus its bytes).
* int4 / int8 (W4A16 / W8A16, Marlin / Machete class): the memory term ``n x t_fixed + weight bytes / BW``
  fitted by least squares to published H100 timings at 1 row (memory-bound); the compute term is the bf16
  curve's (Neural Magic's Machete announcement: it "matches compute-bound performance" of FP16) and ``p`` is
  the bf16 curve's. Rows up to the largest measured row count are measured; beyond them the curve is this
  stated model, flagged as extrapolated (:func:`measured_rows`).

Attention. Decode: one call per layer takes ``t_call + KV bytes / BW_kv`` (fitted to the probe's batched
SDPA timings). Prefill: FlashAttention-3's causal rate ``R(L) = R_max / (1 + L_half / L)`` (fitted to the
FlashAttention-3 paper's H100 figures), so a prompt of ``L`` tokens costs ``(2 heads head_dim / R_max) x
(L^2 + L_half L)`` per layer.

Other GPUs: no measurements here; the H100 fits' fractions of datasheet bandwidth and FLOP/s are applied to
the GPU's datasheet figures (the same curve shape, an assumption the profile's info states).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
GEMM_FILE = "gemm_measurements.csv"
ATTENTION_FILE = "attention_measurements.csv"
#: The GPU every fit is measured on, and its datasheet figures (H100 SXM5: 3.35 TB/s, 989 / 1979 dense TFLOP/s).
FIT_GPU = "h100"
FIT_BANDWIDTH, FIT_BF16_FLOPS, FIT_FP8_FLOPS = 3.35e12, 989e12, 1979e12
#: vLLM quantizes a linear layer's input per token before an fp8 GEMM: one small kernel per GEMM input (assumed
#: ~3 us under CUDA graphs on Hopper, on top of its bytes; not measured here: the probe timed its fp8 GEMMs on
#: activations already in fp8, and the older calibrate run's unfused multi-kernel quantization cost ~16 us each).
ACT_QUANT_CALL_S = 3e-6
#: Bytes per weight element of each measured format, before group scales.
_ELEMENT_BYTES = {"bf16": 2.0, "fp8": 1.0, "w8a16": 1.0, "w4a16": 0.5}
#: sunsim weight format -> measured kernel format.
KERNEL_FORMAT = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "int8": "w8a16", "int4": "w4a16"}
#: Short names of the sources the data files cite by id (full references in the files' header comments).
SOURCES = {
    "P1": "this project's H100 kernel probe, 2026-11-27",
    "P2": "sunsim calibrate on the same H100",
    "H2": "github.com/inclusionAI/humming/pull/2",
    "V1": "github.com/vllm-project/vllm/pull/23198",
    "FA3": "arXiv:2407.08608 (FlashAttention-3)",
}
KERNEL_CLASS = {
    "bf16": "cuBLAS bf16 GEMM (torch F.linear)",
    "fp8": "W8A8 fp8 row-wise (torch._scaled_mm / CUTLASS scaled_mm) + vLLM dynamic per-token activation quant",
    "w8a16": "W8A16 int8 weight-only, Marlin/Machete class (vLLM)",
    "w4a16": "W4A16 int4 weight-only (AWQ/GPTQ, group 128), Marlin/Machete class (vLLM)",
}


def read_table(name: str) -> list[dict[str, str]]:
    """Rows of a data CSV (``#`` lines are its comments)."""
    lines = [ln for ln in (DATA / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return list(csv.DictReader(lines))


def parse_gemms(text: str) -> tuple[tuple[int, int], ...]:
    """``"4096x6144+4096x4096"`` -> ``((4096, 6144), (4096, 4096))`` (K x N of each weight matrix)."""
    return tuple((int(k), int(n)) for k, n in (part.split("x") for part in text.split("+")))


def weight_element_bytes(fmt: str, group: int = 0, zeros: bool = False) -> float:
    """Bytes per weight element, group scales (and zero points) included; ``group=0``: per-channel scales."""
    base = _ELEMENT_BYTES[fmt]
    return base + ((2.0 + 2.0 * zeros) / group if group else 0.0)


@dataclass(frozen=True)
class GemmCurve:
    """The time of one GEMM as the soft maximum of its memory and compute times (see the module docstring)."""

    bandwidth_Bps: float
    flops: float
    p: float
    fixed_s: float = 0.0
    act_bytes: float = 2.0  # bytes per input activation element
    out_bytes: float = 2.0

    def time(self, k: int, n: int, rows: float, weight_bytes: float) -> float:
        mem = self.fixed_s + (k * n * weight_bytes + rows * (k * self.act_bytes + n * self.out_bytes)) / self.bandwidth_Bps
        comp = 2.0 * rows * k * n / self.flops
        hi = max(mem, comp)
        return hi * ((mem / hi) ** self.p + (comp / hi) ** self.p) ** (1.0 / self.p) if hi > 0 else 0.0

    def total(self, gemms: tuple[tuple[int, int], ...], rows: float, weight_bytes: float) -> float:
        return sum(self.time(k, n, rows, weight_bytes) for k, n in gemms)

    def scaled(self, bandwidth: float, flops: float) -> GemmCurve:
        """This curve on a GPU with ``bandwidth`` x and ``flops`` x the fit GPU's datasheet figures."""
        return replace(self, bandwidth_Bps=self.bandwidth_Bps * bandwidth, flops=self.flops * flops)


@dataclass(frozen=True)
class Point:
    """One measured GEMM timing (a row of :data:`GEMM_FILE`)."""

    fmt: str
    kernel: str
    gemms: tuple[tuple[int, int], ...]
    copies: int
    weight_bytes: float
    rows: int
    time_s: float
    use: str
    source: str

    def predict(self, curve: GemmCurve) -> float:
        return self.copies * curve.total(self.gemms, self.rows, self.weight_bytes)


def gemm_points(fmt: str | None = None) -> list[Point]:
    out = []
    for r in read_table(GEMM_FILE):
        if r["gpu"] != FIT_GPU or (fmt is not None and r["format"] != fmt):
            continue
        out.append(Point(r["format"], r["kernel"], parse_gemms(r["gemms"]), int(r["copies"]),
                         weight_element_bytes(r["format"], int(r["group"]), r["zeros"] == "1"), int(r["rows"]),
                         float(r["time_us"]) * 1e-6, r["use"], r["source"]))
    return out


def _fit_pnorm(points: list[Point], flops_hi: float, act_bytes: float) -> GemmCurve:
    """Least squares in log time over (BW, R, p) by a coarse-to-fine grid (numpy only, deterministic)."""
    lo = np.array([np.log(0.3 * FIT_BANDWIDTH), np.log(0.2 * flops_hi), np.log(1.0)])
    hi = np.array([np.log(1.0 * FIT_BANDWIDTH), np.log(1.0 * flops_hi), np.log(12.0)])
    meas = np.log([pt.time_s for pt in points])
    best = None
    for _ in range(12):
        axes = [np.linspace(a, b, 13) for a, b in zip(lo, hi)]
        bw, fl, p = (np.exp(g).ravel() for g in np.meshgrid(*axes, indexing="ij"))
        err = np.zeros_like(bw)
        for pt, m in zip(points, meas):
            t = np.zeros_like(bw)
            for k, n in pt.gemms:
                mem = (k * n * pt.weight_bytes + pt.rows * (k * act_bytes + n * 2.0)) / bw
                comp = 2.0 * pt.rows * k * n / fl
                top = np.maximum(mem, comp)
                t += top * ((mem / top) ** p + (comp / top) ** p) ** (1.0 / p)
            err += (np.log(pt.copies * t) - m) ** 2
        i = int(np.argmin(err))
        best = np.log([bw[i], fl[i], p[i]])
        span = (hi - lo) / 4
        lo, hi = best - span, best + span
    bw, fl, p = np.exp(best)
    return GemmCurve(float(bw), float(fl), float(p), act_bytes=act_bytes)


def _fit_weight_only(points: list[Point], compute: GemmCurve) -> GemmCurve:
    """Memory term ``n t_fixed + bytes / BW`` by weighted least squares at 1 row (a negative fixed term -> 0)."""
    pts = [pt for pt in points if pt.rows == 1]
    y = np.array([pt.time_s for pt in pts])
    a = np.array([[pt.copies * len(pt.gemms), pt.copies * sum(k * n for k, n in pt.gemms) * pt.weight_bytes]
                  for pt in pts])
    w = 1.0 / y
    (fixed, inv_bw), *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
    if fixed < 0:
        fixed, inv_bw = 0.0, float(np.sum(a[:, 1] * w * w * y) / np.sum((a[:, 1] * w) ** 2))
    return GemmCurve(1.0 / float(inv_bw), compute.flops, compute.p, fixed_s=float(fixed))


@dataclass(frozen=True)
class AttentionFit:
    decode_call_s: float
    decode_bandwidth_Bps: float
    prefill_rate_max: float  # FLOP/s
    prefill_half_len: float  # tokens


def _fit_attention() -> AttentionFit:
    rows = [r for r in read_table(ATTENTION_FILE) if r["gpu"] == FIT_GPU]
    dec = [r for r in rows if r["kind"] == "decode"]
    kv = np.array([int(r["batch"]) * int(r["context"]) * 2 * int(r["kv_heads"]) * int(r["head_dim"]) * 2.0 for r in dec])
    t = np.array([float(r["value"]) * 1e-6 for r in dec])
    w = 1.0 / t
    (call, inv_bw), *_ = np.linalg.lstsq(np.c_[np.ones_like(kv), kv] * w[:, None], t * w, rcond=None)
    pre = [r for r in rows if r["kind"] == "prefill"]
    inv_len = np.array([1.0 / int(r["context"]) for r in pre])
    inv_rate = np.array([1.0 / (float(r["value"]) * 1e12) for r in pre])
    w = 1.0 / inv_rate
    (a, b), *_ = np.linalg.lstsq(np.c_[np.ones_like(inv_len), inv_len] * w[:, None], inv_rate * w, rcond=None)
    return AttentionFit(float(call), 1.0 / float(inv_bw), 1.0 / float(a), float(b / a))


@dataclass(frozen=True)
class Fits:
    """Every curve fitted on the fit GPU, and the row range each format was measured over."""

    gemm: dict[str, GemmCurve]
    attention: AttentionFit
    measured_rows: dict[str, tuple[int, int]]
    decode_kv_tokens: tuple[int, int]  # per layer call: batch x context, min..max measured
    prefill_lengths: tuple[int, int]


@functools.lru_cache(maxsize=1)
def fits() -> Fits:
    bf16 = _fit_pnorm([pt for pt in gemm_points("bf16") if pt.use == "fit"], FIT_BF16_FLOPS, 2.0)
    fp8 = _fit_pnorm([pt for pt in gemm_points("fp8") if pt.use == "fit"], FIT_FP8_FLOPS, 1.0)
    gemm = {"bf16": bf16, "fp8": fp8}
    for fmt in ("w4a16", "w8a16"):
        gemm[fmt] = _fit_weight_only([pt for pt in gemm_points(fmt) if pt.use == "fit"], bf16)
    measured = {}
    for fmt in gemm:
        rows = [pt.rows for pt in gemm_points(fmt)]
        measured[fmt] = (min(rows), max(rows))
    att = [r for r in read_table(ATTENTION_FILE) if r["gpu"] == FIT_GPU]
    kv = [int(r["batch"]) * int(r["context"]) for r in att if r["kind"] == "decode"]
    lens = [int(r["context"]) for r in att if r["kind"] == "prefill"]
    return Fits(gemm, _fit_attention(), measured, (min(kv), max(kv)), (min(lens), max(lens)))


def error_table(fmt: str) -> list[dict]:
    """Each measured point of ``fmt`` against its fitted curve (fit and check points)."""
    curve = fits().gemm[fmt]
    out = []
    for pt in gemm_points(fmt):
        pred = pt.predict(curve)
        out.append({"rows": pt.rows, "kernel": pt.kernel, "gemms": "+".join(f"{k}x{n}" for k, n in pt.gemms),
                    "copies": pt.copies, "measured_us": pt.time_s * 1e6, "model_us": pred * 1e6,
                    "rel_error": pred / pt.time_s - 1.0, "use": pt.use, "source": pt.source})
    return out


def cite(file: str, ids: str) -> str:
    """``file (id: source; ...)`` for a profile's info."""
    return f"sunsim/costs/data/{file} (" + "; ".join(f"{i}: {SOURCES[i]}" for i in ids.split()) + ")"


def measured_rows(fmt: str) -> tuple[int, int]:
    return fits().measured_rows[KERNEL_FORMAT.get(fmt, fmt)]
