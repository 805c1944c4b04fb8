"""Run a scenario: every variant on the same request stream, then write the results.

Everything is checked before the first variant runs and files are written to a staging
folder that is moved into place only at the end, so a failure leaves no half-written results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
from sunsim.workload.stream import RequestStream, build_workload


@dataclass
class ScenarioRun:
    scenario: Scenario
    stream: RequestStream
    results: list[VariantResult]
    summaries: list[dict]
    tables: list[pd.DataFrame]

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
