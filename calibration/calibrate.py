"""``sunsim calibrate``: time the kernels of one model shape and write a fitted sunsim profile.

Output directory layout::

    timings.csv     raw timings, one row per grid point (resume log)
    metadata.json   device facts, kernels, grid, skipped formats and points
    profile.json    sunsim-profile/1: fitted tables, fit errors, device figures
    fit.png         measured vs fitted

Every file is written atomically; inputs are checked before anything is created.

With ``--time-budget`` (or ``--per-format``) every weight format is calibrated into its own
directory ``<out>-<fmt>`` (built as a hidden ``.partial`` directory and renamed when the format
is complete, so a format cut off by the budget or a crash leaves no half profile), optionally
validated while time is left, and the finished formats are merged into ``<out>``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sunsim.costs.architecture import ModelShape
from sunsim.costs.model import PROFILE_FORMAT
from sunsim.errors import InputError
from sunsim.output import Output, claim_outputs, mark, marker_command
from sunsim.output import write_json as write_json_atomic

from .errors import BudgetExceeded, CalibrationError
from .formats import check_format
from .grid import Grid, preset_grid, trim_prefill

CSV, METADATA, PROFILE, PLOT = "timings.csv", "metadata.json", "profile.json", "fit.png"


@dataclass
class Request:
    shape: ModelShape
    dtypes: list[str]
    device: str = "cpu"
    out: Path = Path("calibration/profiles/default")
    layers: int | None = None
    grid: Grid | str = "quick"
    repeats: int = 5
    warmup: int = 2
    min_sample_s: float = 0.0
    graphs: bool = True
    max_prefill_tokens: int | None = None
    #: CPU threads; 1 by default so a neighbour's process on a small shared machine cannot stall
    #: a parallel region (a 2-thread kernel waits whole scheduler ticks for a preempted worker).
    threads: int | None = None
    name: str | None = None
    extra: dict = field(default_factory=dict)
    #: seconds for the whole run (calibration and validation of every format); None: no limit
    time_budget: float | None = None
    #: one profile directory per format (implied by ``time_budget``)
    per_format: bool = False
    #: fuse the elementwise work with torch.compile; None: on a GPU yes, on a CPU no
    fuse: bool | None = None
    #: decode attention backend: auto, triton-paged, sdpa-masked or sdpa-loop
    attention: str = "auto"
    #: validate each finished format (per-format mode) with this many requests; 0: do not
    validate_requests: int = 0


def _check_out(out: Path, shape: ModelShape, device_type: str, formats: list[str] | None = None) -> None:
    """Refuse an output folder the project's one output rule refuses (one that is not new, empty or an
    earlier calibration's; ``sunsim.output.claim_outputs``), or one holding another model's or device's
    profile. With ``formats`` (per-format mode), each format's own folder is claimed too."""
    folders = [out] + [format_dir(out, f) for f in formats or []]
    try:
        claim_outputs("calibrate", [Output(f, "out") for f in folders])
    except InputError as exc:
        raise CalibrationError(str(exc)) from None
    meta = out / METADATA
    if meta.exists():
        try:
            old = json.loads(meta.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"out: {str(meta)!r} is corrupt ({exc}); remove it to start afresh") from None
        if old.get("model") != shape.as_dict() or old.get("device", {}).get("type") != device_type:
            raise CalibrationError(
                f"out: {str(out)!r} holds timings of model {old.get('model', {}).get('name')!r} on "
                f"{old.get('device', {}).get('type')!r}; choose another --out to calibrate {shape.name!r}")


