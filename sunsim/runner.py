"""Run a scenario: every variant on the same request stream, then write the results.

Everything is checked before the first variant runs and files are written to a staging
folder that is moved into place only at the end, so a failure leaves no half-written results.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from .metrics import comparison_row, request_table, summarize
from .scenario import Scenario, ScenarioError, VariantSpec
from .simulation import VariantResult, check_variant, load_profile, simulate_variant
from .workload import RequestStream, build_workload


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
                 on_variant: Callable[[VariantSpec, int, int], None] | None = None) -> ScenarioRun:
    """Simulate the chosen variants of a scenario (in memory; see :func:`write_run`)."""
    chosen = select_variants(sc, variants)
    stream = build_workload(sc)
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
        summaries.append(summarize(res, df))
    return ScenarioRun(sc, stream, results, summaries, tables)


def worker_timeline(res: VariantResult) -> pd.DataFrame:
    """Per decode worker: batch size and KV occupancy at every batch change."""
    rows = [(w.wid, res.decode_pool_of[w.wid], t, batch, kv / (w.capacity_blocks * w.block))
            for w in res.decode_workers for t, batch, kv in (w.timeline or [])]
    return pd.DataFrame(rows, columns=["worker", "pool", "time_s", "batch", "kv_fraction"])


def _write_table(df: pd.DataFrame, path: Path, fmt: str) -> Path:
    if fmt == "parquet":
        path = path.with_suffix(".parquet")
        df.to_parquet(path, index=False)
    else:
        path = path.with_suffix(".csv")
        df.to_csv(path, index=False, float_format="%.9g")
    return path


def write_run(run: ScenarioRun, out_dir: Path, fmt: str = "csv") -> list[Path]:
    """Write per-variant ``requests`` tables and ``summary.json`` plus ``comparison.csv``."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    except OSError as exc:
        raise ScenarioError(f"--out: cannot write to {str(out_dir)!r} ({exc.strerror})") from None
    try:
        for res, summary, df in zip(run.results, run.summaries, run.tables):
            vdir = stage / res.variant.name
            vdir.mkdir()
            _write_table(df, vdir / "requests", fmt)
            if any(w.timeline for w in res.decode_workers):
                worker_timeline(res).to_csv(vdir / "timeline.csv", index=False, float_format="%.9g")
            (vdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        run.comparison.to_csv(stage / "comparison.csv", index=False, float_format="%.6g")
        (stage / "scenario.yaml").write_text(yaml.safe_dump(run.scenario.model_dump(mode="json"), sort_keys=False))
        written = []
        for item in sorted(stage.iterdir()):
            target = out_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(stage, ignore_errors=True)
