"""GPU-hour prices in US dollars, and what a fleet costs per hour and per million output tokens.

The defaults are public on-demand cloud list prices, one provider for every GPU (CoreWeave's 8-GPU instances,
divided by 8) so that a comparison between GPUs is not a comparison between providers. Each row of
``data/gpu_prices.csv`` states its date and source; a GPU no source prices is left out, and a fleet with such
a GPU gets no dollar figure (a note says which ``prices.<gpu>`` to give) rather than an invented one. Prices
are examples: a scenario's ``prices`` mapping replaces any of them (a reserved or negotiated rate, owned GPUs).
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

PRICES_CSV = Path(__file__).resolve().parent / "data" / "gpu_prices.csv"
SECONDS_PER_HOUR = 3600.0


@functools.lru_cache(maxsize=1)
def default_prices() -> dict[str, float]:
    """GPU name -> USD per GPU-hour, from ``data/gpu_prices.csv`` (package data, read once)."""
    with PRICES_CSV.open(newline="", encoding="utf-8") as f:
        return {row["gpu"]: float(row["usd_per_gpu_hour"]) for row in csv.DictReader(f)}


def fleet_usd_per_hour(gpus: dict[str, int], prices: dict[str, float | None]) -> tuple[float | None, str | None]:
    """What GPUs cost per hour: ``gpus`` maps a GPU name to how many of it the fleet holds.

    Returns (USD per hour, None), or (None, a note naming the unpriced GPU) when one with a count has no price.
    """
    missing = sorted(g for g, n in gpus.items() if n and prices.get(g) is None)
    if missing:
        return None, (f"no price for {', '.join(missing)}: give prices.{missing[0]} (USD per GPU-hour) for the "
                      "dollar columns")
    return float(sum(n * prices[g] for g, n in gpus.items() if n)), None  # type: ignore[operator]


def usd_per_million_tokens(usd_per_hour: float | None, tokens_per_s: float | None) -> float | None:
    """Dollars per million output tokens at a throughput: USD per hour over millions of tokens per hour
    (None without a price or without tokens)."""
    if usd_per_hour is None or not tokens_per_s or tokens_per_s <= 0:
        return None
    return usd_per_hour / (tokens_per_s * SECONDS_PER_HOUR / 1e6)


__all__ = ["PRICES_CSV", "default_prices", "fleet_usd_per_hour", "usd_per_million_tokens"]
