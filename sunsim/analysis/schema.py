"""The results schema, defined once: every column of the comparison table and of plan/sweep metric tables.

Each :class:`Field` says where its value lives in ``summary.json`` (``source``, a key path; None for
the planner's own columns), how to label it (``label``, unit included) and the ``scale`` from the
stored value (SI seconds, fractions) to the label's unit. :func:`sunsim.analysis.metrics.comparison_row`, the ``sunsim run`` comparison
table and the reports' metric lists are all built from :data:`FIELDS`, so a new metric is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    column: str
    label: str
    source: tuple[str, ...] | None = None  # key path in summary.json; None: computed by the planner
    scale: float = 1.0  # stored value x scale = the value in the label's unit
    metric: bool = True  # a measured number a report can plot (not a name or a setting)
    text: bool = False  # a name (variant, mode, profile); every other column holds numbers
    optional: bool = False  # may be absent from a summary (a percentile not chosen): then None

    def get(self, summary: dict):
        """This field's value in a ``summary.json`` dict."""
        value = summary
        for key in self.source or ():
            if self.optional and (not isinstance(value, dict) or key not in value):
                return None
            value = value[key]
        return value


def _name(column: str, *source: str) -> Field:
    return Field(column, column.replace("_", " "), source, metric=False, text=True)


#: vLLM's latency metrics (``{stat}_{metric}_ms``), in ``vllm bench serve``'s order, and their labels.
LATENCIES: dict[str, str] = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2EL"}
_STATS = ("mean", "median", "std")


def percentile_word(q: float) -> str:
    """vLLM's spelling of a percentile in a key: ``99`` -> ``"99"``, ``99.9`` -> ``"99.9"``."""
    return str(int(q)) if int(q) == q else str(q)


def _vllm(column: str, label: str) -> Field:
    return Field(column, f"vLLM {label}", ("vllm", column), optional=column.startswith("p"))


def percentile_fields(percentiles) -> list[Field]:
    """The ``p{q}_{metric}_ms`` columns of the chosen percentiles (vLLM's keys, e.g. ``p99_ttft_ms``)."""
    return [_vllm(f"p{percentile_word(q)}_{m}_ms", f"{label} p{percentile_word(q)} (ms)")
            for m, label in LATENCIES.items() for q in percentiles]


#: Every results column, in comparison-table order; planner-only columns (no summary source) last.
FIELDS: tuple[Field, ...] = (
    _name("variant", "variant"), _name("mode", "mode"), _name("dtype", "dtype"), _name("routing", "routing"),
    _name("profile", "profile", "name"), _name("profile_kind", "profile", "kind"),
    _name("prefill_gpu", "prefill_gpu"), _name("decode_gpu", "decode_gpu"),
    Field("prefill_gpus", "prefill GPUs", ("gpus", "prefill"), metric=False),
    Field("decode_gpus", "decode GPUs", ("gpus", "decode"), metric=False),
    Field("total_gpus", "GPUs", ("gpus", "total"), metric=False),
    # GPUs held over the run (prefill included; an autoscaled pool's loading and draining GPUs too).
    Field("gpu_hours", "GPU-hours", ("gpu_hours",)),
    Field("peak_gpus", "peak GPUs", ("peak_gpus",)),
    # Every GPU of the variant at its role's GPU-hour price; per million output tokens of the steady window.
    Field("usd_per_hour", "USD per hour (every GPU)", ("cost", "usd_per_hour")),
    Field("usd_per_million_output_tokens", "USD per million output tokens", ("cost", "usd_per_million_output_tokens")),
    Field("arrived", "arrived requests", ("requests", "arrived")),
    Field("finished", "finished requests", ("requests", "finished")),
    Field("unfinished", "unfinished requests", ("requests", "unfinished")),
    Field("requests_per_s", "finished requests/s", ("throughput", "requests_per_s")),
    Field("output_tokens_per_s", "output tokens/s", ("throughput", "output_tokens_per_s")),
    Field("tokens_per_s_per_gpu", "output tokens/s per GPU", ("throughput", "output_tokens_per_s_per_gpu")),
    Field("tokens_per_s_per_decode_gpu", "output tokens/s per decode GPU",
          ("throughput", "output_tokens_per_s_per_decode_gpu")),
    Field("ttft_p50_s", "TTFT p50 (s)", ("ttft_s", "p50")),
    Field("ttft_p90_s", "TTFT p90 (s)", ("ttft_s", "p90")),
    Field("tpot_mean_s", "TPOT mean (ms)", ("tpot_s", "mean"), 1e3),
    Field("tpot_p50_s", "TPOT p50 (ms)", ("tpot_s", "p50"), 1e3),
    Field("tpot_p90_s", "TPOT p90 (ms)", ("tpot_s", "p90"), 1e3),
    Field("e2e_p50_s", "end-to-end latency p50 (s)", ("e2e_s", "p50")),
    Field("ttft_mean_s", "TTFT mean (s)", ("ttft_s", "mean")),
    Field("kv_wait_mean_s", "first token to KV in decode memory, mean (s)", ("kv_wait_s", "mean")),
    Field("kv_wait_p90_s", "first token to KV in decode memory, p90 (s)", ("kv_wait_s", "p90")),
    Field("slo_attainment", "SLO attainment (% of requests)", ("slo", "attainment"), 100.0),
    Field("decode_busy_mean", "decode busy fraction, mean (%)", ("decode_utilization", "mean_busy_fraction"), 100.0),
    Field("decode_busy_min", "decode busy fraction, min (%)", ("decode_utilization", "min_busy_fraction"), 100.0),
    Field("decode_mean_batch", "mean decode batch (requests)", ("decode_utilization", "mean_batch")),
    Field("drain_s", "drain, last arrival to last finish (s)", ("drain_s",)),
    Field("window_start_s", "throughput window start (s)", ("window", "start_s"), metric=False),
    Field("window_end_s", "throughput window end (s)", ("window", "end_s"), metric=False),
    Field("preemptions", "preemptions (count)", ("preemptions",)),
    Field("parked_mean_s", "KV parked on prefill, mean (s)", ("parked_s", "mean")),
    Field("sim_wall_s", "simulation wall time (s)", ("sim", "wall_s"), metric=False),
    Field("sim_requests_per_wall_s", "simulated requests per wall-clock second", ("sim", "requests_per_wall_s"), metric=False),
    # vllm bench serve's metrics, its names and units (summary.json's ``vllm`` block; vllm_metrics.py).
    _vllm("request_throughput", "completed requests/s over the whole run"),
    _vllm("request_goodput", "requests/s meeting the SLO over the whole run"),
    _vllm("output_throughput", "output tokens/s over the whole run"),
    *(_vllm(f"{stat}_{m}_ms", f"{label} {stat} (ms)") for m, label in LATENCIES.items() for stat in _STATS),
    *percentile_fields([99]),
    # Planner columns (plan.csv / plan_summary.csv), not in summary.json.
    Field("min_decode_gpus", "decode GPUs needed"),
    Field("goodput_rps", "goodput (requests/s)"),
    Field("goodput_rps_per_gpu", "goodput per GPU (requests/s)"),
    Field("goodput_rps_per_decode_gpu", "goodput per decode GPU (requests/s)"),
)
BY_COLUMN: dict[str, Field] = {f.column: f for f in FIELDS}
#: Columns of ``comparison.csv``, in order.
COMPARISON_COLUMNS: tuple[str, ...] = tuple(f.column for f in FIELDS if f.source is not None)
#: Columns a report can plot: measured numbers.
METRIC_COLUMNS: tuple[str, ...] = tuple(f.column for f in FIELDS if f.metric)
#: Columns that hold numbers (or nothing): a table with text in one of them is damaged.
NUMBER_COLUMNS: tuple[str, ...] = tuple(f.column for f in FIELDS if not f.text)

