"""Physical limits: an SLO that no number of GPUs meets, rejected before the first probe.

Each request's TTFT and TPOT have lower bounds that do not depend on the pool sizes, so a search
against an SLO below them would only double GPUs up to ``--max-gpus`` and then fail; checking the
bounds first fails at once and names the limiting resource.
"""

from __future__ import annotations

import numpy as np

from sunsim.scenario import AGGREGATED_MODES, Scenario, ScenarioError, VariantSpec
from sunsim.sim.tensor_parallel import link_kv_bytes
from sunsim.sim.variant import PREFILL_DTYPE, cost_model
from sunsim.workload.stream import RequestStream


def _share(ok: np.ndarray) -> float:
    """Share of requests meeting a bound; a model without requests meets it."""
    return float(ok.mean()) if len(ok) else 1.0


def _quantile_ms(x: np.ndarray, q: float) -> float:
    """A quantile in milliseconds for the messages (0 for a model without requests)."""
    return float(np.quantile(x, q)) * 1e3 if len(x) else 0.0


def check_reachable(sc: Scenario, attainment: float, variants: list[VariantSpec],
                    stream: RequestStream, profile: object) -> None:
    """Raise :class:`ScenarioError` if some model cannot reach the attainment at any pool size.

    Per request, with nothing else running: TTFT >= the prefill of its prompt alone on one
    prefill GPU; TPOT >= the decode step at batch 1 over its own context (``decode_coeffs(1)``,
    the context averaged over its decode steps) plus, spread over its output tokens, the KV
    transfer of its prompt over the link (TPOT is measured from the first token, so it
    includes the hand-off; TTFT does not). More GPUs only add queues, never remove these, so
    if fewer than ``attainment`` of a model's requests can meet a target under its bound, the
    SLO is unreachable; the message names the SLO field, the limiting resource and the numbers.
    """
    slo = sc.slo
    p = stream.prompt_tokens.astype(float)
    o = stream.output_tokens.astype(float)
    q = attainment

    prefill = cost_model(sc, profile, PREFILL_DTYPE, "prefill")
    uniq, inv = np.unique(stream.prompt_tokens, return_inverse=True)
    ttft_bf16 = np.array([prefill.prefill_time(int(t), int(t) * int(t)) for t in uniq])[inv]
    ic = sc.interconnect
    multi = o > 1
    for v in variants:
        link_s = ic.latency_us * 1e-6 + (p + 1) * link_kv_bytes(sc, v) / ic.bandwidth_Bps
        alpha, beta = cost_model(sc, profile, v.dtype, variant=v).decode_coeffs(1)
        context = np.maximum(p, p + (o - 1) / 2 - 1)
        step_lb = np.where(multi, alpha + beta * context, 0.0)
        link_lb = np.where(multi, link_s / np.maximum(o - 1, 1), 0.0)
        if v.mode in AGGREGATED_MODES:  # no hand-over; the prompt runs on the variant's own weights
            link_lb = np.zeros_like(link_lb)
            own = cost_model(sc, profile, v.dtype, hardware=sc.hardware_for("decode", v))
            ttft_lb = np.array([own.prefill_time(int(t), int(t) * int(t)) for t in uniq])[inv]
        else:
            ttft_lb = ttft_bf16
        for i, model in enumerate(stream.models):
            sel = stream.model == i
            if not sel.any():
                continue
            where = f"model {model}" + ("" if v.dtype == "bf16" else f" (variant {v.name}, {v.dtype})")
            if _share(ttft_lb[sel] <= slo.ttft_s) < q:
                raise ScenarioError(
                    f"unreachable SLO: slo.ttft_s = {slo.ttft_s * 1e3:g} ms, but prefill compute alone (each prompt "
                    f"on one prefill GPU, no queue) takes {_quantile_ms(ttft_lb[sel], q):.3g} ms at the "
                    f"{q:.0%} quantile of {where}'s requests; no number of GPUs reaches {q:.0%} attainment")
            m = sel & multi
            if _share(step_lb[sel] <= slo.tpot_s) < q:  # one-token requests have no TPOT and pass
                raise ScenarioError(
                    f"unreachable SLO: slo.tpot_s = {slo.tpot_s * 1e3:g} ms, but the decode step at batch 1 "
                    f"(decode compute, decode_coeffs(1) over the request's own context) takes "
                    f"{_quantile_ms(step_lb[m], _inner_q(q, sel, m)):.3g} ms at the {q:.0%} quantile of {where}'s "
                    f"requests; no number of GPUs reaches {q:.0%} attainment")
            if _share(step_lb[sel] + link_lb[sel] <= slo.tpot_s) < q:
                raise ScenarioError(
                    f"unreachable SLO: slo.tpot_s = {slo.tpot_s * 1e3:g} ms, but the KV link ({ic.bandwidth_Bps / 1e9:g}"
                    f" GB/s; the prompt's KV transfer, spread over the output tokens) brings the least TPOT to "
                    f"{_quantile_ms((step_lb + link_lb)[m], _inner_q(q, sel, m)):.3g} ms at the {q:.0%} quantile of "
                    f"{where}'s requests (decode step alone: {_quantile_ms(step_lb[m], _inner_q(q, sel, m)):.3g} ms); "
                    f"no number of GPUs reaches {q:.0%} attainment")
            both = (ttft_lb[sel] <= slo.ttft_s) & (step_lb[sel] + link_lb[sel] <= slo.tpot_s)
            if _share(both) < q:
                raise ScenarioError(
                    f"unreachable SLO: slo.ttft_s = {slo.ttft_s * 1e3:g} ms and slo.tpot_s = {slo.tpot_s * 1e3:g} ms"
                    f" together: even with no queues only {_share(both):.1%} of {where}'s requests can meet both "
                    f"(prefill compute and decode step + KV link), below the {q:.0%} attainment")


def _inner_q(q: float, sel: np.ndarray, multi: np.ndarray) -> float:
    """The quantile, among a model's multi-token requests, that decides its TPOT attainment."""
    n, m = int(sel.sum()), int(multi.sum())
    return float(min(1.0, max(0.0, (q * n - (n - m)) / max(m, 1))))
