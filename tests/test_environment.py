"""The simulation's environment against SimPy's own: the same clock, the same order of events."""

from __future__ import annotations

import gc
import math

import pytest
import simpy

from sunsim.scenario import load_scenario
from sunsim.sim.environment import Environment
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload


def _trace(env: simpy.Environment, later) -> list[tuple[float, str]]:
    """Timers (set by ``later``), a process and a SimPy timeout interleaved, ties included: what fires when."""
    seen: list[tuple[float, str]] = []

    def note(label: str):
        return lambda _ev: seen.append((env.now, label))

    def proc():
        for k in range(3):
            yield env.timeout(0.5)
            seen.append((env.now, f"proc{k}"))
            later(0.0, note(f"proc{k}+0"))

    env.process(proc())
    for i, delay in enumerate([1.0, 0.5, 0.5, 0.0, 2.0, 1.5]):
        later(delay, note(f"t{i}"))
    env.timeout(0.5).callbacks.append(note("simpy-timeout"))
    env.run()
    return seen


def test_call_later_fires_as_a_simpy_timeout_set_at_the_same_moment_would() -> None:
    def with_timeouts(env):
        return lambda d, cb: env.timeout(d).callbacks.append(cb)

    def with_timers(env):
        return env.call_later

    ref_env, env = simpy.Environment(), Environment()
    ref = _trace(ref_env, with_timeouts(ref_env))
    ours = _trace(env, with_timers(env))
    assert ours == ref
    assert [t for t, _ in ours] == sorted(t for t, _ in ours)  # time never goes back
    assert env.now == ref_env.now == 2.0


def test_the_clock_reads_what_simpy_reads() -> None:
    env = Environment(initial_time=3.0)
    assert env.now == 3.0
    env.call_later(0.25, lambda _ev: None)
    env.run()
    assert env.now == simpy.Environment.now.fget(env) == 3.25
    env.run(until=10.0)
    assert env.now == 10.0


@pytest.mark.parametrize("delay", [-1e-9, -1.0, math.nan])
def test_a_timer_in_the_past_or_at_no_time_is_refused(delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        Environment().call_later(delay, lambda _ev: None)


def test_a_cancelled_timer_calls_nothing_and_the_others_still_fire() -> None:
    env, seen = Environment(), []
    keep = env.call_later(1.0, lambda _ev: seen.append("kept"))
    dropped = env.call_later(0.5, lambda _ev: seen.append("dropped"))
    dropped.cancel()
    env.run()
    keep.cancel()  # already fired: nothing to do
    assert seen == ["kept"]
    assert env.peek() == math.inf  # both were taken off the queue


def _cyclic_garbage_left_by_a_run(requests: int) -> int:
    """Objects in reference cycles that a fleet run made and dropped (the run's result still held)."""
    sc = load_scenario("benchmarks/fleet.yaml", [f"workload.num_requests={requests}"])
    variant = next(v for v in sc.variants if v.name == "shared")
    workload = build_workload(sc)
    gc.collect()
    gc.disable()
    try:
        result = simulate_variant(sc, variant, workload)
        found = gc.collect()
    finally:
        gc.enable()
    assert len(result.records.finish_s) == requests
    return found


def test_a_run_makes_no_cyclic_garbage_per_request_so_pausing_the_collector_is_safe() -> None:
    small, large = _cyclic_garbage_left_by_a_run(2000), _cyclic_garbage_left_by_a_run(8000)
    assert large <= small + 50, (small, large)  # set-up only: nothing that grows with the requests


def test_the_collector_is_paused_while_the_environment_runs_and_restored_after() -> None:
    env, seen = Environment(), []
    env.call_later(1.0, lambda _ev: seen.append(gc.isenabled()))
    assert gc.isenabled()
    env.run()
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        env.call_later(1.0, lambda _ev: None)
        env.run()
        assert not gc.isenabled()  # a caller's choice stands
    finally:
        gc.enable()
