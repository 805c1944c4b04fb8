"""The fewest GPUs that meet the SLO for one seed, and goodput, found with the simulator.

Criterion for GPU counts: *every* task model's requests meet the SLO attainment target
(each model has its own SLO). TTFT ends at the first token, before any decode or KV
transfer, so prefill is sized on TTFT alone. Decode pools of a dedicated variant share no
worker, link or queue, so all of a variant's pools are searched at once, each by its own
exponential-then-bisection search (O(log max_gpus) probes per pool). They do share one
thing: the decode router's random generator. With ``power_of_two`` routing, the draws a
pool gets depend on how many draws the pools before it took, so resizing one pool reshuffles
another's picks: its attainment is the same in distribution, not draw for draw. The
search's verdict for a pool is therefore a sample, as is every single-seed answer (see
:mod:`~sunsim.analysis.planning.seeds` for plans over several seeds).

An SLO that no number of GPUs meets is rejected before any probe
(:mod:`~sunsim.analysis.planning.reachable`). Goodput follows DistServe: the highest request
rate at which the overall attainment meets the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sunsim.analysis.dollars import fleet_cost, variant_named
from sunsim.analysis.metrics import summarize
from sunsim.analysis.options import MAX_GPUS_LIMIT
from sunsim.analysis.planning.reachable import check_reachable
from sunsim.analysis.runner import select_variants
from sunsim.scenario import AGGREGATED_MODES, POOL_MODES, Scenario, ScenarioError, Split, VariantSpec
from sunsim.sim.variant import load_profile, simulate_variant
from sunsim.workload.stream import build_workload

Probe = dict  # one simulated configuration: the row of the frontier table


def check_max_gpus(max_gpus: int) -> None:
    """Refuse a --max-gpus outside 1..MAX_GPUS_LIMIT before any probe is simulated."""
    if not isinstance(max_gpus, int) or isinstance(max_gpus, bool) or not 1 <= max_gpus <= MAX_GPUS_LIMIT:
        raise ScenarioError(f"--max-gpus must be an integer from 1 to {MAX_GPUS_LIMIT}, got {max_gpus!r}")


def _with(sc: Scenario, **updates) -> Scenario:
    """A copy of ``sc`` with dotted fields set (``"workload.rate"``), validated again
    so that a probe never runs on a scenario the schema would refuse."""
    data = sc.model_dump()
    for path, value in updates.items():
        node = data
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return Scenario.model_validate(data)


class _GpuTotals:
    """Total decode and prefill GPUs of a plan, from its per-pool worker counts and GPUs per worker (tp)."""

    decode_counts: dict[str, int]
    prefill_counts: dict[str, int]
    decode_tp: int
    prefill_tp: int

    @property
    def decode_gpus(self) -> int:
        return sum(self.decode_counts.values()) * self.decode_tp

    @property
    def prefill_gpus(self) -> int:
        return sum(self.prefill_counts.values()) * self.prefill_tp


@dataclass
class VariantPlan(_GpuTotals):
    """One variant planned on one seed: GPU counts per pool, the probes that found them, goodput."""

    variant: str
    decode_counts: dict[str, int]
    prefill_counts: dict[str, int]
    probes: list[Probe] = field(default_factory=list)
    goodput_rps: float | None = None
    goodput_gpus: int | None = None  # GPUs of the layout goodput was measured on: the plan's own
    goodput_decode_gpus: int | None = None
    #: Output tokens/s (steady window) the simulation measured on the plan's fleet at the goodput rate.
    goodput_tokens_per_s: float | None = None
    decode_tp: int = 1  # GPUs per decode worker: the counts above are workers
    prefill_tp: int = 1


def prefill_workers(sc: Scenario, counts: dict[str, int]):
    """The ``prefill.workers`` value of a plan's prefill counts: per model, or a shared pool's total (a split
    keeps its ``by``, the share its placement spreads replicas by)."""
    if not sc.prefill.shared:
        return counts
    workers = sc.prefill.workers
    return {"total": counts["shared"], "by": workers.by} if isinstance(workers, Split) else counts["shared"]


def on_fleet(variant: VariantSpec, decode_counts: dict[str, int]) -> VariantSpec:
    """The variant laid out on a plan's decode counts (one pool: its ``shared`` count)."""
    workers = decode_counts["shared"] if variant.mode in POOL_MODES else dict(decode_counts)
    return variant.model_copy(update={"workers": workers})


