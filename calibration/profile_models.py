"""Cost models from a measured profile: as calibrated, recomposed for another layer count, or derived.

* calibrated shape: :func:`sunsim.costs.model.measured_cost_model` reads the composed tables;
* same shape, another number of layers (the validation loop runs the few layers it instantiated):
  ``layers x layer components + head``;
* another shape (never calibrated): scale the measured device figures. A layer's GEMM time at a
  given row count is taken proportional to its weight count (same achieved FLOP/s or bandwidth at
  that row count), the rest of the layer proportional to ``hidden``, the head to ``vocab x hidden``,
  KV reads by the measured KV bandwidth, prefill attention by ``heads x head_dim``. This is an
  estimate; GEMM efficiency also depends on the matrix sizes, so calibrating the shape is better.
"""

from __future__ import annotations

import numpy as np

from sunsim.costs.architecture import ModelShape
from sunsim.costs.model import MeasuredCostModel, ProfileError, ProfileInfo, measured_cost_model

SHAPE_FIELDS = ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "vocab")


def same_shape(profile: dict, shape: ModelShape) -> bool:
    return all(profile["model"].get(k) == getattr(shape, k) for k in SHAPE_FIELDS)


def _info(profile: dict, suffix: str) -> ProfileInfo:
    return ProfileInfo(name=f"{profile['name']} ({suffix})", kind="measured", device=profile["device"]["name"])


def _dtype_entry(profile: dict, dtype: str) -> dict:
    if dtype not in profile["dtypes"]:
        have = ", ".join(sorted(profile["dtypes"]))
        raise ProfileError(f"hardware.profile {profile['name']!r} has no {dtype!r} timings (it has: {have})")
    return profile["dtypes"][dtype]


def recomposed_model(profile: dict, shape: ModelShape, dtype: str, layers: int) -> MeasuredCostModel:
    """The calibrated shape with ``layers`` layers: ``layers x layer + head`` from the stored components."""
    try:
        c = _dtype_entry(profile, dtype)["components"]
        ld, lp, hd, hp = c["layer_decode"], c["layer_prefill"], c["head_decode"], c["head_prefill"]
        b, t = np.asarray(ld["batch"], float), np.asarray(lp["tokens"], float)
        alpha = layers * np.asarray(ld["alpha_s"]) + np.interp(b, hd["batch"], hd["seconds"])
        linear = layers * np.asarray(lp["linear_s"]) + np.interp(t, hp["tokens"], hp["seconds"])
        return MeasuredCostModel(
            info=_info(profile, f"{layers} layers"), shape=shape, dtype=dtype, decode_batch=b, decode_alpha=alpha,
            decode_beta=layers * float(ld["beta_s_per_kv_token"]), prefill_tokens=t, prefill_linear=linear,
            prefill_attn=layers * float(lp["attn_s_per_token_sq"]))
    except (KeyError, TypeError) as exc:
        raise ProfileError(f"hardware.profile {profile['name']!r}: {dtype} components are missing ({exc})") from None


def derived_model(profile: dict, shape: ModelShape, dtype: str) -> MeasuredCostModel:
    """Estimate for a shape the profile was not measured on, from its ``device_figures``."""
    try:
        figs = profile["device_figures"]
        ref = figs["reference_shape"]
        f = figs["dtypes"][dtype]
    except KeyError:
        _dtype_entry(profile, dtype)
        raise ProfileError(f"hardware.profile {profile['name']!r} has no device_figures for {dtype!r}; "
                           f"it can only cost the model it was measured on ({profile['model'].get('name')!r})") from None
    ref_shape = ModelShape(**ref)
    r_lin = shape.layer_linear_params / ref_shape.layer_linear_params
    r_hidden = shape.hidden / ref_shape.hidden
    r_head = shape.vocab * shape.hidden / (ref_shape.vocab * ref_shape.hidden)
    g_x, g_y = f["gemm"]["tokens"], f["gemm"]["seconds"]
    od, op = f["layer_overhead_decode"], f["layer_overhead_prefill"]
    b = np.asarray(od["batch"], float)
    t = np.asarray(op["tokens"], float)
    layer_dec = np.interp(b, g_x, g_y) * r_lin + np.asarray(od["seconds"]) * r_hidden
    layer_pre = np.interp(t, g_x, g_y) * r_lin + np.asarray(op["seconds"]) * r_hidden
    alpha = shape.layers * layer_dec + np.interp(b, f["head_decode"]["batch"], f["head_decode"]["seconds"]) * r_head
    linear = shape.layers * layer_pre + np.interp(t, f["head_prefill"]["tokens"], f["head_prefill"]["seconds"]) * r_head
    kv_bw = f.get("kv_read_Bps")
    return MeasuredCostModel(
        info=_info(profile, f"derived for {shape.name}"), shape=shape, dtype=dtype, decode_batch=b,
        decode_alpha=alpha, decode_beta=shape.kv_bytes_per_token / kv_bw if kv_bw else 0.0,
        prefill_tokens=t, prefill_linear=linear,
        prefill_attn=shape.layers * shape.heads * shape.head_dim * f["prefill_attn_s_per_head_dim_token_sq"])


def cost_model_for(profile: dict, shape: ModelShape, dtype: str) -> tuple[MeasuredCostModel, bool]:
    """The calibrated model when the shape matches, else the derived estimate; the flag says which."""
    if same_shape(profile, shape):
        return measured_cost_model(profile, shape, dtype), False
    return derived_model(profile, shape, dtype), True
