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
    #: GPU-to-GPU bandwidth of one GPU inside a node, both directions together, as datasheets state it
    #: (NVLink; PCIe where the GPU has none). A ring all-reduce moves data at half of it (one direction).
    nvlink_GBps: float = 0.0
    #: Where the GPU-to-GPU figure comes from.
    link_source: str = ""
    #: Where the memory, bandwidth and FLOP/s figures come from.
    source: str = ""

    @property
    def link_Bps_per_direction(self) -> float:
        """One direction of the GPU-to-GPU link, bytes/s: what a ring all-reduce's bus bandwidth is bounded by."""
        return self.nvlink_GBps * GB / 2

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
    # GPU-to-GPU figures (the last two fields) are the datasheets' bidirectional totals; aiconfigurator-core's system
# files state the same per direction (intra_node_bw: 450e9 on H100/H200, 900e9 on B200; 300e9 on A100; 32e9,
# PCIe, on L40S; recorded in each vllm-<gpu>/metadata.json).
# H100 SXM 80GB HBM3: 85,017,493,504 B reported by the runtime (measured, 2026-11-27).
    "h100": GPU("h100", 85_017_493_504, 3.35e12, 989e12, 1979e12, 900,
                "NVIDIA H100 Tensor Core GPU datasheet (SXM): NVLink 900 GB/s",
                "NVIDIA H100 datasheet (SXM): 3.35 TB/s, 989 / 1979 dense bf16 / fp8 TFLOP/s; memory as reported"),
    # H200 SXM "141 GB" HBM3e: nvidia-smi lists 143,771 MiB (not measured here). Same Hopper kernels:
    # the H100 curves at the H100's fractions of the H200's datasheet bandwidth and FLOP/s.
    "h200": GPU("h200", 143_771 * MIB, 4.8e12, 989e12, 1979e12, 900,
                "NVIDIA H200 Tensor Core GPU datasheet (SXM): NVLink 900 GB/s",
                "NVIDIA H200 datasheet (SXM): 4.8 TB/s; Hopper's 989 / 1979 dense bf16 / fp8 TFLOP/s"),
    # A100 SXM 80GB: nvidia-smi lists 81,920 MiB (not measured here). The H100 curves at the same
    # fractions of the A100's datasheet figures (fp8 is unsupported).
    "a100": GPU("a100", 81_920 * MIB, 2.0e12, 312e12, None, 600,
                "NVIDIA A100 Tensor Core GPU datasheet (SXM): NVLink 600 GB/s",
                "NVIDIA A100 datasheet (80GB SXM): 2.0 TB/s, 312 dense bf16 TFLOP/s, no fp8"),
    # L40S 48GB GDDR6 and B200 180GB HBM3e: memory, bandwidth and dense peaks as aiconfigurator-core's system
    # files state them (recorded in sunsim/costs/profiles/vllm-{l40s,b200}/metadata.json; not measured here).
    "l40s": GPU("l40s", 48_305_799_168, 0.864e12, 362.05e12, 733e12, 64,
                "NVIDIA L40S datasheet: no NVLink; PCIe Gen4 x16 64 GB/s bidirectional",
                "aiconfigurator-core l40s system file (vllm-l40s/metadata.json): 864 GB/s, 362 / 733 bf16 / fp8 TFLOP/s"),
    "b200": GPU("b200", 193_273_528_320, 7.7e12, 2250e12, 4500e12, 1800,
                "NVIDIA HGX B200 / DGX B200 datasheet: fifth-generation NVLink 1.8 TB/s per GPU",
                "aiconfigurator-core b200 system file (vllm-b200/metadata.json): 7.7 TB/s, 2250 / 4500 TFLOP/s"),
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
