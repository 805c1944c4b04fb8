"""Published end-to-end measurements (TTFT and TPOT of a served model at a concurrency), and whether
sunsim can express each one.

The layout read by default is that of aiconfigurator-core's ``systems/silicon_sample.csv`` (NVIDIA,
Apache-2.0): one row per benchmark of a model on a system with a backend, precision, serving mode
(``agg`` or ``disagg``), fixed prompt/output lengths (``isl``/``osl``), parallelism per role and the
measured ``silicon_ttft_ms``/``silicon_tpot_ms``. Other files map their columns onto the same
fields (:data:`FIELDS`) with a ``--columns`` JSON object ``{field: column}``.

A row is *expressible* when sunsim models everything it describes: a known model shape, a known
GPU, tensor parallelism of a size sunsim takes (no pipeline or attention-data parallelism), a precision with a
sunsim weight format, a serving mode sunsim has, and a concurrency for closed-loop clients. Each
other row gets one reason (the first that applies, in that order) so that the table of reasons
says what sunsim would have to learn to replay more of the file.
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import GPUS
from sunsim.errors import InputError
from sunsim.scenario import VariantSpec
from sunsim.scenario.serving import TensorParallel

#: The tensor-parallel sizes a scenario takes (prefill.tp, variants[].tp).
TP_SIZES = typing.get_args(typing.get_args(TensorParallel)[0])

#: field -> its column in the public layout (silicon_sample.csv). ``concurrency`` has no column there:
#: it is read from ``silicon_concurrency=N`` in the source, else ``_c<N>_`` in the id, else batch_size (agg).
FIELDS: dict[str, str | None] = {
    "id": "id", "model": "model_path", "system": "system", "backend": "backend", "mode": "mode",
    "precision": "precision", "gemm_quant": "gemm_quant_mode", "isl": "isl", "osl": "osl",
    "concurrency": None, "source": "silicon_data_source", "batch_size": "batch_size",
    "tp": "tp_size", "pp": "pp_size", "attention_dp": "attention_dp_size",
    "prefill_workers": "prefill_num_workers", "prefill_tp": "prefill_tp_size", "prefill_pp": "prefill_pp_size",
    "prefill_attention_dp": "prefill_attention_dp_size",
    "decode_workers": "decode_num_workers", "decode_tp": "decode_tp_size", "decode_pp": "decode_pp_size",
    "decode_attention_dp": "decode_attention_dp_size",
    "ttft_ms": "silicon_ttft_ms", "tpot_ms": "silicon_tpot_ms",
}
REQUIRED = ("model", "system", "mode", "isl", "osl", "ttft_ms", "tpot_ms")

#: Weight formats by the names the public file uses (its gemm_quant_mode first, else its precision).
DTYPE_OF = {"bf16": "bf16", "fp16": "fp16", "float16": "fp16", "bfloat16": "bf16", "fp8": "fp8",
            "fp8_block": "fp8_block", "nvfp4": "nvfp4", "fp4": "nvfp4", "int4_wo": "int4", "int4": "int4",
            "int8_wo": "int8", "int8": "int8"}
#: Suffixes of published checkpoint names that do not change the shape (a quantised or instruct-tuned copy).
_NAME_SUFFIXES = ("-instruct", "-fp8", "-nvfp4", "-fp4", "-awq", "-base", "-hf")


@dataclass(frozen=True)
class Verdict:
    """What sunsim makes of one row: the scenario's settings, or why it cannot express it."""

    reason: str | None  # None: expressible; else a reason shared by rows alike (the table's key)
    detail: str = ""  # the row's own values behind the reason, or a note on an expressible row
    model: str | None = None  # a preset name, or the config.json path of --model-config
    gpu: str | None = None
    dtype: str | None = None
    mode: str | None = None  # the sunsim variant mode
    prefill_workers: int = 1
    decode_workers: int = 1
    concurrency: int | None = None
    prefill_tp: int = 1
    decode_tp: int = 1  # aggregated rows: the engine's tp


def read_measurements(path: Path, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """The file's rows with :data:`FIELDS` as column names (missing optional fields empty)."""
    mapping = dict(FIELDS)
    for field, column in (columns or {}).items():
        if field not in FIELDS:
            raise InputError(f"--columns: unknown field {field!r}; the fields are {', '.join(FIELDS)}")
        if not isinstance(column, str) or not column:
            raise InputError(f"--columns: field {field!r} must name a column (a non-empty string)")
        mapping[field] = column
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"--measurements: cannot read {str(path)!r} as CSV ({exc})") from None
    missing = [f"{f} (column {mapping[f]!r})" for f in REQUIRED if mapping[f] not in raw.columns]
    if missing:
        raise InputError(f"--measurements {str(path)!r}: missing {', '.join(missing)}; map other column names "
                         f"with --columns '{{\"field\": \"column\"}}'")
    out = pd.DataFrame({f: raw[c] if c is not None and c in raw.columns else "" for f, c in mapping.items()})
    out = out.map(lambda v: v.strip() if isinstance(v, str) else v)
    out["mode"] = out["mode"].str.lower()
    return out


