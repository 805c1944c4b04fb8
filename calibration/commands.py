"""The ``calibrate``, ``cost`` and ``validate`` subcommands of the ``sunsim`` CLI.

torch is imported inside the handlers only, so ``sunsim --help`` and ``sunsim cost`` with an
analytic profile work without it. Bad input raises :class:`CalibrationError` (a ``ValueError``),
which the CLI turns into a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from sunsim.cli.argtypes import non_negative_int, positive_float, positive_int
from sunsim.costs import catalog
from sunsim.costs.architecture import DTYPES, KV_DTYPES, ModelShape, preset
from sunsim.costs.hardware import gpu
from sunsim.costs.lora import BANDS, DEFAULT_BAND, LORA_SOURCE, LoraCost
from sunsim.costs.model import AnalyticCostModel, decode_step_time, read_profile
from sunsim.errors import InputError
from sunsim.scenario import MAX_BATCH, MAX_TOKENS

from .errors import BudgetExceeded, CalibrationError

#: Larger than any shape file or config.json (a few hundred bytes); refuses a wrong file before reading it.
MAX_JSON_BYTES = 1 << 20
DIMENSIONS = ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "vocab")
#: The largest batch / token count ``cost`` answers for: the scenario schema's bounds, so the simulator
#: never asks for more, and every product of them stays a finite float.
MAX_COST_BATCH, MAX_COST_TOKENS = MAX_BATCH, MAX_TOKENS
#: The largest adapter rank ``cost`` prices (vLLM's --max-lora-rank tops out at 512).
MAX_LORA_RANK = 1024


def read_json(path: Path, field: str) -> object:
    """A small JSON file, or a :class:`CalibrationError` naming ``field`` (never a decoding traceback)."""
    where = f"{field}: {str(path)!r}"
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CalibrationError(f"{where} is larger than {MAX_JSON_BYTES >> 20} MiB; not a shape or profile file")
        raw = path.read_bytes()
    except OSError as exc:
        raise CalibrationError(f"{where} cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"{where} is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a 5000-digit number, [[[[... nested too deep
        raise CalibrationError(f"{where} is not valid JSON ({str(exc)[:200]})") from None


def shape_from_dict(data: dict, where: str) -> ModelShape:
    """A :class:`ModelShape` from a shape file's object, with JSON types exactly (``256.5``, ``"256"`` or
    ``true`` is not a dimension) and the scenario schema's bounds, so every count derived stays finite."""
    from pydantic import ValidationError

    from sunsim.scenario import CustomShape

    allowed = ("name", *DIMENSIONS, "tied_embeddings")
    for key in data:
        if key not in allowed:
            raise CalibrationError(f"model.{key}: unknown field in {where} (fields: {', '.join(allowed)})")
    for key in DIMENSIONS:
        value = data.get(key)
        if key not in data:
            raise CalibrationError(f"model.{key}: missing from {where} (a positive integer)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise CalibrationError(f"model.{key}: must be an integer, got {value!r} in {where}")
    if "tied_embeddings" in data and not isinstance(data["tied_embeddings"], bool):
        raise CalibrationError(f"model.tied_embeddings: must be true or false, got {data['tied_embeddings']!r}")
    if "name" in data and not isinstance(data["name"], str):
        raise CalibrationError(f"model.name: must be a string, got {data['name']!r}")
    try:
        spec = CustomShape.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        key = e["loc"][0] if e["loc"] else "shape"
        raise CalibrationError(f"model.{key}: {e['msg']}, got {e['input']!r} in {where}") from None
    return ModelShape(**spec.model_dump())


def load_shape(spec: str) -> ModelShape:
    """A preset name, a JSON file with the :class:`ModelShape` fields (a custom shape), or a Hugging Face
    ``config.json`` (Llama, Mistral, Qwen2/3)."""
    path = Path(spec)
    if path.suffix != ".json":
        return preset(spec)
    if not path.is_file():
        raise CalibrationError(f"model: no shape file {spec!r} (give a preset name or a shape JSON file)")
    data = read_json(path, "model")
    if not isinstance(data, dict):
        raise CalibrationError(f"model: {spec!r} must hold a JSON object of shape fields")
    if "model_type" in data or "hidden_size" in data:  # a Hugging Face config.json
        from sunsim.scenario import shape_from_hf

        folder = path.resolve().parent.name if path.name == "config.json" else None
        return shape_from_hf(data, f"model {spec!r}", folder)
    return shape_from_dict(data, repr(spec))


def load_profile(profile: str | Path) -> dict:
    """:func:`sunsim.costs.model.read_profile`, with an undecodable file a clean error too."""
    try:
        return read_profile(profile)
    except InputError:
        raise
    except (ValueError, RecursionError) as exc:  # not UTF-8, a 5000-digit number, nested too deep
        raise CalibrationError(f"profile: {str(profile)!r} is not a readable profile "
                               f"({type(exc).__name__}: {str(exc)[:200]})") from None


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
    cal.add_argument("--model", required=True,
                     help="preset name (llama-3.1-8b, qwen3-8b, tiny), shape JSON or Hugging Face config.json")
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
                      help="a shipped table profile (vllm-h100, vllm-h200, vllm-a100, vllm-l40s, vllm-b200), "
                           "analytic-<gpu> (h100, h200, a100, l40s, b200), or a profile directory/JSON")
    cost.add_argument("--model", required=True, help="preset name, shape JSON or Hugging Face config.json")
    cost.add_argument("--dtype", default="bf16", choices=list(DTYPES), help="weight format")
    cost.add_argument("--phase", required=True, choices=["prefill", "decode"], help="which step to cost")
    cost.add_argument("--kv-dtype", default="bf16", choices=list(KV_DTYPES),
                      help="KV-cache element type (fp8: half the bytes; attention from the fp8-KV tables)")
    cost.add_argument("--batch", type=positive_int, default=1, help="sequences in the batch")
    cost.add_argument("--context", type=positive_int, default=1024, help="decode: KV tokens held per sequence")
    cost.add_argument("--tokens", type=positive_int, default=1024, help="prefill: prompt tokens per sequence")
    cost.add_argument("--lora-rank", type=non_negative_int, default=0,
                      help="multi-LoRA: adapter rank (0: no adapters; analytic and table profiles)")
    cost.add_argument("--lora-adapters", type=positive_int, default=1,
                      help="multi-LoRA: distinct adapters in the batch (at most --batch)")
    cost.add_argument("--lora-band", default=DEFAULT_BAND, choices=list(BANDS),
                      help="multi-LoRA cost band (default central; all three are printed)")
    cost.set_defaults(func=cmd_cost)

    val = subparsers.add_parser(
        "validate", help="real continuous-batching decode loop vs the simulator",
        description="Serve a Poisson trace with the real kernels (continuous batching, one token per running "
                    "request per iteration) and with the simulator using the profile; report per-request TPOT "
                    "and per-step errors and the calibration targets in validation.md. Exit 1 when a target "
                    "enforced on this device (GPU only) is missed.")
    val.add_argument("--profile", required=True, help="profile directory or JSON")
    val.add_argument("--against", metavar="NAME",
                     help="compare the profile with a shipped table profile (vllm-h100, ...) instead: both cost "
                          "models over a grid of decode steps and prefills, no device needed")
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


