"""Multi-LoRA decode (S-LoRA / Punica style): one base model serving every task as a low-rank adapter.

The pool batches across adapters. A step costs the base model's step plus the batch's adapter
work: per layer and target module ``(d_in, d_out)`` an adapter is ``A: d_in x r`` and
``B: r x d_out``, so the step reads each *distinct* adapter's ``r (d_in + d_out)`` weights once
and does ``2 x batch x r (d_in + d_out)`` FLOPs. The SGMV/BGMV kernels that do this run at
:data:`KERNEL_EFFICIENCY` of the roofline ``max(bytes / bandwidth, FLOPs / peak)``; Punica and
S-LoRA report BGMV near memory bandwidth at small batch, and 0.5 is an assumption, not a
measurement. Adapters are 16-bit whatever the base weights' format.

Resident adapters take GPU memory from the KV cache (``max_adapters`` per GPU, least recently
used evicted). A request whose adapter is not resident loads it from host memory over PCIe;
the load starts when the request is admitted, overlaps its KV transfer, queues behind the
GPU's other loads, and the request joins the batch when both are done (the rest of the
batch keeps running, as S-LoRA loads asynchronously). A preempted request resumes without
reloading. Prefill pools stay per model (one adapter per pool) and pay the adapter work too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sunsim.costs.architecture import ModelShape
from sunsim.costs.hardware import GPU
from sunsim.costs.model import CostModel, ProfileInfo

#: SGMV/BGMV time = roofline / this (assumed; see the module docstring).
KERNEL_EFFICIENCY = 0.5
ADAPTER_ELEMENT_BYTES = 2  # adapters stay bf16
HOST_LINK_Bps = 64e9  # PCIe 5 x16 per direction
DEFAULT_RANK = 16
TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


def module_dims(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """``(d_in, d_out)`` of each linear module of one layer."""
    q, kv, h, i = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.hidden, shape.intermediate
    return {"q": (h, q), "k": (h, kv), "v": (h, kv), "o": (q, h), "gate": (h, i), "up": (h, i), "down": (i, h)}


@dataclass(frozen=True)
class LoraCost:
    """Adapter work of one pass and an adapter's size, for one base shape on one GPU."""

    shape: ModelShape
    gpu: GPU
    rank: int = DEFAULT_RANK
    efficiency: float = KERNEL_EFFICIENCY

    @property
    def adapter_params(self) -> int:
        dims = module_dims(self.shape)
        return self.shape.layers * self.rank * sum(dims[t][0] + dims[t][1] for t in TARGETS)

    @property
    def adapter_bytes(self) -> float:
        return self.adapter_params * ADAPTER_ELEMENT_BYTES

    @property
    def load_s(self) -> float:
        """Seconds to copy one adapter from host memory."""
        return self.adapter_bytes / HOST_LINK_Bps

    def time(self, rows: int, distinct: int) -> float:
        """Seconds of adapter work for ``rows`` tokens using ``distinct`` adapters."""
        if self.rank == 0 or rows == 0:
            return 0.0
        read = distinct * self.adapter_bytes / self.gpu.bandwidth_Bps
        compute = 2.0 * rows * self.adapter_params / self.gpu.bf16_flops
        return max(read, compute) / self.efficiency


def step_coeffs(base: CostModel, lora: LoraCost) -> Callable[[np.ndarray], tuple[float, float]]:
    """The decode worker's step hook: base ``(alpha(B), beta)`` plus the batch's adapter work."""
    cache: dict[tuple[int, int], tuple[float, float]] = {}

    def coeffs(counts: np.ndarray) -> tuple[float, float]:
        batch, distinct = int(counts.sum()), int(np.count_nonzero(counts))
        c = cache.get((batch, distinct))
        if c is None:
            alpha, beta = base.decode_coeffs(batch)
            if lora.rank:
                alpha += lora.time(batch, distinct)
            c = cache[(batch, distinct)] = (alpha, beta)
        return c

    return coeffs


@dataclass(frozen=True)
class LoraPrefillCost:
    """A per-model prefill pool's cost with its one adapter applied to every prompt token."""

    base: CostModel
    lora: LoraCost

    @property
    def info(self) -> ProfileInfo:
        return self.base.info

    def prefill_time(self, tokens: int, sum_sq_tokens: int, prompts: int = 1) -> float:
        t = self.base.prefill_time(tokens, sum_sq_tokens, prompts)
        return t + self.lora.time(tokens, 1) if self.lora.rank else t

    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        return self.base.decode_coeffs(batch)


class AdapterCache:
    """The adapters resident on one GPU (LRU) and its host link's queue of loads."""

    def __init__(self, capacity: int, load_s: float) -> None:
        self.capacity, self.load_s = capacity, load_s
        self._ready: OrderedDict[int, float] = OrderedDict()  # adapter -> time it is (or was) loaded
        self._free_at = 0.0
        self.loads = 0

    def ready_at(self, adapter: int, now: float) -> float:
        """When ``adapter`` is usable for a request admitted at ``now`` (loading it on a miss)."""
        t = self._ready.get(adapter)
        if t is not None:
            self._ready.move_to_end(adapter)
            return max(t, now)
        if len(self._ready) >= self.capacity:
            self._ready.popitem(last=False)
        if self.load_s <= 0:
            self._ready[adapter] = now
            return now
        start = max(now, self._free_at)
        self._free_at = t = start + self.load_s
        self._ready[adapter] = t
        self.loads += 1
        return t
