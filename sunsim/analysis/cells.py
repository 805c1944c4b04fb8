"""A fleet in independent cells: each cell's scenario and requests, its runs as tasks, and the exact merge.

A cell (:mod:`sunsim.scenario.cells`) serves its task models on GPUs of its own: the scenario's
per-model counts (prefill, dedicated and aggregated pools) go with their models, and every pool
total (a shared, colocated or LoRA pool, a shared prefill pool, an autoscaled pool's bounds) is split
over the cells as a popularity split of dedicated pools is: by the cells' traffic shares at the start,
largest remainder, at least one per cell (``by: even`` splits evenly). An autoscaled cell starts with
its share of ``workers`` clamped into its own ``[min_workers, max_workers]``.

The request stream is drawn once for the whole fleet; a cell replays exactly the requests of its models,
in order. Each (cell, variant) run is a task that only reads its inputs, so running the tasks in this
process, in local processes or on Ray gives the same records. The merge puts every request's record
back at its place in the fleet's stream, renumbers workers (the cells' starting workers first, in cell
order, then the GPUs autoscaling added, in cell order), adds the cells' GPU timelines, and the summaries
are computed from the merged records as for one run.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from sunsim.analysis.executors import map_tasks
from sunsim.scenario import PER_MODEL_MODES, Scenario, ScenarioError, Split, VariantSpec, split_by_share
from sunsim.sim.records import Records
from sunsim.sim.variant import VariantResult, check_variant, load_profile, simulate_variant
from sunsim.workload.stream import RequestStream

_RECORD_FIELDS = ("prefill_worker", "decode_worker", "preemptions", "prefill_start_s", "first_token_s",
                  "decode_admit_s", "kv_ready_s", "decode_start_s", "finish_s")


def _split(total: int, share: np.ndarray, field: str, floor: bool = False) -> list[int]:
    """``total`` split over the cells by ``share``; ``floor``: a total below the cells' number gives each one."""
    if floor:
        total = max(total, len(share))
    try:
        return split_by_share(total, share)
    except ValueError:
        raise ScenarioError(f"{field}: {total} cannot be split over {len(share)} cells with one each; give at "
                            f"least {len(share)} or fewer cells") from None


def cell_scenarios(sc: Scenario) -> dict[str, Scenario]:
    """Each cell's own scenario (see the module docstring), by cell name."""
    cells = sc.cell_models()
    tasks = list(sc.model.tasks)
    pop = sc.popularity()
    share = np.array([sum(pop[tasks.index(m)] for m in models) for models in cells.values()])
    even = np.full(len(cells), 1 / len(cells))
    base = sc.model_dump()
    base["cells"] = None
    pre = base["prefill"]
    pools: dict[tuple, list[int]] = {}  # (where, field) -> per-cell totals
    if sc.prefill.shared:
        w = sc.prefill.workers
        total = w.total if isinstance(w, Split) else int(w)  # type: ignore[arg-type]
        pools[("prefill", "workers")] = _split(total, even if isinstance(w, Split) and w.by == "even" else share,
                                               "prefill.workers")
    for i, v in enumerate(sc.variants):
        if v.mode not in PER_MODEL_MODES:
            pools[(i, "workers")] = _split(int(v.workers), share, f"variants.{v.name}.workers")  # type: ignore[arg-type]
            if v.autoscale is not None:
                for key in ("min_workers", "max_workers"):
                    pools[(i, key)] = _split(getattr(v.autoscale, key), share, f"variants.{v.name}.autoscale.{key}",
                                             floor=True)
    out = {}
    for c, (name, models) in enumerate(cells.items()):
        data = {**base, "model": {**base["model"], "tasks": models}}
        wl = data["workload"] = {**base["workload"], "shift": None,
                                 "popularity": {"kind": "weights", "weights": {m: float(pop[tasks.index(m)])
                                                                               for m in models}},
                                 "per_model": {m: v for m, v in base["workload"]["per_model"].items() if m in models}}
        if wl["arrivals"]["kind"] == "trace":  # the stream is drawn already: only the mapping's check remains
            wl["arrivals"] = {**wl["arrivals"],
                              "models": {k: t for k, t in wl["arrivals"]["models"].items() if t in models}}
        data["prefill"] = {**pre, "workers": pools[("prefill", "workers")][c] if sc.prefill.shared
                           else {m: n for m, n in sc.counts(sc.prefill.workers).items() if m in models}}
        variants = []
        for i, v in enumerate(sc.variants):
            vd = dict(base["variants"][i])
            if v.mode in PER_MODEL_MODES:
                vd["workers"] = {m: n for m, n in sc.counts(v.workers).items() if m in models}
            else:
                vd["workers"] = pools[(i, "workers")][c]
                if v.models_per_gpu is not None:
                    vd["models_per_gpu"] = min(v.models_per_gpu, len(models))
                if v.autoscale is not None:
                    lo, hi = pools[(i, "min_workers")][c], pools[(i, "max_workers")][c]
                    hi = max(lo, hi)
                    vd["autoscale"] = {**vd["autoscale"], "min_workers": lo, "max_workers": hi}
                    vd["workers"] = min(max(vd["workers"], lo), hi)
            variants.append(vd)
        data["variants"] = variants
        try:
            out[name] = Scenario.model_validate(data)
        except ValueError as exc:
            raise ScenarioError(f"cells.{name}: this cell's share of the fleet is not a valid layout: "
                                f"{str(exc).splitlines()[-1].strip()}") from None
    return out


