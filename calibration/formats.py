"""Weight formats of the linear layers: 16-bit, int8 / int4 weight-only, and fp8.

Each format is a small module with ``forward(x: [M, K]) -> [M, N]`` built from a full-precision
weight, so the decoder layer is the same code in every format and only the GEMM kernel changes.
Activations are always bf16 (16-bit); the KV cache is never quantized.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import CalibrationError, UnsupportedFormat

FORMATS = ("bf16", "int8", "int4", "fp8")
INT4_GROUP = 128
#: ``innerKTiles`` of the int4 packing; 8 is what the CUDA tinygemm kernel is tuned for.
INT4_INNER_K_TILES = 8
ACT_DTYPE = torch.bfloat16
FP8_MAX = 448.0  # largest finite float8_e4m3fn


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
    return None


class Bf16Linear(nn.Module):
    """Plain 16-bit GEMM (the SUN baseline)."""

    kernel = "torch.nn.functional.linear(bf16)"

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", weight.to(ACT_DTYPE).contiguous())

    @property
    def weight_bytes(self) -> int:
        return self.w.numel() * self.w.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.w)


class Int8Linear(nn.Module):
    """W8A16: int8 weights with one scale per output channel (symmetric)."""

    kernel = "torch._weight_int8pack_mm"

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        w = weight.float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8)
        q = torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8)
        self.register_buffer("q", q.contiguous())
        self.register_buffer("scale", scale.to(ACT_DTYPE))
        if weight.device.type == "cuda" and not _int8pack_works(weight.device):
            # Older builds lack the CUDA kernel: dequantize, then a 16-bit GEMM (recorded as such).
            self.kernel = "dequantize+linear(bf16)"

    @property
    def weight_bytes(self) -> int:
        return self.q.numel() + self.scale.numel() * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "torch._weight_int8pack_mm":
            return torch._weight_int8pack_mm(x, self.q, self.scale)
        return torch.nn.functional.linear(x, self.q.to(ACT_DTYPE) * self.scale[:, None])


class Int4Linear(nn.Module):
    """W4A16, AWQ-style: asymmetric 4-bit weights, a bf16 scale and zero per group of 128 inputs.

    Dequantization is ``(q - 8) * scale + zero`` per group, the convention of the tinygemm kernels
    behind ``torch._weight_int4pack_mm`` (CUDA) and ``torch._weight_int4pack_mm_for_cpu``.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        n, k = weight.shape
        if k % INT4_GROUP or n % 8:
            raise CalibrationError(f"int4 needs in_features % {INT4_GROUP} == 0 and out_features % 8 == 0, got {n}x{k}")
        w = weight.float().reshape(n, k // INT4_GROUP, INT4_GROUP)
        lo, hi = w.amin(-1), w.amax(-1)
        scale = ((hi - lo) / 15.0).clamp(min=1e-8)
        zero = lo + scale * 8.0
        q = torch.clamp(torch.round((w - lo[..., None]) / scale[..., None]), 0, 15).to(torch.int32).reshape(n, k)
        self.register_buffer("scales_zeros", torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(ACT_DTYPE))
        self.on_cuda = weight.device.type == "cuda"
        if self.on_cuda:
            packed_u8 = ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8)
            self.register_buffer("packed", torch._convert_weight_to_int4pack(packed_u8, INT4_INNER_K_TILES))
            self.kernel = "torch._weight_int4pack_mm"
        else:
            self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(q, INT4_INNER_K_TILES))
            self.kernel = "torch._weight_int4pack_mm_for_cpu"
        self.n, self.k = n, k

    @property
    def weight_bytes(self) -> int:
        return self.n * self.k // 2 + self.scales_zeros.numel() * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.on_cuda:
            return torch._weight_int4pack_mm(x, self.packed, INT4_GROUP, self.scales_zeros)
        return torch._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP, self.scales_zeros)


class Fp8Linear(nn.Module):
    """FP8 (e4m3) weights and dynamically quantized fp8 activations, per-tensor scales (``torch._scaled_mm``)."""

    kernel = "torch._scaled_mm(float8_e4m3fn)"

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        w = weight.float()
        w_scale = (w.abs().amax() / FP8_MAX).clamp(min=1e-12)
        # _scaled_mm wants the second operand column-major: keep [N, K] row-major and pass its transpose.
        self.register_buffer("w", (w / w_scale).to(torch.float8_e4m3fn).contiguous())
        self.register_buffer("w_scale", w_scale.reshape(()).float())

    @property
    def weight_bytes(self) -> int:
        return self.w.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.shape[0]
        pad = (-m) % 16  # the fp8 GEMM wants every dimension a multiple of 16
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        x_scale = (x.abs().amax().float() / FP8_MAX).clamp(min=1e-12)
        xq = (x / x_scale).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(xq, self.w.t(), scale_a=x_scale, scale_b=self.w_scale, out_dtype=ACT_DTYPE)
        return out[:m] if pad else out


_LINEARS: dict[str, type[nn.Module]] = {"bf16": Bf16Linear, "int8": Int8Linear, "int4": Int4Linear, "fp8": Fp8Linear}


def make_linear(weight: torch.Tensor, fmt: str) -> nn.Module:
    """A linear layer in ``fmt`` from a full-precision ``[out, in]`` weight on its target device."""
    reason = unsupported_reason(fmt, weight.device)
    if reason:
        raise UnsupportedFormat(f"dtypes: {reason}")
    return _LINEARS[fmt](weight)


_INT8_PROBE: dict[str, bool] = {}


def _int8pack_works(device: torch.device) -> bool:
    key = str(device)
    if key not in _INT8_PROBE:
        try:
            torch._weight_int8pack_mm(torch.ones(1, 32, dtype=ACT_DTYPE, device=device),
                                      torch.ones(8, 32, dtype=torch.int8, device=device),
                                      torch.ones(8, dtype=ACT_DTYPE, device=device))
            _INT8_PROBE[key] = True
        except (RuntimeError, NotImplementedError):
            _INT8_PROBE[key] = False
    return _INT8_PROBE[key]
