"""What the experiments leave behind, as the results page reads it: run folders and sweep tables.

A module of its own so that the family modules, the page writer and the pipeline can all name it
without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Outputs:
    """Run folders by experiment name and sweep tables by sweep name, in the order they ran (the page
    lists the runs in that order)."""

    runs: dict[str, Path]
    sweeps: dict[str, pd.DataFrame]
