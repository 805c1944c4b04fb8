"""Tensor-parallel workers: what a worker of ``tp`` GPUs holds, costs and counts as.

A worker (prefill or decode) is a tensor-parallel group of ``tp`` GPUs (``prefill.tp``, ``variants[].tp``)
that runs one batch together: each GPU holds one shard of the weights and of every request's KV
(:meth:`~sunsim.costs.architecture.ModelShape.shard`), a step takes one GPU's shard time plus the
group's all-reduces (:mod:`sunsim.costs.allreduce`), and every GPU count (plans, summaries, per-GPU
throughput) counts ``tp`` GPUs per worker. A worker's KV capacity in tokens is one GPU's: every GPU of
the group holds its KV-head shard of the same tokens.

KV hand-off between a prefill group of ``tp_p`` GPUs and a decode group of ``tp_d``: each GPU sends (and
receives) only its own shard, over its own link, all in parallel. The busiest link carries the shard of
the smaller group, ``kv_bytes(shard(min(tp_p, tp_d)))`` per token, so a transfer takes latency plus that
over the link bandwidth (:func:`link_kv_bytes`); ``interconnect.bandwidth_GBps`` stays per GPU, and a
``per_decode_worker`` link is the group's links together (they start and finish one transfer together).
"""

from __future__ import annotations

from sunsim.costs.architecture import ModelShape
from sunsim.errors import InputError
from sunsim.scenario import Scenario, ScenarioError, VariantSpec


def worker_tp(sc: Scenario, role: str, variant: VariantSpec | None = None) -> tuple[int, str]:
    """GPUs per worker of a role (``decode`` takes ``variant``), and the scenario field that sets it."""
    if role == "prefill":
        return sc.prefill.tp, "prefill.tp"
    if variant is None:
        return 1, "tp"
    return variant.tp, f"variants.{variant.name}.tp"


def shard(sc: Scenario, role: str, variant: VariantSpec | None = None) -> ModelShape:
    """One GPU's part of the model on a worker of the role; a split the shape refuses names the field."""
    tp, field = worker_tp(sc, role, variant)
    try:
        return sc.shape.shard(tp, field)
    except InputError as exc:
        raise ScenarioError(str(exc)) from None


def link_kv_bytes(sc: Scenario, variant: VariantSpec) -> int:
    """Bytes per prompt token on the busiest link of a prefill -> decode KV hand-off (see the module docstring),
    in the prefill GPUs' KV format."""
    tp = min(sc.prefill.tp, variant.tp)
    return sc.shape.shard(tp).kv_bytes(sc.prefill.kv_dtype)


def gpu_counts(prefill_workers: int, decode_workers: int, prefill_tp: int, decode_tp: int) -> dict[str, int]:
    """GPUs of a layout: workers times GPUs per worker, per role and in total."""
    prefill, decode = prefill_workers * prefill_tp, decode_workers * decode_tp
    return {"prefill": prefill, "decode": decode, "total": prefill + decode}


__all__ = ["gpu_counts", "link_kv_bytes", "shard", "worker_tp"]
