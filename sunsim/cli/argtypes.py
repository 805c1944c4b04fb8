"""argparse types for counts and amounts: a bad value is refused by the parser (exit 2, the flag named)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(parse: Callable[[str], float], ok: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def check(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    check.__name__ = what.replace(" ", "_")
    return check


#: An integer >= 1 (repeats, requests, workers, seeds...).
positive_int = _number(int, lambda n: n >= 1, "a positive integer")
#: An integer >= 0 (warm-up runs...).
non_negative_int = _number(int, lambda n: n >= 0, "a non-negative integer")
#: A finite number > 0 (seconds, budgets).
positive_float = _number(float, lambda x: 0 < x < float("inf"), "a positive number")
#: Local worker processes: 1 to 1,024 (each is a whole Python process).
worker_count = _number(int, lambda n: 1 <= n <= 1024, "an integer from 1 to 1024")
#: An engine overhead per iteration, ms: 0 to 100 (as ``hardware.iteration_overhead_ms``).
overhead_ms = _number(float, lambda x: 0 <= x <= 100, "a number of milliseconds from 0 to 100")
