"""What every variant's assembly shares: the result of a run, and each role's cost model and KV memory.

Disaggregated variants (:mod:`sunsim.sim.variant`) and aggregated ones
(:mod:`sunsim.sim.aggregated_variant`) both build on these, so neither imports the other's assembly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sunsim.costs import catalog
from sunsim.costs.architecture import ModelShape
from sunsim.costs.hardware import GIB
from sunsim.costs.hardware import gpu as gpu_spec
from sunsim.costs.model import CostModel, ProfileInfo
from sunsim.costs.overhead import with_overhead
from sunsim.scenario import HardwareSpec, Scenario, ScenarioError, VariantSpec
from sunsim.sim.decode import DecodeWorker
from sunsim.sim.interconnect import Interconnect
from sunsim.sim.prefill import PrefillWorker
from sunsim.sim.records import Records
from sunsim.sim.stats import DecodeStats, InterconnectStats, PrefillStats
from sunsim.sim.tensor_parallel import shard, worker_tp
from sunsim.workload.stream import RequestSource

PREFILL_DTYPE = "bf16"  # prefill modules stay 16-bit in SUN and QSUN alike


@dataclass
class VariantResult:
    """Everything a run of one variant leaves behind, for metrics and reports."""

    scenario: Scenario
    variant: VariantSpec
    stream: RequestSource  # a whole stream (closed loop: with the run's arrival times), or a streamed one
    records: Records | None  # whole-run records; None when the rows went to a file (``records_file``)
    profile: ProfileInfo
    prefill_workers: list[PrefillWorker]
    decode_workers: list[DecodeWorker]
    decode_pool_of: list[str]  # per decode worker: its pool's name (a model, "shared", or "a+b" colocated)
    prefill_pool_of: list[str]  # per prefill worker: its model, "a+b" (packed) or "on_demand"
    kv_capacity_tokens: int
    prefill_kv_capacity_tokens: int | None
    end_s: float
    wall_s: float
    events: int
    interconnect: Interconnect
    # Plain end-of-run records of the same workers and links: what metrics, timelines and traces read.
    prefill_stats: list[PrefillStats]
    decode_stats: list[DecodeStats]
    interconnect_stats: InterconnectStats
    #: rebalanced dedicated pools: (time, worker, from model, to model) of each move.
    moves: list[tuple[float, int, int, int]] = field(default_factory=list)
    #: per decode worker: the models its pool serves (at the start; a rebalanced worker moves, see ``moves``).
    #: Per-model figures read this, never the pool names, which a model may share ("shared").
    decode_serves: list[tuple[str, ...]] = field(default_factory=list)
    #: per prefill worker: the models it may prefill (empty: its one model, ``prefill_pool_of``).
    prefill_serves: list[tuple[str, ...]] = field(default_factory=list)
    #: autoscaled pools: (time, decode GPUs in service from then), one entry per change (empty: a fixed pool).
    decode_gpu_timeline: list[tuple[float, int]] = field(default_factory=list)
    #: decode workers of the layout at the start (None: all of ``decode_stats``; an autoscaled pool adds more).
    start_decode_workers: int | None = None
    #: closed-loop arrivals: when the first client stopped (the end of the window with all clients active).
    clients_stop_s: float | None = None
    #: a streaming run: the file its per-request rows were written to as they finished (records is then None).
    records_file: str | None = None
    #: the most requests in flight at once (what the run's per-request arrays held at their peak).
    peak_in_flight: int = 0


def kv_dtype(sc: Scenario, role: str) -> str:
    """The KV-cache element type of a role's GPUs (``decode`` or ``prefill``)."""
    return sc.decode.kv_dtype if role == "decode" else sc.prefill.kv_dtype


def role_hardware(sc: Scenario, role: str, variant: VariantSpec | None = None) -> HardwareSpec:
    """The hardware of a role's GPUs (:meth:`Scenario.hardware_for`): a pool's own, else the top-level one."""
    return sc.hardware_for(role, variant)


def cost_model(sc: Scenario, profile: catalog.Profile, dtype: str, role: str = "decode",
               variant: VariantSpec | None = None, hardware: HardwareSpec | None = None) -> CostModel:
    """The cost model of a role's workers in a weight format (decode: of ``variant``'s workers, whose ``tp`` it
    takes; none: one GPU each), on the role's own GPU and profile. ``profile`` is the top-level profile, loaded
    (:func:`load_profile`); a pool whose own hardware names another has that one loaded here. ``hardware``
    replaces the role's (a variant's GPU at one GPU per worker)."""
    shard(sc, role, variant)  # a split the shape refuses names its field here
    hw = hardware or role_hardware(sc, role, variant)
    own = profile if hw.profile == sc.hardware.profile else pool_profile(hw.profile)
    cost = catalog.make_cost_model(gpu_spec(hw.gpu), sc.shape, dtype, own, kv_dtype(sc, role),
                                   worker_tp(sc, role, variant)[0])
    return with_overhead(cost, hw.iteration_overhead_ms)


