"""Capacity planning: the fewest GPUs that meet the SLO, and goodput, found with the simulator.

Criterion for GPU counts: *every* task model's requests meet the SLO attainment target
(each model has its own SLO). TTFT ends at the first token, before any decode or KV
transfer, so prefill is sized on TTFT alone. Decode pools of a dedicated variant share no
worker, link or queue, so all of a variant's pools are searched at once, each by its own
exponential-then-bisection search (O(log max_gpus) probes per pool). They do share one
thing: the decode router's random generator. With ``power_of_two`` routing, the draws a
pool gets depend on how many draws the pools before it took, so resizing one pool reshuffles
another's picks: its attainment is the same in distribution, not draw for draw. The
search's verdict for a pool is therefore a sample, as is every single-seed answer.

Seeds: one seed is one sample of the workload, and small pools flip by a GPU from seed to
seed. :func:`plan_seeds` plans each of several seeds and answers, per pool, the *largest*
count over seeds: that layout met the SLO on every seed tried, which is what a capacity plan
has to promise (the median would fail on about half the seeds it was not fitted to). Its
spread (min / median / max total over seeds) says how far to trust a difference between
variants: two variants whose ranges overlap are "within seed spread".

Before any probe, :func:`check_reachable` rejects an SLO that no number of GPUs can meet
(each request's TTFT and TPOT have lower bounds that do not depend on the pool sizes).
Goodput follows DistServe: the highest request rate at which the overall attainment meets
the target.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sunsim.analysis.metrics import summarize
from sunsim.analysis.runner import select_variants
from sunsim.costs.hardware import gpu as gpu_spec
from sunsim.costs.model import make_cost_model
from sunsim.scenario import POOL_MODES, Scenario, ScenarioError, VariantSpec
from sunsim.sim.variant import PREFILL_DTYPE, load_profile, simulate_variant
from sunsim.workload.stream import RequestStream, build_workload

Probe = dict  # one simulated configuration: the row of the frontier table

#: Largest --max-gpus accepted: beyond it a single probe would simulate an absurd cluster.
MAX_GPUS_LIMIT = 4096
#: Fewer requests than this for a model with traffic make its attainment too coarse to plan on.
MIN_REQUESTS_PER_MODEL = 2000


def check_max_gpus(max_gpus: int) -> None:
    if not isinstance(max_gpus, int) or isinstance(max_gpus, bool) or not 1 <= max_gpus <= MAX_GPUS_LIMIT:
        raise ScenarioError(f"--max-gpus must be an integer from 1 to {MAX_GPUS_LIMIT}, got {max_gpus!r}")


def _with(sc: Scenario, **updates) -> Scenario:
    data = sc.model_dump()
    for path, value in updates.items():
        node = data
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return Scenario.model_validate(data)


# --------------------------------------------------------------------------------------
# Physical limits: an SLO that no number of GPUs meets
# --------------------------------------------------------------------------------------
def _share(ok: np.ndarray) -> float:
    return float(ok.mean()) if len(ok) else 1.0


def _quantile_ms(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q)) * 1e3 if len(x) else 0.0


def check_reachable(sc: Scenario, attainment: float, variants: list[VariantSpec],
                    stream: RequestStream, profile: dict | None) -> None:
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
    shape = sc.shape
    gpu = gpu_spec(sc.hardware.gpu)
    p = stream.prompt_tokens.astype(float)
    o = stream.output_tokens.astype(float)
    q = attainment

    prefill = make_cost_model(gpu, shape, PREFILL_DTYPE, profile)
    uniq, inv = np.unique(stream.prompt_tokens, return_inverse=True)
    ttft_lb = np.array([prefill.prefill_time(int(t), int(t) * int(t)) for t in uniq])[inv]
    ic = sc.interconnect
    link_s = ic.latency_us * 1e-6 + (p + 1) * shape.kv_bytes_per_token / ic.bandwidth_Bps
    multi = o > 1
    for v in variants:
        alpha, beta = make_cost_model(gpu, shape, v.dtype, profile).decode_coeffs(1)
        context = np.maximum(p, p + (o - 1) / 2 - 1)
        step_lb = np.where(multi, alpha + beta * context, 0.0)
        link_lb = np.where(multi, link_s / np.maximum(o - 1, 1), 0.0)
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


# --------------------------------------------------------------------------------------
# One seed
# --------------------------------------------------------------------------------------
class _GpuTotals:
    """Total decode and prefill GPUs of a plan, from its per-pool counts."""

    decode_counts: dict[str, int]
    prefill_counts: dict[str, int]

    @property
    def decode_gpus(self) -> int:
        return sum(self.decode_counts.values())

    @property
    def prefill_gpus(self) -> int:
        return sum(self.prefill_counts.values())


@dataclass
class VariantPlan(_GpuTotals):
    variant: str
    decode_counts: dict[str, int]
    prefill_counts: dict[str, int]
    probes: list[Probe] = field(default_factory=list)
    goodput_rps: float | None = None
    goodput_gpus: int | None = None  # GPUs of the layout goodput was measured on (the scenario's)
    goodput_decode_gpus: int | None = None



class Planner:
    """Runs probes of one scenario at a given load and remembers each one."""

    def __init__(self, sc: Scenario, attainment: float, max_gpus: int,
                 on_probe: Callable[[Probe], None] | None = None) -> None:
        check_max_gpus(max_gpus)
        self.sc = sc
        self.attainment = attainment
        self.max_gpus = max_gpus
        self.on_probe = on_probe
        self.profile = load_profile(sc)
        self.stream = build_workload(sc)
        self.models = sorted(set(self.stream.model.tolist()))
        self.probes = 0

    def probe(self, variant: VariantSpec, prefill: dict[str, int], sc: Scenario | None = None,
              stream=None) -> tuple[dict, Probe]:
        sc = _with(sc or self.sc, **{"prefill.workers": prefill})
        stream = stream if stream is not None else self.stream
        self.probes += 1
        summary = summarize(simulate_variant(sc, variant, stream, self.profile))
        per_model = {m: s["slo"]["attainment"] for m, s in summary["per_model"].items()}
        row = {
            "variant": variant.name, "scenario": sc.name, "seed": sc.seed, "rate": sc.workload.rate,
            "decode_gpus": summary["gpus"]["decode"], "prefill_gpus": summary["gpus"]["prefill"],
            "total_gpus": summary["gpus"]["total"], "slo_attainment": summary["slo"]["attainment"],
            "min_model_attainment": min(per_model.values()),
            "meets_slo": min(per_model.values()) >= self.attainment,
            "tpot_p90_s": summary["tpot_s"]["p90"], "ttft_p90_s": summary["ttft_s"]["p90"],
            "unfinished": summary["requests"]["unfinished"], "profile": summary["profile"]["name"],
        }
        if self.on_probe:
            self.on_probe(row)
        return summary, row

    # -- searches ------------------------------------------------------------------------
    def _search(self, counts: dict[str, int], judge: Callable[[dict[str, int]], dict[str, float]],
                what: str) -> dict[str, int]:
        """Per key, the least count whose attainment meets the target: doubling (capped at
        ``max_gpus``) until it passes, then bisection, so at most about 2 log2(max_gpus) probes.

        ``judge`` runs one probe with all counts and returns each key's attainment; keys are
        searched together because their pools do not share workers.
        """
        lo = {k: 0 for k in counts}  # highest count known to fail
        hi: dict[str, int | None] = {k: None for k in counts}  # least count known to pass
        best = {k: 0.0 for k in counts}
        cur = {k: min(c, self.max_gpus) for k, c in counts.items()}
        while True:
            verdict = judge(cur)
            for k, att in verdict.items():
                best[k] = max(best[k], att)
                if att >= self.attainment:
                    hi[k] = cur[k] if hi[k] is None else min(hi[k], cur[k])
                else:
                    lo[k] = max(lo[k], cur[k])
            open_ = [k for k in counts if hi[k] is None or hi[k] - lo[k] > 1]
            if not open_:
                return {k: hi[k] for k in counts}  # type: ignore[misc]
            for k in counts:
                if hi[k] is None:
                    if lo[k] >= self.max_gpus:
                        raise ScenarioError(
                            f"SLO unmet at --max-gpus {self.max_gpus}: {what} {k!r} reaches at best "
                            f"{best[k]:.1%} SLO attainment (target {self.attainment:.0%}) with {self.max_gpus} "
                            f"GPUs; raise --max-gpus or relax the SLO")
                    cur[k] = min(max(1, cur[k] * 2), self.max_gpus)
                elif hi[k] - lo[k] > 1:
                    cur[k] = (lo[k] + hi[k]) // 2
                else:
                    cur[k] = hi[k]

    def plan_prefill(self, variant: VariantSpec) -> dict[str, int]:
        """Prefill workers per model: TTFT attainment alone (TTFT ends before decode starts,
        so the variant's own decode layout serves, whatever its size)."""
        tasks = self.sc.model.tasks
        busy = {tasks[i] for i in self.models}

        def judge(counts: dict[str, int]) -> dict[str, float]:
            summary, _ = self.probe(variant, {t: counts.get(t, 0) for t in tasks})
            return {t: summary["per_model"][t]["slo"]["ttft_attainment"] for t in counts}

        return {t: 0 for t in tasks} | self._search({t: 1 for t in busy}, judge, "prefill of model")

    def plan_decode(self, variant: VariantSpec, prefill: dict[str, int]) -> dict[str, int]:
        tasks = self.sc.model.tasks
        busy = [tasks[i] for i in self.models]
        if variant.mode in POOL_MODES:  # one pool, whatever it does inside (shared, colocated, multi_lora)
            def judge(counts):
                k = variant.models_per_gpu or min(2, len(tasks))
                if variant.mode == "colocated" and counts["shared"] * k < len(tasks):
                    return {"shared": 0.0}  # too few GPUs to host every model
                _, row = self.probe(variant.model_copy(update={"workers": counts["shared"]}), prefill)
                return {"shared": row["min_model_attainment"]}
            return self._search({"shared": 1}, judge, "shared pool of variant")

        def judge(counts):
            workers = {t: counts.get(t, 0) for t in tasks}
            summary, _ = self.probe(variant.model_copy(update={"workers": workers}), prefill)
            return {t: summary["per_model"][t]["slo"]["attainment"] for t in counts}
        found = self._search({t: 1 for t in busy}, judge, "decode pool of model")
        return {t: found.get(t, 0) for t in tasks}

    def goodput(self, variant: VariantSpec, prefill: dict[str, int], precision: float = 0.02) -> float:
        """Highest total rate (req/s) at which the overall SLO attainment meets the target.

        Doubling or halving over at most a factor 1024 each way, then bisection to ``precision``:
        about 20 probes at most."""
        base_rate = self.sc.workload.rate or len(self.stream) / max(float(self.stream.arrival_s[-1]), 1e-9)

        def meets(rate: float) -> bool:
            sc = _with(self.sc, **{"workload.rate": rate})
            _, row = self.probe(variant, prefill, sc=sc, stream=build_workload(sc))
            return row["slo_attainment"] >= self.attainment

        lo, hi = 0.0, base_rate
        while meets(hi):
            lo, hi = hi, hi * 2
            if hi > base_rate * 1024:
                return lo
        if lo == 0.0:
            lo = hi
            while lo > base_rate / 1024:
                lo /= 2
                if meets(lo):
                    break
            else:
                return 0.0
            hi = lo * 2
        while hi / lo > 1 + precision:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if meets(mid) else (lo, mid)
        return lo


def plan(sc: Scenario, attainment: float, variants: list[str] | None = None, size_prefill: bool = False,
         goodput: bool = True, max_gpus: int = 256,
         on_probe: Callable[[Probe], None] | None = None) -> list[VariantPlan]:
    """Fewest decode (and optionally prefill) GPUs per variant meeting the SLO, and goodput
    per variant, for the scenario's one seed. An unreachable SLO is an error before any probe."""
    planner = Planner(sc, attainment, max_gpus, on_probe)
    chosen = select_variants(sc, variants)
    check_reachable(sc, attainment, chosen, planner.stream, planner.profile)
    plans = []
    for v in chosen:
        prefill = planner.plan_prefill(v) if size_prefill else sc.counts(sc.prefill.workers)
        decode = planner.plan_decode(v, prefill)
        vp = VariantPlan(v.name, decode, prefill)
        if goodput:
            vp.goodput_rps = planner.goodput(v, sc.counts(sc.prefill.workers))
            prefill_gpus = sum(sc.counts(sc.prefill.workers).values())
            decode_gpus = v.workers if v.mode in POOL_MODES else sum(sc.counts(v.workers).values())
            vp.goodput_gpus = prefill_gpus + decode_gpus
            vp.goodput_decode_gpus = decode_gpus
        plans.append(vp)
    return plans


def plan_rows(sc: Scenario, plans: list[VariantPlan], profile: str | None) -> list[dict]:
    """One row per variant: the plan's GPU counts and goodput (the ``plan_summary`` table)."""
    return [{
        "variant": p.variant, "scenario": sc.name, "rate": sc.workload.rate,
        "min_decode_gpus": p.decode_gpus, "prefill_gpus": p.prefill_gpus,
        "total_gpus": p.decode_gpus + p.prefill_gpus,
        "decode_counts": " ".join(f"{k}={v}" for k, v in p.decode_counts.items()),
        "goodput_rps": p.goodput_rps,
        "goodput_gpus": p.goodput_gpus,
        "goodput_rps_per_gpu": p.goodput_rps / p.goodput_gpus if p.goodput_rps is not None else None,
        "goodput_rps_per_decode_gpu": p.goodput_rps / p.goodput_decode_gpus if p.goodput_rps is not None else None,
        "profile": profile,
    } for p in plans]


# --------------------------------------------------------------------------------------
# Several seeds
# --------------------------------------------------------------------------------------
@dataclass
class SeededPlan(_GpuTotals):
    """One variant planned on several seeds; the answer meets the SLO on every one of them."""

    variant: str
    seeds: list[int]
    per_seed: list[VariantPlan]
    #: The variant the spread is compared with (None for that variant itself).
    baseline: str | None = None
    #: Whether this variant's range of decode GPUs over seeds overlaps the baseline's.
    within_seed_spread: bool | None = None

    @property
    def decode_counts(self) -> dict[str, int]:
        """Per pool, the largest count over seeds (pools are sized independently)."""
        return {k: max(p.decode_counts[k] for p in self.per_seed) for k in self.per_seed[0].decode_counts}

    @property
    def prefill_counts(self) -> dict[str, int]:
        return {k: max(p.prefill_counts[k] for p in self.per_seed) for k in self.per_seed[0].prefill_counts}


    @property
    def decode_gpus_by_seed(self) -> list[int]:
        return [p.decode_gpus for p in self.per_seed]

    def spread(self) -> tuple[int, float, int]:
        """(min, median, max) total decode GPUs over seeds."""
        by = self.decode_gpus_by_seed
        return min(by), float(statistics.median(by)), max(by)

    def goodputs(self) -> list[float]:
        return [p.goodput_rps for p in self.per_seed if p.goodput_rps is not None]


def ranges_overlap(a: list[float], b: list[float]) -> bool:
    """Whether the min-max ranges of two samples overlap: their difference is within seed spread."""
    return min(a) <= max(b) and min(b) <= max(a)


def baseline_of(names: list[str], modes: dict[str, str]) -> str:
    """The variant others are compared with: ``dedicated`` if planned, else the first dedicated one."""
    if "dedicated" in names:
        return "dedicated"
    return next((n for n in names if modes[n] == "dedicated"), names[0])


def request_warnings(sc: Scenario, stream: RequestStream) -> list[str]:
    """Models with traffic but too few requests for their attainment to be planned on."""
    counts = np.bincount(stream.model, minlength=len(sc.model.tasks))
    thin = [(t, int(c)) for t, c in zip(sc.model.tasks, counts) if 0 < c < MIN_REQUESTS_PER_MODEL]
    if not thin:
        return []
    listed = ", ".join(f"{t} {c}" for t, c in thin)
    return [f"seed {sc.seed}: fewer than {MIN_REQUESTS_PER_MODEL} requests for model(s) {listed}: their attainment "
            f"moves in steps of 1/requests and with the seed; a longer --duration gives a steadier plan"]


def plan_seeds(sc: Scenario, attainment: float, seeds: int = 3, variants: list[str] | None = None,
               size_prefill: bool = False, goodput: bool = True, max_gpus: int = 256,
               on_probe: Callable[[Probe], None] | None = None,
               on_warning: Callable[[str], None] | None = None) -> list[SeededPlan]:
    """Plan on seeds ``sc.seed, sc.seed + 1, ...`` (``seeds`` of them); see the module docstring."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= 100:
        raise ScenarioError(f"--seeds must be an integer from 1 to 100, got {seeds!r}")
    check_max_gpus(max_gpus)
    chosen = select_variants(sc, variants)
    names = [v.name for v in chosen]
    per_variant: dict[str, list[VariantPlan]] = {n: [] for n in names}
    seed_list = [sc.seed + i for i in range(seeds)]
    for s in seed_list:
        sc_s = _with(sc, seed=s)
        if on_warning:
            for w in request_warnings(sc_s, build_workload(sc_s)):
                on_warning(w)
        for vp in plan(sc_s, attainment, names, size_prefill, goodput, max_gpus, on_probe):
            per_variant[vp.variant].append(vp)
    base = baseline_of(names, {v.name: v.mode for v in chosen})
    out = [SeededPlan(n, seed_list, per_variant[n]) for n in names]
    ref = next(p for p in out if p.variant == base)
    for p in out:
        if p is not ref:
            p.baseline = base
            p.within_seed_spread = ranges_overlap(p.decode_gpus_by_seed, ref.decode_gpus_by_seed)
    return out


def seeded_rows(sc: Scenario, plans: list[SeededPlan], profile: str | None) -> list[dict]:
    """One row per variant: the plan over seeds, its spread and the comparison with the baseline."""
    rows = []
    spreads = {p.variant: p.spread() for p in plans}
    for p in plans:
        lo, med, hi = p.spread()
        if p.baseline is None:
            versus = "baseline"
        elif p.within_seed_spread:
            versus = "within seed spread"
        else:
            versus = "fewer" if hi < spreads[p.baseline][0] else "more"
        good = p.goodputs()
        gpus = p.per_seed[0].goodput_gpus
        dgpus = p.per_seed[0].goodput_decode_gpus
        g = min(good) if good else None  # the rate every seed sustains, like the GPU counts
        rows.append({
            "variant": p.variant, "scenario": sc.name, "rate": sc.workload.rate,
            "seeds": " ".join(map(str, p.seeds)),
            "min_decode_gpus": p.decode_gpus, "prefill_gpus": p.prefill_gpus,
            "total_gpus": p.decode_gpus + p.prefill_gpus,
            "decode_counts": " ".join(f"{k}={v}" for k, v in p.decode_counts.items()),
            "decode_gpus_by_seed": " ".join(map(str, p.decode_gpus_by_seed)),
            "decode_gpus_seed_min": lo, "decode_gpus_seed_median": med, "decode_gpus_seed_max": hi,
            "baseline": p.baseline, "within_seed_spread": p.within_seed_spread, "vs_baseline": versus,
            "goodput_rps": g,
            "goodput_rps_seed_min": min(good) if good else None,
            "goodput_rps_seed_median": float(statistics.median(good)) if good else None,
            "goodput_rps_seed_max": max(good) if good else None,
            "goodput_gpus": gpus,
            "goodput_rps_per_gpu": g / gpus if g is not None and gpus else None,
            "goodput_rps_per_decode_gpu": g / dgpus if g is not None and dgpus else None,
            "profile": profile,
        })
    return rows
