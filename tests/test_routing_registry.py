"""Routing policies live in one registry (routing.POLICIES) from which the scenario schema takes its names."""

from __future__ import annotations

import subprocess
import sys
import typing
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from sunsim.analysis.metrics import request_table
from sunsim.cli import main
from sunsim.scenario import PrefillSpec, Routing, ScenarioError, VariantSpec
from sunsim.sim import routing
from sunsim.sim.routing import PAIRS_PER_DRAW, POLICIES, Router, RouteState
from sunsim.sim.variant import simulate_variant
from sunsim.workload.stream import build_workload

from .conftest import BASE, ROOT, make_scenario, merge


@dataclass
class Worker:
    name: str
    load: int
    kv_load: int


def test_schema_names_are_the_registry_keys() -> None:
    names = list(POLICIES)
    assert names == ["round_robin", "least_loaded", "least_kv", "power_of_two", "power_of_two_kv"]
    assert list(typing.get_args(Routing)) == names
    for spec in (PrefillSpec, VariantSpec):
        assert spec.model_json_schema()["properties"]["routing"]["enum"] == names


def test_a_registered_policy_reaches_the_schema() -> None:
    """One registration, before the schema is built, is all a new policy needs (a fresh interpreter)."""
    code = ("from sunsim.sim import routing\n"
            "routing.policy('last_worker')(lambda pool, pool_id, state: pool[-1])\n"
            "import typing; from sunsim.scenario import Routing, VariantSpec\n"
            "assert typing.get_args(Routing)[-1] == 'last_worker', typing.get_args(Routing)\n"
            "VariantSpec(name='v', mode='shared', workers=2, routing='last_worker')\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="least_kv"):
        routing.policy("least_kv")(routing.least_kv)


def test_unknown_policy_is_refused_naming_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as err:
        make_scenario(prefill={"workers": 2, "routing": "random"})
    assert "prefill.routing" in str(err.value) and "'random'" in str(err.value)
    assert all(name in str(err.value) for name in POLICIES)
    with pytest.raises(ValueError, match="round_robin, least_loaded, least_kv, power_of_two, power_of_two_kv"):
        Router("random", np.random.default_rng(0))
    bad = merge(BASE, {"variants": [{"name": "s", "mode": "shared", "workers": 2, "routing": "random"}]})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(bad))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_hand_computed_picks() -> None:
    """Ties go to the first worker; round robin keeps a cursor per pool; power of two compares two distinct
    workers drawn as :meth:`RouteState.two_distinct` draws them: a block of first picks, then a block of
    second picks among the other workers."""
    a, b, c = Worker("a", 2, 100), Worker("b", 1, 300), Worker("c", 1, 50)
    pool = [a, b, c]
    rr = Router("round_robin", np.random.default_rng(0))
    assert [rr.pick(pool, 0).name for _ in range(4)] == ["a", "b", "c", "a"]
    assert rr.pick(pool, 1).name == "a" and rr.pick(pool, 0).name == "b"
    assert Router("least_loaded", np.random.default_rng(0)).pick(pool, 0) is b
    assert Router("least_kv", np.random.default_rng(0)).pick(pool, 0) is c
    p2 = Router("power_of_two", np.random.default_rng(5))
    twin = np.random.default_rng(5)
    first, second = twin.integers(0, 3, PAIRS_PER_DRAW), twin.integers(0, 2, PAIRS_PER_DRAW)
    for i, j in zip(first[:20], second[:20]):
        j = j + (j >= i)
        want = pool[j] if pool[j].load < pool[i].load else pool[i]
        assert p2.pick(pool, 0) is want
    lone = np.random.default_rng(5)
    assert Router("power_of_two", lone).pick([a], 0) is a
    assert lone.random() == np.random.default_rng(5).random()  # a pool of one draws nothing


@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_routes_a_small_simulation(name: str) -> None:
    """Every request is served by a worker of its pool, all finish, and every worker gets some."""
    sc = make_scenario(model={"tasks": ["a", "b"]}, workload={"rate": 30, "duration_s": 10},
                       prefill={"workers": 2, "routing": name},
                       variants=[{"name": "s", "mode": "shared", "workers": 3, "routing": name}])
    stream = build_workload(sc)
    t = request_table(simulate_variant(sc, sc.variants[0], stream))
    assert len(t) == len(stream) and t["finish_s"].notna().all()
    decoded = t[t["output_tokens"] > 1]
    assert set(decoded["decode_worker"]) == {0, 1, 2}
    for m, (lo, hi) in {"a": (0, 1), "b": (2, 3)}.items():  # prefill pools are per model, numbered in order
        assert set(t.loc[t["model"] == m, "prefill_worker"]) == {lo, hi}
    if name == "round_robin":  # turn by turn: no worker gets two more than another
        counts = decoded["decode_worker"].value_counts()
        assert counts.max() - counts.min() <= 1


def test_two_distinct_is_uniform_over_ordered_pairs() -> None:
    """Every ordered pair of distinct workers equally likely (3 workers: 6 pairs, 1/6 each), across draw blocks."""
    state = RouteState(np.random.default_rng(11))
    draws = [state.two_distinct(3) for _ in range(60_000)]
    assert all(i != j for i, j in draws)
    counts = Counter(draws)
    assert set(counts) == {(i, j) for i in range(3) for j in range(3) if i != j}
    assert max(abs(c / len(draws) - 1 / 6) for c in counts.values()) < 0.01  # ~6 standard errors
