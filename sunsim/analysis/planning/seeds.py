"""Plans over several seeds: one seed is one sample of the workload.

Small pools flip by a GPU from seed to seed. :func:`plan_seeds` plans each of several seeds and
answers, per pool, the *largest* count over seeds: that layout met the SLO on every seed tried,
which is what a capacity plan has to promise (the median would fail on about half the seeds it
was not fitted to). Its spread (min / median / max total over seeds) says how far to trust a
difference between variants: two variants whose ranges overlap are "within seed spread".
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sunsim.analysis.planning.search import (
    Planner,
    Probe,
    VariantPlan,
    _GpuTotals,
    _with,
    check_max_gpus,
    measure_goodput,
    plan,
    plan_dollars,
)
from sunsim.analysis.runner import select_variants
from sunsim.scenario import Scenario, ScenarioError
from sunsim.workload.stream import RequestStream, build_workload

#: Fewer requests than this for a model with traffic make its attainment too coarse to plan on.
MIN_REQUESTS_PER_MODEL = 2000


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
    def decode_tp(self) -> int:
        return self.per_seed[0].decode_tp

    @property
    def prefill_tp(self) -> int:
        return self.per_seed[0].prefill_tp


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
        for vp in plan(sc_s, attainment, names, size_prefill, False, max_gpus, on_probe):
            per_variant[vp.variant].append(vp)
    base = baseline_of(names, {v.name: v.mode for v in chosen})
    out = [SeededPlan(n, seed_list, per_variant[n]) for n in names]
    if goodput:  # on the answer (the largest count over seeds), on every seed
        for i, s in enumerate(seed_list):
            planner = Planner(_with(sc, seed=s), attainment, max_gpus, on_probe)
            for p, v in zip(out, chosen):
                measure_goodput(planner, v, p, into=p.per_seed[i])
    ref = next(p for p in out if p.variant == base)
    for p in out:
        if p is not ref:
            p.baseline = base
            p.within_seed_spread = ranges_overlap(p.decode_gpus_by_seed, ref.decode_gpus_by_seed)
    return out


def seeded_rows(sc: Scenario, plans: list[SeededPlan], profile: str | dict[str, str] | None) -> list[dict]:
    """One row per variant: the plan over seeds, its spread and the comparison with the baseline. ``profile``:
    one for every row, or by variant name."""
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
        # dollars per million tokens at that rate: the tokens/s of the seed whose goodput it is
        worst = min((q for q in p.per_seed if q.goodput_rps is not None), key=lambda q: q.goodput_rps, default=None)
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
            **plan_dollars(sc, p.variant, p.prefill_gpus, p.decode_gpus,
                           worst.goodput_tokens_per_s if worst is not None else None),
            "profile": profile.get(p.variant) if isinstance(profile, dict) else profile,
        })
    return rows
