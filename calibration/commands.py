"""The ``calibrate``, ``cost`` and ``validate`` subcommands of the ``sunsim`` CLI.

torch is imported inside the handlers only, so ``sunsim --help`` and ``sunsim cost`` with an
analytic profile work without it. Bad input raises :class:`CalibrationError` (a ``ValueError``),
which the CLI turns into a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sunsim.architecture import DTYPES, ModelShape, preset
from sunsim.argtypes import non_negative_int, positive_float, positive_int
from sunsim.costmodel import AnalyticCostModel, decode_step_time, read_profile
from sunsim.hardware import gpu

from .errors import BudgetExceeded, CalibrationError


def load_shape(spec: str) -> ModelShape:
    """A preset name, or a JSON file with the :class:`ModelShape` fields (a custom shape)."""
    path = Path(spec)
    if path.suffix == ".json" and path.exists():
        try:
            return ModelShape(**json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise CalibrationError(f"model: {spec!r} is not a model shape JSON ({exc})") from None
    return preset(spec)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    cal = subparsers.add_parser(
        "calibrate", help="time real kernels and fit a measured cost profile",
        description="Build a Llama-style decoder of the given shape with random weights, time its kernels in "
                    "each weight format (GEMMs, decode/prefill layers, attention, head, full stack), fit the "
                    "simulator's cost model and write a sunsim-profile/1 directory. With --time-budget each "
                    "format goes to its own directory <out>-<fmt>, complete or absent, and the finished ones "
                    "are merged into <out>.")
    cal.add_argument("--model", required=True, help="preset name (llama-3.1-8b, qwen3-8b, tiny) or shape JSON")
    cal.add_argument("--dtypes", default="bf16,int8,int4", type=_csv, help="weight formats: bf16,int8,int4,fp8")
    cal.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    cal.add_argument("--out", required=True, type=Path, help="profile directory, e.g. calibration/profiles/h100")
    cal.add_argument("--layers", type=positive_int, help="layers to instantiate (default: 2 on CPU, 4 on GPU)")
    cal.add_argument("--grid", default="quick", choices=["quick", "full"], help="grid preset (default quick)")
    cal.add_argument("--repeats", type=positive_int, default=5, help="minimum timed repeats per point")
    cal.add_argument("--warmup", type=positive_int, default=2, help="untimed calls before each point")
    cal.add_argument("--max-prefill-tokens", type=positive_int, help="drop prefill points above this many tokens")
    cal.add_argument("--threads", type=positive_int, help="CPU threads (default 1)")
    cal.add_argument("--no-graphs", action="store_true", help="time GPU points eagerly instead of from CUDA graphs")
    cal.add_argument("--fuse", dest="fuse", action="store_true", default=None,
                     help="fuse the elementwise work with torch.compile (default on a GPU)")
    cal.add_argument("--no-fuse", dest="fuse", action="store_false", help="run the elementwise work eagerly")
    cal.add_argument("--attention", default="auto", choices=["auto", "triton-paged", "sdpa-masked", "sdpa-loop"],
                     help="decode attention backend (auto: first that passes its start-up check)")
    cal.add_argument("--time-budget", type=positive_float,
                     help="seconds for the whole run; implies --per-format; unfinished formats leave nothing")
    cal.add_argument("--per-format", action="store_true", help="one profile directory per format, then merged")
    cal.add_argument("--validate-requests", type=non_negative_int, default=0,
                     help="per-format mode: validate each finished format with this many requests (0: no)")
    cal.add_argument("--name", help="profile name (default: the directory name)")
    cal.add_argument("--quiet", action="store_true", help="no progress output")
    cal.set_defaults(func=cmd_calibrate)

    cost = subparsers.add_parser(
        "cost", help="predicted prefill or decode time from a profile, as JSON (ms)",
        description="Predict one prefill or decode step's time from a measured profile (derived from its "
                    "device figures for a shape it was not measured on) or an analytic one.")
    cost.add_argument("--profile", required=True,
                      help="profile directory/JSON, or analytic-h100 / analytic-h200 / analytic-a100")
    cost.add_argument("--model", required=True, help="preset name or shape JSON")
    cost.add_argument("--dtype", default="bf16", choices=list(DTYPES), help="weight format")
    cost.add_argument("--phase", required=True, choices=["prefill", "decode"], help="which step to cost")
    cost.add_argument("--batch", type=positive_int, default=1, help="sequences in the batch")
    cost.add_argument("--context", type=positive_int, default=1024, help="decode: KV tokens held per sequence")
    cost.add_argument("--tokens", type=positive_int, default=1024, help="prefill: prompt tokens per sequence")
    cost.set_defaults(func=cmd_cost)

    val = subparsers.add_parser(
        "validate", help="real continuous-batching decode loop vs the simulator",
        description="Serve a Poisson trace with the real kernels (continuous batching, one token per running "
                    "request per iteration) and with the simulator using the profile; report per-request TPOT "
                    "and per-step errors and the calibration targets in validation.md. Exit 1 when a target "
                    "enforced on this device (GPU only) is missed.")
    val.add_argument("--profile", required=True, help="profile directory or JSON")
    val.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    val.add_argument("--requests", type=positive_int, default=64, help="requests in the trace (at least 2)")
    val.add_argument("--dtypes", type=_csv, help="formats to validate (default: all in the profile)")
    val.add_argument("--step-repeats", type=positive_int, help="runs per iteration (default: 3 on CPU, 1 on GPU)")
    val.add_argument("--seed", type=int, default=0, help="trace seed")
    val.add_argument("--attention", default="auto", choices=["auto", "triton-paged", "sdpa-masked", "sdpa-loop"],
                     help="decode attention backend")
    val.add_argument("--no-graphs", action="store_true", help="GPU: run steps eagerly instead of graph replay")
    val.add_argument("--time-budget", type=positive_float, help="seconds; stop (exit 1) when spent")
    val.set_defaults(func=cmd_validate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import Request, calibrate

    req = Request(shape=load_shape(args.model), dtypes=args.dtypes, device=args.device, out=args.out,
                  layers=args.layers, grid=args.grid, repeats=args.repeats, warmup=args.warmup,
                  max_prefill_tokens=args.max_prefill_tokens, threads=args.threads,
                  graphs=not args.no_graphs, name=args.name, fuse=args.fuse, attention=args.attention,
                  time_budget=args.time_budget, per_format=args.per_format,
                  validate_requests=args.validate_requests)
    try:
        profile = calibrate(req, progress=not args.quiet)
    except BudgetExceeded as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    summary = {d: {"decode_fit": v["fit_error"]["decode"], "prefill_fit": v["fit_error"]["prefill"],
                   "composition_max_rel": v["composition_check"]["max_rel"]} for d, v in profile["dtypes"].items()}
    missed = _missed(args.out)
    print(json.dumps({"profile": str(args.out / "profile.json"), "skipped_dtypes": profile["skipped_dtypes"],
                      "fit": summary, "missed_targets": missed}, indent=2))
    unfinished = [d for d in dict.fromkeys(args.dtypes) if d not in profile["dtypes"]
                  and d not in profile["skipped_dtypes"]]
    return 1 if missed or ((args.time_budget or args.per_format) and unfinished) else 0


def _missed(out: Path) -> list[str]:
    path = out / "targets.json"
    return json.loads(path.read_text()).get("missed", []) if path.exists() else []


def predict(profile: str, model: str, dtype: str, phase: str, batch: int, context: int, tokens: int) -> dict:
    """The ``cost`` command's answer: predicted time in ms and which model produced it."""
    for field, value in (("batch", batch), ("context", context), ("tokens", tokens)):
        if value < 1:
            raise CalibrationError(f"{field}: must be a positive integer, got {value}")
    shape = load_shape(model)
    derived = False
    if profile.startswith("analytic-"):
        cost = AnalyticCostModel(gpu(profile.removeprefix("analytic-")), shape, dtype)
    else:
        from .profile_models import cost_model_for

        cost, derived = cost_model_for(read_profile(profile), shape, dtype)
    if phase == "decode":
        seconds = decode_step_time(cost, batch, batch * context)
    else:
        seconds = cost.prefill_time(batch * tokens, batch * tokens ** 2)
    return {"profile": cost.info.name, "kind": cost.info.kind, "device": cost.info.device, "model": shape.name,
            "dtype": dtype, "phase": phase, "batch": batch,
            **({"context": context, "kv_tokens": batch * context} if phase == "decode" else
               {"tokens": tokens, "prompt_tokens": batch * tokens}),
            "time_ms": seconds * 1e3, "derived_from_device_figures": derived}


def cmd_cost(args: argparse.Namespace) -> int:
    print(json.dumps(predict(args.profile, args.model, args.dtype, args.phase, args.batch, args.context,
                             args.tokens), indent=2))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import time

    from .validate import validate

    deadline = time.monotonic() + args.time_budget if args.time_budget else None
    try:
        report = validate(args.profile, device=args.device, requests=args.requests, dtypes=args.dtypes,
                          seed=args.seed, step_repeats=args.step_repeats, deadline=deadline,
                          attention=args.attention, graphs=not args.no_graphs)
    except BudgetExceeded as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(json.dumps({**{d: {"tpot": v["tpot"], "step_time": v["step_time"], "meets_targets": v["meets_targets"]}
                         for d, v in report["dtypes"].items()}, "missed_targets": report["missed"]}, indent=2))
    return 1 if report["missed"] else 0
