"""``sunsim validate``: run a real continuous-batching decode loop and compare it with the simulator.

The loop serves a short Poisson trace with the real kernels, with the semantics of
:func:`sunsim.sim.standalone_decode.simulate_decode_worker`: requests whose KV is ready join at the next
iteration boundary (FIFO, up to ``max_batch``), each iteration produces one token for every running
request, a request with context ``c`` holds ``c + j`` KV tokens at its ``j``-th step and leaves
after its output tokens. The same trace is then simulated with the profile and per-request TPOT
and per-step time are compared.

Measurement choices, all to compare like with like:

* The loop keeps a clock that advances by each iteration's measured duration and jumps idle gaps
  to the next arrival instead of sleeping, so OS wake-up latency is not counted as decode time.
* The KV cache is filled with random values instead of running prefill: decode cost depends on
  how many tokens are cached, not on their values.
* On a CPU one step's time is noisy (tens of percent on a shared machine, always upwards), so
  each iteration is executed ``step_repeats`` times (default 3) and the fastest run taken,
  matching the calibration's lower-quartile statistic (re-running a step rewrites the same KV
  slot, so the state is unchanged). On a GPU the median of ``step_repeats`` runs (default 1).
* On a GPU the decode step is captured in a CUDA graph once per batch size (as the calibration
  replays its decode points) and replayed with the step's slots and lengths copied into the
  graph's input tensors, as engines replay per batch-size bucket.

The report also carries the calibration's performance targets (:mod:`calibration.targets`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sunsim.costs.model import CostModel, decode_step_time, measured_cost_model
from sunsim.output import write_json as write_json_atomic
from sunsim.output import write_text as write_text_atomic

from .errors import BudgetExceeded, CalibrationError
from .profile_models import recomposed_model
from .targets import TPOT_MEDIAN as TPOT_MEDIAN_TARGET
from .targets import TPOT_P90 as TPOT_P90_TARGET


@dataclass(frozen=True)
class Trace:
    arrival_s: np.ndarray
    context: np.ndarray
    output: np.ndarray
    max_batch: int


def make_trace(cost: CostModel, requests: int, contexts: tuple[int, int], batches: tuple[int, int],
               outputs: tuple[int, int], seed: int) -> Trace:
    """Poisson arrivals at a rate that keeps about half the calibrated batch range busy (Little's law)."""
    rng = np.random.default_rng(seed)
    context = rng.integers(contexts[0], contexts[1] + 1, requests)
    output = rng.integers(outputs[0], outputs[1] + 1, requests)
    target = max(1, batches[1] // 2)
    alpha, beta = cost.decode_coeffs(target)
    step = alpha + beta * target * (context.mean() + output.mean() / 2)
    rate = target / (output.mean() * step)
    arrival = np.cumsum(rng.exponential(1.0 / rate, requests))
    return Trace(arrival - arrival[0], context, output, batches[1])


class GraphedSteps:
    """One CUDA graph of the decode step per batch size, fed through static input tensors."""

    def __init__(self, stack, caches, device) -> None:
        self.stack, self.caches, self.device = stack, caches, device
        self.graphs: dict[int, tuple] = {}

    def step(self, tokens, slots: list[int], held: list[int]):
        """A callable that replays the step for this batch, and the tensor it writes the tokens to."""
        import torch

        from .model import DecodeBatch

        b = len(slots)
        if b not in self.graphs:
            batch = DecodeBatch(slots, held, self.device)
            tok = tokens.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.stack.decode(tok, self.caches, batch)
            torch.cuda.current_stream(self.device).wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out = self.stack.decode(tok, self.caches, batch)
            self.graphs[b] = (g, tok, batch, out)
        g, tok, batch, out = self.graphs[b]
        batch.update(slots, held)
        tok.copy_(tokens)
        return g.replay, out, batch


def serve(stack, trace: Trace, timer, backend: str, step_repeats: int, warmup_steps: int = 3,
          graphs: bool = False, deadline: float | None = None) -> dict:
    """The real decode loop; returns per-request decode start / finish and per-step records.

    ``graphs`` (GPU, tensor-driven attention backends) replays each step from a per-batch-size
    CUDA graph; ``deadline`` (``time.monotonic()``) stops the loop with :class:`BudgetExceeded`.
    """
    import time

    import torch

    from .kvcache import KVCache
    from .model import DecodeBatch

    n = len(trace.arrival_s)
    s, dev = stack.shape, stack.device
    max_len = int((trace.context + trace.output).max()) + 1
    caches = [KVCache(trace.max_batch, max_len, s.kv_heads, s.head_dim, dev, backend) for _ in stack.layers]
    order = list(np.argsort(trace.arrival_s, kind="stable"))
    start, finish = np.full(n, np.nan), np.full(n, np.nan)
    held = trace.context.astype(int).copy()
    left = trace.output.astype(int).copy()
    last = torch.randint(0, s.vocab, (n,), device=dev)
    free = list(range(trace.max_batch))[::-1]
    running: list[tuple[int, int]] = []  # (request, slot)
    steps: list[tuple[int, int, float]] = []
    clock = 0.0
    graphed = GraphedSteps(stack, caches, dev) if graphs else None
    with torch.inference_mode():
        warm = DecodeBatch([0], [int(trace.context[0])], dev)
        for _ in range(warmup_steps):
            stack.decode(last[:1], caches, warm)
        while order or running:
            while order and trace.arrival_s[order[0]] <= clock and len(running) < trace.max_batch:
                rid = order.pop(0)
                running.append((rid, free.pop()))
                start[rid] = clock
            if not running:
                clock = float(trace.arrival_s[order[0]])
                continue
            if deadline is not None and time.monotonic() > deadline:
                raise BudgetExceeded(f"time budget spent after {len(steps)} decode steps")
            rids = [r for r, _ in running]
            idx = torch.tensor(rids, device=dev)
            tokens, produced = last[idx], {}
            if graphed is not None:
                replay, out, batch = graphed.step(tokens, [sl for _, sl in running], [int(held[r]) for r in rids])
                runs = [timer.once(replay) for _ in range(step_repeats)]
                produced["tokens"] = out
            else:
                batch = DecodeBatch([sl for _, sl in running], [int(held[r]) for r in rids], dev)

                def step(tokens=tokens, batch=batch, produced=produced):
                    produced["tokens"] = stack.decode(tokens, caches, batch)

                runs = [timer.once(step) for _ in range(step_repeats)]
            dt = min(runs) if timer.cfg.statistic == "q25" else statistics.median(runs)
            last[idx] = produced["tokens"]  # greedy output feeds the next step
            clock += dt
            steps.append((len(rids), batch.kv_tokens, dt))
            keep = []
            for rid, slot in running:
                held[rid] += 1
                left[rid] -= 1
                if left[rid] == 0:
                    finish[rid] = clock
                    free.append(slot)
                else:
                    keep.append((rid, slot))
            running = keep
    return {"decode_start_s": start, "finish_s": finish, "steps": steps}


def _rel(pred: np.ndarray, meas: np.ndarray) -> dict:
    err = np.abs(pred - meas) / meas
    return {"median_rel": float(np.median(err)), "p90_rel": float(np.quantile(err, 0.9)),
            "max_rel": float(err.max()), "mean_signed_rel": float(np.mean((pred - meas) / meas))}


def validate(profile_path: str | Path, device: str = "cpu", requests: int = 64, dtypes: list[str] | None = None,
             seed: int = 0, step_repeats: int | None = None, out: Path | None = None,
             threads: int | None = None, deadline: float | None = None, attention: str = "auto",
             graphs: bool = True) -> dict:
    """Serve a trace for real and in the simulator, per weight format; write the report beside the profile.

    The report (``validation.json`` / ``.md``) includes the targets; ``report["missed"]`` lists the
    enforced ones missed (GPU only)."""
    if requests < 2:
        raise CalibrationError(f"requests: must be at least 2, got {requests}")
    from .commands import load_profile, shape_from_dict

    profile = load_profile(profile_path)
    if not isinstance(profile["model"], dict):
        raise CalibrationError(f"profile: {str(profile_path)!r} has no model shape object")
    shape = shape_from_dict(profile["model"], f"profile {str(profile_path)!r}")
    todo = dtypes or list(profile["dtypes"])
    for d in todo:
        if d not in profile["dtypes"]:
            raise CalibrationError(f"dtype: profile {profile['name']!r} has no {d!r} timings "
                                   f"(it has: {', '.join(profile['dtypes'])})")
    pdir = Path(profile_path) if Path(profile_path).is_dir() else Path(profile_path).parent
    out = Path(out) if out else pdir
    if not out.is_dir():
        raise CalibrationError(f"out: {str(out)!r} is not a directory")
    import torch

    from sunsim.sim.standalone_decode import simulate_decode_worker

    from .device import resolve_device, set_cpu_threads
    from .kvcache import pick_backend
    from .model import Stack
    from .timing import Timer, TimingConfig

    dev = resolve_device(device)
    threads = set_cpu_threads(dev, threads if threads is not None else profile.get("cpu_threads"))
    if step_repeats is None:
        step_repeats = 3 if dev.type == "cpu" else 1
    layers = int(profile.get("layers_timed", shape.layers))
    rng_info = profile.get("calibrated_range", {})
    contexts = tuple(rng_info.get("decode_context", (128, 1024)))
    batches = tuple(rng_info.get("decode_batch", (1, 16)))
    backend, _ = pick_backend(dev, shape.kv_heads, shape.head_dim, shape.heads, attention)
    use_graphs = graphs and dev.type == "cuda" and backend != "sdpa-loop"
    fuse = profile.get("elementwise", "eager") != "eager" and dev.type == "cuda"
    timer = Timer(TimingConfig(device=dev, statistic="q25" if dev.type == "cpu" else "median"))
    report: dict = {"profile": profile["name"], "device": device, "requests": requests, "layers_served": layers,
                    "step_repeats": step_repeats, "attention_backend": backend, "cpu_threads": threads,
                    "cuda_graphs": use_graphs, "elementwise": "torch.compile (inductor)" if fuse else "eager",
                    "targets": {"tpot_median_rel": TPOT_MEDIAN_TARGET, "tpot_p90_rel": TPOT_P90_TARGET},
                    "dtypes": {}}
    for d in todo:
        cost = measured_cost_model(profile, shape, d) if layers == shape.layers \
            else recomposed_model(profile, shape, d, layers)
        outputs = (16, 96)
        trace = make_trace(cost, requests, (contexts[0], max(contexts[0], contexts[1] - outputs[1])), batches,
                           outputs, seed)
        torch.manual_seed(seed)
        stack = Stack(shape, d, layers, dev, int((trace.context + trace.output).max()) + 2, fuse=fuse)
        real = serve(stack, trace, timer, backend, step_repeats, graphs=use_graphs, deadline=deadline)
        del stack
        sim = simulate_decode_worker(cost, trace.arrival_s, trace.context, trace.output, max_batch=trace.max_batch)
        tpot_real = (real["finish_s"] - real["decode_start_s"]) / trace.output
        tpot_sim = (sim["finish_s"] - sim["decode_start_s"]) / trace.output
        st = np.array(real["steps"], float)
        pred = np.array([decode_step_time(cost, int(b), kv) for b, kv, _ in real["steps"]])
        tp, ss = _rel(tpot_sim, tpot_real), _rel(pred, st[:, 2])
        report["dtypes"][d] = {
            "tpot": tp, "step_time": ss,
            "tpot_ms": {"real_median": float(np.median(tpot_real) * 1e3), "sim_median": float(np.median(tpot_sim) * 1e3)},
            "steps": len(st), "mean_batch": float(st[:, 0].mean()), "max_batch": int(st[:, 0].max()),
            "makespan_s": {"real": float(np.nanmax(real["finish_s"])), "sim": float(np.max(sim["finish_s"]))},
            "trace": {"context": [int(trace.context.min()), int(trace.context.max())],
                      "output": [int(trace.output.min()), int(trace.output.max())],
                      "duration_s": float(trace.arrival_s[-1]), "max_batch": trace.max_batch},
            "meets_targets": tp["median_rel"] <= TPOT_MEDIAN_TARGET and tp["p90_rel"] <= TPOT_P90_TARGET,
        }
    report["meets_targets"] = all(v["meets_targets"] for v in report["dtypes"].values())
    write_json_atomic(out / "validation.json", report)
    write_text_atomic(out / "validation.md", render_markdown(report))
    meta_path = pdir / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"device": {"type": dev.type}}
    report["missed"] = write_targets(out, profile, meta, rows_dir=pdir)
    return report


def write_targets(out: Path, profile: dict, meta: dict, rows_dir: Path | None = None) -> list[str]:
    """Evaluate the targets, write ``targets.json`` and append them to ``validation.md``; returns the
    enforced ones missed (their names)."""
    from .raw import read_rows
    from .targets import evaluate, missed, render

    rows_dir = rows_dir or out
    rows = read_rows(rows_dir / "timings.csv")
    vpath = out / "validation.json"
    report = json.loads(vpath.read_text()) if vpath.exists() else None
    device = (meta.get("device") or {}).get("type", "cpu")
    targets = evaluate(rows, profile, meta, report, enforced=device == "cuda")
    md = (out / "validation.md").read_text() if (out / "validation.md").exists() else \
        f"# Validation: {profile['name']}\n\nNo decode-loop validation ran.\n"
    md = md.split("\n## Targets", 1)[0].rstrip("\n") + "\n\n" + render(targets, device)
    lost = missed(targets)
    if lost:
        md += "\n" + "\n".join(f"MISSED: {t.name} ({t.what}): {t.value:.3g}, wanted {t.threshold}" for t in lost) + "\n"
    write_text_atomic(out / "validation.md", md)
    write_json_atomic(out / "targets.json", {"device": device, "targets": [t.as_dict() for t in targets],
                                             "missed": [t.name for t in lost]})
    return [t.name for t in lost]


def render_markdown(report: dict) -> str:
    lines = [f"# Decode validation: {report['profile']}", "",
             f"Real continuous-batching decode loop ({report['layers_served']} layers, device {report['device']}, "
             f"{report['requests']} requests, attention backend {report['attention_backend']}, each step timed as "
             f"the {'fastest' if report['device'] == 'cpu' else 'median'} of {report['step_repeats']} runs"
             f"{', replayed from per-batch-size CUDA graphs' if report.get('cuda_graphs') else ''}) "
             "vs `simulate_decode_worker` with the profile.", "",
             f"Targets: per-request TPOT median error <= {TPOT_MEDIAN_TARGET:.0%}, p90 <= {TPOT_P90_TARGET:.0%}.", "",
             "| dtype | TPOT median err | TPOT p90 err | step median err | step p90 err | real TPOT (ms) | "
             "sim TPOT (ms) | steps | mean batch | meets targets |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for d, v in report["dtypes"].items():
        lines.append(f"| {d} | {v['tpot']['median_rel']:.1%} | {v['tpot']['p90_rel']:.1%} | "
                     f"{v['step_time']['median_rel']:.1%} | {v['step_time']['p90_rel']:.1%} | "
                     f"{v['tpot_ms']['real_median']:.3f} | {v['tpot_ms']['sim_median']:.3f} | {v['steps']} | "
                     f"{v['mean_batch']:.1f} | {'yes' if v['meets_targets'] else 'NO'} |")
    return "\n".join(lines) + "\n"
