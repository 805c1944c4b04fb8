"""Multi-LoRA decode (S-LoRA / Punica / vLLM style): one base model serving every task as a low-rank adapter.

The pool batches across adapters. A pass costs the base model's pass plus the batch's adapter work, as
vLLM runs it: per layer, one shrink (``x A``) and one expand (``(x A) B``) kernel for each LoRA'd module
group (QKV, output, gate+up, down: :data:`GROUPS`; SGMV/BGMV-style kernels over all adapters of the batch).
Each pass of a layer costs

    k_band x [ launches x t_call + (distinct x adapter bytes + rows x activation bytes) / BW + FLOPs / R ]

with ``t_call`` the per-kernel-call floor measured on the H100 probe (the batched-attention call floor,
:mod:`sunsim.costs.efficiency`), ``distinct`` the adapters in the batch (each read once), ``rows`` the
tokens (read ``x``, write and re-read ``x A``, read-modify-write the output), FLOPs ``2 rows r (d_in +
d_out)`` per module, ``BW`` / ``R`` the fitted bf16 GEMM curve's bandwidth and FLOP/s on the GPU.
``k_band`` is 1 for the central band (nothing fitted: the measured call floor and the fitted GEMM
efficiencies); the low and high bands are fitted so that the reference configuration
(:data:`BAND_REFERENCE`) loses the ends of the throughput range vLLM's own LoRA benchmarks publish
(``sunsim/costs/data/lora_measurements.csv``). Adapters are 16-bit whatever the base weights' format.

Resident adapters take GPU memory from the KV cache (``max_adapters`` per GPU, least recently
used evicted). A request whose adapter is not resident loads it from host memory over PCIe;
the load starts when the request is admitted, overlaps its KV transfer, queues behind the
GPU's other loads, and the request joins the batch when both are done (the rest of the
batch keeps running, as S-LoRA loads asynchronously). A preempted request resumes without
reloading. Prefill pools stay per model (one adapter per pool) and pay the adapter work too.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sunsim.costs import efficiency as eff
from sunsim.costs.architecture import ModelShape, preset
from sunsim.costs.hardware import GPU, GPUS
from sunsim.costs.model import AnalyticCostModel, CostModel, ProfileInfo, decode_step_time
from sunsim.errors import InputError

ADAPTER_ELEMENT_BYTES = 2  # adapters stay bf16
HOST_LINK_Bps = 64e9  # PCIe 5 x16 per direction
DEFAULT_RANK = 16
TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
#: Module groups one shrink + one expand kernel each serve (vLLM fuses the QKV and gate/up slices).
GROUPS = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))
BANDS = ("low", "central", "high")
DEFAULT_BAND = "central"
#: The configuration the low / high bands are fitted at: there they lose the published throughput of the rows
#: of :data:`LORA_DATA` marked band-low / band-high (vLLM's LoRA benchmarks, rank 8-16: 8.4% .. 33.6%).
BAND_REFERENCE = {"gpu": "h100", "model": "llama-3.1-8b", "dtype": "bf16", "batch": 64, "context": 1024,
                  "rank": 16, "adapters": 8}
LORA_DATA = "lora_measurements.csv"
LORA_SOURCE = f"sunsim/costs/data/{LORA_DATA} [VLLM11267 VLLM15655 PUNICA SLORA]"


def module_dims(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """``(d_in, d_out)`` of each linear module of one layer."""
    q, kv, h, i = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.hidden, shape.intermediate
    return {"q": (h, q), "k": (h, kv), "v": (h, kv), "o": (q, h), "gate": (h, i), "up": (h, i), "down": (i, h)}


@dataclass(frozen=True)
class LoraCost:
    """Adapter work of one pass and an adapter's size, for one base shape on one GPU, in one band."""

    shape: ModelShape
    gpu: GPU
    rank: int = DEFAULT_RANK
    band: str = DEFAULT_BAND

    def __post_init__(self) -> None:
        if self.band not in BANDS:
            raise InputError(f"lora band must be one of {', '.join(BANDS)}, got {self.band!r}")

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

    @property
    def factor(self) -> float:
        """``k_band``: 1 for the central band, fitted for the others (:func:`band_factors`)."""
        return 1.0 if self.band == "central" else band_factors()[self.band]

    def model_time(self, rows: int, distinct: int) -> float:
        """The unscaled (central) adapter work of a pass over ``rows`` tokens using ``distinct`` adapters."""
        if self.rank == 0 or rows == 0:
            return 0.0
        dims, s, r = module_dims(self.shape), self.shape, self.rank
        curve = eff.fits().gemm["bf16"].scaled(self.gpu.bandwidth_Bps / eff.FIT_BANDWIDTH,
                                               self.gpu.bf16_flops / eff.FIT_BF16_FLOPS)
        act = sum(dims[g[0]][0] + sum(2 * dims[m][1] + 2 * r for m in g) for g in GROUPS) * ADAPTER_ELEMENT_BYTES
        launches = s.layers * 2 * len(GROUPS) * eff.fits().attention.decode_call_s
        moved = distinct * self.adapter_bytes + rows * s.layers * act
        return launches + moved / curve.bandwidth_Bps + 2.0 * rows * self.adapter_params / curve.flops

    def time(self, rows: int, distinct: int) -> float:
        """Seconds of adapter work for ``rows`` tokens using ``distinct`` adapters, in this band."""
        return self.factor * self.model_time(rows, distinct)


@functools.lru_cache(maxsize=1)
def band_factors() -> dict[str, float]:
    """``k_band`` of the low and high bands: the factor on the central model that makes :data:`BAND_REFERENCE`
    lose the published throughput of :data:`LORA_DATA`'s band rows (added time = loss / (1 - loss) x base step)."""
    losses = {r["use"].removeprefix("band-"): float(r["value"]) for r in eff.read_table(LORA_DATA)
              if r["use"].startswith("band-")}
    ref = BAND_REFERENCE
    shape, gpu = preset(ref["model"]), GPUS[ref["gpu"]]
    base = decode_step_time(AnalyticCostModel(gpu, shape, ref["dtype"]), ref["batch"], ref["batch"] * ref["context"])
    central = LoraCost(shape, gpu, ref["rank"]).model_time(ref["batch"], ref["adapters"])
    return {band: loss / (1.0 - loss) * base / central for band, loss in losses.items()}


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

    def mixed_time(self, decode_batch: int, decode_kv_tokens: int, chunks) -> float:
        """The base model's mixed iteration plus its one adapter over every row."""
        t = self.base.mixed_time(decode_batch, decode_kv_tokens, chunks)
        rows = decode_batch + sum(c for c, _ in chunks)
        return t + self.lora.time(rows, 1) if self.lora.rank else t


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
