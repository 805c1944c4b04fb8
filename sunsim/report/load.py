"""Loading what a report is drawn from: run folders, sweep tables and plan tables, recognised and checked.

Every problem with an input surfaces as an InputError (a ValueError) naming the file, before anything
is drawn: a file cut short or damaged says "damaged or truncated" rather than failing half-way.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sunsim.analysis.schema import NUMBER_COLUMNS
from sunsim.errors import InputError
from sunsim.output import MARKER
from sunsim.report.style import METRICS, profile_label
from sunsim.scenario import read_yaml_mapping

DAMAGED = "damaged or truncated"


# --------------------------------------------------------------------------------------
# Run folders
@dataclass
class RunData:
    """What a ``sunsim run`` folder holds, loaded."""

    path: Path
    comparison: pd.DataFrame
    summaries: dict[str, dict] = field(default_factory=dict)
    requests: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: Where a variant's per-request table should be and is not; its latency curve cannot be drawn.
    missing_requests: list[Path] = field(default_factory=list)
    timeline: pd.DataFrame | None = None  # tidy, with a ``variant`` column
    scenario: dict = field(default_factory=dict)

    @property
    def slo(self) -> tuple[float | None, float | None]:
        slo = self.scenario.get("slo") or next(iter(self.summaries.values()), {}).get("slo") or {}
        if not isinstance(slo, dict):
            slo = {}  # a hand-edited scenario.yaml: no SLO lines rather than a crash
        return slo.get("ttft_s"), slo.get("tpot_s")

    @property
    def profile(self) -> str:
        """Profile name, kind and device (summary.json knows the device; the table does not)."""
        names = []
        for s in self.summaries.values():
            p = s.get("profile") or {}
            names.append(f"{p.get('name')} ({p.get('kind')}, {p.get('device')})")
        names = list(dict.fromkeys(names))
        return ", ".join(names) if names else profile_label(self.comparison)


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet table; a clear ValueError when it cannot be read."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except ImportError as exc:
        raise InputError(f"{path}: reading Parquet needs pyarrow ({exc})") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read table ({exc})") from None


def require_complete(path: Path) -> None:
    """A CSV that sunsim wrote ends with a newline; one that does not was cut mid-line."""
    if path.suffix == ".csv" and path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                raise InputError(f"{path}: {DAMAGED}: the last line is incomplete (no final newline)")


def require_numbers(df: pd.DataFrame, cols, path: Path) -> None:
    """Columns that must hold numbers (or be empty): text there would be scaled or plotted as if it were one."""
    for col in cols:
        if col in df.columns and not pd.api.types.is_numeric_dtype(df[col]) and df[col].notna().any():
            raise InputError(f"{path}: column {col} holds values that are not numbers ({DAMAGED}?)")


def _require_rectangular(path: Path) -> None:
    """Every row has the header's fields: pandas would fill a short row with blanks, and a header short of a
    column would silently shift every value into its neighbour's column (a small table: read twice)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            width = len(next(rows, []))
            for line, row in enumerate(rows, start=2):
                if row and len(row) != width:  # (blank lines are skipped, as pandas does)
                    raise InputError(f"{path}: {DAMAGED}: line {line} has {len(row)} fields, the header {width}")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read table ({exc})") from None