class Planner:
    """Runs probes of one scenario at a given load and remembers each one."""

    def __init__(self, sc: Scenario, attainment: float, max_gpus: int,
                 on_probe: Callable[[Probe], None] | None = None) -> None:
        check_max_gpus(max_gpus)
        if sc.workload.arrivals.kind == "closed":
            raise ScenarioError("workload.arrivals: planning sizes pools for a request rate, and closed-loop "
                                "clients have none (their load follows the served speed); use poisson, gamma or "
                                "trace arrivals")
        self.sc = sc
        self.attainment = attainment
        self.max_gpus = max_gpus
        self.on_probe = on_probe
        self.profile = load_profile(sc)
        self.stream = build_workload(sc)
        self.models = sorted(set(self.stream.model.tolist()))
        self.probes = 0
        #: Output tokens/s at the rate the last :meth:`goodput` returned (None when it returned 0).
        self.goodput_tokens_per_s: float | None = None

    def probe(self, variant: VariantSpec, prefill: dict[str, int], sc: Scenario | None = None,
              stream=None) -> tuple[dict, Probe]:
        sc = sc or self.sc
        sc = _with(sc, **{"prefill.workers": prefill_workers(sc, prefill)})
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
                what: str, tp: int = 1) -> dict[str, int]:
        """Per key, the least count of workers whose attainment meets the target: doubling (capped at
        ``max_gpus`` GPUs: ``max_gpus // tp`` workers of ``tp`` GPUs) until it passes, then bisection, so at
        most about 2 log2(max_gpus) probes.

        ``judge`` runs one probe with all counts and returns each key's attainment; keys are
        searched together because their pools do not share workers.
        """
        cap = max(1, self.max_gpus // tp)
        lo = {k: 0 for k in counts}  # highest count known to fail
        hi: dict[str, int | None] = {k: None for k in counts}  # least count known to pass
        best = {k: 0.0 for k in counts}
        cur = {k: min(c, cap) for k, c in counts.items()}
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
                    if lo[k] >= cap:
                        raise ScenarioError(
                            f"SLO unmet at --max-gpus {self.max_gpus}: {what} {k!r} reaches at best "
                            f"{best[k]:.1%} SLO attainment (target {self.attainment:.0%}) with {cap * tp} "
                            f"GPUs; raise --max-gpus or relax the SLO")
                    cur[k] = min(max(1, cur[k] * 2), cap)
                elif hi[k] - lo[k] > 1:
                    cur[k] = (lo[k] + hi[k]) // 2
                else:
                    cur[k] = hi[k]

    def plan_prefill(self, variant: VariantSpec) -> dict[str, int]:
        """Prefill workers per model: TTFT attainment alone (TTFT ends before decode starts,
        so the variant's own decode layout serves, whatever its size). Shared prefill GPUs
        (``prefill.models_per_gpu`` > 1, ``prefill.on_demand``): one total, the least at which every
        model's TTFT attainment meets the target (``{"shared": N}``)."""
        tasks = self.sc.model.tasks
        busy = {tasks[i] for i in self.models}
        if self.sc.prefill.shared:
            k = self.sc.prefill.models_per_gpu
            least = 1 if self.sc.prefill.on_demand is not None else -(-len(tasks) // k)

            def judge_total(counts: dict[str, int]) -> dict[str, float]:
                if counts["shared"] < least:  # too few GPUs to host every model's prefill module
                    return {"shared": 0.0}
                summary, _ = self.probe(variant, counts)
                return {"shared": min(summary["per_model"][t]["slo"]["ttft_attainment"] for t in busy)}

            return self._search({"shared": least}, judge_total, "shared prefill pool", self.sc.prefill.tp)

        def judge(counts: dict[str, int]) -> dict[str, float]:
            summary, _ = self.probe(variant, {t: counts.get(t, 0) for t in tasks})
            return {t: summary["per_model"][t]["slo"]["ttft_attainment"] for t in counts}

        # A model the planning window leaves idle keeps the one worker its pool needs to exist: the fleet
        # serves it, and the goodput search's busier streams send it requests.
        return {t: 1 for t in tasks} | self._search({t: 1 for t in busy}, judge, "prefill of model",
                                                    self.sc.prefill.tp)

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
            return self._search({"shared": 1}, judge, "shared pool of variant", variant.tp)

        def judge(counts):
            workers = {t: counts.get(t, 0) for t in tasks}
            summary, _ = self.probe(variant.model_copy(update={"workers": workers}), prefill)
            return {t: summary["per_model"][t]["slo"]["attainment"] for t in counts}
        found = self._search({t: 1 for t in busy}, judge, "decode pool of model", variant.tp)
        return {t: found.get(t, 1) for t in tasks}  # an idle model's pool: one worker, as for prefill

    def goodput(self, variant: VariantSpec, prefill: dict[str, int], precision: float = 0.02) -> float:
        """Highest total rate (req/s) at which the overall SLO attainment meets the target.

        Doubling or halving over at most a factor 1024 each way, then bisection to ``precision``:
        about 20 probes at most."""
        base_rate = self.sc.workload.rate or len(self.stream) / max(float(self.stream.arrival_s[-1]), 1e-9)
        passed: dict[float, float] = {}  # rate that met the target -> its output tokens/s

        def meets(rate: float) -> bool:
            sc = _with(self.sc, **{"workload.rate": rate})
            summary, row = self.probe(variant, prefill, sc=sc, stream=build_workload(sc))
            if row["slo_attainment"] >= self.attainment:
                passed[rate] = summary["throughput"]["output_tokens_per_s"]
                return True
            return False

        rate = self._goodput_search(base_rate, meets, precision)
        self.goodput_tokens_per_s = passed.get(rate)  # every non-zero answer is a rate that passed
        return rate

    @staticmethod
    def _goodput_search(base_rate: float, meets: Callable[[float], bool], precision: float) -> float:
        """Doubling or halving from ``base_rate``, then bisection (see :meth:`goodput`)."""
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
        if v.mode in AGGREGATED_MODES:  # its pool prefills too: no prefill GPUs to size
            prefill = {t: 0 for t in sc.model.tasks}
        else:
            prefill = planner.plan_prefill(v) if size_prefill else sc.prefill_counts()
        decode = planner.plan_decode(v, prefill)
        vp = VariantPlan(v.name, decode, prefill, decode_tp=v.tp, prefill_tp=sc.prefill.tp)
        if goodput:
            measure_goodput(planner, v, vp)
        plans.append(vp)
    return plans


def measure_goodput(planner: Planner, variant: VariantSpec, vp: _GpuTotals, into: VariantPlan | None = None) -> None:
    """Goodput of ``variant`` on the fleet ``vp`` planned (its prefill and decode counts): what an operator who
    bought that fleet gets, so goodput per GPU compares designs each on its own answer. Stored on ``into``
    (default ``vp``)."""
    into = into or vp  # type: ignore[assignment]
    into.goodput_rps = planner.goodput(on_fleet(variant, vp.decode_counts), vp.prefill_counts)
    into.goodput_tokens_per_s = planner.goodput_tokens_per_s
    into.goodput_gpus = vp.prefill_gpus + vp.decode_gpus
    into.goodput_decode_gpus = vp.decode_gpus


def plan_rows(sc: Scenario, plans: list[VariantPlan], profile: str | None) -> list[dict]:
    """One row per variant: the plan's GPU counts and goodput (the ``plan_summary`` table), and its fleet's
    dollars: per hour, and per million output tokens at the tokens/s measured at the goodput rate."""
    return [{
        "variant": p.variant, "scenario": sc.name, "rate": sc.workload.rate,
        "min_decode_gpus": p.decode_gpus, "prefill_gpus": p.prefill_gpus,
        "total_gpus": p.decode_gpus + p.prefill_gpus,
        "decode_counts": " ".join(f"{k}={v}" for k, v in p.decode_counts.items()),
        "goodput_rps": p.goodput_rps,
        "goodput_gpus": p.goodput_gpus,
        "goodput_rps_per_gpu": p.goodput_rps / p.goodput_gpus if p.goodput_rps is not None else None,
        "goodput_rps_per_decode_gpu": p.goodput_rps / p.goodput_decode_gpus if p.goodput_rps is not None else None,
        **plan_dollars(sc, p.variant, p.prefill_gpus, p.decode_gpus, p.goodput_tokens_per_s),
        "profile": profile,
    } for p in plans]


def plan_dollars(sc: Scenario, variant: str, prefill_gpus: int, decode_gpus: int,
                 tokens_per_s: float | None) -> dict:
    """A planned fleet's ``usd_per_hour``, ``usd_per_million_output_tokens`` (at ``tokens_per_s``: the goodput
    rate's) and the note of a missing price."""
    cost = fleet_cost(sc, variant_named(sc, variant), prefill_gpus, decode_gpus, tokens_per_s)
    return {"usd_per_hour": cost["usd_per_hour"],
            "usd_per_million_output_tokens": cost["usd_per_million_output_tokens"],
            "goodput_output_tokens_per_s": tokens_per_s, "price_note": cost["note"]}
