"""The parsers of the ``calibrate``, ``cost`` and ``validate`` subcommands, and handlers that load their work.

``sunsim --help`` builds these parsers, so this module imports nothing heavy: the cost models (numpy),
the scenario schema (pydantic) and torch load in :mod:`calibration.commands` and below, which a handler
imports only when its subcommand runs. The help text is what it was when the parsers lived there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sunsim.cli.argtypes import non_negative_int, overhead_ms, positive_float, positive_int
from sunsim.costs.architecture import DTYPES, KV_DTYPES

#: :data:`sunsim.costs.lora.BANDS` and its ``DEFAULT_BAND``, spelled out because that module loads numpy;
#: ``tests/test_cli_startup.py`` checks that they match.
LORA_BANDS = ("low", "central", "high")
LORA_DEFAULT_BAND = "central"


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
                           "analytic-<gpu> (h100, h200, a100, l40s, b200; plain analytic: h100), or a profile "
                           "directory/JSON")
    cost.add_argument("--model", required=True, help="preset name, shape JSON or Hugging Face config.json")
    cost.add_argument("--dtype", default="bf16", choices=list(DTYPES), help="weight format")
    cost.add_argument("--phase", required=True, choices=["prefill", "decode"], help="which step to cost")
    cost.add_argument("--kv-dtype", default="bf16", choices=list(KV_DTYPES),
                      help="KV-cache element type (fp8: half the bytes; attention from the fp8-KV tables)")
    cost.add_argument("--tp", type=int, default=1, choices=[1, 2, 4, 8],
                      help="tensor parallel GPUs per worker: one GPU's shard plus 2 all-reduces per layer")
    cost.add_argument("--batch", type=positive_int, default=1, help="sequences in the batch")
    cost.add_argument("--context", type=positive_int, default=1024, help="decode: KV tokens held per sequence")
    cost.add_argument("--tokens", type=positive_int, default=1024, help="prefill: prompt tokens per sequence")
    cost.add_argument("--lora-rank", type=non_negative_int, default=0,
                      help="multi-LoRA: adapter rank (0: no adapters; analytic and table profiles)")
    cost.add_argument("--lora-adapters", type=positive_int, default=1,
                      help="multi-LoRA: distinct adapters in the batch (at most --batch)")
    cost.add_argument("--lora-band", default=LORA_DEFAULT_BAND, choices=list(LORA_BANDS),
                      help="multi-LoRA cost band (default central; all three are printed)")
    cost.set_defaults(func=cmd_cost)

    val = subparsers.add_parser(
        "validate", help="real continuous-batching decode loop vs the simulator; or replay measurements",
        description="Serve a Poisson trace with the real kernels (continuous batching, one token per running "
                    "request per iteration) and with the simulator using the profile; report per-request TPOT "
                    "and per-step errors and the calibration targets in validation.md. Exit 1 when a target "
                    "enforced on this device (GPU only) is missed. With --measurements instead: replay published "
                    "end-to-end benchmarks (aiconfigurator-core's silicon_sample.csv layout) in the simulator, "
                    "closed-loop clients at each row's concurrency, and report measured vs simulated TTFT/TPOT.")
    val.add_argument("--profile", help="profile directory or JSON")
    val.add_argument("--measurements", type=Path, metavar="FILE.csv",
                     help="replay these end-to-end measurements instead (no device, no profile needed)")
    val.add_argument("--columns", metavar="JSON",
                     help="--measurements: {field: column} for a file in another layout (JSON text or a file)")
    val.add_argument("--model-config", action="append", default=[], metavar="MODEL=CONFIG.json",
                     help="--measurements: the shape of a model name from a Hugging Face config.json (repeatable)")
    val.add_argument("--out", type=Path, help="--measurements: output folder (per_row.csv, groups.csv, "
                                              "not_expressible.csv; default results/validate-measurements)")
    val.add_argument("--overhead-ms", type=overhead_ms, metavar="MS", help="--measurements: replay at this engine "
                     "overhead per iteration (default: the profile's assumed 0.5 ms)")
    val.add_argument("--fit-on", metavar="FIELD=VALUE[,...]", help="--measurements: fit the per-iteration "
                     "overhead on the rows matching these fields (model, system, backend, mode, ...), then replay "
                     "every row at it and report the held-out rows apart")
    val.add_argument("--limit", type=positive_int, metavar="K", help="--measurements: replay the first K "
                                                                     "expressible rows only")
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
    """``sunsim calibrate``: see :func:`calibration.commands.cmd_calibrate`."""
    from calibration.commands import cmd_calibrate as run

    return run(args)


def cmd_cost(args: argparse.Namespace) -> int:
    """``sunsim cost``: see :func:`calibration.commands.cmd_cost`."""
    from calibration.commands import cmd_cost as run

    return run(args)


def cmd_validate(args: argparse.Namespace) -> int:
    """``sunsim validate``: see :func:`calibration.commands.cmd_validate`, or with --measurements
    :func:`sunsim.cli.measurements.cmd_validate_measurements` (which loads no torch)."""
    from sunsim.errors import InputError

    if (args.measurements is None) == (args.profile is None):
        raise InputError("validate: give --profile (a profile against the kernels or --against tables) or "
                         "--measurements FILE.csv (end-to-end measurements), not both")
    if args.measurements is not None:
        from sunsim.cli.measurements import cmd_validate_measurements

        return cmd_validate_measurements(args)
    from calibration.commands import cmd_validate as run

    return run(args)
