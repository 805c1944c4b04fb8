"""Per-operation timing tables measured inside a serving engine, looked up at any model shape.

A table profile (format ``sunsim-aic-tables/1``, written by ``python -m calibration.aic_import`` from NVIDIA
aiconfigurator-core's measurements) holds GEMM times over ``(m, n, k)`` per weight format and decode / prefill
attention times over ``(batch, length, heads, kv_heads, head_dim)`` per KV-cache dtype. A model's shapes fall
between the measured points (Llama-3.1-8B's gate_up has n = 28672; the grid has 16384 and 51200), so every
lookup is piecewise linear in each coordinate: costs of the form ``a + b*x*y`` (a GEMM's bytes or FLOPs over n
and k, attention over batch and length) are reproduced exactly between grid points. Past the measured range
the two end points are extended linearly and the estimate says so (:attr:`Estimate.extrapolated`).
"""

from __future__ import annotations

import bisect
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sunsim.errors import InputError

TABLES_FORMAT = "sunsim-aic-tables/1"
#: How far (relative) beyond the measured points a lookup may go and not count as extrapolated: decode
#: tables end at 2^i - 1 KV tokens, so a query at 2^i is one token past the last point.
SLACK = 0.01


class TableMiss(InputError):
    """The profile lacks the grid points a lookup needs (re-import with ``--full-grid`` or more models)."""


@dataclass(frozen=True)
class Estimate:
    """A time in microseconds, and whether any coordinate lay more than :data:`SLACK` outside the measured points."""

    us: float
    extrapolated: bool = False


def interp1(xs: Sequence[float], ys: Sequence[float], x: float) -> Estimate:
    """Piecewise-linear ``y(x)`` through sorted points; beyond them, the line through the two end points."""
    if not len(xs):
        raise TableMiss("no points to interpolate")
    if len(xs) == 1:
        return Estimate(float(ys[0]), abs(x - xs[0]) > SLACK * abs(xs[0]))
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return Estimate(float(ys[i]))
    outside = (i == 0 and x < xs[0] * (1 - SLACK)) or (i == len(xs) and x > xs[-1] * (1 + SLACK))
    lo = 0 if i == 0 else (len(xs) - 2 if i == len(xs) else i - 1)
    x0, x1, y0, y1 = xs[lo], xs[lo + 1], ys[lo], ys[lo + 1]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return Estimate(max(float(y), 0.0), outside)


def bracket(grid: Sequence[int], x: float) -> list[int]:
    """The grid points a lookup at ``x`` combines (the same rule the importer kept points by)."""
    i = bisect.bisect_left(grid, x)
    if i < len(grid) and grid[i] == x:
        return [int(x)]
    if i == 0:
        return list(grid[:2])
    if i == len(grid):
        return list(grid[-2:])
    return [grid[i - 1], grid[i]]


def _combine(points: list[int], values: list[Estimate], x: float) -> Estimate:
    est = interp1(points, [v.us for v in values], x)
    return Estimate(est.us, est.extrapolated or any(v.extrapolated for v in values))


