"""All-reduces of a tensor-parallel group: what a layer's two row-parallel projections add to a step.

Megatron-style tensor parallelism (vLLM's) ends the attention block (output projection) and the MLP block
(down projection) of every layer with an all-reduce of the block's output, ``rows x hidden`` 16-bit
activations, so a pass over ``rows`` tokens on a ``tp``-way group adds ``2 x layers`` all-reduces of
``rows x hidden x 2`` bytes. (The vocab-parallel embedding's one all-reduce and the LM head's logits gather
per pass are not counted: one message each per pass against 2 x layers.)

Two ways to price one:

* **Ring model** (analytic profiles, and table profiles that lack measured all-reduces):
  ``t = ALLREDUCE_BASE_S + 2 (N - 1) x (ALLREDUCE_STEP_S + bytes / (N x B))``: a ring all-reduce takes
  ``2 (N - 1)`` steps, each moving ``bytes / N`` over one direction of the GPU's link ``B`` (half the
  datasheet's bidirectional NVLink figure, :attr:`~sunsim.costs.hardware.GPU.link_Bps_per_direction`).
  The latencies are fitted (least squares over ``2 (N - 1)``) to NCCL's measured times of the smallest
  message in ``sunsim/costs/profiles/vllm-h100/allreduce.csv`` (nccl-tests all_reduce_perf, NCCL 2.27.3,
  512 bytes: 6.20, 9.57, 15.51 us on 2, 4, 8 H100s), and applied on every GPU. Against the same table, large
  messages (256 MiB) on 8 H100s come within 3% (NCCL's bus bandwidth is NVLink's 450 GB/s per direction), but
  on 2 and 4 GPUs NCCL reaches only ~305 and ~340 GB/s, so there the model is 24-32% optimistic for large
  (prefill-sized) messages; decode's small messages are latency-bound, where it is within 5%.
* **Measured tables** (``allreduce.csv`` of a table profile, from aiconfigurator-core): per message size and
  group size, vLLM's custom all-reduce (inside a CUDA graph for decode, eager for prefill) and NCCL. vLLM
  runs its custom all-reduce where it is eligible and NCCL otherwise; the faster of the two measured times at
  each size stands for that choice (an assumption: vLLM decides by size limits and topology, not speed).
"""

from __future__ import annotations

from sunsim.costs.hardware import GPU

#: Fixed and per-step latency of a ring all-reduce, seconds (fitted as the module docstring says).
ALLREDUCE_BASE_S = 4.77e-6
ALLREDUCE_STEP_S = 0.771e-6
ACT_BYTES = 2  # the activations reduced are 16-bit
TP_DEGREES = (1, 2, 4, 8)  # one node of 8 GPUs; the measured tables hold 2, 4 and 8


def message_bytes(rows: float, hidden: int) -> float:
    """Bytes of one all-reduce over ``rows`` tokens: each row's ``hidden`` 16-bit activations."""
    return rows * hidden * ACT_BYTES


def ring_allreduce_s(gpu: GPU, tp: int, nbytes: float) -> float:
    """Seconds of one ring all-reduce of ``nbytes`` over ``tp`` GPUs (0 on one GPU)."""
    if tp == 1:
        return 0.0
    if gpu.nvlink_GBps <= 0:
        raise ValueError(f"gpu {gpu.name!r} has no GPU-to-GPU bandwidth figure (nvlink_GBps)")
    steps = 2 * (tp - 1)
    return ALLREDUCE_BASE_S + steps * (ALLREDUCE_STEP_S + nbytes / (tp * gpu.link_Bps_per_direction))


def ring_source(gpu: GPU) -> str:
    """What the ring model takes its figures from, for a profile's info."""
    return (f"all-reduce: ring over {gpu.link_source or gpu.name} (half per direction), latency fitted to "
            "vllm-h100/allreduce.csv NCCL rows")


__all__ = ["ALLREDUCE_BASE_S", "ALLREDUCE_STEP_S", "TP_DEGREES", "message_bytes", "ring_allreduce_s", "ring_source"]