def cell_stream(stream: RequestStream, tasks: list[str], models: list[str]) -> tuple[np.ndarray, RequestStream]:
    """The fleet stream's requests of ``models`` (their positions in it, and as a stream of their own)."""
    lut = np.full(len(tasks), -1, dtype=np.int32)
    lut[[tasks.index(m) for m in models]] = np.arange(len(models), dtype=np.int32)
    idx = np.flatnonzero(lut[stream.model] >= 0)
    return idx, RequestStream(arrival_s=stream.arrival_s[idx], model=lut[stream.model[idx]],
                              prompt_tokens=stream.prompt_tokens[idx], output_tokens=stream.output_tokens[idx],
                              models=tuple(models), closed=stream.closed)


def run_cell(sc: Scenario, variant: str, stream: RequestStream, keep_timeline: bool) -> VariantResult:
    """One (cell, variant) task: its run, without the live simulation objects (plain data only, to ship back)."""
    v = next(x for x in sc.variants if x.name == variant)
    res = simulate_variant(sc, v, stream, load_profile(sc), keep_timeline=keep_timeline)
    return replace(res, prefill_workers=[], decode_workers=[], interconnect=None)  # type: ignore[arg-type]


def run_cells(sc: Scenario, chosen: list[VariantSpec], stream: RequestStream, keep_timeline: bool = False,
              executor: str = "inline", workers: int | None = None, address: str | None = None) -> list[VariantResult]:
    """Every chosen variant on every cell, as tasks on ``executor``; one merged result per variant."""
    scenarios = cell_scenarios(sc) if sc.cells is not None else {"fleet": sc}
    tasks = list(sc.model.tasks)
    parts = {}
    for name, cell in scenarios.items():
        idx, sub = cell_stream(stream, tasks, list(cell.model.tasks))
        if not len(idx):
            raise ScenarioError(f"cells.{name}: its models {list(cell.model.tasks)} get no requests in this run")
        parts[name] = (idx, sub)
        profile = load_profile(cell)
        for v in chosen:  # fail before any work if a cell's layout is impossible
            check_variant(cell, next(x for x in cell.variants if x.name == v.name), sub, profile)
    jobs = [(scenarios[name], v.name, parts[name][1], keep_timeline) for v in chosen for name in scenarios]
    done = map_tasks(run_cell, jobs, executor, workers or os.cpu_count() or 1, address)
    k = len(scenarios)
    return [merge(sc, v, stream, [(parts[n][0], r) for n, r in zip(scenarios, done[i * k:(i + 1) * k])])
            for i, v in enumerate(chosen)]


