"""Performance targets the calibration checks on itself, written to ``validation.md``.

Each target compares measured numbers with what a serving engine achieves on the same GPU; a
missed target means the timed kernels do not stand for an engine and the profile would mislead
the simulator. They are evaluated on every device, but enforced (non-zero exit, a MISSED line)
only on a GPU: on a CPU the kernels are not an engine's and the numbers are reported only.

* ``decode_layer_vs_gemm``: bf16 decode layer at batch 1 (smallest context) <= 1.3 x its four
  projections' GEMM time: the non-GEMM work (norms, RoPE, attention, launches) is small, as in
  a fused, graph-replayed engine step;
* ``attention_kv_bandwidth``: batched decode attention at batch 64, context 1024 reads KV at
  >= 70% of the measured device copy bandwidth;
* ``int4_decode_faster``: int4 decode step faster than bf16 at batch 1 and 16 (context 1024);
* ``fp8_prefill_faster``: fp8 prefill of one 2048-token prompt faster than bf16;
* ``tpot``: ``sunsim validate`` per-request TPOT error median <= 5%, p90 <= 10%.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sunsim.costs.architecture import ModelShape
from sunsim.costs.model import measured_cost_model

from .raw import ok_rows

LAYER_VS_GEMM = 1.3
KV_BW_FRACTION = 0.70
TPOT_MEDIAN = 0.05
TPOT_P90 = 0.10
INT4_BATCHES = (1, 16)
DECODE_CONTEXT = 1024
FP8_PREFILL_TOKENS = 2048
ATTN_POINT = (64, 1024)


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    value: float | None  # the measured figure (None: could not be measured here)
    threshold: str
    met: bool | None
    enforced: bool

    def line(self) -> str:
        if self.met is None:
            state = "not measured"
        elif self.met:
            state = "met"
        else:
            state = "MISSED" + ("" if self.enforced else " (reported only: not enforced on a CPU)")
        val = "-" if self.value is None else f"{self.value:.3g}"
        return f"| {self.name} | {self.what} | {val} | {self.threshold} | {state} |"

    def as_dict(self) -> dict:
        return asdict(self)


def _step(profile: dict, dtype: str, batch: int, context: int) -> float | None:
    if dtype not in profile.get("dtypes", {}):
        return None
    cost = measured_cost_model(profile, ModelShape(**profile["model"]), dtype)
    a, b = cost.decode_coeffs(batch)
    return a + b * batch * context


def _prefill(profile: dict, dtype: str, tokens: int) -> float | None:
    if dtype not in profile.get("dtypes", {}):
        return None
    cost = measured_cost_model(profile, ModelShape(**profile["model"]), dtype)
    return cost.prefill_time(tokens, tokens ** 2)


def evaluate(rows: list[dict], profile: dict, metadata: dict, validation: dict | None, enforced: bool) -> list[Target]:
    """Every target that the given measurements allow; ``enforced`` on a GPU."""
    out: list[Target] = []
    shape = ModelShape(**profile["model"])
    dec = ok_rows(rows, "decode_layer", "bf16")
    gemm = {r["batch"]: r["time_s"] for r in ok_rows(rows, "gemm", "bf16")}
    ratio = None
    if dec and 1 in gemm:
        b1 = [r for r in dec if r["batch"] == 1]
        if b1:
            ratio = min(b1, key=lambda r: r["seqlen"])["time_s"] / gemm[1]
    out.append(Target("decode_layer_vs_gemm", "bf16 decode layer / its 4 GEMMs, batch 1", ratio,
                      f"<= {LAYER_VS_GEMM}", None if ratio is None else ratio <= LAYER_VS_GEMM, enforced))

    attn = ok_rows(rows, "attention")  # the same kernel in every format
    frac, what = None, "KV read / copy bandwidth, batch 64 ctx 1024"
    d2d = (metadata.get("device") or {}).get("d2d_Bps")
    if attn and d2d:
        exact = [r for r in attn if (r["batch"], r["seqlen"]) == ATTN_POINT]
        r = exact[0] if exact else max(attn, key=lambda r: r["kv_tokens"])
        if not exact:
            what = f"KV read / copy bandwidth, batch {r['batch']} ctx {r['seqlen']} (largest timed)"
        kv_bytes = r["kv_tokens"] * shape.kv_heads * shape.head_dim * 2 * 2
        frac = kv_bytes / r["time_s"] / d2d
    out.append(Target("attention_kv_bandwidth", what, frac, f">= {KV_BW_FRACTION:.0%}",
                      None if frac is None else frac >= KV_BW_FRACTION, enforced))

    for b in INT4_BATCHES:
        i4, bf = _step(profile, "int4", b, DECODE_CONTEXT), _step(profile, "bf16", b, DECODE_CONTEXT)
        sp = bf / i4 if i4 and bf else None
        out.append(Target(f"int4_decode_faster_b{b}", f"bf16 / int4 decode step, batch {b}, ctx {DECODE_CONTEXT}",
                          sp, "> 1", None if sp is None else sp > 1.0, enforced))
    f8, bf = _prefill(profile, "fp8", FP8_PREFILL_TOKENS), _prefill(profile, "bf16", FP8_PREFILL_TOKENS)
    sp = bf / f8 if f8 and bf else None
    out.append(Target("fp8_prefill_faster", f"bf16 / fp8 prefill, {FP8_PREFILL_TOKENS} tokens", sp, "> 1",
                      None if sp is None else sp > 1.0, enforced))

    for dtype, v in ((validation or {}).get("dtypes") or {}).items():
        med, p90 = v["tpot"]["median_rel"], v["tpot"]["p90_rel"]
        out.append(Target(f"tpot_median_{dtype}", f"{dtype} TPOT error, median", med, f"<= {TPOT_MEDIAN:.0%}",
                          med <= TPOT_MEDIAN, enforced))
        out.append(Target(f"tpot_p90_{dtype}", f"{dtype} TPOT error, p90", p90, f"<= {TPOT_P90:.0%}",
                          p90 <= TPOT_P90, enforced))
    return out


def missed(targets: list[Target]) -> list[Target]:
    """The enforced targets that were measured and missed."""
    return [t for t in targets if t.enforced and t.met is False]


def render(targets: list[Target], device: str) -> str:
    head = ["## Targets", "",
            f"Device type {device}: " + ("targets enforced (a MISSED line fails the command)." if device == "cuda"
                                          else "targets evaluated and reported only (enforced on a GPU)."), "",
            "| target | what | value | threshold | state |", "|---|---|---|---|---|"]
    return "\n".join(head + [t.line() for t in targets]) + "\n"
