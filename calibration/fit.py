"""Fit the sunsim cost-model tables to the raw timings, and say how well they fit.

Per weight format, one layer's decode step is fitted as ``alpha_layer(B) + beta_layer * kv_tokens``
(one alpha per grid batch, one beta for all) and its prefill as ``linear_layer(T) + attn_layer * sum_sq``,
by least squares on *relative* residuals, so the fast small-batch points count as much as the slow
large ones. The model is then composed as ``layers x layer + embedding/head``: the profile holds
the composed tables (what :class:`sunsim.costs.model.MeasuredCostModel` reads) and the components
(to recompose for another layer count and to derive uncalibrated shapes).
"""

from __future__ import annotations

import numpy as np

from sunsim.costs.architecture import ModelShape

from .errors import CalibrationError
from .raw import ok_rows


def _lsq_table(groups: list[int], extra: list[float], y: list[float]) -> tuple[list[int], np.ndarray, float]:
    """``y ~ table[group] + coef * extra`` (coef >= 0), weighted by 1/y; returns keys, table, coef."""
    keys = sorted(set(groups))
    idx = np.array([keys.index(g) for g in groups])
    yv, ev = np.asarray(y, float), np.asarray(extra, float)
    w = 1.0 / yv
    a = np.zeros((len(yv), len(keys) + 1))
    a[np.arange(len(yv)), idx] = 1.0
    a[:, -1] = ev
    sol = None
    if np.ptp(ev) > 0:
        sol, *_ = np.linalg.lstsq(a * w[:, None], yv * w, rcond=None)
    if sol is None or sol[-1] < 0:  # no or negative slope: the tables alone, coef 0
        sol, *_ = np.linalg.lstsq(a[:, :-1] * w[:, None], yv * w, rcond=None)
        sol = np.append(sol, 0.0)
    return keys, np.clip(sol[:-1], 0.0, None), float(sol[-1])


def rel_errors(pred: np.ndarray, meas: np.ndarray) -> dict:
    err = np.abs(np.asarray(pred) - np.asarray(meas)) / np.asarray(meas)
    if len(err) == 0:
        return {"points": 0, "median_rel": None, "max_rel": None}
    return {"points": int(len(err)), "median_rel": float(np.median(err)), "max_rel": float(np.max(err))}


