"""The scenario's ``model`` section: the base architecture (a preset, a shape given field by field,
or a Hugging Face ``config.json``) and the task models fine-tuned from it."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from sunsim.costs.architecture import PRESETS, ModelShape
from sunsim.names import check_name
from sunsim.scenario.hf_config import read_hf_config
from sunsim.scenario.limits import MAX_TASKS, PathText, StrictModel
from sunsim.scenario.shape import CustomShape

DEFAULT_PRESET = "llama-3.1-8b"


class ModelSpec(StrictModel):
    """The base architecture (exactly one of preset, shape, hf_config; default: the
    llama-3.1-8b preset) and the task models fine-tuned from it."""

    preset: str | None = None
    shape: CustomShape | None = None
    #: A Hugging Face ``config.json`` (relative to the scenario file).
    hf_config: PathText | None = None
    tasks: list[str] = Field(default_factory=lambda: ["task0"], min_length=1, max_length=MAX_TASKS)

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = [k for k in ("preset", "shape", "hf_config") if data.get(k) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of model.preset, model.shape, model.hf_config (got {', '.join(given)})")
        if not given:
            data = {**data, "preset": DEFAULT_PRESET}
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; allowed: {', '.join(PRESETS)} (or give model.shape)")
        return v

    @field_validator("tasks", mode="before")
    @classmethod
    def _count_to_names(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            if not 1 <= v <= MAX_TASKS:
                raise ValueError(f"a count of task models must be from 1 to {MAX_TASKS}")
            return [f"task{i}" for i in range(v)]
        return v

    @field_validator("tasks")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        for i, name in enumerate(v):
            check_name(name, f"item {i}")
        if len(set(v)) != len(v):
            raise ValueError("task model names must be unique")
        return v

    def resolve(self) -> ModelShape:
        """The shape this section names; an ``hf_config`` is read here (memoised), not at validation,
        so that its path can first be made relative to the scenario file."""
        if self.shape is not None:
            return ModelShape(**self.shape.model_dump())
        if self.hf_config is not None:
            return read_hf_config(self.hf_config)
        return PRESETS[self.preset]  # type: ignore[index]
