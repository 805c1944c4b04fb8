"""The scenario's ``hardware`` and ``interconnect`` sections: the GPU and its cost model, and the link
that carries KV caches from prefill to decode GPUs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sunsim.costs import catalog
from sunsim.costs.hardware import GPUS, INTERCONNECTS
from sunsim.scenario.limits import (
    MAX_BANDWIDTH_GBPS,
    MAX_LATENCY_US,
    MAX_RESERVE_GIB,
    MIN_BANDWIDTH_GBPS,
    Float,
    PathText,
    StrictModel,
)


class HardwareSpec(StrictModel):
    """The GPU and the profile its costs come from (:mod:`sunsim.costs.catalog`).

    ``profile`` is ``analytic`` (or ``analytic-<gpu>``: ``analytic-h100``, ``analytic-l40s``, ...), a shipped
    table profile (``vllm-h100``, ``vllm-h200``, ``vllm-a100``, ``vllm-l40s``, ``vllm-b200``) or the path of a
    profile. Left out, it is the shipped table profile of ``gpu``; ``gpu`` left out beside a shipped or an
    ``analytic-<gpu>`` profile is the GPU that profile names.
    """

    gpu: str = "h100"
    profile: PathText = catalog.ANALYTIC
    #: Share of GPU memory the engine may use (as vLLM's gpu_memory_utilization).
    memory_utilization: Float = Field(0.9, gt=0, le=1)
    #: Memory kept free for activations and the runtime, GiB (at most 10,000).
    reserve_gib: Float = Field(4.0, ge=0, le=MAX_RESERVE_GIB)
    #: Engine overhead per decode iteration, ms (0 to 100); left out, the profile's assumed 0.5 ms
    #: (see sunsim/costs/overhead.py; ``sunsim validate --measurements --fit-on`` fits one).
    iteration_overhead_ms: Float | None = Field(None, ge=0, le=100)

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        if v not in GPUS:
            raise ValueError(f"unknown gpu {v!r}; allowed: {', '.join(GPUS)}")
        return v

    @model_validator(mode="after")
    def _profile_and_gpu(self) -> HardwareSpec:
        given = self.model_fields_set
        measured_on = catalog.shipped().get(self.profile) or catalog.analytic_gpu(self.profile)
        if "profile" not in given:
            object.__setattr__(self, "profile", catalog.default_profile(self.gpu))  # frozen: set once, here
        elif measured_on is not None and "gpu" not in given:
            object.__setattr__(self, "gpu", measured_on)
        elif measured_on is not None and measured_on != self.gpu:
            verb = "names" if catalog.is_analytic(self.profile) else "was measured on"
            raise ValueError(f"profile {self.profile!r} {verb} {measured_on} GPUs but gpu is {self.gpu!r}; "
                             f"drop gpu, or give a profile of {self.gpu} "
                             f"({catalog.default_profile(self.gpu)!r} or 'analytic')")
        return self


#: Fields a pool's own ``hardware`` takes from the top-level one when it leaves them out.
INHERITED = ("memory_utilization", "reserve_gib", "iteration_overhead_ms")


def pool_hardware(top: HardwareSpec, given: HardwareSpec) -> HardwareSpec:
    """A pool's hardware (``prefill.hardware``, ``variants[].hardware``) with what it leaves out filled in.

    Memory and overhead fields come from the top-level ``hardware``. GPU and profile: neither given, the
    top-level pair; ``gpu`` alone, that GPU's shipped table profile; a profile alone, the GPU it names (else
    the top-level GPU). Every field of the result is explicit, so resolving it again changes nothing.
    """
    fields = given.model_fields_set
    data = {k: getattr(top, k) for k in INHERITED} | {k: getattr(given, k) for k in fields}
    if "gpu" not in fields and "profile" not in fields:
        data |= {"gpu": top.gpu, "profile": top.profile}
    elif "gpu" not in fields and (catalog.shipped().get(given.profile) or catalog.analytic_gpu(given.profile)) is None:
        data["gpu"] = top.gpu
    spec = HardwareSpec.model_validate(data)
    return HardwareSpec.model_validate(spec.model_dump())


class InterconnectSpec(StrictModel):
    """KV-cache transfer from prefill to decode GPUs."""

    kind: str | None = "ib-ndr"
    #: GB/s per link, from 0.001 to 100,000 (overrides ``kind``).
    bandwidth_GBps: Float | None = Field(None, ge=MIN_BANDWIDTH_GBPS, le=MAX_BANDWIDTH_GBPS)
    #: Fixed latency per transfer, microseconds (at most 10 s).
    latency_us: Float = Field(10.0, ge=0, le=MAX_LATENCY_US)
    #: ``none``: transfers never wait; ``per_decode_worker``: one NIC per decode GPU, transfers
    #: into it queue FIFO; ``per_link``: each prefill->decode GPU pair is a FIFO link.
    contention: Literal["none", "per_decode_worker", "per_link"] = "per_decode_worker"

    @model_validator(mode="after")
    def _bandwidth_known(self) -> InterconnectSpec:
        if self.bandwidth_GBps is None:
            if self.kind not in INTERCONNECTS:
                raise ValueError(
                    f"interconnect.kind must be one of {', '.join(INTERCONNECTS)} unless bandwidth_GBps is given"
                )
        return self

    @property
    def bandwidth_Bps(self) -> float:
        if self.bandwidth_GBps is not None:
            return self.bandwidth_GBps * 1e9
        return INTERCONNECTS[self.kind]  # type: ignore[index]