def read_json_object(path: Path, what: str) -> dict:
    """A JSON file that must hold an object (a summary.json); anything else is damaged or truncated."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        raise InputError(f"{path}: {DAMAGED}: not a valid JSON {what} ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {DAMAGED}: a {what} is a JSON object, this holds a {type(data).__name__}")
    return data


#: Parts of a summary.json that a report reads, each a JSON object.
SUMMARY_OBJECTS = ("requests", "profile", "slo", "throughput")


def read_summary(path: Path) -> dict:
    summary = read_json_object(path, "summary")
    for key in SUMMARY_OBJECTS:
        if key in summary and not isinstance(summary[key], dict):
            raise InputError(f"{path}: {DAMAGED}: {key!r} should be a JSON object, not a {type(summary[key]).__name__}")
    return summary


def _read_comparison(path: Path) -> pd.DataFrame:
    """A run's comparison table, checked whole: complete lines, every row as wide as the header, the
    required columns, numbers where the schema has numbers, and a row per variant the run wrote."""
    require_complete(path)
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: {DAMAGED}: an empty file")
    _require_rectangular(path)
    comp = read_table(path)
    require_columns(comp, {"variant", "tokens_per_s_per_gpu"}, path, "a run's comparison table")
    if comp.empty:
        raise InputError(f"{path}: {DAMAGED}: a header and no rows")
    if comp["variant"].isna().any():
        raise InputError(f"{path}: {DAMAGED}: a row without a variant name")
    require_numbers(comp, NUMBER_COLUMNS, path)
    written = _marker_variants(path.parent)
    lost = [v for v in written if v not in set(comp["variant"].astype(str))]
    if lost:
        raise InputError(f"{path}: {DAMAGED}: no row for variant(s) {', '.join(lost)}, which the run wrote")
    return comp


def _marker_variants(run: Path) -> list[str]:
    """The variants a run folder's marker says the run wrote (none when the marker is absent or unreadable)."""
    try:
        variants = json.loads((run / MARKER).read_text(encoding="utf-8")).get("variants")
    except (OSError, ValueError, AttributeError, RecursionError):
        return []
    return [v for v in variants if isinstance(v, str)] if isinstance(variants, list) else []


def _variant_file(vdir: Path, stem: str) -> Path | None:
    for suffix in (".csv", ".parquet"):
        if (vdir / f"{stem}{suffix}").is_file():
            return vdir / f"{stem}{suffix}"
    return None


def load_run(path: Path) -> RunData:
    """Load a run folder (``comparison.csv`` plus per-variant folders). Missing per-variant files are
    skipped (missing request tables are listed in ``missing_requests``); a truncated or damaged one is an
    InputError naming it."""
    path = Path(path)
    comp = _read_comparison(path / "comparison.csv")
    run = RunData(path, comp)
    if (path / "scenario.yaml").is_file():
        run.scenario = read_yaml_mapping(path / "scenario.yaml", "run scenario")
    timelines = []
    for v in comp["variant"].astype(str):
        vdir = path / v
        if (vdir / "summary.json").is_file():
            run.summaries[v] = read_summary(vdir / "summary.json")
        if (req := _variant_file(vdir, "requests")) is not None:
            run.requests[v] = read_requests(req, run.summaries.get(v))
        else:
            run.missing_requests.append(vdir / "requests.csv")
        if (tl := _variant_file(vdir, "timeline")) is not None:
            timelines.append(read_table(tl).assign(variant=v))
    if timelines:
        run.timeline = pd.concat(timelines, ignore_index=True)
    return run


#: Columns the latency figures read from a per-request table.
REQUEST_COLUMNS = ("output_tokens", "ttft_s", "tpot_s")


def read_requests(path: Path, summary: dict | None = None) -> pd.DataFrame:
    """A variant's per-request table, checked whole: a file cut short (no final newline, fewer rows than
    the variant's summary.json counts, text in a number column) would silently bend its latency curve."""
    require_complete(path)
    df = read_table(path)
    require_columns(df, set(REQUEST_COLUMNS), path, "a per-request table")
    for col in REQUEST_COLUMNS:
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise InputError(f"{path}: column {col} holds values that are not numbers ({DAMAGED}?)")
    arrived = ((summary or {}).get("requests") or {}).get("arrived")
    if arrived is not None and len(df) != arrived:
        raise InputError(f"{path}: {DAMAGED}: {len(df)} rows, but summary.json counts {arrived} requests")
    return df


def require_columns(df: pd.DataFrame, cols: set[str], path: Path, what: str) -> None:
    missing = sorted(cols - set(df.columns))
    if missing:
        raise InputError(f"{path}: not {what}: missing column(s) {', '.join(missing)}")


def run_name(run: RunData) -> str:
    return str(run.scenario.get("name") or run.path.name)


# --------------------------------------------------------------------------------------
# Recognising inputs
@dataclass
class SweepData:
    path: Path
    table: pd.DataFrame  # all rows
    ok: pd.DataFrame  # rows with status == "ok"


