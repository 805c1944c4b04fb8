"""``sunsim validate --measurements FILE.csv``: replay published end-to-end measurements in the simulator.

Each expressible row (:func:`sunsim.analysis.measurements.judge`) becomes a scenario of one task model
with the row's fixed prompt and output lengths, ``concurrency`` closed-loop clients (as the benchmark
ran them), the GPU's shipped profile and the row's prefill/decode worker split; the simulated mean
TTFT and TPOT over the clients' measured window are set beside the measured ones. Relative error is
simulated / measured - 1; groups (model, system, backend, mode) give the median and p90 of its
absolute value. The rows sunsim cannot express are listed with their reason.

Outputs (``--out DIR``, through :mod:`sunsim.output`): ``per_row.csv``, ``groups.csv``,
``not_expressible.csv``. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from sunsim.analysis.measurements import Verdict, judge, read_measurements
from sunsim.analysis.metrics import summarize
from sunsim.costs.model import DECODE_STEP_OVERHEAD_S
from sunsim.errors import InputError
from sunsim.output import Output, claim_outputs, mark, publish, staging, write_table
from sunsim.scenario import scenario_from_dict
from sunsim.sim.variant import load_profile, simulate_variant
from sunsim.workload.stream import build_workload

#: Requests per client in a replay: the first round is warm-up and the last ones drain, which leaves
#: the clients' window about ROUNDS - 2 rounds long (a benchmark sends a few rounds too: vllm's
#: default is 1000 prompts at any concurrency, genai-perf measures stable windows).
ROUNDS = 8
GROUP_KEYS = ["model", "system", "backend", "mode"]
PER_ROW = ["id", *GROUP_KEYS, "precision", "dtype", "gpu", "profile", "isl", "osl", "concurrency",
           "prefill_workers", "decode_workers", "prefill_tp", "decode_tp", "measured_ttft_ms", "simulated_ttft_ms", "ttft_rel_error",
           "measured_tpot_ms", "simulated_tpot_ms", "tpot_rel_error", "window_requests", "overhead_ms", "subset", "note"]
NOT_EXPRESSIBLE = ["id", *GROUP_KEYS, "reason", "detail"]
OUTPUTS = ("per_row.csv", "groups.csv", "not_expressible.csv")


def row_scenario(row: pd.Series, v: Verdict, rounds: int = ROUNDS, overhead_ms: float | None = None) -> dict:
    """The scenario (as a mapping) replaying one expressible row (``overhead_ms``: the engine's per-iteration
    overhead, else the profile's assumed one)."""
    model = {"hf_config": v.model} if v.model and v.model.endswith(".json") else {"preset": v.model}
    isl, osl = int(float(row["isl"])), int(float(row["osl"]))
    c = int(v.concurrency or 1)
    variant = {"name": "sim", "mode": v.mode, "workers": v.decode_workers, "dtype": v.dtype, "tp": v.decode_tp}
    return {
        "name": "replay", "seed": 0,
        "model": {**model, "tasks": ["m"]},
        "hardware": {"gpu": v.gpu, **({} if overhead_ms is None else {"iteration_overhead_ms": overhead_ms})},
        "prefill": {"workers": v.prefill_workers, "max_batch_tokens": max(8192, isl), "tp": v.prefill_tp},
        "workload": {"num_requests": c * rounds, "arrivals": {"kind": "closed", "concurrency": c},
                     "prompt_tokens": {"kind": "fixed", "value": isl},
                     "output_tokens": {"kind": "fixed", "value": osl}},
        "variants": [variant],
    }


def replay_row(row: pd.Series, v: Verdict, rounds: int = ROUNDS, overhead_ms: float | None = None) -> dict:
    """Simulate one row; its per-row record (simulated figures in ms)."""
    sc = scenario_from_dict(row_scenario(row, v, rounds, overhead_ms))
    summary = summarize(simulate_variant(sc, sc.variants[0], build_workload(sc), load_profile(sc)))
    measured_ttft, measured_tpot = float(row["ttft_ms"]), float(row["tpot_ms"])
    ttft = _ms(summary["ttft_s"]["mean"])
    tpot = _ms(summary["tpot_s"]["mean"])
    return {
        "id": row["id"], **{k: row[k] for k in GROUP_KEYS}, "precision": row["gemm_quant"] or row["precision"],
        "dtype": v.dtype, "gpu": v.gpu, "profile": summary["profile"]["name"], "isl": int(float(row["isl"])),
        "osl": int(float(row["osl"])), "concurrency": v.concurrency, "prefill_workers": v.prefill_workers,
        "decode_workers": v.decode_workers, "prefill_tp": v.prefill_tp, "decode_tp": v.decode_tp, "measured_ttft_ms": measured_ttft, "simulated_ttft_ms": ttft,
        "ttft_rel_error": ttft / measured_ttft - 1, "measured_tpot_ms": measured_tpot, "simulated_tpot_ms": tpot,
        "tpot_rel_error": tpot / measured_tpot - 1, "window_requests": summary["window"]["requests"],
        "overhead_ms": DECODE_STEP_OVERHEAD_S * 1e3 if overhead_ms is None else overhead_ms, "note": v.detail,
    }


def _ms(seconds: float | None) -> float:
    return seconds * 1e3 if seconds is not None else math.nan


def group_errors(per_row: pd.DataFrame) -> pd.DataFrame:
    """Per (model, system, backend, mode) and subset (the rows a constant was fitted on, or held out): rows,
    median and p90 absolute relative error of TTFT and TPOT."""
    keys = [*GROUP_KEYS, "subset"]
    cols = [*keys, "rows", "ttft_median_abs_rel_error", "ttft_p90_abs_rel_error",
            "tpot_median_abs_rel_error", "tpot_p90_abs_rel_error"]
    rows = []
    for key, part in per_row.groupby(keys, sort=True):
        ttft, tpot = part["ttft_rel_error"].abs().dropna(), part["tpot_rel_error"].abs().dropna()
        rows.append([*key, len(part), *_med_p90(ttft), *_med_p90(tpot)])
    return pd.DataFrame(rows, columns=cols)


def _med_p90(x: pd.Series) -> tuple[float, float]:
    return (float(np.median(x)), float(np.percentile(x, 90))) if len(x) else (math.nan, math.nan)


def parse_fit_on(text: str | None) -> dict[str, str]:
    """``--fit-on``: ``field=value[,field=value...]`` over the measurement fields (model, system, backend, mode, ...)."""
    from sunsim.analysis.measurements import FIELDS

    out: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        field, sep, value = item.partition("=")
        if not sep or field not in FIELDS or not value:
            raise InputError(f"--fit-on {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(FIELDS)}")
        out[field] = value
    return out


def fit_overhead(per_row: pd.DataFrame, subset: pd.Series) -> float:
    """The per-iteration engine overhead (ms) that minimises the median absolute TPOT error over ``subset``.

    Linearised around the replay: a closed-loop replay runs one iteration per output token, so its TPOT moves
    one for one with the overhead; the value found is then checked by replaying every row at it."""
    part = per_row[subset]
    if not len(part):
        raise InputError("--fit-on: no replayed row matches; check the values against the file's columns")
    t0 = part["simulated_tpot_ms"].to_numpy() - part["overhead_ms"].to_numpy()
    m = part["measured_tpot_ms"].to_numpy()
    grid = np.round(np.arange(0.0, 20.0 + 1e-9, 0.01), 2)
    errors = [float(np.median(np.abs((t0 + g) / m - 1))) for g in grid]
    return float(grid[int(np.argmin(errors))])


def _replay_all(df: pd.DataFrame, verdicts: list[Verdict], todo: list[int], rounds: int, overhead_ms: float | None,
                progress: Callable[[int, int, str], None] | None, what: str) -> tuple[list[dict], list[tuple]]:
    rows, refused = [], []
    for k, i in enumerate(todo):
        row = df.iloc[i]
        if progress:
            progress(k, len(todo), f"{what}{row['id'] or f'row {i + 1}'}")
        try:
            rows.append(replay_row(row, verdicts[i], rounds, overhead_ms))
        except InputError as exc:
            refused.append((i, "scenario refused", str(exc)))
    if progress:
        progress(len(todo), len(todo), "")
    return rows, refused


def validate_measurements(path: Path, columns: dict[str, str] | None = None, limit: int | None = None,
                          model_configs: dict[str, str] | None = None, rounds: int = ROUNDS,
                          progress: Callable[[int, int, str], None] | None = None,
                          overhead_ms: float | None = None, fit_on: dict[str, str] | None = None,
                          ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(per_row, groups, not_expressible) for a measurements file; ``limit``: replay the first K expressible rows.

    ``overhead_ms`` replays at that per-iteration engine overhead. ``fit_on`` (field -> value) fits the overhead
    on the rows matching it (:func:`fit_overhead`), then replays every row at the fitted value; the groups then
    state the fitted rows and the held-out ones apart, the held-out error being the one that tests the fit.
    A row whose scenario sunsim refuses (e.g. its lengths leave no KV memory) joins the inexpressible
    ones, reason "scenario refused", with the refusal as its detail."""
    df = read_measurements(Path(path), columns)
    verdicts = [judge(r, model_configs) for _, r in df.iterrows()]
    todo = [i for i, v in enumerate(verdicts) if v.reason is None]
    if limit is not None:
        todo = todo[:limit]
    rows, refused = _replay_all(df, verdicts, todo, rounds, overhead_ms, progress, "")
    fit_ids: set[str] = set()
    if fit_on:
        first = pd.DataFrame(rows, columns=PER_ROW)
        ids = {str(df.iloc[i]["id"]) for i in todo if all(str(df.iloc[i][f]) == v for f, v in fit_on.items())}
        in_fit = first["id"].astype(str).isin(ids)
        fitted = fit_overhead(first, in_fit)
        fit_ids = set(first["id"].astype(str)[in_fit])
        rows, refused = _replay_all(df, verdicts, todo, rounds, fitted, progress, f"at {fitted:g} ms: ")
    skipped = [(i, v.reason, v.detail) for i, v in enumerate(verdicts) if v.reason is not None] + refused
    not_expr = pd.DataFrame(
        [[df.iloc[i]["id"], *(df.iloc[i][k] for k in GROUP_KEYS), reason, detail]
         for i, reason, detail in sorted(skipped, key=lambda t: t[0])], columns=NOT_EXPRESSIBLE)
    per_row = pd.DataFrame(rows, columns=PER_ROW)
    per_row["subset"] = np.where(per_row["id"].astype(str).isin(fit_ids), "fit", "held out" if fit_on else "all")
    return per_row, group_errors(per_row), not_expr


def reason_counts(not_expr: pd.DataFrame) -> pd.DataFrame:
    """reason -> rows, most frequent first."""
    counts = not_expr["reason"].value_counts()
    return pd.DataFrame({"reason": counts.index, "rows": counts.to_numpy()})


def claim_validate_output(out: Path, measurements: Path) -> None:
    """Check, before any replay, that ``--out`` may be written (the output rule) and holds no input."""
    claim_outputs("validate", [Output(out, "--out")], [(measurements, "--measurements file")])


def write_validation(out: Path, per_row: pd.DataFrame, groups: pd.DataFrame, not_expr: pd.DataFrame) -> list[Path]:
    """Publish the three tables into ``out`` (staged, then moved into place; the folder marked)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out: cannot write to {str(out)!r} ({exc.strerror})") from None
    with staging(out) as stage:
        for name, table in zip(OUTPUTS, (per_row, groups, not_expr)):
            write_table(table, stage / name)
        mark(stage, {"command": "validate", "outputs": list(OUTPUTS)})
        return [p for p in publish(stage, out) if p.name in OUTPUTS]
