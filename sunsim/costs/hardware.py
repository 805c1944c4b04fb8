"""Datasheet figures of the GPUs and interconnects sunsim knows (for the analytic profile).

A measured profile always wins over these numbers; they serve where none exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from sunsim.errors import InputError

GB = 1e9
GIB = 2**30


@dataclass(frozen=True)
class GPU:
    """A GPU's datasheet figures (dense tensor-core peaks).

    ``memory_bytes`` is the total the CUDA runtime reports (what an engine's memory utilization
    multiplies), in bytes: an "80 GB" H100 reports 85.0e9 B = 79.2 GiB. What fraction of these peaks
    real kernels reach is fitted to measurements in :mod:`sunsim.costs.efficiency` (H100) and assumed
    the same on the other GPUs (:meth:`measured`).
    """

    name: str
    memory_bytes: float
    bandwidth_Bps: float
    bf16_flops: float
    fp8_flops: float | None  # None: no fp8 tensor cores

    def dense_flops(self, dtype: str) -> float:
        """Peak dense tensor FLOP/s for a weight format's matmuls.

        Weight-only int8/int4 kernels dequantize to bf16 and run bf16 math; fp8 runs fp8 math.
        """
        if dtype in ("fp8", "fp8_block"):
            if self.fp8_flops is None:
                raise InputError(f"dtype {dtype} is not supported on gpu {self.name!r} (no fp8 tensor cores)")
            return self.fp8_flops
        return self.bf16_flops

    @property
    def measured(self) -> bool:
        """Whether the kernel efficiency curves were measured on this GPU (else scaled from the H100's)."""
        return self.name == "h100"


MIB = 2**20

GPUS: dict[str, GPU] = {
    # H100 SXM 80GB HBM3: 85,017,493,504 B reported by the runtime (measured, 2026-11-27).
    "h100": GPU("h100", 85_017_493_504, 3.35e12, 989e12, 1979e12),
    # H200 SXM "141 GB" HBM3e: nvidia-smi lists 143,771 MiB (not measured here). Same Hopper kernels:
    # the H100 curves at the H100's fractions of the H200's datasheet bandwidth and FLOP/s.
    "h200": GPU("h200", 143_771 * MIB, 4.8e12, 989e12, 1979e12),
    # A100 SXM 80GB: nvidia-smi lists 81,920 MiB (not measured here). The H100 curves at the same
    # fractions of the A100's datasheet figures (fp8 is unsupported).
    "a100": GPU("a100", 81_920 * MIB, 2.0e12, 312e12, None),
    # L40S 48GB GDDR6 and B200 180GB HBM3e: memory, bandwidth and dense peaks as aiconfigurator-core's system
    # files state them (recorded in sunsim/costs/profiles/vllm-{l40s,b200}/metadata.json; not measured here).
    "l40s": GPU("l40s", 48_305_799_168, 0.864e12, 362.05e12, 733e12),
    "b200": GPU("b200", 193_273_528_320, 7.7e12, 2250e12, 4500e12),
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
