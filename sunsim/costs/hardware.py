"""Datasheet figures of the GPUs and interconnects sunsim knows (for the analytic profile).

A measured profile always wins over these numbers; they serve where none exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sunsim.errors import InputError

GB = 1e9
GIB = 2**30
DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Efficiency:
    """Fractions of datasheet peaks that real 16-bit kernels reach on a GPU (stated, not measured).

    Weight-bound decode GEMMs reach about 75-80% of peak bandwidth and large prefill GEMMs
    about 75-80% of peak FLOPs on Hopper; Ampere's are set alike.
    """

    bandwidth: float = 0.78
    compute: float = 0.75
    #: Attention kernels (flash) reach less of peak FLOPs than large GEMMs.
    attention_compute: float = 0.5
    #: KV reads in decode attention are streaming reads.
    kv_bandwidth: float = 0.75


#: Column of the low-bit GEMM table timing each weight format's kernel.
LOWBIT_COLUMNS = {"fp8": "fp8_us", "int4": "w4a16_us", "int8": "w8a16_us"}


@dataclass(frozen=True)
class LowBitGemm:
    """Measured time ratio of low-bit to bf16 GEMMs of a layer's projections, as a function of rows.

    Interpolated linearly in log(rows) between measured rows and clamped outside them: the
    gain of a weight-only kernel shrinks as rows grow and the GEMM leaves the memory-bound regime.
    """

    source: str  # file under sunsim/data/
    rows: dict[str, tuple[float, ...]]
    ratio: dict[str, tuple[float, ...]]

    @classmethod
    def read(cls, name: str) -> LowBitGemm:
        lines = [ln for ln in (DATA / name).read_text().splitlines() if ln and not ln.startswith("#")]
        header = lines[0].split(",")
        table = [dict(zip(header, ln.split(","))) for ln in lines[1:]]
        rows, ratio = {}, {}
        for dtype, col in LOWBIT_COLUMNS.items():
            pts = [(float(r["rows"]), float(r[col]) / float(r["bf16_us"])) for r in table if r.get(col)]
            if pts:
                rows[dtype] = tuple(p[0] for p in pts)
                ratio[dtype] = tuple(p[1] for p in pts)
        return cls(source=name, rows=rows, ratio=ratio)

    def time_ratio(self, dtype: str, rows: float) -> float:
        """Low-bit / bf16 time of the projections at ``rows`` rows (1.0 for a 16-bit format)."""
        if dtype not in self.ratio:
            return 1.0
        x = np.log(np.asarray(self.rows[dtype]))
        return float(np.interp(np.log(max(rows, 1.0)), x, np.asarray(self.ratio[dtype])))


@dataclass(frozen=True)
class GPU:
    """A GPU's datasheet figures, the efficiencies its kernels reach and its low-bit GEMM curves.

    ``memory_bytes`` is the total the CUDA runtime reports (what an engine's memory utilization
    multiplies), in bytes: an "80 GB" H100 reports 85.0e9 B = 79.2 GiB.
    """

    name: str
    memory_bytes: float
    bandwidth_Bps: float
    bf16_flops: float
    fp8_flops: float | None  # None: no fp8 tensor cores
    efficiency: Efficiency = field(default_factory=Efficiency)
    lowbit: LowBitGemm | None = None

    def dense_flops(self, dtype: str) -> float:
        """Peak dense tensor FLOP/s for a weight format's matmuls.

        Weight-only int8/int4 kernels dequantize to bf16 and run bf16 math; fp8 runs fp8 math.
        """
        if dtype == "fp8":
            if self.fp8_flops is None:
                raise InputError(f"dtype fp8 is not supported on gpu {self.name!r} (no fp8 tensor cores)")
            return self.fp8_flops
        return self.bf16_flops


_HOPPER_LOWBIT = LowBitGemm.read("h100_lowbit_gemm.csv")
MIB = 2**20

GPUS: dict[str, GPU] = {
    # H100 SXM 80GB HBM3: 85,017,493,504 B reported by the runtime (measured, 2026-11-27).
    "h100": GPU("h100", 85_017_493_504, 3.35e12, 989e12, 1979e12, lowbit=_HOPPER_LOWBIT),
    # H200 SXM "141 GB" HBM3e: nvidia-smi lists 143,771 MiB (not measured here). Same Hopper kernels:
    # the H100 low-bit curves are used.
    "h200": GPU("h200", 143_771 * MIB, 4.8e12, 989e12, 1979e12, lowbit=_HOPPER_LOWBIT),
    # A100 SXM 80GB: nvidia-smi lists 81,920 MiB (not measured here). No low-bit measurements: the
    # weight-only kernels are taken at the H100's ratios (fp8 is unsupported).
    "a100": GPU("a100", 81_920 * MIB, 2.0e12, 312e12, None, lowbit=_HOPPER_LOWBIT),
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
