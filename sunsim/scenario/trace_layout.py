"""How a trace file is laid out: its format and which of its columns hold an arrival time, a task model
and the two token counts, given by a ``preset`` for the common public layouts and ``columns`` for the rest.

The layout is resolved here, from the scenario alone, so that the reader (``sunsim.workload.trace_file``)
gets one hashable :class:`TraceLayout` to cache a file's rows by, and so that a scenario naming a mapping
without a model column is refused before any file is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Literal

from pydantic import Field

from sunsim.scenario.limits import PathText, StrictModel

TraceFormat = Literal["csv", "jsonl", "parquet"]
TracePreset = Literal["azure", "burstgpt", "vllm-jsonl"]
#: Suffixes that say a file's format; any other is read as ``preset``'s format (CSV without one), as
#: every trace was before formats existed.
SUFFIX_FORMATS: dict[str, str] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                                  ".parquet": "parquet", ".pq": "parquet"}
#: A column (or JSON key) name: long enough for any real header, short enough for a message.
ColumnName = Annotated[str, Field(min_length=1, max_length=200)]
#: Trace model names one ``models`` mapping may hold (a real trace has a handful).
MAX_TRACE_MODELS = 10_000


@dataclass(frozen=True)
class TraceLayout:
    """A resolved layout: the file's format and its column for each of sunsim's fields.

    ``model`` is ``None`` when the trace carries no model (popularity draws it); ``model_required``
    says whether a file without that column is an error or simply has no model column (the Azure
    layout's ``model`` column was always optional)."""

    format: str
    time: str
    prompt_tokens: str
    output_tokens: str
    model: str | None
    model_required: bool

    def field_of(self, column: str) -> str:
        """sunsim's name for a file column (for messages: ``'Request tokens' (prompt_tokens)``)."""
        for field in ("time", "prompt_tokens", "output_tokens", "model"):
            if getattr(self, field) == column:
                return field
        return column


#: The presets. ``azure``: the Azure LLM inference trace as vidur publishes it (``scenarios/traces/``).
#: ``burstgpt``: BurstGPT's CSV (``Timestamp`` in seconds from the trace start, ``Model`` e.g. ChatGPT or
#: GPT-4); vLLM's BurstGPTDataset reads the same columns (benchmarks/benchmark_dataset.py: ``df["Model"]``,
#: ``"Request tokens"``, ``"Response tokens"``). ``vllm-jsonl``: one JSON object per line with the field
#: names of vLLM's ``SampleRequest`` (benchmarks/benchmark_dataset.py, vllm/benchmarks/datasets.py:
#: ``prompt_len``, ``expected_output_len``) and the request's ``model``; vLLM's datasets carry no arrival
#: time (its benchmark draws arrivals from --request-rate), so the time key is ``timestamp``, as trace
#: replayers name it, in seconds (``time_scale: 0.001`` reads milliseconds, as Mooncake traces have).
PRESETS: dict[str, TraceLayout] = {
    "azure": TraceLayout("csv", "arrived_at", "num_prefill_tokens", "num_decode_tokens", "model", False),
    "burstgpt": TraceLayout("csv", "Timestamp", "Request tokens", "Response tokens", "Model", True),
    "vllm-jsonl": TraceLayout("jsonl", "timestamp", "prompt_len", "expected_output_len", "model", False),
}
#: The layout of a scenario that names neither a preset nor columns: today's, unchanged.
DEFAULT_LAYOUT = PRESETS["azure"]


class TraceColumns(StrictModel):
    """The file's column (CSV, Parquet) or key (JSON lines) for each field; a field left out (or null)
    keeps the preset's name, so a scenario dumped and read back means the same. A model column named
    here must be in the file; the Azure layout's ``model`` is used only if present."""

    time: ColumnName | None = None
    model: ColumnName | None = None
    prompt_tokens: ColumnName | None = None
    output_tokens: ColumnName | None = None


class TraceSource(StrictModel):
    """A trace file and its layout; the base of trace arrivals and of lengths drawn from a trace."""

    kind: Literal["trace"]
    path: PathText
    #: csv | jsonl | parquet; default: from the suffix (.csv, .jsonl/.ndjson, .parquet/.pq), else the
    #: preset's, else csv.
    format: TraceFormat | None = None
    #: azure (default) | burstgpt | vllm-jsonl: fills ``columns`` and the format for a known layout.
    preset: TracePreset | None = None
    columns: TraceColumns | None = None

    def layout(self, use_models: bool = True) -> TraceLayout:
        """The format and columns this trace is read with (``columns`` over the preset's); without
        ``use_models`` no model column is read."""
        base = PRESETS[self.preset or "azure"]
        fmt = self.format or SUFFIX_FORMATS.get(PurePath(self.path).suffix.lower()) or base.format
        cols = self.columns or TraceColumns()
        model, required = (cols.model, True) if cols.model else (base.model, base.model_required)
        if not use_models:
            model, required = None, False
        return TraceLayout(fmt, cols.time or base.time, cols.prompt_tokens or base.prompt_tokens,
                           cols.output_tokens or base.output_tokens, model, required)
