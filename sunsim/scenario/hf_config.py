"""A model shape from a Hugging Face ``config.json`` (Llama, Mistral, Qwen2, Qwen3).

These families share the decoder the simulator models (grouped-query attention, gated MLP),
so their configs map field by field onto :class:`ModelShape`. Mixture-of-experts and other
families would be read into a wrong shape without complaint, so their ``model_type`` is refused,
and so is any config with an experts key (:data:`MOE_KEYS`), whatever its ``model_type``.
Sliding-window attention (some Mistral configs) is ignored: KV is counted for the whole context.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sunsim.costs.architecture import ModelShape
from sunsim.scenario.limits import ScenarioError
from sunsim.scenario.shape import CustomShape

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")

#: config.json key -> ModelShape field.
KEYS: dict[str, str] = {
    "hidden_size": "hidden",
    "num_hidden_layers": "layers",
    "num_attention_heads": "heads",
    "num_key_value_heads": "kv_heads",
    "head_dim": "head_dim",
    "intermediate_size": "intermediate",
    "vocab_size": "vocab",
    "tie_word_embeddings": "tied_embeddings",
}
FIELDS = {v: k for k, v in KEYS.items()}
#: Keys of mixture-of-experts configs (Mixtral, Qwen-MoE, DeepSeek, OLMoE...): such a config with no
#: or a wrong ``model_type`` would otherwise be read as a dense model of its attention and one expert.
MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "n_shared_experts", "num_experts_per_tok",
            "moe_intermediate_size", "shared_expert_intermediate_size", "moe_layer_freq")
_HASH = re.compile(r"[0-9a-f]{40}")
#: Larger than any real config.json (a few KiB); refuses a wrong file before reading it.
MAX_BYTES = 10 * 2**20


@lru_cache(maxsize=16)
def read_hf_config(path: str) -> ModelShape:
    """The shape a ``config.json`` describes; errors name ``model.hf_config`` and the key."""
    where = f"model.hf_config {path!r}"
    p = Path(path)
    try:
        with p.open("rb") as f:  # at most MAX_BYTES + 1, so /dev/zero is not read forever
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError(f"{where}: file not found (relative paths are relative to the scenario file)") from None
    except OSError as exc:
        raise ScenarioError(f"{where}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise ScenarioError(f"{where}: larger than {MAX_BYTES // 2**20} MiB; not a config.json")
    try:
        cfg = json.loads(raw.decode("utf-8-sig"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ScenarioError(f"{where}: not a UTF-8 text file") from None
    except RecursionError:
        raise ScenarioError(f"{where}: not a config.json (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an integer of more than 4300 digits
        raise ScenarioError(f"{where}: not valid JSON ({str(exc).split('; use sys.', 1)[0]})") from None
    if not isinstance(cfg, dict):
        raise ScenarioError(f"{where}: must hold a JSON object")
    folder = p.resolve().parent.name
    usable = p.name == "config.json" and folder and not _HASH.fullmatch(folder)
    return shape_from_hf(cfg, where, folder if usable else None)


def _no_constant(name: str) -> None:
    # Python's json reads NaN and Infinity, which JSON does not have.
    raise ValueError(f"{name} is not a JSON number")


def shape_from_hf(cfg: dict[str, Any], where: str = "model.hf_config", folder: str | None = None) -> ModelShape:
    """Map a parsed ``config.json`` onto a :class:`ModelShape`, named after ``_name_or_path``'s
    last part, else ``folder`` (the one holding config.json), else the ``model_type``."""
    kind = cfg.get("model_type")
    if kind is not None and kind not in SUPPORTED_TYPES:
        raise ScenarioError(f"{where}: model_type {kind!r} is not supported; allowed: {', '.join(SUPPORTED_TYPES)}")
    for key in MOE_KEYS:
        if cfg.get(key) not in (None, 0):
            raise ScenarioError(f"{where}: key {key!r} marks a mixture-of-experts model; the "
                                f"simulator models dense models only ({', '.join(SUPPORTED_TYPES)})")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if cfg.get(key) is None:
            raise ScenarioError(f"{where}: missing key {key!r} (a positive integer)")
    fields = {field: cfg[key] for key, field in KEYS.items() if cfg.get(key) is not None}
    for field, value in fields.items():  # JSON types exactly: "32" or true is not a count
        wanted = bool if field == "tied_embeddings" else int
        if not isinstance(value, wanted) or (wanted is int and (isinstance(value, bool) or value < 1)):
            allowed = "true or false" if wanted is bool else "a positive integer"
            raise ScenarioError(f"{where}: key {FIELDS[field]!r} is {value!r}; must be {allowed}")
    fields.setdefault("kv_heads", fields["heads"])  # no key: plain multi-head attention
    if "head_dim" not in fields:
        if fields["hidden"] % fields["heads"]:
            raise ScenarioError(f"{where}: no 'head_dim' and hidden_size {fields['hidden']} is not a multiple "
                                f"of num_attention_heads {fields['heads']}; give head_dim")
        fields["head_dim"] = fields["hidden"] // fields["heads"]
    named = cfg.get("_name_or_path")
    named = named.rstrip("/").rsplit("/", 1)[-1] if isinstance(named, str) else ""
    fields["name"] = (named or folder or str(kind or "hf-model"))[:100]
    try:
        spec = CustomShape.model_validate(fields)
    except ValidationError as err:
        e = err.errors()[0]
        key = FIELDS.get(str(e["loc"][0]), str(e["loc"][0])) if e["loc"] else "config"
        raise ScenarioError(f"{where}: key {key!r} is {e['input']!r}; {e['msg']}") from None
    if spec.heads % spec.kv_heads:
        raise ScenarioError(f"{where}: num_attention_heads ({spec.heads}) must be a multiple of "
                            f"num_key_value_heads ({spec.kv_heads})")
    return ModelShape(**spec.model_dump())

