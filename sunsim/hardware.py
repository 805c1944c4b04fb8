"""Datasheet figures of the GPUs and interconnects sunsim knows (for the analytic profile).

A measured profile always wins over these numbers; they serve where none exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

GB = 1e9
GIB = 2**30


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: float
    bandwidth_Bps: float
    bf16_flops: float
    fp8_flops: float | None  # None: no fp8 tensor cores

    def dense_flops(self, dtype: str) -> float:
        """Peak dense tensor FLOP/s for a weight format's matmuls.

        Weight-only int8/int4 kernels dequantize to bf16 and run bf16 math; fp8 runs fp8 math.
        """
        if dtype == "fp8":
            if self.fp8_flops is None:
                raise InputError(f"dtype fp8 is not supported on gpu {self.name!r} (no fp8 tensor cores)")
            return self.fp8_flops
        return self.bf16_flops


GPUS: dict[str, GPU] = {
    "h100": GPU("h100", 80 * GB, 3.35e12, 989e12, 1979e12),
    "h200": GPU("h200", 141 * GB, 4.8e12, 989e12, 1979e12),
    "a100": GPU("a100", 80 * GB, 2.0e12, 312e12, None),
}

#: Per-direction bandwidth of common KV-transfer interconnects, bytes/s.
INTERCONNECTS: dict[str, float] = {
    "nvlink4": 450 * GB,
    "ib-ndr": 50 * GB,
    "pcie5": 64 * GB,
}


def gpu(name: str) -> GPU:
    try:
        return GPUS[name]
    except KeyError:
        raise InputError(f"hardware.gpu must be one of {', '.join(GPUS)}, got {name!r}") from None