class MeasuredTables:
    """The CSV tables of one imported profile folder, indexed for lookups."""

    def __init__(self, folder: Path) -> None:
        import pandas as pd  # only table profiles need it; `import sunsim` stays light

        self.folder = Path(folder)
        self.name = self.folder.name
        self.metadata: dict[str, Any] = json.loads((self.folder / "metadata.json").read_text(encoding="utf-8"))
        gemm = pd.read_csv(self.folder / "gemm.csv")
        self.gemm_formats = [c.removesuffix("_us") for c in gemm.columns if c.endswith("_us")]
        grid = self.metadata["tables"]["gemm.csv"]["grid"]
        self._n_grid, self._k_grid = list(grid["n_source"]), list(grid["k_source"])
        self._gemm: dict[tuple[str, int, int], tuple[list[int], list[float]]] = {}
        gemm = gemm.sort_values(["n", "k", "m"])
        keys = gemm[["n", "k", "m"]].to_numpy().tolist()
        for fmt in self.gemm_formats:
            for (n, k, m), us in zip(keys, gemm[f"{fmt}_us"].tolist()):
                if us == us:  # not NaN: measured in this format
                    ms, ys = self._gemm.setdefault((fmt, n, k), ([], []))
                    ms.append(m)
                    ys.append(us)
        self._allreduce: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
        if (self.folder / "allreduce.csv").exists():
            ar = pd.read_csv(self.folder / "allreduce.csv").sort_values(["impl", "gpus", "bytes"])
            for impl, dtype, gpus, nbytes, us in ar[["impl", "dtype", "gpus", "bytes", "time_us"]].itertuples(index=False):
                if dtype in ("bf16", "fp16"):  # 16-bit activations (NCCL's fp16 rows: the same bytes)
                    xs, ys = self._allreduce.setdefault((str(impl), int(gpus)), ([], []))
                    xs.append(int(nbytes))
                    ys.append(float(us))
        self._attn = {name: self._attention(pd.read_csv(self.folder / f"attention_{name}.csv"), length)
                      for name, length in (("decode", "kv_len"), ("prefill", "seq_len"))
                      if (self.folder / f"attention_{name}.csv").exists()}

    @staticmethod
    def _attention(df: Any, length: str) -> dict[tuple, dict[int, tuple[list[int], list[float]]]]:
        """{(kv_dtype, kv_heads, head_dim, heads): {batch: (lengths, times)}}."""
        columns = ["heads", "kv_heads", "head_dim", "batch", length]
        df = df.sort_values(columns)
        keys = df[columns].to_numpy().tolist()
        out: dict[tuple, dict[int, tuple[list[int], list[float]]]] = {}
        for col in (c for c in df.columns if c.endswith("_us")):
            dtype = col.removeprefix("kv_").removesuffix("_us")
            for (h, kv, hd, b, n), us in zip(keys, df[col].tolist()):
                if us == us:
                    lengths, times = out.setdefault((dtype, kv, hd, h), {}).setdefault(b, ([], []))
                    lengths.append(n)
                    times.append(us)
        return out

    # -- what the profile holds --------------------------------------------------------------
    def kv_dtypes(self, phase: str) -> list[str]:
        return sorted({key[0] for key in self._attn.get(phase, {})})

    def lengths(self, phase: str, kv_dtype: str, kv_heads: int, head_dim: int, heads: int, batch: int) -> list[int]:
        """The measured lengths of one attention row set (what a fit over length may use)."""
        table = self._attn[phase][(kv_dtype, kv_heads, head_dim, heads)]
        return list(table[batch][0])

    def attention_heads(self, phase: str, kv_dtype: str, kv_heads: int, head_dim: int) -> list[int]:
        return sorted(h for (d, kv, hd, h) in self._attn.get(phase, {}) if (d, kv, hd) == (kv_dtype, kv_heads, head_dim))

    def batches(self, phase: str, kv_dtype: str, kv_heads: int, head_dim: int, heads: int) -> list[int]:
        return sorted(self._attn[phase][(kv_dtype, kv_heads, head_dim, heads)])

    # -- lookups -----------------------------------------------------------------------------
    def gemm(self, fmt: str, m: float, n: int, k: int) -> Estimate:
        """Time of an (m x k) @ (k x n) GEMM in weight format ``fmt``: linear in m, bilinear in (n, k) between
        measured sizes. Past the largest measured n (or k), the time at it grows in proportion (a GEMM that wide
        runs at the widest one's efficiency: an LM head of 128256 columns from the grid's 65536), rather than
        along the line through the last two sizes, whose slope carries their measurement noise."""
        if fmt not in self.gemm_formats:
            raise TableMiss(f"{self.name}: no {fmt} GEMMs (formats: {', '.join(self.gemm_formats)})")
        scale = max(n / self._n_grid[-1], 1.0) * max(k / self._k_grid[-1], 1.0)
        n, k = min(n, self._n_grid[-1]), min(k, self._k_grid[-1])
        per_n = []
        ns, ks = bracket(self._n_grid, n), bracket(self._k_grid, k)
        for a in ns:
            per_k = []
            for b in ks:
                if (fmt, a, b) not in self._gemm:
                    raise TableMiss(f"{self.name}: no {fmt} GEMM at n={a}, k={b} (needed for n={n}, k={k}); "
                                    "re-import the profile with --full-grid or with this model's shape")
                per_k.append(interp1(*self._gemm[(fmt, a, b)], m))
            per_n.append(_combine(ks, per_k, k))
        out = _combine(ns, per_n, n)
        below = n < self._n_grid[0] or k < self._k_grid[0]
        return Estimate(out.us * scale, out.extrapolated or below)

    def gemm_rows(self, fmt: str) -> list[int]:
        """Every row count ``m`` measured in ``fmt`` (the breakpoints of a sum of :meth:`gemm` over m)."""
        return sorted({m for (f, _, _), (rows, _) in self._gemm.items() if f == fmt for m in rows})

    def widest_gemm(self) -> tuple[int, int]:
        """The largest measured n and k (past them :meth:`gemm` scales in proportion)."""
        return self._n_grid[-1], self._k_grid[-1]

    #: The all-reduce implementations a phase may run: vLLM's custom all-reduce (under CUDA graphs in decode,
    #: eager in prefill) or NCCL.
    ALLREDUCE_IMPLS = {"decode": ("vllm_custom_graph", "nccl"), "prefill": ("vllm_custom_eager", "nccl")}

    def allreduce_gpus(self) -> list[int]:
        """The group sizes the profile measured all-reduces at (empty: no ``allreduce.csv``)."""
        return sorted({g for _, g in self._allreduce})

    def allreduce(self, phase: str, gpus: int, nbytes: float) -> Estimate:
        """One all-reduce of ``nbytes`` over ``gpus`` GPUs: the faster of the phase's measured implementations
        (:attr:`ALLREDUCE_IMPLS`), piecewise linear in bytes between measured sizes."""
        found = [interp1(*self._allreduce[(impl, gpus)], nbytes) for impl in self.ALLREDUCE_IMPLS[phase]
                 if (impl, gpus) in self._allreduce]
        if not found:
            raise TableMiss(f"{self.name}: no all-reduce measured on {gpus} GPUs "
                            f"(measured: {', '.join(map(str, self.allreduce_gpus())) or 'none'})")
        return min(found, key=lambda e: e.us)

    def attention(self, phase: str, batch: float, length: float, heads: int, kv_heads: int, head_dim: int,
                  kv_dtype: str = "bf16") -> Estimate:
        """Attention time of one layer: ``phase`` "decode" (length = KV tokens per sequence) or "prefill"
        (length = prompt tokens per sequence); linear in batch, length and heads between measured points."""
        table = self._attn.get(phase)
        if table is None:
            raise TableMiss(f"{self.name}: no {phase} attention table")
        heads_grid = self.attention_heads(phase, kv_dtype, kv_heads, head_dim)
        if not heads_grid:
            raise TableMiss(f"{self.name}: no {phase} attention with kv_heads={kv_heads}, head_dim={head_dim} and "
                            f"a {kv_dtype} KV cache (KV dtypes measured: {', '.join(self.kv_dtypes(phase))})")
        per_h = []
        hs = bracket(heads_grid, heads)
        for h in hs:
            by_batch = table[(kv_dtype, kv_heads, head_dim, h)]
            bs = bracket(sorted(by_batch), batch)
            per_h.append(_combine(bs, [interp1(*by_batch[b], length) for b in bs], batch))
        return _combine(hs, per_h, heads)


@functools.lru_cache(maxsize=16)
def _load(folder: str) -> MeasuredTables:
    return MeasuredTables(Path(folder))


def load_tables(folder: Path | str) -> MeasuredTables:
    """The tables of a profile folder (read once per process), or an :class:`InputError` naming what is wrong."""
    path = Path(folder)
    meta = path / "metadata.json"
    try:
        kind = json.loads(meta.read_text(encoding="utf-8")).get("format")
    except FileNotFoundError:
        raise InputError(f"hardware.profile: {str(path)!r} has no metadata.json (not a table profile)") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"hardware.profile: {str(meta)!r} is not readable ({exc})") from None
    if kind != TABLES_FORMAT:
        raise InputError(f"hardware.profile: {str(path)!r} is not a {TABLES_FORMAT} profile (format {kind!r})")
    try:
        return _load(str(path.resolve()))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"hardware.profile: the tables of {str(path)!r} are damaged ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None


def is_table_profile(folder: Path | str) -> bool:
    """Whether a folder holds a table profile (its metadata names the format), without loading it."""
    try:
        return json.loads((Path(folder) / "metadata.json").read_text(encoding="utf-8")).get("format") == TABLES_FORMAT
    except (OSError, ValueError, AttributeError):
        return False