def predict(profile: str, model: str, dtype: str, phase: str, batch: int, context: int, tokens: int,
            lora_rank: int = 0, lora_adapters: int = 1, lora_band: str = DEFAULT_BAND, kv_dtype: str = "bf16") -> dict:
    """The ``cost`` command's answer: predicted time in ms, which model produced it, its sources and kernel class,
    and ``extrapolated`` with ``notes`` saying which parts lie outside the measurements. With ``lora_rank`` the
    time includes the multi-LoRA adapter work of ``lora_adapters`` distinct adapters in ``lora_band``, and the
    ``lora`` entry gives all three bands.

    A time that is not finite and positive is refused, naming the count that left the profile's
    measured range (its table extrapolated below zero) or the profile, never printed."""
    for field, value, top in (("batch", batch, MAX_COST_BATCH), ("context", context, MAX_COST_TOKENS),
                              ("tokens", tokens, MAX_COST_TOKENS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            shown = value if not isinstance(value, int) or value < 10**30 else f"a {len(str(value))}-digit number"
            raise CalibrationError(f"{field}: must be an integer from 1 to {top:,}, got {shown}")
    if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or not 0 <= lora_rank <= MAX_LORA_RANK:
        raise CalibrationError(f"lora_rank: must be an integer from 0 to {MAX_LORA_RANK}, got {lora_rank!r}")
    if lora_rank and (isinstance(lora_adapters, bool) or not isinstance(lora_adapters, int)
                      or not 1 <= lora_adapters <= batch):
        raise CalibrationError(f"lora_adapters: must be an integer from 1 to the batch ({batch}), got {lora_adapters!r}")
    if lora_band not in BANDS:
        raise CalibrationError(f"lora_band: must be one of {', '.join(BANDS)}, got {lora_band!r}")
    tables = profile in catalog.shipped() or catalog.is_table_profile(profile)
    if lora_rank and not (tables or profile.startswith("analytic-")):
        raise CalibrationError("lora_rank: multi-LoRA costs are priced on analytic and table profiles only "
                               "(give --profile vllm-h100 or analytic-h100, for example)")
    if kv_dtype not in KV_DTYPES:
        raise CalibrationError(f"kv_dtype: must be one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
    shape = load_shape(model)
    derived = False
    if profile.startswith("analytic-"):
        cost = AnalyticCostModel(gpu(profile.removeprefix("analytic-")), shape, dtype, kv_dtype)
    elif tables:
        loaded = catalog.load(profile)
        cost = catalog.make_cost_model(gpu(catalog.tables_gpu(loaded)), shape, dtype, loaded, kv_dtype)
    elif kv_dtype != "bf16":
        raise CalibrationError(f"kv_dtype: {profile!r} was calibrated with a 16-bit KV cache only")
    else:
        from .profile_models import cost_model_for

        cost, derived = cost_model_for(load_profile(profile), shape, dtype)
    try:
        if phase == "decode":
            seconds = decode_step_time(cost, batch, batch * context)
        else:
            seconds = cost.prefill_time(batch * tokens, batch * tokens ** 2)
        seconds = float(seconds)
    except (OverflowError, ZeroDivisionError, FloatingPointError):
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        raise CalibrationError(_bad_time(cost, shape, phase, batch, tokens, seconds))
    notes = _notes(cost, phase, batch, context, tokens)
    out = {"profile": cost.info.name, "kind": cost.info.kind, "device": cost.info.device, "model": shape.name,
           "dtype": dtype, "kv_dtype": kv_dtype, "phase": phase, "batch": batch,
           **({"context": context, "kv_tokens": batch * context} if phase == "decode" else
              {"tokens": tokens, "prompt_tokens": batch * tokens}),
           "time_ms": seconds * 1e3, "derived_from_device_figures": derived,
           **{k: v for k, v in cost.info.as_dict().items() if k in ("source", "kernel", "note")},
           "extrapolated": bool(notes), "notes": notes}
    if tables and phase == "decode":
        out["parts_ms"] = {k: v * 1e3 for k, v in cost.parts(batch, batch * context).items()}
    if lora_rank:
        rows = batch if phase == "decode" else batch * tokens
        bands = {}
        for band in BANDS:
            added = LoraCost(shape, cost.gpu, lora_rank, band).time(rows, lora_adapters)
            bands[band] = {"added_ms": added * 1e3, "throughput_loss": added / (seconds + added)}
        out["lora"] = {"rank": lora_rank, "adapters": lora_adapters, "band": lora_band, "base_time_ms": seconds * 1e3,
                       **bands[lora_band], "bands": bands, "source": LORA_SOURCE,
                       "kernel": "SGMV/BGMV shrink + expand per module group (vLLM punica-style kernels)"}
        out["time_ms"] = (seconds + bands[lora_band]["added_ms"] * 1e-3) * 1e3
    return out


def _notes(cost, phase: str, batch: int, context: int, tokens: int) -> list[str]:
    """What the predicted time takes from outside the cost model's measurements."""
    if hasattr(cost, "notes"):  # the analytic profiles know their measured ranges
        return cost.notes(batch, kv_tokens_per_seq=context) if phase == "decode" else \
            cost.notes(batch * tokens, prompt_tokens=tokens, logit_rows=batch)
    xs = getattr(cost, "decode_batch" if phase == "decode" else "prefill_tokens", None)
    x = batch if phase == "decode" else batch * tokens
    if xs is not None and len(xs) and not xs[0] <= x <= xs[-1]:
        what = "decode batches" if phase == "decode" else "prefill token counts"
        return [f"{x} is outside the profile's measured {what} ({int(xs[0])}..{int(xs[-1])}): its table is extended "
                "linearly from the nearest points"]
    return []


def _bad_time(cost, shape: ModelShape, phase: str, batch: int, tokens: int, seconds: float) -> str:
    """Why a predicted time is not finite and positive, naming the field to change."""
    got = f"{seconds * 1e3:.4g} ms"
    xs = getattr(cost, "decode_batch" if phase == "decode" else "prefill_tokens", None)
    x = batch if phase == "decode" else batch * tokens
    if xs is not None and len(xs) and x > xs[-1]:
        what = "decode batches" if phase == "decode" else "prefill token counts"
        field, given = ("batch", f"{batch}") if phase == "decode" else ("tokens", f"{tokens} (x batch {batch} = {x})")
        return (f"{field}: {given} is beyond the profile's measured {what} ({int(xs[0])}..{int(xs[-1])}), and its "
                f"table extrapolates to {got} there (its last measured points slope down); cost within the "
                f"measured range, or calibrate up to {x}")
    if cost.info.kind == "measured":
        return (f"profile: {cost.info.name!r} gives {got} for a {phase} step of model {shape.name!r}; its "
                f"{phase} tables are corrupt (recalibrate)")
    return (f"model: the {phase} time of {shape.name!r} is {got}, not a finite positive time; check the shape's "
            f"fields ({', '.join(f'{k}={getattr(shape, k)}' for k in DIMENSIONS)})")


def cmd_cost(args: argparse.Namespace) -> int:
    print(json.dumps(predict(args.profile, args.model, args.dtype, args.phase, args.batch, args.context,
                             args.tokens, args.lora_rank, args.lora_adapters, args.lora_band, args.kv_dtype),
                     indent=2))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import time

    if args.against:
        from .compare import compare

        print(json.dumps(compare(args.profile, args.against), indent=2))
        return 0
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
