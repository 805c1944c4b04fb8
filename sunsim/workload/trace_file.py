"""Reading a trace file (CSV, JSON lines or Parquet, its columns named by a layout) into sunsim's columns,
every row checked and any bad one located as the user counts it.

Every format ends in the same frame (``arrived_at``, ``num_prefill_tokens``, ``num_decode_tokens``, an
optional ``model`` and ``row``, the row's number in the file), so that sorting, rescaling and cutting a
trace to the run are one code path whatever the file looked like, and a message about a row read after
sorting (an unmapped model) still names the row the user can find.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sunsim.scenario import DEFAULT_LAYOUT, MAX_REQUESTS, MAX_TOKENS, ScenarioError, TraceArrivals, TraceLayout

TIME, PROMPT, OUTPUT, MODEL, ROW = "arrived_at", "num_prefill_tokens", "num_decode_tokens", "model", "row"
TRACE_COLUMNS = (TIME, PROMPT, OUTPUT)
#: Trace arrival times beyond this (seconds, ~32 years) are taken for a wrong unit or column.
MAX_TRACE_TIME_S = 1e9
#: A trace file larger than this (~50 million rows of ~20 bytes) would not fit the request limit.
MAX_TRACE_BYTES = 2**30


@dataclass(frozen=True)
class _Raw:
    """What a format reader hands back: the layout's columns the file has, as the file holds them."""

    columns: dict[str, pd.Series]  # file column -> its values, for the layout's columns present
    header: list[str]  # every column (CSV, Parquet) or the first object's keys (JSON lines), for messages
    rows: np.ndarray  # each row's number as the user counts it (CSV: the file line, header = row 1)
    unit: str  # "row", or "line" for JSON lines


def _wanted(layout: TraceLayout) -> list[str]:
    """The file columns a layout reads (each once, in field order)."""
    cols = [layout.time, layout.prompt_tokens, layout.output_tokens] + ([layout.model] if layout.model else [])
    return list(dict.fromkeys(cols))


def _needs(layout: TraceLayout) -> str:
    """What a file of this layout must hold, for the message about an empty or wrong file."""
    if layout.format == "jsonl":
        example = {layout.time: 0.0, **({layout.model: "m"} if layout.model else {}),
                   layout.prompt_tokens: 100, layout.output_tokens: 20}
        return f"one JSON object per line, such as {json.dumps(example)}"
    return f"{'a header naming ' if layout.format == 'csv' else ''}columns {_wanted(layout)} and rows"


def _refuse_repeats(names: list[Any], wanted: list[str], where: str) -> None:
    # pandas renames a repeated CSV column (arrived_at, arrived_at.1), which would silently pick one of them.
    repeated = sorted({str(c) for c in wanted if names.count(c) > 1})
    if repeated:
        raise ScenarioError(f"{where}: column(s) {repeated} appear more than once in the header")


def _read_csv(p: Path, layout: TraceLayout, where: str) -> _Raw:
    try:
        header = pd.read_csv(p, header=None, nrows=1, dtype=str).iloc[0].tolist()
        wanted = [c for c in _wanted(layout) if c in header]
        _refuse_repeats(header, wanted, where)
        dtype = {layout.model: str} if layout.model in wanted else None  # a model named 1 stays "1", not 1.0
        df = pd.read_csv(p, usecols=wanted, dtype=dtype) if wanted else pd.DataFrame()
    except pd.errors.EmptyDataError:
        raise ScenarioError(f"{where}: empty file; needs {_needs(layout)}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{where}: not a UTF-8 text file") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ScenarioError(f"{where}: unreadable CSV ({exc})") from None
    return _Raw({c: df[c] for c in wanted}, [str(c) for c in header], np.arange(len(df)) + 2, "row")


