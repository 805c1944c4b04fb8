"""Colocated decode (MuxServe-style): several task models' decode modules on each GPU.

Every GPU keeps the weights of the models it hosts resident and shares its KV memory among
them; batches are formed per model (no cross-model batching) and the GPU's scheduler
alternates models. With iterations coalesced, one *round* runs one step of each model
present in the running batch, so a round takes

    sum over present models m of alpha(B_m)  +  beta * (all KV tokens on the GPU)

and every running request gets one token per round. That is the decode worker's step hook
given the batch's per-model counts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sunsim.costs.model import CostModel
from sunsim.scenario import split_by_share


def place(gpus: int, models_per_gpu: int, share: np.ndarray) -> list[list[int]]:
    """Which models each GPU hosts: replicas by popularity, packed greedily.

    The ``gpus x models_per_gpu`` slots are split over the models in proportion to their
    traffic share (at least one replica each, largest remainder), capped at one replica per
    GPU (slots beyond that stay empty). Hottest model first, each replica goes to the GPU
    with the least traffic placed so far (a replica carries its model's share / replicas)
    among those with a free slot that do not host the model yet; ties go to the lowest GPU.
    With one model per GPU this is a dedicated layout: contiguous GPUs per model.
    """
    m = len(share)
    if gpus * models_per_gpu < m:
        raise ValueError(f"{gpus} GPUs x {models_per_gpu} models per GPU cannot host {m} models")
    floor = np.where(share > 0, share, 0.0) + 1e-12  # every model gets a replica, traffic or not
    replicas = np.minimum(split_by_share(gpus * models_per_gpu, floor / floor.sum()), gpus)
    hosts: list[list[int]] = [[] for _ in range(gpus)]
    mass = np.zeros(gpus)
    for model in sorted(range(m), key=lambda i: (-replicas[i], i)):
        per = float(share[model]) / int(replicas[model])
        for _ in range(int(replicas[model])):
            free = [g for g in range(gpus) if len(hosts[g]) < models_per_gpu and model not in hosts[g]]
            g = min(free, key=lambda g: (mass[g], g))
            hosts[g].append(model)
            mass[g] += per
    for h in hosts:
        h.sort()
    return hosts


def round_coeffs(cost: CostModel) -> Callable[[np.ndarray], tuple[float, float]]:
    """The step hook of a colocated GPU: ``(sum_m alpha(B_m), beta)`` from per-model batch counts."""
    cache: dict[tuple[int, ...], tuple[float, float]] = {}
    beta = cost.decode_coeffs(1)[1]

    def coeffs(counts: np.ndarray) -> tuple[float, float]:
        key = tuple(counts.tolist())
        c = cache.get(key)
        if c is None:
            alpha = 0.0
            for b in key:
                if b > 0:
                    alpha += cost.decode_coeffs(b)[0]
            c = cache[key] = (alpha, beta)
        return c

    return coeffs
