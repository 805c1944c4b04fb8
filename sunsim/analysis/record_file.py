"""Per-request rows written while a run goes (streaming runs), and the request table read back from them.

A streaming run hands each finished request's row to :class:`ParquetRecordSink`, which writes them in
row groups of :data:`ROWS_PER_GROUP`: the file holds :data:`~sunsim.analysis.metrics.REQUEST_COLUMNS`,
the same columns and values as a whole run's request table, in the order requests finished (then those
unfinished when the run stopped). :func:`read_request_table` reads the columns a summary needs back,
in request order, so the summary of a streamed run is exact: the same as that of the same run in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sunsim.analysis.request_columns import REQUEST_COLUMNS, derived_columns

#: Rows per Parquet row group (and buffered before each write): ~20 MB of columns.
ROWS_PER_GROUP = 1 << 17
#: Bytes a row takes on disk (measured: 111 B per row, 200k requests of benchmarks/fleet.yaml, snappy), with margin.
ROW_BYTES = 128


class ParquetRecordSink:
    """Writes a streaming run's rows to ``path`` as they come (``close`` writes the rest and the footer)."""

    def __init__(self, path: Path | str, models: tuple[str, ...]) -> None:
        self.path = Path(path)
        self._models = pa.array(list(models), type=pa.string())
        self._parts: list[dict[str, np.ndarray]] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, request: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        self._parts.append({"request_id": request, **columns})
        self._buffered += len(request)
        if self._buffered >= ROWS_PER_GROUP:
            self._write_group()

    def close(self) -> None:
        """Write what is buffered and the file's footer (an empty run still gets a valid file)."""
        self._write_group(force=self._writer is None)
        if self._writer is not None:
            self._writer.close()

    def _write_group(self, force: bool = False) -> None:
        if not self._parts and not force:
            return
        names = ["request_id", "arrival_s", "model", "prompt_tokens", "output_tokens", "prefill_worker",
                 "decode_worker", "prefill_start_s", "first_token_s", "decode_admit_s", "kv_ready_s",
                 "decode_start_s", "finish_s", "preemptions"]
        cols = {n: np.concatenate([p[n] for p in self._parts]) if self._parts else np.zeros(0) for n in names}
        self._parts, self._buffered = [], 0
        cols.update(derived_columns(cols))
        arrays = {c: pa.array(cols[c]) for c in REQUEST_COLUMNS if c != "model"}
        arrays["model"] = pa.DictionaryArray.from_arrays(pa.array(cols["model"].astype(np.int32)), self._models)
        table = pa.table({c: arrays[c] for c in REQUEST_COLUMNS})
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table, row_group_size=ROWS_PER_GROUP)
        self.rows += table.num_rows


#: Integer columns read back narrower than written (their values are at most 1e7): exact, and half the memory.
NARROW = {"prompt_tokens": np.int32, "output_tokens": np.int32, "preemptions": np.int32, "prefill_worker": np.int32,
          "decode_worker": np.int32}


def read_request_table(path: Path | str, end_s: float, columns: list[str] | None = None) -> pd.DataFrame:
    """The request table of a streamed run (``columns`` of it, default all), in request order, of the requests
    that arrived by ``end_s``: the rows a whole run's :func:`~sunsim.analysis.metrics.request_table` has.

    Requests are admitted in stream order, so the file's request ids are ``0..n-1``: each row group's values are
    scattered straight to their requests' places, a column at a time into a block of its own, and the peak is
    the table plus a row group."""
    wanted = list(REQUEST_COLUMNS if columns is None else columns)
    f = pq.ParquetFile(path)
    n = f.metadata.num_rows
    df = pd.DataFrame(index=pd.RangeIndex(n))
    for c in wanted:  # a block per column, so that no step copies the whole table
        dst: np.ndarray | None = None
        names: list[str] = []
        for g in range(f.num_row_groups):
            part = f.read_row_group(g, columns=list(dict.fromkeys(["request_id", c])))
            ids = part.column("request_id").to_numpy()
            col = part.column(c).combine_chunks()
            if c == "model":
                names = col.dictionary.to_pylist()
                values = col.indices.to_numpy(zero_copy_only=False)
            else:
                values = col.to_numpy(zero_copy_only=False)
            if dst is None:
                dst = np.empty(n, dtype=np.int16 if c == "model" else NARROW.get(c, values.dtype))
            if len(ids) and (ids.min() < 0 or ids.max() >= n):
                raise ValueError(f"{path}: request ids are not 0..{n - 1}; not a file a streaming run wrote")
            dst[ids] = values
        if dst is None:
            dst = np.zeros(0)
        if c == "model":  # task names as a categorical of the models seen, in task order
            seen = np.unique(dst)
            df[c] = pd.Categorical.from_codes(np.searchsorted(seen, dst), [names[i] for i in seen])
        else:
            df[c] = dst
        del dst
    if "arrival_s" in df:
        keep = df["arrival_s"].to_numpy() <= end_s
        if not keep.all():  # never from a streaming run (every row arrived by its end); kept for exactness
            df = df[keep].reset_index(drop=True)
    return df