def merge(sc: Scenario, variant: VariantSpec, stream: RequestStream,
          cells: list[tuple[np.ndarray, VariantResult]]) -> VariantResult:
    """One fleet result from its cells' (positions in the fleet stream, result), in cell order."""
    tasks = list(sc.model.tasks)
    rec = Records(len(stream))
    starts = [r.start_decode_workers if r.start_decode_workers is not None else len(r.decode_stats) for _, r in cells]
    extras = [len(r.decode_stats) - s for (_, r), s in zip(cells, starts)]
    n_start, added = sum(starts), sum(extras)
    decode_map, prefill_map, n_prefill = [], [], 0
    for c, ((_, r), s) in enumerate(zip(cells, starts)):
        decode_map.append(np.concatenate([sum(starts[:c]) + np.arange(s),
                                          n_start + sum(extras[:c]) + np.arange(extras[c])]).astype(np.int32))
        prefill_map.append(n_prefill + np.arange(len(r.prefill_stats), dtype=np.int32))
        n_prefill += len(r.prefill_stats)
    decode_stats: list = [None] * (n_start + added)
    decode_pool_of: list = [None] * len(decode_stats)
    decode_serves: list = [None] * len(decode_stats)
    prefill_stats, prefill_pool_of, prefill_serves, moves, deltas = [], [], [], [], []
    for c, ((idx, r), dmap, pmap) in enumerate(zip(cells, decode_map, prefill_map)):
        for f in _RECORD_FIELDS:
            values = getattr(r.records, f)
            if f in ("decode_worker", "prefill_worker"):
                lut = dmap if f == "decode_worker" else pmap
                values = np.where(values >= 0, lut[np.maximum(values, 0)] if len(lut) else -1, -1)
            getattr(rec, f)[idx] = values
        for old, w in enumerate(r.decode_stats):
            new = int(dmap[old])
            decode_stats[new] = replace(w, wid=new)
            decode_pool_of[new] = r.decode_pool_of[old]
            decode_serves[new] = r.decode_serves[old] if r.decode_serves else (r.decode_pool_of[old],)
        prefill_stats += [replace(w, wid=int(pmap[old])) for old, w in enumerate(r.prefill_stats)]
        prefill_pool_of += r.prefill_pool_of
        prefill_serves += r.prefill_serves
        models = list(r.stream.models)
        moves += [(t, int(dmap[w]), tasks.index(models[a]), tasks.index(models[b])) for t, w, a, b in r.moves]
        last = 0
        for t, n in r.decode_gpu_timeline:
            deltas.append((t, c, n - last))
            last = n
    timeline, total = [], 0
    for t, _, d in sorted(deltas):
        total += d
        timeline.append((t, total))
    first = cells[0][1]
    links = sum(r.interconnect_stats.links for _, r in cells)
    return VariantResult(
        scenario=sc, variant=variant, stream=stream, records=rec, profile=first.profile,
        prefill_workers=[], decode_workers=[], decode_pool_of=decode_pool_of, prefill_pool_of=prefill_pool_of,
        kv_capacity_tokens=min(r.kv_capacity_tokens for _, r in cells),
        prefill_kv_capacity_tokens=first.prefill_kv_capacity_tokens, end_s=max(r.end_s for _, r in cells),
        wall_s=sum(r.wall_s for _, r in cells), events=sum(r.events for _, r in cells),
        interconnect=None,  # type: ignore[arg-type]
        prefill_stats=prefill_stats, decode_stats=decode_stats,
        interconnect_stats=replace(first.interconnect_stats, links=links), moves=sorted(moves),
        decode_serves=decode_serves, prefill_serves=prefill_serves,
        decode_gpu_timeline=_collapse(timeline), start_decode_workers=n_start)


def _collapse(timeline: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The summed timeline with one entry per instant (the last value at each time)."""
    out: list[tuple[float, int]] = []
    for t, n in timeline:
        if out and out[-1][0] == t:
            out[-1] = (t, n)
        else:
            out.append((t, n))
    return out
