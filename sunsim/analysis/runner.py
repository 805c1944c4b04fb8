"""Run a scenario: every variant on the same request stream, then write the results.

Everything is checked before the first variant runs and files are written to a staging
folder that is moved into place only at the end, so a failure leaves no half-written results.
A streaming run (:func:`stream_scenario`) writes each variant's per-request rows into that staging
folder as requests finish, so its memory follows the requests in flight, not the run's total.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import yaml

from sunsim.analysis.metrics import comparison_row, request_table, summarize
from sunsim.analysis.vllm_metrics import DEFAULT_PERCENTILES
from sunsim.errors import InputError
from sunsim.names import check_name
from sunsim.output import MARKER, check_replaceable, mark, publish, staging, write_json, write_table, write_text
from sunsim.scenario import Scenario, ScenarioError, VariantSpec
from sunsim.sim.variant import VariantResult, check_variant, load_profile, simulate_variant
from sunsim.workload.stream import RequestSource, StreamedRequests, build_workload, estimate_requests


@dataclass
class ScenarioRun:
    scenario: Scenario
    stream: RequestSource
    results: list[VariantResult]
    summaries: list[dict]
    tables: list[pd.DataFrame]  # per variant (empty for a streaming run: its tables are its files)

    @property
    def comparison(self) -> pd.DataFrame:
        return pd.DataFrame([comparison_row(s) for s in self.summaries])


def select_variants(sc: Scenario, names: list[str] | None) -> list[VariantSpec]:
    if not names:
        return list(sc.variants)
    by_name = {v.name: v for v in sc.variants}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ScenarioError(f"--variant: unknown {unknown}; the scenario's variants are {list(by_name)}")
    return [by_name[n] for n in names]


def run_scenario(sc: Scenario, variants: list[str] | None = None, keep_timeline: bool = False,
                 on_variant: Callable[[VariantSpec, int, int], None] | None = None,
                 percentiles: tuple[float, ...] = DEFAULT_PERCENTILES, executor: str = "inline",
                 workers: int | None = None, address: str | None = None) -> ScenarioRun:
    """Simulate the chosen variants of a scenario (in memory; see :func:`write_run`); ``percentiles`` are the
    ``p{q}_*_ms`` keys of each summary's ``vllm`` block.

    A scenario with ``cells``, or any ``executor`` but ``inline``, runs each (cell, variant) as a task there
    (:mod:`sunsim.analysis.cells`; ``workers`` local processes, a Ray ``address``) and merges the cells."""
    chosen = select_variants(sc, variants)
    stream = build_workload(sc)
    if sc.cells is not None or executor != "inline":
        from sunsim.analysis.cells import run_cells

        results = run_cells(sc, chosen, stream, keep_timeline, executor, workers, address)
        tables = [request_table(res) for res in results]
        return ScenarioRun(sc, stream, results, [summarize(res, df, percentiles) for res, df in zip(results, tables)],
                           tables)
    profile = load_profile(sc)
    for v in chosen:  # fail before any work if a layout is impossible
        check_variant(sc, v, stream, profile)
    results, summaries, tables = [], [], []
    for i, v in enumerate(chosen):
        if on_variant:
            on_variant(v, i, len(chosen))
        res = simulate_variant(sc, v, stream, profile, keep_timeline=keep_timeline)
        df = request_table(res)
        results.append(res)
        tables.append(df)
        summaries.append(summarize(res, df, percentiles))
    return ScenarioRun(sc, stream, results, summaries, tables)


def worker_timeline(res: VariantResult) -> pd.DataFrame:
    """Per decode worker: batch size and KV occupancy at every batch change."""
    rows = [(w.wid, res.decode_pool_of[w.wid], t, batch, kv / (w.capacity_blocks * w.block))
            for w in res.decode_stats for t, batch, kv in (w.timeline or [])]
    return pd.DataFrame(rows, columns=["worker", "pool", "time_s", "batch", "kv_fraction"])


#: Files a run writes directly into its output folder (no variant may take these names).
RUN_FILES = ("comparison.csv", "scenario.yaml")


def check_run_output(out_dir: Path, variant_names: list[str], field: str = "--out") -> None:
    """Refuse, before simulating, an output folder the run could not write or would have to clobber.

    Variant names become folder names: they are checked again here (whatever validated them before).
    """
    for name in variant_names:
        check_name(name, "variants.name")
        if name in RUN_FILES:
            raise InputError(f"variants.name: {name!r} is taken by the run's own {name}; choose another name")
    check_replaceable(out_dir, variant_names, RUN_FILES, field)


def write_run(run: ScenarioRun, out_dir: Path, fmt: str = "csv") -> list[Path]:
    """Write per-variant ``requests`` tables and ``summary.json`` plus ``comparison.csv``.

    Everything is written into a staging folder inside ``out_dir`` and then moved into place. Each
    variant folder (and ``out_dir``) gets a marker; a variant folder already in ``out_dir`` is
    replaced only if it carries that marker, i.e. if sunsim wrote it.
    """
    out_dir = Path(out_dir)
    names = [res.variant.name for res in run.results]
    check_run_output(out_dir, names)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out: cannot write to {str(out_dir)!r} ({exc.strerror})") from None
    info = {"command": "run", "scenario": run.scenario.name}
    with staging(out_dir) as stage:
        for res, summary, df in zip(run.results, run.summaries, run.tables):
            vdir = stage / res.variant.name
            vdir.mkdir()
            write_table(df, vdir / f"requests.{'parquet' if fmt == 'parquet' else 'csv'}")
            if any(w.timeline for w in res.decode_stats):
                write_table(worker_timeline(res), vdir / "timeline.csv")
            write_json(vdir / "summary.json", summary)
            mark(vdir, {**info, "variant": res.variant.name})
        write_table(run.comparison, stage / "comparison.csv", float_format="%.6g")
        write_text(stage / "scenario.yaml",
                   yaml.safe_dump(run.scenario.model_dump(mode="json"), sort_keys=False))
        mark(stage, {**info, "variants": names})
        return [p for p in publish(stage, out_dir) if p.name != MARKER]


def stream_scenario(sc: Scenario, out_dir: Path, variants: list[str] | None = None,
                    on_variant: Callable[[VariantSpec, int, int], None] | None = None,
                    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES) -> tuple[ScenarioRun, list[Path]]:
    """Simulate the chosen variants with streaming memory and write the results to ``out_dir``.

    The requests are drawn block by block and each finished request's row goes straight to the variant's
    ``requests.parquet`` (rows in the order requests finished; ``request_id`` gives the stream's order), so
    the run holds only the requests in flight. Summaries are exact: they read the columns they need back
    (:mod:`sunsim.analysis.record_file`). The same files as :func:`write_run`'s, without ``timeline.csv``."""
    from sunsim.analysis.record_file import ParquetRecordSink

    chosen = select_variants(sc, variants)
    out_dir = Path(out_dir)
    names = [v.name for v in chosen]
    check_run_output(out_dir, names)
    stream_disk(sc, len(chosen), out_dir)
    source = StreamedRequests(sc)
    profile = load_profile(sc)
    for v in chosen:  # fail before any work if a layout is impossible
        check_variant(sc, v, source, profile)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out: cannot write to {str(out_dir)!r} ({exc.strerror})") from None
    info = {"command": "run", "scenario": sc.name}
    results, summaries = [], []
    with staging(out_dir) as stage:
        for i, v in enumerate(chosen):
            if on_variant:
                on_variant(v, i, len(chosen))
            vdir = stage / v.name
            vdir.mkdir()
            sink = ParquetRecordSink(vdir / "requests.parquet", source.models)
            res = simulate_variant(sc, v, source, profile, sink=sink)
            sink.close()
            res = replace(res, records_file=str(sink.path))
            summaries.append(summarize(res, percentiles=percentiles))
            results.append(res)
            write_json(vdir / "summary.json", summaries[-1])
            mark(vdir, {**info, "variant": v.name})
        run = ScenarioRun(sc, source, results, summaries, [])
        write_table(run.comparison, stage / "comparison.csv", float_format="%.6g")
        write_text(stage / "scenario.yaml", yaml.safe_dump(sc.model_dump(mode="json"), sort_keys=False))
        mark(stage, {**info, "variants": names})
        written = [p for p in publish(stage, out_dir) if p.name != MARKER]
    # the summaries read their rows from the staging folder; from here on they are where they were published
    run.results = [replace(r, records_file=str(out_dir / r.variant.name / "requests.parquet")) for r in results]
    return run, written


def stream_disk(sc: Scenario, variants: int, out_dir: Path) -> str:
    """A streaming run's request rows on disk, estimated: refused when they would not fit the free space under
    ``out_dir``; else the estimate, in words."""
    import shutil

    from sunsim.analysis.record_file import ROW_BYTES

    n, why = estimate_requests(sc)
    need = n * ROW_BYTES * variants
    where = next(p for p in (out_dir.resolve(), *out_dir.resolve().parents) if p.exists())
    free = shutil.disk_usage(where).free
    words = (f"about {n:,} requests ({why}) x {variants} variant(s): ~{need / 1e9:.2f} GB of request rows, "
             f"{free / 1e9:.1f} GB free under {where}")
    if need > free:
        raise InputError(f"--out: {words}; free space there, or lower workload.duration_s / workload.num_requests")
    return words