@dataclass
class PlanData:
    path: Path  # the plan.csv
    probes: pd.DataFrame
    summary: pd.DataFrame | None = None
    scenario: dict = field(default_factory=dict)

    @property
    def target(self) -> float | None:
        return (self.scenario.get("slo") or {}).get("attainment")

    def needed(self) -> pd.DataFrame:
        """Per variant: the fewest decode GPUs that met the SLO (from the summary when there is one)."""
        if self.summary is not None and "min_decode_gpus" in self.summary.columns:
            return self.summary
        met = self.probes[self.probes["meets_slo"].astype(str).str.lower().isin(["true", "1", "1.0"])]
        need = met.groupby("variant", sort=False)["decode_gpus"].min()
        out = pd.DataFrame({"variant": list(dict.fromkeys(self.probes["variant"]))})
        out["min_decode_gpus"] = out["variant"].map(need)
        if "profile" in self.probes.columns:
            out["profile"] = out["variant"].map(self.probes.groupby("variant")["profile"].first())
        return out


SWEEP_NEEDS = {"point", "variant"}
PLAN_NEEDS = {"variant", "rate", "decode_gpus", "slo_attainment", "meets_slo"}
_EXPECTED = ("a run folder (with comparison.csv), a sweep table (.csv/.parquet with columns point, variant and "
             "metrics such as tokens_per_s_per_gpu), a plan table (plan.csv) or a folder holding some of them")


def _load_table_source(path: Path) -> SweepData | PlanData:
    """A table file is a sweep table or a plan table; anything else is rejected with what is missing."""
    if path.suffix not in (".csv", ".parquet"):
        raise InputError(f"{path}: not a table (.csv or .parquet); expected {_EXPECTED}")
    if path.name == "comparison.csv":
        raise InputError(f"{path}: this is a run's comparison table; pass its folder {path.parent} instead")
    df = read_table(path)
    if PLAN_NEEDS <= set(df.columns):
        return _load_plan(path, df)
    require_columns(df, SWEEP_NEEDS, path, "a sweep table (or a plan table)")
    measured = [m for m in METRICS if m in df.columns]
    if not measured:
        raise InputError(f"{path}: not a sweep table: no metric columns (expected some of {', '.join(METRICS)})")
    require_numbers(df, measured, path)
    ok = df[df["status"].astype(str) == "ok"] if "status" in df.columns else df
    return SweepData(path, df, ok.reset_index(drop=True))


def _load_plan(path: Path, probes: pd.DataFrame) -> PlanData:
    require_numbers(probes, PLAN_NEEDS - {"variant", "meets_slo"}, path)
    plan = PlanData(path, probes)
    summary = path.with_name("plan_summary.csv")
    if summary.is_file():
        plan.summary = read_table(summary)
    if (sc := path.with_name("scenario.yaml")).is_file():
        plan.scenario = read_yaml_mapping(sc, "plan scenario")
    return plan


def _scan_folder(root: Path, max_depth: int = 3) -> list[Path | SweepData | PlanData]:
    """Run folders, plan folders and sweep tables under ``root`` (report outputs and hidden folders skipped)."""
    found: list[Path | SweepData | PlanData] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # depth-bounded, so links cannot loop
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (here / d / "report.md").exists()
                             and depth < max_depth)
        if "comparison.csv" in filenames:
            found.append(here)  # loaded later, only if within MAX_RUNS
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            if name.endswith((".csv", ".parquet")) and name != "plan_summary.csv":
                try:
                    found.append(_load_table_source(here / name))
                except ValueError:
                    continue  # other tables in the folder are not ours to judge
    return found


def load_sources(source: Path) -> list[RunData | SweepData | PlanData | Path]:
    """Everything a report can be drawn from; ValueError naming the path when there is nothing."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder; expected {_EXPECTED}")
    if source.is_file():
        return [_load_table_source(source)]
    if (source / "comparison.csv").is_file():
        return [load_run(source)]
    found = _scan_folder(source)
    if not found:
        raise InputError(f"{source}: nothing to report: found no run folder, sweep table or plan table; "
                         f"expected {_EXPECTED}")
    return found
