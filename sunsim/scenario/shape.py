"""A model shape given field by field (``model.shape``), with bounds.

It has a module of its own because two readers build it: the scenario's ``model`` section and
:mod:`sunsim.scenario.hf_config`, which maps a Hugging Face ``config.json`` onto it; neither needs
the other to validate a shape.
"""

from __future__ import annotations

from pydantic import Field

from sunsim.scenario.limits import Int, StrictModel


class CustomShape(StrictModel):
    """A shape given field by field; the bounds are ~10x beyond today's largest models."""

    name: str = Field("custom", min_length=1, max_length=100)
    hidden: Int = Field(gt=0, le=1_000_000)
    layers: Int = Field(gt=0, le=10_000)
    heads: Int = Field(gt=0, le=10_000)
    kv_heads: Int = Field(gt=0, le=10_000)
    head_dim: Int = Field(gt=0, le=10_000)
    intermediate: Int = Field(gt=0, le=10_000_000)
    vocab: Int = Field(gt=0, le=100_000_000)
    tied_embeddings: bool = False
