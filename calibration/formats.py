"""Weight formats of the linear layers: 16-bit, int8 / int4 weight-only, and fp8 (W8A8).

Each format is a small module with ``forward(x: [M, K]) -> [M, N]`` built from a full-precision
weight, so the decoder layer is the same code in every format and only the GEMM kernel changes.
On a GPU the low-bit formats use the kernels serving engines run:

* int4 / int8 (W4A16 group 128, W8A16 per channel): gemlite's Triton kernels, which pick a GEMV,
  split-K GEMM or GEMM kernel by row count (``kernel_for`` names the one a row count gets);
* fp8 (W8A8): ``torch._scaled_mm`` with row-wise activation scales and per-output-channel weight
  scales; the activation quantization is one fused kernel per layer input (q/k/v share one input,
  so do gate/up), compiled when ``fuse`` is on.

On a CPU the torch private kernels (``_weight_int8pack_mm``, ``_weight_int4pack_mm_for_cpu``) run;
fp8 has no CPU kernel. Activations are bf16; the KV cache is never quantized.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import CalibrationError, UnsupportedFormat

FORMATS = ("bf16", "int8", "int4", "fp8")
INT4_GROUP = 128
#: ``innerKTiles`` of the CPU int4 packing.
INT4_INNER_K_TILES = 8
ACT_DTYPE = torch.bfloat16
FP8_MAX = 448.0  # largest finite float8_e4m3fn
GEMLITE_MIN_TRITON = (3, 6)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise CalibrationError(f"dtypes: unknown weight format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


def unsupported_reason(fmt: str, device: torch.device) -> str | None:
    """Why ``fmt`` cannot run on ``device``, or ``None`` when it can."""
    check_format(fmt)
    if fmt == "fp8":
        if device.type != "cuda":
            return "fp8 needs torch._scaled_mm on a GPU with compute capability >= 8.9; this device is a CPU"
        cap = torch.cuda.get_device_capability(device)
        if cap < (8, 9):
            return f"fp8 needs compute capability >= 8.9 (fp8 tensor cores); this GPU has {cap[0]}.{cap[1]}"
    if fmt in ("int4", "int8") and device.type == "cuda":
        return gemlite_missing()
    return None


def gemlite_version() -> str | None:
    try:
        import gemlite
    except Exception:  # noqa: BLE001 - any import failure means: not usable
        return None
    return getattr(gemlite, "__version__", "unknown")


def gemlite_missing() -> str | None:
    """Why gemlite cannot be used here (``None`` when it can): its kernels need triton >= 3.6."""
    try:
        import triton
    except Exception as exc:  # noqa: BLE001 - not installed, or installed but broken
        return f"int4/int8 on a GPU run gemlite's Triton kernels; triton is not importable ({type(exc).__name__}: {exc})"
    ver = tuple(int(p) for p in triton.__version__.split(".")[:2] if p.isdigit())
    if ver < GEMLITE_MIN_TRITON:
        return f"gemlite needs triton >= 3.6, found {triton.__version__}"
    if gemlite_version() is None:
        return ("int4/int8 on a GPU run gemlite's Triton kernels; gemlite is not importable "
                "(carry its wheel: calibration/fetch_wheels.sh)")
    return None


#: Devices gemlite ships no tuned config for, and the shipped config of the same chip: the H200 (and
#: GH200) is the H100's GH100 die with the same 132 SMs and more, faster HBM, so the H100's tiles apply.
GEMLITE_SAME_CHIP = {"gh200": "h100", "h200": "h100"}
_GEMLITE_CONFIG: dict = {}


def gemlite_config_choice(device_name: str, capability: tuple[int, int], shipped: list[str]) -> tuple[str | None, str]:
    """Which of gemlite's shipped configs (``configs/<tag>.json``) ``device_name`` should use, and why.

    gemlite picks the longest tag contained in the lower-cased name (``h100`` for ``NVIDIA H100 80GB
    HBM3``); a device it has none for gets the same chip's config, else none: gemlite then autotunes
    each (rows, shape) bucket at its first call, which the calibration's warm-up absorbs.
    """
    name = device_name.lower().replace(" ", "_")
    for tag in sorted(shipped, key=len, reverse=True):
        if tag in name:
            return tag, f"gemlite's {tag}.json for {device_name}"
    for family, tag in GEMLITE_SAME_CHIP.items():
        if family in name and tag in shipped and capability == (9, 0):
            return tag, (f"{tag}.json: gemlite ships no {family.upper()} config; the {family.upper()} is the "
                         f"{tag.upper()}'s chip (sm_90, same SMs), so its tuned kernel configs are loaded")
    return None, f"no gemlite config for {device_name}: gemlite autotunes each row bucket at its first call"


def gemlite_config(device: torch.device) -> dict:
    """Make sure gemlite has kernel configs for ``device`` (loading the same chip's where it ships none);
    returns what was used, for ``metadata.json``. Never raises: a failure means autotuning, recorded."""
    if _GEMLITE_CONFIG:
        return _GEMLITE_CONFIG
    name = torch.cuda.get_device_name(device)
    record: dict = {"device": name}
    try:
        from pathlib import Path

        import gemlite.core as core

        root = Path(core.__file__).parent / "configs"
        shipped = sorted(p.stem for p in root.glob("*.json"))
        tag, note = gemlite_config_choice(name, tuple(torch.cuda.get_device_capability(device)), shipped)
        own = tag is not None and tag in name.lower().replace(" ", "_")  # gemlite loaded it on import
        loaded = tag is not None and (own or bool(core.GemLiteLinearTriton.load_config(str(root / f"{tag}.json"))))
        if tag is not None and not loaded:
            note = f"{tag}.json failed to load; gemlite autotunes each row bucket at its first call"
        record.update(config=f"{tag}.json" if loaded else None, shipped=shipped, note=note)
    except Exception as exc:  # noqa: BLE001 - configs only speed gemlite up; without them it autotunes
        record.update(config=None, note=f"config selection failed ({type(exc).__name__}: {exc}); autotune")
    _GEMLITE_CONFIG.update(record)
    return _GEMLITE_CONFIG


def gemlite_config_record() -> dict | None:
    """The gemlite config used in this process (``None`` when gemlite did not run)."""
    return dict(_GEMLITE_CONFIG) or None


class Bf16Linear(nn.Module):
    """Plain 16-bit GEMM (the SUN baseline)."""

    kernel = "torch.nn.functional.linear(bf16)"

    def __init__(self, weight: torch.Tensor, fuse: bool = False) -> None:
        super().__init__()
        self.register_buffer("w", weight.to(ACT_DTYPE).contiguous())

    @property
    def weight_bytes(self) -> int:
        return self.w.numel() * self.w.element_size()

    def kernel_for(self, rows: int) -> str:
        return self.kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.w)


def int8_quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``w ~ q * scale[:, None]``."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8)
    return torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8), scale


def int4_quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AWQ-style asymmetric 4-bit, group 128: ``w ~ lo + q * scale`` per group; returns q, scale, lo."""
    n, k = weight.shape
    if k % INT4_GROUP or n % 8:
        raise CalibrationError(f"int4 needs in_features % {INT4_GROUP} == 0 and out_features % 8 == 0, got {n}x{k}")
    w = weight.float().reshape(n, k // INT4_GROUP, INT4_GROUP)
    lo, hi = w.amin(-1), w.amax(-1)
    scale = ((hi - lo) / 15.0).clamp(min=1e-8)
    q = torch.clamp(torch.round((w - lo[..., None]) / scale[..., None]), 0, 15).to(torch.int32).reshape(n, k)
    return q, scale, lo


def hqq_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The int4 weights in gemlite's (HQQ) convention ``w ~ (W_q - zeros) * scales``, per group.

    Returns ``W_q`` uint8 ``[N, K]`` in 0..15 and bf16 ``scales``, ``zeros`` of ``[N, K / 128]``.
    """
    q, scale, lo = int4_quantize(weight)
    return q.to(torch.uint8), scale.to(ACT_DTYPE), (-lo / scale).to(ACT_DTYPE)


class _GemliteLinear(nn.Module):
    """Weight-only low-bit GEMM through gemlite (GPU)."""

    bits = 0

    def __init__(self, weight: torch.Tensor, fuse: bool = False) -> None:
        super().__init__()
        reason = gemlite_missing()
        if reason:
            raise UnsupportedFormat(f"dtypes: {reason}")
        self.n, self.k = weight.shape
        gemlite_config(weight.device)
        self.gl = self._build(weight)
        self.kernel = f"gemlite {gemlite_version()} A16W{self.bits}"

    def _build(self, weight: torch.Tensor) -> nn.Module:
        raise NotImplementedError

    def kernel_for(self, rows: int) -> str:
        from gemlite.core import get_matmul_type

        return f"{self.kernel} {get_matmul_type(rows, self.bits)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gl(x)


class GemliteInt4Linear(_GemliteLinear):
    bits = 4

    def _build(self, weight: torch.Tensor) -> nn.Module:
        from gemlite.helper import A16W4_HQQ_INT

        w_q, scales, zeros = hqq_int4(weight)
        return A16W4_HQQ_INT(device=str(weight.device), dtype=ACT_DTYPE).from_weights(w_q, scales, zeros)

    @property
    def weight_bytes(self) -> int:
        return self.n * self.k // 2 + 2 * (self.n * self.k // INT4_GROUP) * 2


class GemliteInt8Linear(_GemliteLinear):
    bits = 8

    def _build(self, weight: torch.Tensor) -> nn.Module:
        from gemlite.helper import A16W8_INT8

        return A16W8_INT8(device=str(weight.device), dtype=ACT_DTYPE).from_weights(weight.to(ACT_DTYPE))

    @property
    def weight_bytes(self) -> int:
        return self.n * self.k + self.n * 4


class Int8Linear(nn.Module):
    """W8A16 on a CPU: int8 weights with one scale per output channel (``torch._weight_int8pack_mm``)."""

    kernel = "torch._weight_int8pack_mm"

    def __init__(self, weight: torch.Tensor, fuse: bool = False) -> None:
        super().__init__()
        q, scale = int8_quantize(weight)
        self.register_buffer("q", q.contiguous())
        self.register_buffer("scale", scale.to(ACT_DTYPE))

    @property
    def weight_bytes(self) -> int:
        return self.q.numel() + self.scale.numel() * 2

    def kernel_for(self, rows: int) -> str:
        return self.kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x, self.q, self.scale)


class Int4Linear(nn.Module):
    """W4A16 on a CPU, AWQ-style group 128 (``torch._weight_int4pack_mm_for_cpu``, dequant ``(q-8)*scale+zero``)."""

    kernel = "torch._weight_int4pack_mm_for_cpu"

    def __init__(self, weight: torch.Tensor, fuse: bool = False) -> None:
        super().__init__()
        q, scale, lo = int4_quantize(weight)
        zero = lo + scale * 8.0
        self.register_buffer("scales_zeros", torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(ACT_DTYPE))
        self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(q, INT4_INNER_K_TILES))
        self.n, self.k = weight.shape

    @property
    def weight_bytes(self) -> int:
        return self.n * self.k // 2 + self.scales_zeros.numel() * 2

    def kernel_for(self, rows: int) -> str:
        return self.kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP, self.scales_zeros)


def quantize_rowwise_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row dynamic e4m3 quantization: ``x ~ xq * scale`` with ``scale`` ``[M, 1]`` float32."""
    scale = (x.abs().amax(dim=-1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


_FUSED_QUANT: dict[str, object] = {}


def fused_quantizer(fuse: bool):
    """The row-wise quantizer, compiled into one kernel when ``fuse`` (as engines fuse it)."""
    if not fuse:
        return quantize_rowwise_fp8
    if "fn" not in _FUSED_QUANT:
        _FUSED_QUANT["fn"] = torch.compile(quantize_rowwise_fp8, dynamic=True, fullgraph=True)
    return _FUSED_QUANT["fn"]


class Fp8Linear(nn.Module):
    """W8A8 fp8 (e4m3): per-output-channel weight scales, per-row activation scales, ``torch._scaled_mm``."""

    def __init__(self, weight: torch.Tensor, fuse: bool = False) -> None:
        super().__init__()
        w = weight.float()
        w_scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12)  # [N, 1]
        # _scaled_mm wants the second operand column-major: keep [N, K] row-major and pass its transpose.
        self.register_buffer("w", (w / w_scale).to(torch.float8_e4m3fn).contiguous())
        self.register_buffer("w_scale", w_scale.reshape(1, -1).contiguous())
        self.quant = fused_quantizer(fuse)
        self.kernel = ("torch._scaled_mm(e4m3, row-wise scales) + "
                       + ("compiled row-wise activation quant" if fuse else "eager row-wise activation quant"))

    @property
    def weight_bytes(self) -> int:
        return self.w.numel() + self.w_scale.numel() * 4

    def kernel_for(self, rows: int) -> str:
        return self.kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, x_scale = self.quant(x)
        return torch._scaled_mm(xq, self.w.t(), scale_a=x_scale, scale_b=self.w_scale, out_dtype=ACT_DTYPE)


def linear_class(fmt: str, device: torch.device) -> type[nn.Module]:
    if fmt == "bf16":
        return Bf16Linear
    if fmt == "fp8":
        return Fp8Linear
    if device.type == "cuda":
        return GemliteInt4Linear if fmt == "int4" else GemliteInt8Linear
    return Int4Linear if fmt == "int4" else Int8Linear


def make_linear(weight: torch.Tensor, fmt: str, fuse: bool = False) -> nn.Module:
    """A linear layer in ``fmt`` from a full-precision ``[out, in]`` weight on its target device."""
    reason = unsupported_reason(fmt, weight.device)
    if reason:
        raise UnsupportedFormat(f"dtypes: {reason}")
    return linear_class(fmt, weight.device)(weight, fuse=fuse)
