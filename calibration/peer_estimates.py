"""aiconfigurator's own TTFT/TPOT estimates for the dense-model rows of its public measurement file.

NVIDIA aiconfigurator-core (PyPI, Apache-2.0) ships ``systems/silicon_sample.csv`` (measured end-to-end TTFT
and TPOT of served models) and an estimator built on per-kernel tables. sunsim replays the same rows; this
tool asks the estimator for each row's own configuration so that both tools' errors can be quoted on the
same measurements. The estimator is configured the way aiconfigurator's single-point estimate (the upper
``aiconfigurator`` package's ``cli_estimate``, which core 0.12.0 does not ship) configures it, calling the
core functions that one calls:

* database: ``get_database_view(system, backend, version, database_mode="SILICON")``. A row's own engine
  version is used when it is one of the package's queryable version slots (``query_versions.yaml``); else the
  ``current`` slot, which is what aiconfigurator answers by default (``get_latest_database_version``) and
  what its own measured-vs-estimated script falls back to when the row's version has no database.
* model: the cached Hugging Face config of the same shape (:data:`MODEL_CONFIGS`; the file names some
  checkpoints, e.g. ``nvidia/Qwen3-32B-NVFP4``, the package has no config for, and nothing is downloaded),
  ``build_model_config(tp, pp, attention_dp, ...)`` with the row's ``gemm_quant_mode`` (empty: the
  checkpoint's own format, bf16), KV cache and attention in the checkpoint's default format, then
  ``resolve_context_fmha_by_data``, ``resolve_nvfp4_for_system`` and ``get_model``.
* agg: ``backend.run_agg`` at batch size = the row's ``batch_size`` (in-flight requests per engine; its
  concurrency when empty) with ``ctx_tokens = isl`` (one prompt's tokens per scheduled step, the default of
  ``cli_estimate``). An out-of-memory summary is an error, as ``cli_estimate`` raises.
* disagg: ``backend.run_static`` per role, as aiconfigurator's ``DisaggInferenceSession.run_disagg`` does:
  TTFT = ``static_ctx`` at the row's prefill batch size and prefill TP, TPOT = ``static_gen`` at the decode
  batch size and decode TP, with the latency correction scales ``cli_estimate`` sets (1.1 prefill, 1.08
  decode). Worker counts only rate-match throughput there, so they do not change TTFT or TPOT.

Usage::

    nice -n 10 python -m calibration.peer_estimates --out calibration/data/peer_estimates.csv

It prints the median and p90 of ``|peer / measured - 1|`` for TTFT and TPOT, overall and per
(model, system, backend, mode). ``--kv-cache-quant fp8`` asks for an fp8 KV cache on rows with quantised
weights (a sensitivity check: the file does not record the KV format measured). ``--ids`` limits the rows.
Needs ``pip install aiconfigurator-core==0.12.0`` (``.[tables]``).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibration.aic_source import MODULE, PACKAGE, AicImportError
from sunsim.analysis.measurements import concurrency_of

#: Shape name -> the package's cached Hugging Face config of that shape (``aiconfigurator_core/model_configs``).
MODEL_CONFIGS = {
    "llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B",
    "qwen3-32b": "Qwen/Qwen3-32B",
}
SYSTEMS = ("h100_sxm", "h200_sxm", "b200_sxm")
#: The latency correction scales aiconfigurator's single-point disagg estimate applies (cli/api.py of the
#: upper ``aiconfigurator`` package: DEFAULT_PREFILL_/DEFAULT_DECODE_LATENCY_CORRECTION_SCALE).
PREFILL_CORRECTION, DECODE_CORRECTION = 1.1, 1.08
COLUMNS = ("id", "model", "system", "backend", "mode", "peer_ttft_ms", "peer_tpot_ms", "measured_ttft_ms",
           "measured_tpot_ms", "peer_database", "peer_config", "status")
_SUFFIXES = ("-instruct", "-fp8", "-nvfp4", "-fp4")


def dense_shape(model_path: str) -> str | None:
    """The :data:`MODEL_CONFIGS` shape a published name has (``nvidia/Llama-3.1-8B-Instruct-FP8`` ->
    llama-3.1-8b): a quantised or instruct-tuned checkpoint keeps its base model's shape."""
    base = model_path.rsplit("/", 1)[-1].lower().removeprefix("meta-")
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if base.endswith(suffix):
                base, changed = base[: -len(suffix)], True
    return base if base in MODEL_CONFIGS else None