def _table(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean time per ``key`` value (several rows may share one, e.g. head rows at equal tokens)."""
    ks = sorted({r[key] for r in rows})
    return np.array(ks, float), np.array([np.mean([r["time_s"] for r in rows if r[key] == k]) for k in ks])


def _at(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    return float(np.interp(x, xs, ys))


def fit_dtype(rows: list[dict], shape: ModelShape, dtype: str, layers_timed: int) -> dict:
    """The profile entry of one weight format: composed tables, components, fit errors, composition check."""
    L = shape.layers
    dec = ok_rows(rows, "decode_layer", dtype)
    pre = ok_rows(rows, "prefill_layer", dtype)
    hd, hp = ok_rows(rows, "head_decode", dtype), ok_rows(rows, "head_prefill", dtype)
    if not dec or not pre or not hd or not hp:
        raise CalibrationError(f"no usable {dtype} timings to fit (all points failed or were skipped)")
    hd_x, hd_y = _table(hd, "batch")
    hp_x, hp_y = _table(hp, "tokens")

    batches, a_layer, b_layer = _lsq_table([r["batch"] for r in dec], [r["kv_tokens"] for r in dec],
                                           [r["time_s"] for r in dec])
    alpha = L * a_layer + np.array([_at(b, hd_x, hd_y) for b in batches])
    beta = L * b_layer
    tokens, l_layer, attn_layer = _lsq_table([r["tokens"] for r in pre], [r["sum_sq"] for r in pre],
                                             [r["time_s"] for r in pre])
    linear = L * l_layer + np.array([_at(t, hp_x, hp_y) for t in tokens])
    attn = L * attn_layer

    def dec_pred(b: int, kv: int) -> float:
        return float(np.interp(b, batches, alpha) + beta * kv)

    def composed(r: dict, head: float, n: int = L) -> float:
        return n * r["time_s"] + head

    d_meas = np.array([composed(r, _at(r["batch"], hd_x, hd_y)) for r in dec])
    d_pred = np.array([dec_pred(r["batch"], r["kv_tokens"]) for r in dec])
    p_meas = np.array([composed(r, _at(r["tokens"], hp_x, hp_y)) for r in pre])
    p_pred = np.array([float(np.interp(r["tokens"], tokens, linear)) + attn * r["sum_sq"] for r in pre])
    mixed = ok_rows(rows, "decode_mixed", dtype)
    m_meas = np.array([composed(r, _at(r["batch"], hd_x, hd_y)) for r in mixed])
    m_pred = np.array([dec_pred(r["batch"], r["kv_tokens"]) for r in mixed])

    return {
        "decode": {"batch": [int(b) for b in batches], "alpha_s": alpha.tolist(), "beta_s_per_kv_token": beta},
        "prefill": {"tokens": [int(t) for t in tokens], "linear_s": linear.tolist(), "attn_s_per_token_sq": attn},
        "components": {
            "layer_decode": {"batch": [int(b) for b in batches], "alpha_s": a_layer.tolist(),
                             "beta_s_per_kv_token": b_layer},
            "layer_prefill": {"tokens": [int(t) for t in tokens], "linear_s": l_layer.tolist(),
                              "attn_s_per_token_sq": attn_layer},
            "head_decode": {"batch": hd_x.astype(int).tolist(), "seconds": hd_y.tolist()},
            "head_prefill": {"tokens": hp_x.astype(int).tolist(), "seconds": hp_y.tolist()},
        },
        "fit_error": {
            "decode": rel_errors(d_pred, d_meas),
            "prefill": rel_errors(p_pred, p_meas),
            "decode_mixed_lengths": rel_errors(m_pred, m_meas),
        },
        "composition_check": composition_check(rows, dtype, layers_timed, dec, pre, hd_x, hd_y, hp),
    }


def composition_check(rows: list[dict], dtype: str, n: int, dec: list[dict], pre: list[dict],
                      hd_x: np.ndarray, hd_y: np.ndarray, hp: list[dict]) -> dict:
    """Full ``n``-layer stack timings vs ``n x (one layer) + head`` measured at the same point."""
    points = []
    for kind, layer_rows, match in (("decode_stack", dec, ("batch", "seqlen")), ("prefill_stack", pre, ("batch", "seqlen"))):
        for r in ok_rows(rows, kind, dtype):
            layer = next((x for x in layer_rows if all(x[k] == r[k] for k in match)), None)
            if layer is None:
                continue
            if kind == "decode_stack":
                head = _at(r["batch"], hd_x, hd_y)
            else:
                head = next(x["time_s"] for x in hp if x["batch"] == r["batch"] and x["seqlen"] == r["seqlen"])
            comp = n * layer["time_s"] + head
            points.append({"kind": kind.split("_")[0], "batch": r["batch"], "seqlen": r["seqlen"], "layers": n,
                           "stack_s": r["time_s"], "composed_s": comp,
                           "rel_error": abs(comp - r["time_s"]) / r["time_s"]})
    errs = [p["rel_error"] for p in points]
    return {"points": points, "max_rel": max(errs) if errs else None,
            "median_rel": float(np.median(errs)) if errs else None}


def device_figures(rows: list[dict], shape: ModelShape, fitted: dict[str, dict], weight_bytes: dict[str, int],
                   copy_bw: dict) -> dict:
    """Shape-independent figures, so costs for a shape that was never calibrated can be derived.

    Per format: the GEMM curve (achieved FLOP/s and weight-streaming bandwidth vs rows), the rest of
    a layer's time (norms, RoPE, launches) vs batch/tokens, the KV read bandwidth and the prefill
    attention cost per unit of ``heads x head_dim x sum_sq``; plus the 16-bit head curve.
    """
    per_layer_params = shape.layer_linear_params
    out: dict = {"reference_shape": shape.as_dict(), "copy_bandwidth": copy_bw, "dtypes": {}}
    kv_layer_bytes = shape.kv_bytes_per_token / shape.layers
    for dtype, f in fitted.items():
        g = sorted(ok_rows(rows, "gemm", dtype), key=lambda r: r["batch"])
        gx = np.array([r["batch"] for r in g], float)
        gy = np.array([r["time_s"] for r in g])
        comp = f["components"]
        ld, lp = comp["layer_decode"], comp["layer_prefill"]
        dec_over = [max(0.0, a - _at(b, gx, gy)) for b, a in zip(ld["batch"], ld["alpha_s"])]
        pre_over = [max(0.0, a - _at(t, gx, gy)) for t, a in zip(lp["tokens"], lp["linear_s"])]
        beta = ld["beta_s_per_kv_token"]
        out["dtypes"][dtype] = {
            "gemm": {"tokens": gx.astype(int).tolist(), "seconds": gy.tolist(),
                     "flops_per_s": (2.0 * per_layer_params * gx / gy).tolist(),
                     "weight_bandwidth_Bps": (weight_bytes[dtype] / gy).tolist()},
            "layer_overhead_decode": {"batch": ld["batch"], "seconds": dec_over},
            "layer_overhead_prefill": {"tokens": lp["tokens"], "seconds": pre_over},
            "kv_read_Bps": kv_layer_bytes / beta if beta > 0 else None,
            "prefill_attn_s_per_head_dim_token_sq": lp["attn_s_per_token_sq"] / (shape.heads * shape.head_dim),
            "head_decode": comp["head_decode"],
            "head_prefill": comp["head_prefill"],
        }
    return out
