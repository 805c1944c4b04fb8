"""Choices and bounds the command line shows in its help, kept free of heavy imports.

``sunsim --help`` builds every subcommand's parser, and a parser needs these values (``choices``,
the bounds in a help line) before any handler runs. Their owners (:mod:`sunsim.analysis.sweep_spec`,
:mod:`sunsim.analysis.planning.search`) import pydantic, the simulator and pandas; defining the values
here, where they import nothing, lets the CLI start without loading any of that.
"""

from __future__ import annotations

#: Where sweep points run: local worker processes or a Ray cluster.
EXECUTORS = ("local", "ray")
#: Where a run's (cell, variant) tasks run: this process one after another, local worker processes, or Ray.
RUN_EXECUTORS = ("inline", "local", "ray")
#: Table formats a sweep can write, by extension.
TABLE_SUFFIXES = (".csv", ".parquet")
#: Largest --max-gpus accepted: beyond it a single probe would simulate an absurd cluster.
MAX_GPUS_LIMIT = 4096