def parse_columns(text: str | None) -> dict[str, str]:
    """``--columns``: a JSON object, or the path of a file holding one."""
    if not text:
        return {}
    source = Path(text).read_text(encoding="utf-8") if not text.lstrip().startswith("{") and Path(text).is_file() \
        else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise InputError(f"--columns: not a JSON object ({exc.msg})") from None
    if not isinstance(value, dict):
        raise InputError("--columns: expected a JSON object {field: column}")
    return value


def model_preset(name: str) -> str | None:
    """The preset a published model name has the shape of (``meta-llama/Llama-3.1-8B-Instruct`` -> llama-3.1-8b)."""
    base = name.rsplit("/", 1)[-1].lower()
    changed = True
    while changed:
        changed = False
        for suffix in _NAME_SUFFIXES:
            if base.endswith(suffix):
                base, changed = base[: -len(suffix)], True
    base = base.removeprefix("meta-")
    return base if base in PRESETS and base != "tiny" else None


def gpu_name(system: str) -> str | None:
    """sunsim's GPU for a system name (``h100_sxm`` -> h100); None when sunsim has no such GPU."""
    base = re.sub(r"[_-](sxm|pcie|nvl)\d*$", "", system.strip().lower())
    return base if base in GPUS else None


def concurrency_of(row: pd.Series) -> int | None:
    """The row's client count: its own column, else ``silicon_concurrency=N``, ``_c<N>_`` in the id, batch_size."""
    for text, pattern in ((row["concurrency"], r"^\s*(\d+)\s*$"), (row["source"], r"silicon_concurrency=(\d+)"),
                          (row["id"], r"_c(\d+)(?:_|$)")):
        found = re.search(pattern, str(text))
        if found and int(found.group(1)) > 0:
            return int(found.group(1))
    if row["mode"] == "agg":
        size = _number(row["batch_size"])
        if size is not None and size >= 1 and size == int(size):
            return int(size)
    return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _count(text: str, default: int = 1) -> int | None:
    """A whole count (empty: ``default``); None when it is not one."""
    if text == "":
        return default
    value = _number(text)
    return int(value) if value is not None and value >= 1 and value == int(value) else None


def sunsim_modes() -> tuple[str, ...]:
    """The variant modes the scenario schema accepts now (read from it, so a new mode is seen at once)."""
    return typing.get_args(VariantSpec.model_fields["mode"].annotation)


def judge(row: pd.Series, model_configs: dict[str, str] | None = None) -> Verdict:
    """Whether sunsim can replay ``row``, and with which settings."""
    model = (model_configs or {}).get(row["model"]) or model_preset(row["model"])
    if model is None:
        return Verdict("model not known to sunsim", row["model"])
    gpu = gpu_name(row["system"])
    if gpu is None:
        return Verdict("GPU not known to sunsim", row["system"])
    roles = ("",) if row["mode"] == "agg" else ("prefill_", "decode_")
    tp: dict[str, int] = {}
    for role in roles:
        for key, what in (("pp", "pipeline"), ("attention_dp", "attention data")):
            size = _count(row[role + key])
            if size != 1:
                return Verdict(f"{what} parallelism not modelled", f"{role}{key} {row[role + key]}")
        size = _count(row[role + "tp"])
        if size not in TP_SIZES:
            return Verdict("tensor parallelism of this size not modelled", f"{role}tp {row[role + 'tp']}")
        tp[role] = size
    quant = row["gemm_quant"] or row["precision"]
    dtype = DTYPE_OF.get(quant.lower()) if quant else "bf16"
    note = "" if quant else "precision empty: bf16 assumed (the checkpoint's format)"
    if dtype is None:
        return Verdict("precision has no sunsim weight format", quant)
    isl, osl = _count(row["isl"], 0), _count(row["osl"], 0)
    if not isl or not osl:
        return Verdict("lengths missing or not whole", f"isl {row['isl']!r}, osl {row['osl']!r}")
    ttft, tpot = _number(row["ttft_ms"]), _number(row["tpot_ms"])
    if ttft is None or tpot is None or ttft <= 0 or tpot <= 0:
        return Verdict("no measured TTFT and TPOT", f"ttft {row['ttft_ms']!r}, tpot {row['tpot_ms']!r}")
    modes = sunsim_modes()
    if row["mode"] == "agg":
        if "aggregated" not in modes:
            return Verdict("aggregated serving not modelled", "mode agg")
        mode, prefill, decode = "aggregated", 1, 1
    elif row["mode"] == "disagg":
        prefill, decode = _count(row["prefill_workers"]), _count(row["decode_workers"])
        if prefill is None or decode is None:
            return Verdict("worker counts missing or not whole",
                           f"prefill {row['prefill_workers']!r}, decode {row['decode_workers']!r}")
        mode = "dedicated"
    else:
        return Verdict("serving mode not known", row["mode"])
    concurrency = concurrency_of(row)
    if concurrency is None:
        return Verdict("no concurrency (closed-loop clients need one)", row["id"])
    if dtype != "bf16" and dtype != "fp16":
        note = "; ".join(filter(None, [note, "prefill priced in bf16 (sunsim's prefill stays 16-bit)"]))
    prefill_tp, decode_tp = (tp[""], tp[""]) if row["mode"] == "agg" else (tp["prefill_"], tp["decode_"])
    return Verdict(None, note, model, gpu, dtype, mode, prefill, decode, concurrency, prefill_tp, decode_tp)
