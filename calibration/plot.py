"""Measured vs fitted step times, one column per weight format (decode on top, prefill below)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sunsim.costs.architecture import ModelShape
from sunsim.output import write_atomic

from .raw import ok_rows


def plot_fit(path: Path, rows: list[dict], shape: ModelShape, fitted: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = shape.layers
    fig, axes = plt.subplots(2, len(fitted), figsize=(5 * len(fitted), 8), squeeze=False)
    for col, (dtype, f) in enumerate(fitted.items()):
        comp = f["components"]
        hd, hp = comp["head_decode"], comp["head_prefill"]
        ax = axes[0][col]
        dec = ok_rows(rows, "decode_layer", dtype)
        cmap = plt.get_cmap("viridis")
        batches = f["decode"]["batch"]
        for i, b in enumerate(batches):
            pts = sorted((r["kv_tokens"], L * r["time_s"] + np.interp(b, hd["batch"], hd["seconds"]))
                         for r in dec if r["batch"] == b)
            if not pts:
                continue
            x = np.array([p[0] for p in pts])
            color = cmap(i / max(1, len(batches) - 1))
            ax.plot(x, [p[1] * 1e3 for p in pts], "o", color=color, label=f"B={b}")
            ax.plot(x, (f["decode"]["alpha_s"][i] + f["decode"]["beta_s_per_kv_token"] * x) * 1e3, "-", color=color)
        mixed = ok_rows(rows, "decode_mixed", dtype)
        if mixed:
            ax.plot([r["kv_tokens"] for r in mixed],
                    [(L * r["time_s"] + np.interp(r["batch"], hd["batch"], hd["seconds"])) * 1e3 for r in mixed],
                    "kx", label="mixed lengths")
        e = f["fit_error"]["decode"]
        ax.set(xscale="log", yscale="log", xlabel="KV tokens in batch", ylabel="decode step (ms)",
               title=f"{dtype} decode, {L} layers: median err {e['median_rel']:.1%}, max {e['max_rel']:.1%}")
        ax.legend(fontsize=7)
        ax = axes[1][col]
        pre = ok_rows(rows, "prefill_layer", dtype)
        ax.scatter([r["tokens"] for r in pre],
                   [(L * r["time_s"] + np.interp(r["tokens"], hp["tokens"], hp["seconds"])) * 1e3 for r in pre],
                   c=[np.log2(r["seqlen"]) for r in pre], label="measured (colour: log2 prompt length)")
        p = f["prefill"]
        pred = [(np.interp(r["tokens"], p["tokens"], p["linear_s"]) + p["attn_s_per_token_sq"] * r["sum_sq"]) * 1e3
                for r in pre]
        ax.plot([r["tokens"] for r in pre], pred, "r+", markersize=12, label="fitted")
        e = f["fit_error"]["prefill"]
        ax.set(xscale="log", yscale="log", xlabel="prompt tokens in batch", ylabel="prefill (ms)",
               title=f"{dtype} prefill: median err {e['median_rel']:.1%}, max {e['max_rel']:.1%}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
