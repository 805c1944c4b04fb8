"""Capacity planning: the fewest GPUs that meet the SLO, and goodput, found with the simulator.

Criterion for GPU counts: *every* task model's requests meet the SLO attainment target
(each model has its own SLO). Decode pools of a dedicated variant are independent of one
another (and TTFT does not depend on decode at all), so all of a variant's pools are
searched at once, each by its own exponential-then-bisection search. Goodput follows
DistServe: the highest request rate at which the overall attainment meets the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .metrics import summarize
from .runner import select_variants
from .scenario import Scenario, ScenarioError, VariantSpec
from .simulation import load_profile, simulate_variant
from .workload import build_workload

Probe = dict  # one simulated configuration: the row of the frontier table


@dataclass
class VariantPlan:
    variant: str
    decode_counts: dict[str, int]
    prefill_counts: dict[str, int]
    probes: list[Probe] = field(default_factory=list)
    goodput_rps: float | None = None
    goodput_gpus: int | None = None  # GPUs of the layout goodput was measured on (the scenario's)
    goodput_decode_gpus: int | None = None

    @property
    def decode_gpus(self) -> int:
        return sum(self.decode_counts.values())

    @property
    def prefill_gpus(self) -> int:
        return sum(self.prefill_counts.values())


def _with(sc: Scenario, **updates) -> Scenario:
    data = sc.model_dump()
    for path, value in updates.items():
        node = data
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return Scenario.model_validate(data)


class Planner:
    """Runs probes of one scenario at a given load and remembers each one."""

    def __init__(self, sc: Scenario, attainment: float, max_gpus: int,
                 on_probe: Callable[[Probe], None] | None = None) -> None:
        self.sc = sc
        self.attainment = attainment
        self.max_gpus = max_gpus
        self.on_probe = on_probe
        self.profile = load_profile(sc)
        self.stream = build_workload(sc)
        self.models = sorted(set(self.stream.model.tolist()))

    def probe(self, variant: VariantSpec, prefill: dict[str, int], sc: Scenario | None = None,
              stream=None) -> tuple[dict, Probe]:
        sc = _with(sc or self.sc, **{"prefill.workers": prefill})
        stream = stream if stream is not None else self.stream
        summary = summarize(simulate_variant(sc, variant, stream, self.profile))
        per_model = {m: s["slo"]["attainment"] for m, s in summary["per_model"].items()}
        row = {
            "variant": variant.name, "scenario": sc.name, "rate": sc.workload.rate,
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
    def _search(self, counts: dict[str, int], judge: Callable[[dict[str, int]], dict[str, bool]],
                what: str) -> dict[str, int]:
        """Per key, the least count that passes: doubling until it passes, then bisection.

        ``judge`` runs one probe with all counts and tells which keys pass; keys are searched
        together because their pools do not affect each other.
        """
        lo = {k: 0 for k in counts}  # highest count known to fail
        hi: dict[str, int | None] = {k: None for k in counts}  # least count known to pass
        cur = dict(counts)
        while True:
            verdict = judge(cur)
            for k, ok in verdict.items():
                if ok:
                    hi[k] = cur[k] if hi[k] is None else min(hi[k], cur[k])
                else:
                    lo[k] = max(lo[k], cur[k])
            open_ = [k for k in counts if hi[k] is None or hi[k] - lo[k] > 1]
            if not open_:
                return {k: hi[k] for k in counts}  # type: ignore[misc]
            for k in counts:
                if hi[k] is None:
                    nxt = max(1, cur[k] * 2)
                    if nxt > self.max_gpus:
                        raise ScenarioError(
                            f"unreachable SLO: {what} {k!r} misses the SLO attainment {self.attainment:.0%} "
                            f"even with {cur[k]} GPUs (--max-gpus {self.max_gpus})")
                    cur[k] = nxt
                elif hi[k] - lo[k] > 1:
                    cur[k] = (lo[k] + hi[k]) // 2
                else:
                    cur[k] = hi[k]

    def plan_prefill(self, variant: VariantSpec) -> dict[str, int]:
        """Prefill workers per model: TTFT attainment alone (decode never changes TTFT)."""
        tasks = self.sc.model.tasks
        busy = {tasks[i] for i in self.models}
        start = {t: 1 for t in busy}
        generous = variant.model_copy(update={"workers": self.max_gpus if variant.mode == "shared" else
                                              {t: max(1, self.max_gpus // len(busy)) for t in tasks}})

        def judge(counts: dict[str, int]) -> dict[str, bool]:
            summary, _ = self.probe(generous, {t: counts.get(t, 0) for t in tasks})
            return {t: summary["per_model"][t]["slo"]["ttft_attainment"] >= self.attainment for t in counts}

        return {t: 0 for t in tasks} | self._search(start, judge, "prefill of model")

    def plan_decode(self, variant: VariantSpec, prefill: dict[str, int]) -> dict[str, int]:
        tasks = self.sc.model.tasks
        busy = [tasks[i] for i in self.models]
        if variant.mode == "shared":
            def judge(counts):
                _, row = self.probe(variant.model_copy(update={"workers": counts["shared"]}), prefill)
                return {"shared": row["meets_slo"]}
            return self._search({"shared": 1}, judge, "shared pool of variant")

        def judge(counts):
            workers = {t: counts.get(t, 0) for t in tasks}
            summary, _ = self.probe(variant.model_copy(update={"workers": workers}), prefill)
            return {t: summary["per_model"][t]["slo"]["attainment"] >= self.attainment for t in counts}
        found = self._search({t: 1 for t in busy}, judge, "decode pool of model")
        return {t: found.get(t, 0) for t in tasks}

    def goodput(self, variant: VariantSpec, prefill: dict[str, int], precision: float = 0.02) -> float:
        """Highest total rate (req/s) at which the overall SLO attainment meets the target."""
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
    """Fewest decode (and optionally prefill) GPUs per variant meeting the SLO; goodput per variant."""
    planner = Planner(sc, attainment, max_gpus, on_probe)
    plans = []
    for v in select_variants(sc, variants):
        prefill = planner.plan_prefill(v) if size_prefill else sc.counts(sc.prefill.workers)
        decode = planner.plan_decode(v, prefill)
        vp = VariantPlan(v.name, decode, prefill)
        if goodput:
            vp.goodput_rps = planner.goodput(v, sc.counts(sc.prefill.workers))
            prefill_gpus = sum(sc.counts(sc.prefill.workers).values())
            decode_gpus = v.workers if v.mode == "shared" else sum(sc.counts(v.workers).values())
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