def _read_jsonl(p: Path, layout: TraceLayout, where: str) -> _Raw:
    """One JSON object per line; blank lines are skipped, every other line must parse (a line number per row)."""
    wanted = _wanted(layout)
    values: dict[str, list[Any]] = {k: [] for k in wanted}
    seen: set[str] = set()
    rows: list[int] = []
    header: list[str] | None = None
    try:
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ScenarioError(f"{where}: line {n} is not valid JSON ({exc.msg} at character {exc.colno}); "
                                        f"needs {_needs(layout)}") from None
                if not isinstance(obj, dict):
                    raise ScenarioError(f"{where}: line {n} is a JSON {type(obj).__name__}, not an object; "
                                        f"needs {_needs(layout)}")
                if header is None:
                    header = list(obj)
                for k in wanted:
                    if k in obj:
                        seen.add(k)
                    values[k].append(obj.get(k))
                rows.append(n)
    except UnicodeDecodeError:
        raise ScenarioError(f"{where}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ScenarioError(f"{where}: unreadable file ({exc})") from None
    columns = {k: pd.Series(values[k], dtype=object) for k in wanted if k in seen}
    return _Raw(columns, header or [], np.asarray(rows, dtype=np.int64), "line")


def _read_parquet(p: Path, layout: TraceLayout, where: str) -> _Raw:
    import pyarrow as pa  # deferred: only a Parquet trace pays for importing it
    import pyarrow.parquet as pq

    try:
        header = list(pq.read_schema(p).names)
        wanted = [c for c in _wanted(layout) if c in header]
        _refuse_repeats(header, wanted, where)
        df = pq.read_table(p, columns=wanted).to_pandas() if wanted else pd.DataFrame()
    except (pa.ArrowException, OSError) as exc:
        raise ScenarioError(f"{where}: not a readable Parquet file ({exc})") from None
    return _Raw({c: df[c] for c in wanted}, header, np.arange(len(df)) + 1, "row")


_READERS: dict[str, Callable[[Path, TraceLayout, str], _Raw]] = {
    "csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}


def _number(v: Any) -> float:
    """A cell as a float, NaN where it holds no number: text that is not one, a JSON true/false (never
    read as 1/0, as in the scenario file), a list, a date."""
    if isinstance(v, (bool, np.bool_)):
        return math.nan
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return math.nan
    if isinstance(v, numbers.Real):
        try:
            return float(v)
        except OverflowError:  # an integer beyond float range
            return math.inf
    return math.nan


def _numbers(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    return np.array([_number(v) for v in s.to_numpy()], dtype=float)


def _is_missing(v: Any) -> bool:
    if isinstance(v, (list, dict)):
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _checked(raw: _Raw, col: str, field: str, where: str) -> np.ndarray:
    """The column's values as numbers, or the first bad row refused naming its row, column and the bounds."""
    s = raw.columns[col]
    values = _numbers(s)
    with np.errstate(invalid="ignore"):
        if field == "time":
            bad = ~((values >= 0) & (values <= MAX_TRACE_TIME_S))  # NaN (empty, text) fails both
            allowed = f"a number of seconds from 0 to {MAX_TRACE_TIME_S:g}"
        else:
            bad = ~((values >= 1) & (values <= MAX_TOKENS) & (values == np.floor(values)))
            allowed = f"a whole number from 1 to {MAX_TOKENS:,}"
    if not bad.any():
        return values if field == "time" else values.astype(np.int64)
    i = int(np.flatnonzero(bad)[0])
    cell = s.iloc[i]
    cell = cell.item() if isinstance(cell, np.generic) else cell  # inf, not np.float64(inf)
    got = "no value (empty or NaN)" if _is_missing(cell) else f"{col}={cell!r}"
    hint = ""
    if field != "time" and values[i] == 0:
        hint = " (0 tokens is how BurstGPT logs a failed request; drop such rows first)"
    elif field == "time" and values[i] > MAX_TRACE_TIME_S:
        hint = " (a Unix timestamp? give seconds from the trace start)"
    name = col if col == field else f"{col!r} ({field})"
    raise ScenarioError(f"{where}: {raw.unit} {raw.rows[i]} has {got}; {name} must be {allowed}{hint}")


@lru_cache(maxsize=8)
def read_trace(path: str, layout: TraceLayout = DEFAULT_LAYOUT) -> pd.DataFrame:
    """Read and check a trace file into ``arrived_at, num_prefill_tokens, num_decode_tokens[, model], row``,
    sorted by arrival (a stable sort: rows of one instant keep their file order)."""
    p = Path(path)
    where = f"workload trace {path!r}"
    if not p.is_file():
        raise ScenarioError(f"{where}: file not found" + (" (it is a folder)" if p.is_dir() else ""))
    size = p.stat().st_size
    if size == 0:
        raise ScenarioError(f"{where}: empty file; needs {_needs(layout)}")
    if size > MAX_TRACE_BYTES:
        raise ScenarioError(f"{where}: {size / 2**30:.1f} GiB is more than the {MAX_TRACE_BYTES // 2**30} GiB "
                            f"a trace may have")
    raw = _READERS[layout.format](p, layout, where)
    fields = [("time", layout.time), ("prompt_tokens", layout.prompt_tokens), ("output_tokens", layout.output_tokens)]
    if layout.model and layout.model_required:
        fields.append(("model", layout.model))
    missing = [f"{col!r} ({field})" for field, col in fields if col not in raw.columns]
    if missing and (raw.header or len(raw.rows)):  # JSON lines without a single object has no keys to miss
        raise ScenarioError(f"{where}: missing column(s) {', '.join(missing)} for the {layout.format} layout; the "
                            f"file has {raw.header[:12]}; name the file's columns with columns: {{time: ..., "
                            f"model: ..., prompt_tokens: ..., output_tokens: ...}} or a preset (azure, burstgpt, "
                            f"vllm-jsonl)")
    if len(raw.rows) == 0:
        raise ScenarioError(f"{where}: no rows")
    if len(raw.rows) > MAX_REQUESTS:
        raise ScenarioError(f"{where}: {len(raw.rows):,} rows is more than the {MAX_REQUESTS:,} requests a run allows")
    frame: dict[str, Any] = {TIME: _checked(raw, layout.time, "time", where),
                             PROMPT: _checked(raw, layout.prompt_tokens, "prompt_tokens", where),
                             OUTPUT: _checked(raw, layout.output_tokens, "output_tokens", where)}
    if layout.model in raw.columns:
        names = raw.columns[layout.model]
        empty = names.isna().to_numpy()
        if empty.any():  # else it would be read as a model named "nan"
            where_row = f"{raw.unit} {raw.rows[int(np.flatnonzero(empty)[0])]}"
            raise ScenarioError(f"{where}: {where_row} has no value in the model column {layout.model!r}; "
                                f"model must name one of model.tasks, or a trace model workload.arrivals.models maps")
        frame[MODEL] = names.astype(str).to_numpy()
    frame[ROW] = raw.rows
    df = pd.DataFrame(frame)
    # Rows out of arrival order are replayed in arrival order (a stable sort keeps ties in file order).
    if (np.diff(df[TIME].to_numpy()) < 0).any():
        df = df.sort_values(TIME, kind="stable").reset_index(drop=True)
    return df


def trace_task_index(rows: pd.DataFrame, arrivals: TraceArrivals, tasks: list[str]) -> np.ndarray | None:
    """Each replayed row's task model (index into ``tasks``) from the trace's model column through
    ``arrivals.models``, or None where the trace has none (the scenario's popularity draws models)."""
    where = f"workload trace {arrivals.path!r}"
    column = arrivals.layout().model
    if MODEL not in rows.columns:
        if arrivals.models:
            raise ScenarioError(f"{where}: workload.arrivals.models maps trace models, but the file has no model "
                                f"column {column!r}; name it with columns.model")
        return None
    codes, names = pd.factorize(rows[MODEL], sort=True)
    unit = "line" if arrivals.layout().format == "jsonl" else "row"

    def first_row(name: str) -> str:
        i = int(np.flatnonzero(codes == list(names).index(name))[0])
        return f"first at {unit} {rows[ROW].iloc[i]}"

    if arrivals.models:
        unmapped = [str(n) for n in names if n not in arrivals.models]
        if unmapped:
            raise ScenarioError(f"{where}: trace model {unmapped[0]!r} (column {column!r}, {first_row(unmapped[0])}) "
                                f"has no mapping in workload.arrivals.models {dict(arrivals.models)}; map it to one "
                                f"of model.tasks {tasks}" + (f" (unmapped: {unmapped[:5]})" if len(unmapped) > 1 else ""))
        targets = [arrivals.models[str(n)] for n in names]
    else:
        unknown = [str(n) for n in names if n not in tasks]
        if unknown:
            raise ScenarioError(f"{where}: model column {column!r} names {unknown[:5]} ({first_row(unknown[0])}), "
                                f"not in model.tasks {tasks}; map the trace's names to task models with "
                                f"workload.arrivals.models: {{<trace name>: <task>}}")
        targets = [str(n) for n in names]
    index = {task: i for i, task in enumerate(tasks)}
    missing = sorted({t for t in targets if t not in index})
    if missing:  # the scenario check refuses these first; kept for a stream built from an unchecked spec
        raise ScenarioError(f"workload.arrivals.models: maps to {missing}, not one of model.tasks {tasks}")
    return np.array([index[t] for t in targets], dtype=np.int32)[codes]
