"""The ``calibrate``, ``cost`` and ``validate`` subcommands of the ``sunsim`` CLI.

torch is imported inside the handlers only, so ``sunsim --help`` and ``sunsim cost`` with an
analytic profile work without it. Bad input raises :class:`CalibrationError` (a ``ValueError``),
which the CLI turns into a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sunsim.architecture import DTYPES, ModelShape, preset
from sunsim.costmodel import AnalyticCostModel, decode_step_time, read_profile
from sunsim.hardware import gpu

from .errors import CalibrationError


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
    cal = subparsers.add_parser("calibrate", help="time real kernels and fit a measured cost profile")
    cal.add_argument("--model", required=True, help="preset name (llama-3.1-8b, qwen3-8b, tiny) or shape JSON")
    cal.add_argument("--dtypes", default="bf16,int8,int4", type=_csv, help="weight formats: bf16,int8,int4,fp8")
    cal.add_argument("--device", default="cpu", help="cpu or cuda")
    cal.add_argument("--out", required=True, type=Path, help="profile directory, e.g. calibration/profiles/h100")
    cal.add_argument("--layers", type=int, help="layers to instantiate (default: 2 on CPU, 4 on GPU)")
    cal.add_argument("--grid", default="quick", choices=["quick", "full"])
    cal.add_argument("--repeats", type=int, default=5, help="minimum timed repeats per point")
    cal.add_argument("--warmup", type=int, default=2, help="untimed calls before each point")
    cal.add_argument("--max-prefill-tokens", type=int, help="drop prefill points above this many tokens")
    cal.add_argument("--threads", type=int, help="CPU threads (default 1)")
    cal.add_argument("--no-graphs", action="store_true", help="time decode eagerly instead of from CUDA graphs")
    cal.add_argument("--name", help="profile name (default: the directory name)")
    cal.add_argument("--quiet", action="store_true", help="no progress bar")
    cal.set_defaults(func=cmd_calibrate)

    cost = subparsers.add_parser("cost", help="predicted prefill or decode time from a profile, as JSON (ms)")
    cost.add_argument("--profile", required=True,
                      help="profile directory/JSON, or analytic-h100 / analytic-h200 / analytic-a100")
    cost.add_argument("--model", required=True, help="preset name or shape JSON")
    cost.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    cost.add_argument("--phase", required=True, choices=["prefill", "decode"])
    cost.add_argument("--batch", type=int, default=1, help="sequences in the batch")
    cost.add_argument("--context", type=int, default=1024, help="decode: KV tokens held per sequence")
    cost.add_argument("--tokens", type=int, default=1024, help="prefill: prompt tokens per sequence")
    cost.set_defaults(func=cmd_cost)

    val = subparsers.add_parser("validate", help="real continuous-batching decode loop vs the simulator")
    val.add_argument("--profile", required=True, help="profile directory or JSON")
    val.add_argument("--device", default="cpu")
    val.add_argument("--requests", type=int, default=64)
    val.add_argument("--dtypes", type=_csv, help="formats to validate (default: all in the profile)")
    val.add_argument("--step-repeats", type=int, help="runs per iteration (default: 3 on CPU, 1 on GPU)")
    val.add_argument("--seed", type=int, default=0)
    val.set_defaults(func=cmd_validate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import Request, calibrate

    req = Request(shape=load_shape(args.model), dtypes=args.dtypes, device=args.device, out=args.out,
                  layers=args.layers, grid=args.grid, repeats=args.repeats, warmup=args.warmup,
                  max_prefill_tokens=args.max_prefill_tokens, threads=args.threads,
                  graphs=not args.no_graphs, name=args.name)
    profile = calibrate(req, progress=not args.quiet)
    summary = {d: {"decode_fit": v["fit_error"]["decode"], "prefill_fit": v["fit_error"]["prefill"],
                   "composition_max_rel": v["composition_check"]["max_rel"]} for d, v in profile["dtypes"].items()}
    print(json.dumps({"profile": str(args.out / "profile.json"), "skipped_dtypes": profile["skipped_dtypes"],
                      "fit": summary}, indent=2))
    return 0


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
    from .validate import validate

    report = validate(args.profile, device=args.device, requests=args.requests, dtypes=args.dtypes,
                      seed=args.seed, step_repeats=args.step_repeats)
    print(json.dumps({d: {"tpot": v["tpot"], "step_time": v["step_time"], "meets_targets": v["meets_targets"]}
                      for d, v in report["dtypes"].items()}, indent=2))
    return 0 if report["meets_targets"] else 1