def check_request(req: Request) -> tuple[list[str], int]:
    """Validate everything that does not need torch; returns the formats and the layer count to build."""
    if not req.dtypes:
        raise CalibrationError("dtypes: give at least one weight format")
    dtypes = [check_format(d) for d in dict.fromkeys(req.dtypes)]
    device_type = "cuda" if req.device.startswith("cuda") else req.device
    if device_type not in ("cpu", "cuda"):
        raise CalibrationError(f"device: must be 'cpu' or 'cuda', got {req.device!r}")
    layers = req.layers if req.layers is not None else min(req.shape.layers, 2 if device_type == "cpu" else 4)
    if not 1 <= layers <= req.shape.layers:
        raise CalibrationError(f"layers: must be between 1 and the model's {req.shape.layers}, got {req.layers}")
    if req.threads is not None and req.threads < 1:
        raise CalibrationError(f"threads: must be at least 1, got {req.threads}")
    if req.shape.head_dim % 2:
        raise CalibrationError(f"model.head_dim: must be even (rotary embedding rotates halves), got {req.shape.head_dim}")
    if req.repeats < 1:
        raise CalibrationError(f"repeats: must be at least 1, got {req.repeats}")
    if req.time_budget is not None and req.time_budget <= 0:
        raise CalibrationError(f"time_budget: must be a positive number of seconds, got {req.time_budget}")
    backends = ("triton-paged", "sdpa-masked", "sdpa-loop")  # calibration.kvcache.BACKENDS, without torch
    if req.attention not in ("auto", *backends):
        raise CalibrationError(f"attention: must be auto or one of {', '.join(backends)}, got {req.attention!r}")
    if isinstance(req.grid, str):
        trim_prefill(preset_grid(device_type, req.grid), req.max_prefill_tokens)
    _check_out(Path(req.out), req.shape, device_type, dtypes if req.per_format else None)
    return dtypes, layers


def software_versions() -> dict:
    """torch, triton and gemlite versions (None where absent): every kernel's provenance."""
    import torch

    from .formats import gemlite_config_record, gemlite_version

    try:
        import triton

        triton_v = triton.__version__
    except Exception:  # noqa: BLE001 - not installed or broken: no triton kernel ran
        triton_v = None
    return {"torch": torch.__version__, "triton": triton_v, "gemlite": gemlite_version(),
            "gemlite_config": gemlite_config_record(), "python": sys.version.split()[0]}