def kv_capacity_tokens(sc: Scenario, shape: ModelShape, dtype: str, role: str = "decode",
                       extra_bytes: float = 0.0, extra_what: str = "", variant: VariantSpec | None = None) -> int:
    """KV tokens one GPU holds: usable memory minus its weights (by dtype) minus the reserve, over the
    bytes a token's KV takes in the role's KV dtype. ``shape`` is what one GPU holds (a tensor-parallel
    worker's shard), so this is also the worker's capacity: each of its GPUs holds its share of the same tokens.

    ``extra_bytes``: more resident weights (colocated models, LoRA adapters), named by ``extra_what``. The GPU's
    memory is the role's own (``variant``'s, for decode).
    """
    hw = role_hardware(sc, role, variant)
    free = gpu_spec(hw.gpu).memory_bytes * hw.memory_utilization - shape.weight_bytes(dtype) - hw.reserve_gib * GIB
    if extra_bytes:
        free -= extra_bytes
    block = sc.decode.block_tokens
    tokens = int(free // shape.kv_bytes(kv_dtype(sc, role))) // block * block
    if tokens < block and extra_bytes:
        raise ScenarioError(
            f"{extra_what} ({extra_bytes / GIB:.1f} GiB beside the {dtype} weights of {shape.name}) leave no KV "
            f"memory on a {hw.gpu} (memory_utilization={hw.memory_utilization}, reserve_gib={hw.reserve_gib})"
        )
    if tokens < block:
        raise ScenarioError(
            f"hardware: the {dtype} {role} weights of {shape.name} ({shape.weight_bytes(dtype) / GIB:.1f} GiB) "
            f"leave no KV memory on a {hw.gpu} (memory_utilization={hw.memory_utilization}, "
            f"reserve_gib={hw.reserve_gib})"
        )
    return tokens


def load_profile(sc: Scenario) -> catalog.Profile:
    """The top-level ``hardware.profile``, loaded (what callers hand to :func:`cost_model`)."""
    return catalog.load(sc.hardware.profile)


_POOL_PROFILES: dict[tuple, catalog.Profile] = {}


def pool_profile(name: str) -> catalog.Profile:
    """A pool's own profile, loaded once per process (a file's again when it changed): planning builds the
    cost models of every probe, and a shipped table profile takes a while to read."""
    key: tuple = (name,)
    if catalog.is_path(name):
        try:
            st = os.stat(name)
            key = (os.path.realpath(name), st.st_size, st.st_mtime_ns)
        except OSError:
            return catalog.load(name)  # names the field and why it cannot be read
    if key not in _POOL_PROFILES:
        if len(_POOL_PROFILES) >= 16:
            _POOL_PROFILES.clear()
        _POOL_PROFILES[key] = catalog.load(name)
    return _POOL_PROFILES[key]


def profile_info(sc: Scenario) -> ProfileInfo:
    """Which profile a scenario's costs come from (name, analytic or measured, device)."""
    return cost_model(sc, load_profile(sc), PREFILL_DTYPE, "prefill").info


def check_horizon(sc: Scenario, stream: RequestSource) -> None:
    """Refuse a horizon that would stop the run before its first request arrives."""
    horizon, facts = sc.sim.horizon_s, stream.facts
    first = 0.0 if stream.closed or not facts.n else facts.first_arrival_s
    if horizon is not None and facts.n and horizon <= first:
        raise ScenarioError(f"sim.horizon_s: the run would stop at {horizon:g} s, before the first request "
                            f"arrives ({first:.6g} s); give a later horizon or none")


def check_largest_fits(sc: Scenario, stream: RequestSource, kv_capacity: int, gpu_words: str) -> None:
    """Refuse a stream whose largest request (prompt + output, in blocks) cannot fit one GPU's KV memory after
    the paged policy's watermark; ``gpu_words`` names the GPU in the message ("a bf16 decode worker of ...")."""
    d = sc.decode
    block = d.block_tokens
    worst, prompt, output = stream.facts.worst
    need = -(-(prompt + output) // block) * block
    room = kv_capacity
    if d.kv_policy == "paged":  # paged admission also keeps the watermark free
        room -= int(d.watermark * (kv_capacity // block)) * block
    if stream.facts.n and need > room:
        raise ScenarioError(
            f"workload: request {worst} needs {need} KV tokens (prompt {prompt} + output {output}) but {gpu_words} "
            f"holds at most {room} (after the decode.watermark); shorten the lengths (prompt_tokens.max, "
            f"output_tokens.max) or free memory (hardware.reserve_gib, hardware.memory_utilization, decode.watermark)")
