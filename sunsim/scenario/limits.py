"""What any scenario field may hold: the bounds, the number and path types built on them, safe names,
the strict base every section derives from, and the error a bad scenario raises.

Every section module builds on these, so a bound or a rule about booleans is stated once. The bounds
are generous for any real deployment and tight enough that no value overflows, divides by ~0 or asks
numpy for an absurd allocation.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from sunsim.errors import InputError
from sunsim.names import ALLOWED, check_name

MAX_RATE = 1e6  #: req/s over all models (a large fleet serves ~1e4).
MIN_RATE = 1e-6  #: req/s; below this 1/rate is a gap of ~12 days.
MAX_DURATION_S = 1e7  #: ~116 days of simulated traffic.
MAX_TIME_S = 1e9  #: any simulated instant (horizon, shift), ~32 years.
MAX_TOKENS = 10_000_000  #: any token length or token budget.
#: requests in one run, a bound on nonsense only: a run in memory is bounded by its arrays, a streaming run by
#: disk and its summary's read-back (workload.check_size, analysis.runner.stream_scenario).
MAX_REQUESTS = 10_000_000_000
MAX_CLIENTS = 1_000_000  #: closed-loop clients (benchmarks run tens to thousands).
MAX_SEED = 2**63 - 1
MAX_WORKERS = 10_000  #: GPUs of one pool or one split.
MAX_TASKS = 1000
MAX_VARIANTS = 100
MAX_BATCH = 100_000  #: running requests on one decode GPU.
MAX_BLOCK_TOKENS = 4096
MAX_LATENCY_US = 1e7  #: 10 s per transfer.
MIN_BANDWIDTH_GBPS, MAX_BANDWIDTH_GBPS = 1e-6, 1e5  #: 1 kB/s (tiny test shapes) to 100 TB/s
MAX_RESERVE_GIB = 1e4
MIN_CV, MAX_CV = 1e-3, 100.0  #: gamma shape 1/cv^2 stays within 1e-4..1e6.
MAX_ZIPF_S = 20.0  #: 1000^-20 is still a positive float.
MAX_WEIGHT = 1e12
MIN_TIME_SCALE, MAX_TIME_SCALE = 1e-6, 1e6
MAX_SIGMA = 10.0  #: lognormal log-space sigma; exp(10 x 6 sigma) is still finite.
MAX_SLO_S = 1e6
MAX_PATH_CHARS = 4096
MAX_USD_PER_GPU_HOUR = 1e6  #: a price far above any listed one, still finite in a fleet's sum.


class ScenarioError(InputError):
    """A scenario that cannot be run; the message names the field."""


def no_bool(v: Any) -> Any:
    """Refuse a boolean where a number is expected: YAML's true/false are Python bools, which
    pydantic would otherwise read as 1/0."""
    if isinstance(v, bool):
        raise ValueError("expected a number, not true/false")
    return v


def _path_text(v: str) -> str:
    if not v or "\0" in v:
        raise ValueError("expected a file path (non-empty, no NUL characters)")
    return v


#: An integer that is not a boolean (a count, a length, a seed).
Int = Annotated[int, BeforeValidator(no_bool)]
#: A finite number that is not a boolean (``allow_inf_nan=False`` on :class:`StrictModel` refuses inf and NaN).
Float = Annotated[float, BeforeValidator(no_bool)]
PositiveFloat = Annotated[float, BeforeValidator(no_bool), Field(gt=0)]
PathText = Annotated[str, Field(max_length=MAX_PATH_CHARS), AfterValidator(_path_text)]


def safe_name(v: str) -> str:
    """A name that becomes part of a path (a scenario, a variant); the field's location is added by
    pydantic, the message says what is allowed."""
    try:
        return check_name(v, "name")
    except ValueError:
        raise ValueError(f"{v!r} is not a valid name; allowed: {ALLOWED}") from None


class StrictModel(BaseModel):
    """The base of every scenario section: an unknown key is an error (a typo is never silently
    ignored), a validated scenario cannot change under a run, and inf/NaN are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