#: Rows of the ``sunsim run`` side-by-side table: (label, columns, format, scale). Two columns make an
#: ``a / b`` pair; each value is multiplied by ``scale`` and formatted (a missing one shows as ``-``).
COMPARISON_ROWS: tuple[tuple[str, tuple[str, ...], str, float], ...] = (
    ("decode mode", ("mode",), "{}", 1),
    ("decode dtype", ("dtype",), "{}", 1),
    ("routing", ("routing",), "{}", 1),
    ("GPUs prefill / decode", ("prefill_gpus", "decode_gpus"), "{}", 1),
    ("GPU type prefill / decode", ("prefill_gpu", "decode_gpu"), "{}", 1),
    ("GPU-hours", ("gpu_hours",), "{:,.2f}", 1),
    ("peak GPUs", ("peak_gpus",), "{}", 1),
    ("finished / arrived", ("finished", "arrived"), "{}", 1),
    ("output tok/s", ("output_tokens_per_s",), "{:,.0f}", 1),
    ("tok/s per GPU (steady window)", ("tokens_per_s_per_gpu",), "{:,.0f}", 1),
    ("tok/s per decode GPU", ("tokens_per_s_per_decode_gpu",), "{:,.0f}", 1),
    ("TTFT p50 / p90 (s)", ("ttft_p50_s", "ttft_p90_s"), "{:.3f}", 1),
    ("TPOT p50 / p90 (ms)", ("tpot_p50_s", "tpot_p90_s"), "{:.1f}", 1e3),
    ("SLO attainment", ("slo_attainment",), "{:.1%}", 1),
    ("decode busy mean / min", ("decode_busy_mean", "decode_busy_min"), "{:.2f}", 1),
    ("decode mean batch", ("decode_mean_batch",), "{:.1f}", 1),
    ("preemptions", ("preemptions",), "{:,.0f}", 1),
    ("KV parked on prefill, mean (s)", ("parked_mean_s",), "{:.3f}", 1),
    ("drain after last arrival (s)", ("drain_s",), "{:.1f}", 1),
    ("vLLM: request goodput (req/s)", ("request_goodput",), "{:.2f}", 1),
    ("vLLM: ITL median / p99 (ms)", ("median_itl_ms", "p99_itl_ms"), "{:.1f}", 1),
    ("USD per hour (every GPU)", ("usd_per_hour",), "{:,.2f}", 1),
    ("USD per million output tokens", ("usd_per_million_output_tokens",), "{:,.3f}", 1),
    ("sim requests / wall-s", ("sim_requests_per_wall_s",), "{:,.0f}", 1),
)
