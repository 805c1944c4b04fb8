"""Dollars of a variant's fleet: each role's GPUs at its own GPU's price (``prices``, see :mod:`sunsim.costs.prices`).

``usd_per_hour`` prices every GPU of the variant, prefill included, at the price of its role's GPU (prefill on
``prefill.hardware``, decode on the variant's ``hardware``). ``usd_per_million_output_tokens`` divides that by
the output tokens the fleet generates per hour, in millions: a run's throughput in its steady window, a plan's
at its goodput rate. A GPU without a price leaves both empty, with a note naming the ``prices`` field to give.
"""

from __future__ import annotations

from sunsim.costs.prices import fleet_usd_per_hour, usd_per_million_tokens
from sunsim.scenario import AGGREGATED_MODES, Scenario, VariantSpec


def role_gpus(sc: Scenario, variant: VariantSpec) -> tuple[str, str]:
    """(prefill GPU, decode GPU) of a variant: an aggregated variant prefills on its own GPUs."""
    decode = sc.hardware_for("decode", variant).gpu
    prefill = decode if variant.mode in AGGREGATED_MODES else sc.hardware_for("prefill").gpu
    return prefill, decode


def fleet_cost(sc: Scenario, variant: VariantSpec, prefill_gpus: int, decode_gpus: int,
               tokens_per_s: float | None) -> dict:
    """A fleet's dollars: ``usd_per_hour``, ``usd_per_million_output_tokens`` at ``tokens_per_s`` (None when a GPU
    has no price or nothing was generated), the price of each role's GPU, and a note when one is missing."""
    prefill, decode = role_gpus(sc, variant)
    count: dict[str, int] = {}
    for gpu, n in ((prefill, prefill_gpus), (decode, decode_gpus)):
        count[gpu] = count.get(gpu, 0) + n
    per_hour, note = fleet_usd_per_hour(count, sc.prices)
    return {
        "usd_per_hour": per_hour,
        "usd_per_million_output_tokens": usd_per_million_tokens(per_hour, tokens_per_s),
        "usd_per_gpu_hour": {"prefill": sc.prices.get(prefill), "decode": sc.prices.get(decode)},
        "note": note,
    }


def variant_named(sc: Scenario, name: str) -> VariantSpec:
    """The scenario's variant of that name (plans carry names only)."""
    return next(v for v in sc.variants if v.name == name)


__all__ = ["fleet_cost", "role_gpus", "variant_named"]