class LineProgress:
    """Plain progress lines (for logs and non-terminals): one line every ~5% of the points."""

    def start(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.monotonic()
        log(f"{total} points to time")

    def advance(self, label: str) -> None:
        self.done += 1
        step = max(1, self.total // 20)
        if self.done % step == 0 or self.done == self.total:
            log(f"{self.done}/{self.total} ({time.monotonic() - self.t0:.0f} s) {label}")

    def stop(self) -> None:
        pass


class RichProgress:
    """A rich progress bar fed by the grid runner."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description:<36}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), transient=False)
        self.task = None

    def start(self, total: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("calibrating", total=total)

    def advance(self, label: str) -> None:
        self.bar.update(self.task, advance=1, description=label)

    def stop(self) -> None:
        self.bar.stop()


def calibrate(req: Request, progress: bool = True, timer=None) -> dict:
    """Measure, fit and write the profile; returns it. Resumes from an existing ``timings.csv``.

    ``timer`` replaces the real :class:`~calibration.timing.Timer` (tests inject a synthetic one).
    """
    check_request(req)
    check_device(req)
    if req.time_budget is not None or req.per_format:
        return calibrate_per_format(req, progress, timer)
    return _calibrate_dir(req, Path(req.out), progress, timer, None)


def check_device(req: Request) -> None:
    """The checks that need torch, before any output exists: the device is there (no CUDA is said now, not
    blamed on the time budget after every format failed alike), the shape fits its memory, and a forced
    attention backend passes its start-up check (each format would otherwise be skipped for it)."""
    from .device import resolve_device
    from .kvcache import pick_backend
    from .memory import check_memory

    dtypes, layers = check_request(req)
    device = resolve_device(req.device)
    grid = req.grid if isinstance(req.grid, Grid) else preset_grid(device.type, req.grid)
    check_memory(req.shape, trim_prefill(grid, req.max_prefill_tokens), layers, dtypes, device)
    if req.attention != "auto":
        s = req.shape
        pick_backend(device, s.kv_heads, s.head_dim, s.heads, req.attention)


def log(msg: str) -> None:
    print(f"[calibrate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def format_dir(out: Path, fmt: str) -> Path:
    return out.parent / f"{out.name}-{fmt}"


def calibrate_per_format(req: Request, progress: bool, timer) -> dict:
    """Each format into its own directory, renamed into place when complete; then merge the finished ones."""
    dtypes, _ = check_request(req)
    out = Path(req.out)
    deadline = time.monotonic() + req.time_budget if req.time_budget is not None else None
    done: list[Path] = []
    status: dict[str, str] = {}
    for fmt in dtypes:
        final = format_dir(out, fmt)
        if (final / PROFILE).exists():
            log(f"{fmt}: already complete in {final}")
            done.append(final)
            status[fmt] = "complete (earlier run)"
            continue
        partial = final.parent / f".{final.name}.partial"
        if partial.exists() and marker_command(partial) != "calibrate":
            raise CalibrationError(f"out: {str(partial)!r} is in the way of {fmt}'s staging folder and was not "
                                   "written by sunsim calibrate; move it away")
        shutil.rmtree(partial, ignore_errors=True)  # a killed calibration's own leftovers
        started = time.monotonic()
        log(f"{fmt}: calibrating into {final}")
        try:
            sub = _sub_request(req, fmt, partial)
            _calibrate_dir(sub, partial, progress, timer, deadline)
        except BudgetExceeded as exc:
            shutil.rmtree(partial, ignore_errors=True)
            status[fmt] = f"not finished: {exc}"
            log(f"{fmt}: {status[fmt]}")
            break
        except CalibrationError as exc:  # e.g. the format cannot run on this device
            shutil.rmtree(partial, ignore_errors=True)
            status[fmt] = f"skipped: {exc}"
            log(f"{fmt}: {status[fmt]}")
            continue
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        done.append(final)
        status[fmt] = f"complete in {time.monotonic() - started:.0f} s"
        log(f"{fmt}: {status[fmt]}")
        if req.validate_requests and (deadline is None or time.monotonic() < deadline):
            from .validate import validate

            try:
                validate(final, device=req.device, requests=req.validate_requests, deadline=deadline,
                         threads=req.threads, attention=req.attention)
                log(f"{fmt}: validated")
            except BudgetExceeded as exc:
                status[fmt] += f"; not validated: {exc}"
                log(f"{fmt}: not validated ({exc})")
    if not done:
        raise BudgetExceeded("no format finished within the time budget: " + "; ".join(f"{k}: {v}" for k, v in status.items()))
    from .merge import merge_profiles

    merged = merge_profiles(done, out, req.name or out.name, status)
    return merged


def _sub_request(req: Request, fmt: str, out: Path) -> Request:
    from dataclasses import replace

    return replace(req, dtypes=[fmt], out=out, per_format=False, time_budget=None,
                   name=f"{req.name or Path(req.out).name}-{fmt}")


def _calibrate_dir(req: Request, out: Path, progress: bool, injected_timer, deadline: float | None) -> dict:
    """Measure the requested formats into ``out``, fit and write the profile."""
    dtypes, layers = check_request(req)
    import torch

    from .device import device_facts, resolve_device, set_cpu_threads
    from .fit import device_figures, fit_dtype
    from .formats import unsupported_reason
    from .kvcache import pick_backend
    from .measure import Runner, run_grid
    from .plot import plot_fit
    from .raw import read_rows
    from .timing import Timer, TimingConfig

    device = resolve_device(req.device)
    threads = set_cpu_threads(device, req.threads)
    skipped = {d: r for d in dtypes if (r := unsupported_reason(d, device))}
    runnable = [d for d in dtypes if d not in skipped]
    if not runnable:
        raise CalibrationError("dtypes: none of the requested formats runs on this device: "
                               + "; ".join(f"{d}: {r}" for d, r in skipped.items()))
    grid = req.grid if isinstance(req.grid, Grid) else preset_grid(device.type, req.grid)
    grid = trim_prefill(grid, req.max_prefill_tokens)
    s = req.shape
    backend, attention_checks = pick_backend(device, s.kv_heads, s.head_dim, s.heads, req.attention)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if marker_command(out) != "calibrate":
        mark(out, {"command": "calibrate"})  # a later calibration may resume or replace it, nothing else
    bar = RichProgress() if progress and sys.stderr.isatty() else (LineProgress() if progress else None)
    fuse = req.fuse if req.fuse is not None else device.type == "cuda"
    try:
        if not (out / METADATA).exists():  # marks the directory's model/device for a resumed run
            write_json_atomic(out / METADATA, {"model": req.shape.as_dict(), "device": {"type": device.type},
                                               "complete": False})
        torch.manual_seed(0)
        timer = injected_timer or Timer(TimingConfig(device=device, warmup=req.warmup, repeats=req.repeats,
                                                     min_sample_s=req.min_sample_s, graphs=req.graphs,
                                                     statistic="q25" if device.type == "cpu" else "median"))
        runner = Runner(s, grid, layers, timer, backend, fuse=fuse, deadline=deadline)
        facts = device_facts(device)
        started = time.time()
        rows = run_grid(runner, runnable, out / CSV, bar)
    except BaseException:
        if created and not (out / CSV).exists():  # nothing measured: leave no trace
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.stop()

    kernels, kernels_by_rows, weight_bytes = {}, {}, {}
    for d in runnable:  # one layer per format to record its kernel names and weight bytes
        from .model import DecoderLayer

        layer = DecoderLayer(s, d, device, torch.Generator(device=device).manual_seed(0), fuse)
        kernels[d] = sorted({m.kernel for m in layer.linears})
        kernels_by_rows[d] = {str(m): layer.kernels_for(m) for m in grid.gemm_tokens}
        weight_bytes[d] = layer.weight_bytes
        del layer
    rows = read_rows(out / CSV)
    fitted = {d: fit_dtype(rows, s, d, layers) for d in runnable}
    for d in runnable:
        fitted[d]["layer_weight_bytes"] = weight_bytes[d]
    name = req.name or out.name
    metadata = {
        "name": name, "model": s.as_dict(), "device": facts, "dtypes": runnable, "skipped_dtypes": skipped,
        "kernels": kernels, "kernels_by_rows": kernels_by_rows, "layer_weight_bytes": weight_bytes,
        "activation_dtype": "bfloat16", "kv_cache_dtype": "bfloat16", "attention_backend": backend,
        "attention_checks": attention_checks, "elementwise": "torch.compile (inductor)" if fuse else "eager",
        "software": software_versions(), "layers_timed": layers, "cpu_threads": threads,
        "timing": {"method": "cuda events" if device.type == "cuda" else "wall clock (perf_counter)",
                   "warmup": req.warmup, "repeats": req.repeats,
                   "statistic": timer.cfg.statistic, "spread": "p10/p90, min/max", "min_sample_s": req.min_sample_s,
                   "cuda_graphs": bool(device.type == "cuda" and req.graphs),
                   "cuda_graph_points": "decode, prefill, gemm, head, attention, stacks" if device.type == "cuda" else None},
        "grid": {"name": grid.name, **{k: v for k, v in asdict(grid).items() if k != "name"}},
        "skipped_points": [{k: r[k] for k in ("kind", "dtype", "batch", "seqlen", "status", "note")}
                           for r in rows if r["status"] != "ok"],
        "measured_s": round(time.time() - started, 1), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **req.extra,
    }
    profile = {
        "format": PROFILE_FORMAT, "name": name,
        "device": {k: facts.get(k) for k in ("name", "type", "memory_bytes", "compute_capability", "torch", "cuda")},
        "model": s.as_dict(), "layers_timed": layers, "attention_backend": backend, "activation_dtype": "bfloat16",
        "elementwise": "torch.compile (inductor)" if fuse else "eager", "kernels_by_rows": kernels_by_rows,
        "cpu_threads": threads,
        "dtypes": fitted, "skipped_dtypes": skipped,
        "calibrated_range": {"decode_batch": [grid.decode_batches[0], grid.decode_batches[-1]],
                             "decode_context": [grid.decode_contexts[0], grid.decode_contexts[-1]],
                             "prefill_tokens": [grid.prefill_tokens[0], grid.prefill_tokens[-1]]},
        "device_figures": device_figures(rows, s, fitted, weight_bytes,
                                         {k: facts.get(k) for k in ("d2d_Bps", "h2d_Bps")}),
    }
    write_json_atomic(out / METADATA, metadata)
    plot_fit(out / PLOT, rows, s, fitted)
    write_json_atomic(out / PROFILE, profile)
    return profile
