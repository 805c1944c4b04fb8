"""The work of the ``calibrate``, ``cost`` and ``validate`` subcommands of the ``sunsim`` CLI.

Their parsers live in :mod:`calibration.cli`, which imports this module only when one of them runs
(this one loads the cost models and numpy). torch is imported inside the handlers only, so
``sunsim cost`` with an analytic profile works without it. Bad input raises :class:`CalibrationError`
(a ``ValueError``), which the CLI turns into a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from sunsim.costs import catalog
from sunsim.costs.allreduce import TP_DEGREES
from sunsim.costs.architecture import KV_DTYPES, ModelShape, preset
from sunsim.costs.efficiency import FIT_GPU
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
            lora_rank: int = 0, lora_adapters: int = 1, lora_band: str = DEFAULT_BAND, kv_dtype: str = "bf16",
            tp: int = 1) -> dict:
    """The ``cost`` command's answer: predicted time in ms, which model produced it, its sources and kernel class,
    and ``extrapolated`` with ``notes`` saying which parts lie outside the measurements. With ``lora_rank`` the
    time includes the multi-LoRA adapter work of ``lora_adapters`` distinct adapters in ``lora_band``, and the
    ``lora`` entry gives all three bands. ``tp``: one GPU of a tensor-parallel worker of that many GPUs (its
    shard and the all-reduces). Profile ``analytic`` is ``analytic-h100``.

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
    if isinstance(tp, bool) or tp not in TP_DEGREES:
        raise CalibrationError(f"tp: must be one of {', '.join(map(str, TP_DEGREES))}, got {tp!r}")
    if tp != 1 and lora_rank:
        raise CalibrationError("tp: multi-LoRA costs are priced on one GPU only (tp 1)")
    if profile == catalog.ANALYTIC:
        profile = f"{catalog.ANALYTIC}-{FIT_GPU}"
    if lora_band not in BANDS:
        raise CalibrationError(f"lora_band: must be one of {', '.join(BANDS)}, got {lora_band!r}")
    tables = profile in catalog.shipped() or catalog.is_table_profile(profile)
    if lora_rank and not (tables or profile.startswith("analytic-")):
        raise CalibrationError("lora_rank: multi-LoRA costs are priced on analytic and table profiles only "
                               "(give --profile vllm-h100 or analytic-h100, for example)")
    if kv_dtype not in KV_DTYPES:
        raise CalibrationError(f"kv_dtype: must be one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
    shape = load_shape(model)
    shape.shard(tp, "tp")  # a split the shape refuses is named before any cost
    derived = False
    if profile.startswith("analytic-"):
        cost = AnalyticCostModel(gpu(profile.removeprefix("analytic-")), shape, dtype, kv_dtype, tp)
    elif tables:
        loaded = catalog.load(profile)
        cost = catalog.make_cost_model(gpu(catalog.tables_gpu(loaded)), shape, dtype, loaded, kv_dtype, tp)
    elif kv_dtype != "bf16":
        raise CalibrationError(f"kv_dtype: {profile!r} was calibrated with a 16-bit KV cache only")
    elif tp != 1:
        raise CalibrationError(f"tp: {profile!r} was calibrated on one GPU; use a table or analytic profile")
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
           "dtype": dtype, "kv_dtype": kv_dtype, "tp": tp, "phase": phase, "batch": batch,
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
                             args.tokens, args.lora_rank, args.lora_adapters, args.lora_band, args.kv_dtype,
                             args.tp),
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