def load_core() -> dict[str, Any]:
    """The estimator's functions, imported only now: the package is optional and heavy (a Rust extension)."""
    try:
        importlib.import_module(MODULE)
    except ImportError as exc:
        raise AicImportError(f"{PACKAGE} is not installed ({exc}); peer estimates need it: "
                             f"`pip install {PACKAGE}==0.12.0` (or `pip install -e .[tables]`)") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every config used is cached in the package
    logging.getLogger(MODULE).setLevel(logging.ERROR)  # per-table fallback notices would flood the output
    names = {
        "pdb": "aiconfigurator_core.sdk.perf_database", "config": "aiconfigurator_core.sdk.config",
        "builders": "aiconfigurator_core.sdk.config_builders", "models": "aiconfigurator_core.sdk.models",
        "factory": "aiconfigurator_core.sdk.backends.factory",
    }
    return {key: importlib.import_module(mod) for key, mod in names.items()}


def package_file() -> Path:
    """The installed package's ``systems/silicon_sample.csv`` (found without importing the package)."""
    from calibration.aic_source import locate_package

    return locate_package().systems / "silicon_sample.csv"


def read_rows(path: Path, limit_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """The file's dense-model rows on H100/H200/B200 (all columns as text), in file order."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    keep = df["model_path"].map(dense_shape).notna() & df["system"].isin(SYSTEMS)
    if limit_ids is not None:
        keep &= df["id"].isin(limit_ids)
    return df[keep].reset_index(drop=True)


def _int(text: str, default: int | None = None) -> int | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return default
    return int(value) if math.isfinite(value) and value >= 1 and value == int(value) else default


@dataclass(frozen=True)
class Worker:
    """One engine's parallelism and precision: what a built aiconfigurator model depends on."""

    config_id: str
    system: str
    backend: str
    tp: int
    pp: int
    attention_dp: int
    gemm_quant: str | None
    kv_quant: str | None
    context_role: bool  # context attention runs here (agg, prefill): its fmha format is resolved from data


class Estimator:
    """aiconfigurator's estimate of rows, with databases, backends and built models reused across rows."""

    def __init__(self, core: dict[str, Any], kv_cache_quant: str | None = None):
        self.core = core
        self.kv_cache_quant = kv_cache_quant  # for rows with quantised weights; None: the checkpoint's format
        self._databases: dict[tuple[str, str, str | None], tuple[str, Any]] = {}
        self._slots: dict[tuple[str, str], tuple[dict[str, str], str | None]] = {}
        self._models: dict[Worker, tuple[Any, Any]] = {}

    def database(self, system: str, backend: str, row_version: str) -> tuple[str, Any]:
        """(version, database): the row's version when it is a queryable slot, else the ``current`` slot."""
        pdb = self.core["pdb"]
        if (system, backend) not in self._slots:  # both calls rescan the package's YAML files (seconds)
            self._slots[system, backend] = (pdb.get_version_slots(system, backend) or {},
                                            pdb.get_latest_database_version(system, backend))
        slots, latest = self._slots[system, backend]
        wanted = row_version if row_version and row_version in (slots.get("current"), slots.get("previous")) \
            else latest
        key = (system, backend, wanted)
        if key not in self._databases:
            if wanted is None:
                raise AicImportError(f"{PACKAGE} has no database for {system}/{backend}")
            db = pdb.get_database_view(system, backend, wanted, database_mode="SILICON")
            if db is None:
                raise AicImportError(f"{PACKAGE} failed to load the database {system}/{backend}/{wanted}")
            self._databases[key] = (wanted, db)
        return self._databases[key]

    def engine(self, worker: Worker, db: Any) -> tuple[Any, Any]:
        """(backend, model) of ``worker``. Each model gets its own backend object: a backend caches
        ``run_agg`` results by (isl, osl, batch, ctx_tokens) alone, so a shared one would hand one model's
        answer to another."""
        if worker not in self._models:
            c = self.core
            mc = c["builders"].build_model_config(worker.tp, worker.pp, worker.attention_dp, None, None,
                                                  worker.gemm_quant, worker.kv_quant)
            if worker.context_role:
                c["models"].resolve_context_fmha_by_data(mc, worker.config_id, db, worker.backend,
                                                         is_context_role=True)
            c["models"].resolve_nvfp4_for_system(mc, worker.system, worker.config_id)
            model = c["models"].get_model(worker.config_id, mc, worker.backend)
            self._models[worker] = (c["factory"].get_backend(worker.backend), model)
        return self._models[worker]

    def estimate(self, row: dict[str, str]) -> dict[str, Any]:
        """One output row: the estimates, the database and configuration used, and ``ok`` or the error."""
        out: dict[str, Any] = {"id": row["id"], "model": row["model_path"], "system": row["system"],
                               "backend": row["backend"], "mode": row["mode"], "peer_ttft_ms": "",
                               "peer_tpot_ms": "", "measured_ttft_ms": row["silicon_ttft_ms"],
                               "measured_tpot_ms": row["silicon_tpot_ms"], "peer_database": "",
                               "peer_config": "", "status": "ok"}
        try:
            version, db = self.database(row["system"], row["backend"], row["backend_version"])
            out["peer_database"] = f"{row['system']}/{row['backend']}/{version}"
            ttft, tpot = self._run(row, db, out)
            if not (math.isfinite(ttft) and math.isfinite(tpot) and ttft > 0 and tpot > 0):
                raise ValueError(f"estimator returned ttft {ttft}, tpot {tpot}")
            out.update(peer_ttft_ms=f"{ttft:.6g}", peer_tpot_ms=f"{tpot:.6g}")
        except Exception as exc:  # the estimator raises many types; the row records which, and goes on
            text = " ".join(str(exc).split())
            out["status"] = f"{type(exc).__name__}: {text[:240]}"
        return out

    def _run(self, row: dict[str, str], db: Any, out: dict[str, Any]) -> tuple[float, float]:
        """(TTFT, TPOT) in ms; ``out["peer_config"]`` says what was asked, set before asking (kept on failure)."""
        config_id = MODEL_CONFIGS[dense_shape(row["model_path"])]
        isl, osl = _int(row["isl"]), _int(row["osl"])
        if isl is None or osl is None:
            raise ValueError(f"isl {row['isl']!r} / osl {row['osl']!r} not whole")
        quant = row["gemm_quant_mode"] or None
        kv = self.kv_cache_quant if quant else None
        runtime = self.core["config"].RuntimeConfig

        def worker(role: str, context: bool) -> Worker:
            return Worker(config_id, row["system"], row["backend"], _int(row[role + "tp_size"], 1),
                          _int(row[role + "pp_size"], 1), _int(row[role + "attention_dp_size"], 1), quant, kv,
                          context)

        if row["mode"] == "agg":
            batch = _int(row["batch_size"]) or concurrency_of(_fields(row))
            if batch is None:
                raise ValueError("no batch size or concurrency")
            w = worker("", True)
            backend, model = self.engine(w, db)
            out["peer_config"] = f"agg tp{w.tp} pp{w.pp} dp{w.attention_dp} b{batch} ctx_tokens{isl} " \
                                 f"{_formats(model)} model {config_id}"
            summary = backend.run_agg(model, db, runtime(isl=isl, osl=osl, batch_size=batch), ctx_tokens=isl)
            _check_oom(summary, "agg")
            res = summary.get_result_dict()
            return float(res["ttft"]), float(res["tpot"])
        if row["mode"] != "disagg":
            raise ValueError(f"mode {row['mode']!r} is neither agg nor disagg")
        pb, dbatch = _int(row["prefill_batch_size"]), _int(row["decode_batch_size"])
        if pb is None or dbatch is None:
            raise ValueError("disagg row without prefill_batch_size and decode_batch_size")
        p, d = worker("prefill_", True), worker("decode_", False)
        (pbe, pmodel), (dbe, dmodel) = self.engine(p, db), self.engine(d, db)
        out["peer_config"] = f"disagg prefill tp{p.tp} b{pb} x{row['prefill_num_workers']} decode tp{d.tp} " \
                             f"b{dbatch} x{row['decode_num_workers']} {_formats(pmodel)} model {config_id}"
        pre = pbe.run_static(pmodel, db, runtime(isl=isl, osl=osl, batch_size=pb), "static_ctx",
                             latency_correction_scale=PREFILL_CORRECTION)
        dec = dbe.run_static(dmodel, db, runtime(isl=isl, osl=osl, batch_size=dbatch), "static_gen",
                             latency_correction_scale=DECODE_CORRECTION)
        _check_oom(pre, "prefill")
        _check_oom(dec, "decode")
        return float(pre.get_summary_df().iloc[0]["ttft"]), float(dec.get_summary_df().iloc[0]["tpot"])


def _formats(model: Any) -> str:
    """The weight, KV-cache and attention formats the built model resolved to."""
    c = model.config
    return f"gemm {c.gemm_quant_mode.name} kv {c.kvcache_quant_mode.name} fmha {c.fmha_quant_mode.name}"


def _fields(row: dict[str, str]) -> dict[str, str]:
    """The row under the field names :func:`sunsim.analysis.measurements.concurrency_of` reads."""
    return {"concurrency": "", "source": row["silicon_data_source"], "id": row["id"], "mode": row["mode"],
            "batch_size": row["batch_size"]}


def _check_oom(summary: Any, role: str) -> None:
    if summary.check_oom():
        raise RuntimeError(f"OOM: the {role} worker does not fit in GPU memory (aiconfigurator's memory model)")


def estimate_rows(rows: pd.DataFrame, core: dict[str, Any] | None = None,
                  kv_cache_quant: str | None = None) -> pd.DataFrame:
    """aiconfigurator's estimate of every row (grouped so each database and model is built once)."""
    est = Estimator(core or load_core(), kv_cache_quant)
    order = rows.sort_values(["system", "backend", "model_path", "mode"], kind="stable").index
    results = {i: est.estimate(rows.loc[i].to_dict()) for i in order}
    return pd.DataFrame([results[i] for i in rows.index], columns=list(COLUMNS))


def relative_errors(table: pd.DataFrame, metric: str) -> pd.Series:
    """``|peer / measured - 1|`` of ``metric`` (ttft or tpot) on the rows estimated."""
    peer = pd.to_numeric(table[f"peer_{metric}_ms"], errors="coerce")
    measured = pd.to_numeric(table[f"measured_{metric}_ms"], errors="coerce")
    ok = (table["status"] == "ok") & peer.notna() & (measured > 0)
    return (peer[ok] / measured[ok] - 1.0).abs()


def error_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Median and p90 of the relative errors, overall and per (model, system, backend, mode)."""
    groups: list[tuple[str, pd.DataFrame]] = [("all", table)]
    groups += [(" ".join(k), g) for k, g in table.groupby(["model", "system", "backend", "mode"], sort=True)]
    rows = []
    for name, g in groups:
        entry: dict[str, Any] = {"group": name, "rows": len(g), "estimated": int((g["status"] == "ok").sum())}
        for metric in ("ttft", "tpot"):
            err = relative_errors(g, metric)
            entry[f"{metric}_median"] = float(np.median(err)) if len(err) else float("nan")
            entry[f"{metric}_p90"] = float(np.quantile(err, 0.9)) if len(err) else float("nan")
        rows.append(entry)
    return pd.DataFrame(rows)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (errors in percent)."""
    lines = ["| group | rows | estimated | TTFT median | TTFT p90 | TPOT median | TPOT p90 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary.itertuples(index=False):
        cells = [f"{100 * v:.1f}%" if math.isfinite(v) else "-"
                 for v in (r.ttft_median, r.ttft_p90, r.tpot_median, r.tpot_p90)]
        lines.append(f"| {r.group} | {r.rows} | {r.estimated} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failures(table: pd.DataFrame) -> Iterable[tuple[str, int]]:
    """Each distinct failure (numbers blanked so alike errors group) and how many rows it stopped."""
    bad = table.loc[table["status"] != "ok", "status"].map(lambda s: re.sub(r"\d+(\.\d+)?", "N", s))
    return bad.value_counts().items()


def write_table(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.peer_estimates", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="CSV to write (one row per measurement)")
    p.add_argument("--measurements", type=Path, help="the measurement file (default: the package's own)")
    p.add_argument("--ids", help="only these row ids (comma-separated)")
    p.add_argument("--kv-cache-quant", choices=("fp8", "int8", "bfloat16"),
                   help="KV-cache format for rows with quantised weights (default: the checkpoint's, as "
                        "aiconfigurator's own estimate; the file does not say which format was measured)")
    args = p.parse_args(argv)
    try:
        core = load_core()
        path = args.measurements or package_file()
        rows = read_rows(path, args.ids.split(",") if args.ids else None)
        if rows.empty:
            raise AicImportError(f"{path}: no dense-model rows on {', '.join(SYSTEMS)}")
        table = estimate_rows(rows, core, args.kv_cache_quant)
    except AicImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_table(table, args.out)
    version = importlib.import_module("importlib.metadata").version(PACKAGE)
    print(f"{args.out}: {len(table)} rows, {int((table['status'] == 'ok').sum())} estimated "
          f"({PACKAGE} {version}); error = |peer / measured - 1|")
    print(format_summary(error_summary(table)))
    for status, n in failures(table):
        print(f"not estimated ({n}): {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
