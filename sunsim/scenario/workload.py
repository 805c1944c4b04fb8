"""The scenario's ``workload`` section: how requests arrive (a renewal process or a trace), which task
model each is for (popularity and its shift), and how long its prompt and output are."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from sunsim.scenario.limits import (
    MAX_CLIENTS,
    MAX_CV,
    MAX_DURATION_S,
    MAX_RATE,
    MAX_REQUESTS,
    MAX_SIGMA,
    MAX_TASKS,
    MAX_TIME_S,
    MAX_TIME_SCALE,
    MAX_TOKENS,
    MAX_WEIGHT,
    MAX_ZIPF_S,
    MIN_CV,
    MIN_RATE,
    MIN_TIME_SCALE,
    Float,
    Int,
    StrictModel,
    no_bool,
)
from sunsim.scenario.rate_curve import Diurnal, RateCurve
from sunsim.scenario.trace_layout import MAX_TRACE_MODELS, ColumnName, TraceLayout, TraceSource


# --- lengths ---------------------------------------------------------------------------------
class Fixed(StrictModel):
    kind: Literal["fixed"]
    value: Int = Field(gt=0, le=MAX_TOKENS)


class Uniform(StrictModel):
    kind: Literal["uniform"]
    low: Int = Field(gt=0, le=MAX_TOKENS)
    high: Int = Field(gt=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError("uniform needs low <= high")
        return self


class LogNormal(StrictModel):
    """Lengths with the given mean and log-space sigma, clipped to [min, max]
    (min <= mean <= max; sigma at most 10)."""

    kind: Literal["lognormal"]
    mean: Float = Field(gt=0, le=MAX_TOKENS)
    sigma: Float = Field(gt=0, le=MAX_SIGMA)
    min: Int = Field(1, gt=0, le=MAX_TOKENS)
    max: Int = Field(16384, gt=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _possible(self) -> LogNormal:
        if self.min > self.max:
            raise ValueError(f"lognormal needs min <= max (got min {self.min}, max {self.max})")
        if not self.min <= self.mean <= self.max:
            raise ValueError(f"lognormal mean {self.mean:g} must lie within [min, max] = [{self.min}, {self.max}]")
        return self


class Geometric(StrictModel):
    """Lengths 1, 2, ... with P(k) = (1-p)^(k-1) p and the given mean (memoryless, as M/M/1 needs)."""

    kind: Literal["geometric"]
    mean: Float = Field(ge=1, le=MAX_TOKENS)


class FromTrace(TraceSource):
    """Sample lengths from a trace file's column (with replacement); ``preset``/``columns``/``format``
    as for trace arrivals (the file is read once for both when they name the same layout)."""


LengthDist = Annotated[Fixed | Uniform | LogNormal | Geometric | FromTrace, Field(discriminator="kind")]


# --- arrivals --------------------------------------------------------------------------------
class Poisson(StrictModel):
    kind: Literal["poisson"]


class Gamma(StrictModel):
    """Gamma inter-arrival times with coefficient of variation ``cv`` (cv=1 is Poisson)."""

    kind: Literal["gamma"]
    cv: Float = Field(ge=MIN_CV, le=MAX_CV)


class TraceArrivals(TraceSource):
    """Replay a trace file: arrival times and lengths (and each request's task model, from a model
    column if the layout has one).

    Rows are replayed in arrival order, times shifted so that the first is 0 and scaled; rows at
    or after ``workload.duration_s``, and past ``workload.num_requests``, are dropped (a longer
    trace is cut to the run, as a shorter run of a Poisson stream would be)."""

    #: Multiply arrival times by this (0.5 doubles the rate); ignored when workload.rate is set.
    time_scale: Float = Field(1.0, ge=MIN_TIME_SCALE, le=MAX_TIME_SCALE)
    #: Use the trace's prompt/output lengths (else the length distributions below).
    use_lengths: bool = True
    #: Take each request's task model from the trace's model column (else the popularity draws it,
    #: as for a trace without one).
    use_models: bool = True
    #: The trace's model names -> task models of ``model.tasks`` (checked there); left empty, the
    #: trace's names must be task names themselves. Public traces name their own models (BurstGPT:
    #: ChatGPT, GPT-4), which a scenario's tasks rarely are.
    models: dict[ColumnName, ColumnName] = Field(default_factory=dict, max_length=MAX_TRACE_MODELS)

    def layout(self, use_models: bool | None = None) -> TraceLayout:
        """The layout the arrivals are read with: no model column when ``use_models`` is off."""
        return super().layout(self.use_models if use_models is None else use_models)

    @model_validator(mode="after")
    def _mapping_needs_the_models(self) -> TraceArrivals:
        if self.models and not self.use_models:
            raise ValueError("models maps the trace's model names, but use_models is false (the trace's models "
                             "are ignored); drop models, or set use_models: true")
        return self


class ClosedArrivals(StrictModel):
    """Closed-loop clients, as ``vllm bench serve --max-concurrency N`` and genai-perf's ``--concurrency N``
    run a benchmark: ``concurrency`` clients each send a request at time 0, then their next one when the
    previous finished (its last token) and a think time passed.

    The requests' models and lengths are drawn up front (popularity, per-model lengths), as for open
    arrivals; only their arrival times are decided by the run, so the load follows the served speed.
    The run sends ``workload.num_requests`` requests (no client sends at or after
    ``workload.duration_s``, if given); then the clients stop one by one and the rest drains.

    Summaries measure the window in which every client is active: from ``warmup_s`` (default: when the
    last of the clients' first requests finished, so the synchronised start is left out) to the first
    client stop (its request finished with nothing left to send). Latencies count the requests that
    arrived and finished inside it (see :mod:`sunsim.analysis.metrics`).
    """

    kind: Literal["closed"]
    #: Clients, each with at most one request in flight (vllm's --max-concurrency).
    concurrency: Int = Field(ge=1, le=MAX_CLIENTS)
    #: Seconds between a request's last token and the client's next request (0: back to back).
    think_time_s: Float = Field(0.0, ge=0, le=MAX_TIME_S)
    #: ``fixed``: exactly think_time_s; ``exponential``: drawn with that mean (seeded per run).
    think: Literal["fixed", "exponential"] = "fixed"
    #: Start of the measured window (simulated seconds); default: the clients' first requests all finished.
    warmup_s: Float | None = Field(None, ge=0, le=MAX_TIME_S)


Arrivals = Annotated[Poisson | Gamma | TraceArrivals | ClosedArrivals, Field(discriminator="kind")]


# --- popularity ------------------------------------------------------------------------------
class Zipf(StrictModel):
    """Model i (0-based, in task order) gets weight 1/(i+1)^s; s=0 is uniform."""

    kind: Literal["zipf"]
    s: Float = Field(ge=0, le=MAX_ZIPF_S)


class Weights(StrictModel):
    kind: Literal["weights"]
    weights: dict[str, Annotated[float, BeforeValidator(no_bool), Field(ge=0, le=MAX_WEIGHT)]]


Popularity = Annotated[Zipf | Weights, Field(discriminator="kind")]


class PopularityShift(StrictModel):
    """At ``at_s`` the popularity ranking rotates by ``rotate`` places (the hot model changes)."""

    at_s: Float = Field(gt=0, le=MAX_TIME_S)
    rotate: Int = Field(1, ge=1, le=MAX_TASKS)


# --- the section -----------------------------------------------------------------------------
class Lengths(StrictModel):
    prompt_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None


class WorkloadSpec(StrictModel):
    #: Simulated seconds of arrivals, at most 1e7 (~116 days).
    duration_s: Float | None = Field(None, gt=0, le=MAX_DURATION_S)
    #: At most 1e10; a run in memory's arrays must fit in ~8 GiB, a streaming run's rows on disk
    #: (workload.check_size).
    num_requests: Int | None = Field(None, gt=0, le=MAX_REQUESTS)
    #: Total request rate over all models, req/s, from 1e-6 to 1e6 (for a trace: rescales its
    #: arrivals to this mean rate).
    rate: Float | None = Field(None, ge=MIN_RATE, le=MAX_RATE)
    arrivals: Arrivals = Field(default_factory=lambda: Poisson(kind="poisson"))
    #: A rate that changes over time (poisson arrivals only): a ``diurnal`` sinusoid whose mean is ``rate``,
    #: or a ``piecewise`` constant curve from a CSV file (see :mod:`sunsim.scenario.rate_curve`).
    rate_curve: RateCurve | None = None
    popularity: Popularity = Field(default_factory=lambda: Zipf(kind="zipf", s=1.0))
    shift: PopularityShift | None = None
    prompt_tokens: LengthDist = Field(default_factory=lambda: LogNormal(kind="lognormal", mean=1024, sigma=0.6))
    output_tokens: LengthDist = Field(default_factory=lambda: LogNormal(kind="lognormal", mean=200, sigma=0.8))
    per_model: dict[str, Lengths] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounded(self) -> WorkloadSpec:
        if self.duration_s is None and self.num_requests is None:
            raise ValueError("give workload.duration_s or workload.num_requests")
        if isinstance(self.arrivals, ClosedArrivals):
            if self.rate is not None:
                raise ValueError("workload.rate: not with closed arrivals (the clients' concurrency and the served "
                                 "speed set the load); drop workload.rate, or use poisson/gamma arrivals")
            if self.num_requests is None:
                raise ValueError("workload.num_requests is required with closed arrivals (the requests' models and "
                                 "lengths are drawn up front; duration_s may stop the clients earlier)")
            if self.arrivals.concurrency > self.num_requests:
                raise ValueError(f"workload.arrivals.concurrency {self.arrivals.concurrency} is more than "
                                 f"workload.num_requests {self.num_requests}: some clients would send nothing")
            if self.shift is not None:
                raise ValueError("workload.shift: not with closed arrivals (the shift is by arrival time, which "
                                 "closed-loop clients decide during the run); drop workload.shift")
        elif self.rate_curve is not None:
            self._check_curve()
        elif self.rate is None and not isinstance(self.arrivals, TraceArrivals):
            raise ValueError("workload.rate is required for poisson and gamma arrivals")
        return self

    def _check_curve(self) -> None:
        if self.arrivals.kind != "poisson":
            raise ValueError(f"workload.rate_curve: only with poisson arrivals (a non-homogeneous Poisson process); "
                             f"these are {self.arrivals.kind}: drop rate_curve or use arrivals: {{kind: poisson}}")
        if isinstance(self.rate_curve, Diurnal):
            if self.rate is None:
                raise ValueError("workload.rate is required with a diurnal rate_curve (it is the curve's mean)")
        elif self.rate is not None and self.duration_s is None:
            raise ValueError("workload.rate with a piecewise rate_curve scales the curve to that mean over "
                             "workload.duration_s, which is missing; give duration_s, or drop rate to use the "
                             "file's rates as they are")
