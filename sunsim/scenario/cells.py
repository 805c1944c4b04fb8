"""``cells``: a fleet split into independent cells, each serving a part of the task models on GPUs of its own.

``cells: {count: N}`` deals the task models out by popularity, round-robin (the most popular to cell0, the
next to cell1, ...), so the cells' traffic is about even; ``cells: {east: [math, code], west: [tools, chat]}``
names them. Every task model is in exactly one cell. How a cell's GPUs and requests are taken from the
scenario is in :mod:`sunsim.analysis.cells`.
"""

from __future__ import annotations

from typing import Annotated, Union

import numpy as np
from pydantic import BeforeValidator, Field

from sunsim.scenario.limits import MAX_TASKS, Int, StrictModel, no_bool, safe_name


class CellCount(StrictModel):
    """``count`` cells, the task models dealt out round-robin in order of popularity."""

    count: Int = Field(ge=1, le=MAX_TASKS)


#: ``{count: N}`` or ``{cell name: [task models]}``.
Cells = Annotated[Union[CellCount, dict[str, list[str]]], BeforeValidator(no_bool)]


def cell_models(cells: CellCount | dict[str, list[str]], tasks: list[str], share: np.ndarray) -> dict[str, list[str]]:
    """Each cell's task models (in task order), by name; raises ValueError naming what is wrong."""
    if isinstance(cells, CellCount):
        if cells.count > len(tasks):
            raise ValueError(f"cells.count: {cells.count} cells for {len(tasks)} task models would leave a cell "
                             f"without models; at most {len(tasks)}")
        rank = np.argsort(-share, kind="stable")  # most popular first; ties in task order
        out: dict[str, list[int]] = {f"cell{c}": [] for c in range(cells.count)}
        for k, i in enumerate(rank.tolist()):
            out[f"cell{k % cells.count}"].append(i)
        return {name: [tasks[i] for i in sorted(idx)] for name, idx in out.items()}
    if not cells:
        raise ValueError("cells: name at least one cell and its models, or give {count: N}")
    seen: dict[str, str] = {}
    for name, models in cells.items():
        try:
            safe_name(name)
        except ValueError as exc:
            raise ValueError(f"cells.{name}: {exc}") from None
        if not models:
            raise ValueError(f"cells.{name}: a cell needs at least one task model")
        for m in models:
            if m not in tasks:
                raise ValueError(f"cells.{name}: unknown model {m!r}; models are {tasks}")
            if m in seen:
                raise ValueError(f"cells.{name}: model {m!r} is already in cell {seen[m]!r}; each model is in one cell")
            seen[m] = name
    missing = [t for t in tasks if t not in seen]
    if missing:
        raise ValueError(f"cells: models {missing} are in no cell; every task model must be in one")
    return {name: [t for t in tasks if t in models] for name, models in cells.items()}
