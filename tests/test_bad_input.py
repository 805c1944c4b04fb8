"""Bad input: a clear message naming the field, a non-zero exit, and no result files."""

from __future__ import annotations

import pytest
import yaml

from sunsim.cli import main
from sunsim.scenario import scenario_from_dict
from sunsim.workload.stream import build_workload

from .conftest import BASE, merge


def _run(tmp_path, capsys, patch: dict | None = None, text: str | None = None, extra: list[str] | None = None):
    path = tmp_path / "bad.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(merge(BASE, patch or {})))
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), *(extra or [])])
    err = capsys.readouterr().err
    return code, " ".join(err.split()), out


CASES = [
    ("unknown preset", {"model": {"preset": "gpt-9"}}, ["model.preset", "llama-3.1-8b"]),
    ("negative rate", {"workload": {"rate": -3}}, ["workload.rate", "greater than or equal to"]),
    ("unknown gpu", {"hardware": {"gpu": "tpu"}}, ["hardware.gpu", "h100"]),
    ("unknown dtype", {"variants": [{"name": "q", "mode": "shared", "workers": 2, "dtype": "int3"}]},
     ["variants.0.dtype", "int4"]),
    ("fp8 on a100", {"hardware": {"gpu": "a100"},
                     "variants": [{"name": "q", "mode": "shared", "workers": 2, "dtype": "fp8"}]},
     ["variants.q.dtype", "fp8"]),
    ("zero decode workers for a busy model",
     {"variants": [{"name": "d", "mode": "dedicated", "workers": {"a": 1, "b": 1, "c": 0, "d": 1}}]},
     ["variants.d.workers", "'c'"]),
    ("zero prefill workers for a busy model", {"prefill": {"workers": {"a": 1, "b": 0}}},
     ["prefill.workers", "'b'"]),
    ("request never fits", {"workload": {"prompt_tokens": {"kind": "fixed", "value": 600000}}},
     ["workload", "KV tokens", "prompt_tokens.max"]),
    ("unknown field", {"workload": {"rat": 3}}, ["workload.rat", "Extra inputs"]),
    ("weights leave no memory", {"hardware": {"memory_utilization": 0.1}}, ["hardware", "no KV memory"]),
    ("missing profile", {"hardware": {"profile": "no/such/profile"}}, ["hardware.profile", "no profile"]),
    ("shared pool with no workers", {"variants": [{"name": "s", "mode": "shared", "workers": 0}]},
     ["variants[0].workers"]),
]


@pytest.mark.parametrize("label,patch,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_scenario_names_the_field_and_writes_nothing(tmp_path, capsys, label, patch, needles):
    code, err, out = _run(tmp_path, capsys, patch)
    assert code != 0
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists() or not any(out.iterdir())


def test_malformed_yaml(tmp_path, capsys):
    code, err, out = _run(tmp_path, capsys, text="workload: [unclosed\n")
    assert code != 0 and "not valid YAML" in err
    assert not out.exists()


def test_bad_override(tmp_path, capsys):
    code, err, _ = _run(tmp_path, capsys, extra=["--set", "workload.rate=fast"])
    assert code != 0 and "workload.rate" in err
    code, err, _ = _run(tmp_path, capsys, extra=["--set", "norate"])
    assert code != 0 and "KEY=VALUE" in err


@pytest.mark.parametrize("row,column", [
    ("12.5,abc,40", "num_prefill_tokens"),
    ("13.0,100,-4", "num_decode_tokens"),
    ("14.0,100,", "num_decode_tokens"),
])
def test_trace_with_bad_rows(tmp_path, capsys, row, column):
    trace = tmp_path / "trace.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,20\n1.5,200,30\n" + row + "\n")
    patch = {"workload": {"arrivals": {"kind": "trace", "path": str(trace)}, "rate": None}}
    code, err, out = _run(tmp_path, capsys, patch)
    assert code != 0
    assert "row 4" in err and column in err
    assert not out.exists() or not any(out.iterdir())


def test_unknown_variant_name(tmp_path, capsys):
    code, err, out = _run(tmp_path, capsys, extra=["--variant", "nope"])
    assert code != 0 and "--variant" in err and "dedicated" in err


# --- hostile values: each of these crashed, hung or ran with a wrong result before ---------------
INF, NAN = float("inf"), float("nan")
SHARED = {"name": "s", "mode": "shared", "workers": 2}

HOSTILE = [
    # names that become paths
    ("scenario name climbs out", {"name": "../../x"}, ["name", "not a valid name", "letters, digits"]),
    ("empty scenario name", {"name": ""}, ["name", "not a valid name"]),
    ("scenario name with a slash", {"name": "a/b"}, ["name", "not a valid name"]),
    ("scenario name dot-dot", {"name": ".."}, ["name", "not a valid name"]),
    ("variant name with a slash", {"variants": [{**SHARED, "name": "a/b"}]}, ["variants.0.name", "not a valid"]),
    ("task name dot-dot", {"model": {"tasks": ["a", ".."]}}, ["model.tasks", "'..'", "not a valid name"]),
    # numbers: inf, NaN, huge, near zero, negative
    ("infinite rate", {"workload": {"rate": INF}}, ["workload.rate", "finite number"]),
    ("NaN rate", {"workload": {"rate": NAN}}, ["workload.rate", "finite number"]),
    ("huge rate", {"workload": {"rate": 1e300}}, ["workload.rate", "less than or equal to 1000000"]),
    ("near-zero rate", {"workload": {"rate": 1e-300}}, ["workload.rate", "greater than or equal to"]),
    ("huge duration", {"workload": {"duration_s": 1e300}}, ["workload.duration_s", "less than or equal to"]),
    ("negative seed", {"seed": -1}, ["seed", "greater than or equal to 0"]),
    ("seed beyond 64 bits", {"seed": 2**64}, ["seed", "less than or equal to"]),
    ("huge fixed length", {"workload": {"prompt_tokens": {"kind": "fixed", "value": 10**12}}},
     ["workload.prompt_tokens.value", "less than or equal to 10000000"]),
    ("infinite latency", {"interconnect": {"latency_us": INF}}, ["interconnect.latency_us", "finite"]),
    ("near-zero bandwidth", {"interconnect": {"bandwidth_GBps": 1e-300}},
     ["interconnect.bandwidth_GBps", "greater than or equal to 0.000001"]),
    ("NaN memory share", {"hardware": {"memory_utilization": NAN}}, ["hardware.memory_utilization", "finite"]),
    ("huge reserve", {"hardware": {"reserve_gib": 1e300}}, ["hardware.reserve_gib", "less than or equal to"]),
    ("near-zero gamma cv", {"workload": {"arrivals": {"kind": "gamma", "cv": 1e-300}}},
     ["workload.arrivals.cv", "greater than or equal to"]),
    ("huge zipf s", {"workload": {"popularity": {"kind": "zipf", "s": 1e6}}},
     ["workload.popularity.s", "less than or equal to 20"]),
    ("huge lognormal sigma", {"workload": {"output_tokens": {"kind": "lognormal", "mean": 100, "sigma": 1e200}}},
     ["workload.output_tokens.sigma", "less than or equal to 10"]),
    ("infinite horizon", {"sim": {"horizon_s": INF}}, ["sim.horizon_s", "finite"]),
    ("horizon before the first arrival", {"sim": {"horizon_s": 1e-9}}, ["sim.horizon_s", "before the first request"]),
    ("huge task count", {"model": {"tasks": 10**12}}, ["model.tasks", "from 1 to 1000"]),
    ("huge worker count", {"variants": [{**SHARED, "workers": 10**12}]},
     ["variants.0.workers", "less than or equal to 10000"]),
    # absurd request counts and memory, refused with the estimate before allocating
    ("absurd request count", {"workload": {"rate": 1e6, "duration_s": 1e7}},
     ["workload", "10,000,000,000,000 requests", "10,000,000,000"]),
    ("absurd memory", {"workload": {"num_requests": 40_000_000, "duration_s": None}},
     ["workload", "40,000,000 requests", "GiB", "8 GiB", "--stream"]),
    # impossible distributions
    ("lognormal min above max",
     {"workload": {"prompt_tokens": {"kind": "lognormal", "mean": 100, "sigma": 0.5, "min": 500, "max": 50}}},
     ["workload.prompt_tokens", "min <= max"]),
    ("lognormal mean outside its range",
     {"workload": {"prompt_tokens": {"kind": "lognormal", "mean": 9000, "sigma": 0.5, "max": 4096}}},
     ["workload.prompt_tokens", "within [min, max]"]),
    # booleans are not numbers
    ("boolean worker count", {"prefill": {"workers": True}}, ["prefill.workers", "not true/false"]),
    ("boolean shared pool", {"variants": [{**SHARED, "workers": True}]}, ["variants.0.workers", "not true/false"]),
    ("boolean rate", {"workload": {"rate": True}}, ["workload.rate", "not true/false"]),
    # one model source
    ("preset and shape", {"model": {"preset": "qwen3-8b", "shape": {
        "hidden": 256, "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 64, "intermediate": 512, "vocab": 1024}}},
     ["model", "only one of", "preset, shape"]),
    ("heads not a multiple of kv heads", {"model": {"preset": None, "shape": {
        "hidden": 256, "layers": 2, "heads": 6, "kv_heads": 4, "head_dim": 64, "intermediate": 512, "vocab": 1024}}},
     ["model.shape", "multiple of"]),
]


@pytest.mark.parametrize("label,patch,needles", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_values_are_refused_up_front(tmp_path, capsys, label, patch, needles):
    code, err, out = _run(tmp_path, capsys, patch)
    assert code == 2, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err
    assert not out.exists()


def test_duplicate_yaml_key(tmp_path, capsys):
    text = yaml.safe_dump(BASE).replace("seed: 7\n", "seed: 7\nseed: 8\n")
    code, err, out = _run(tmp_path, capsys, text=text)
    assert code == 2 and "duplicate key 'seed'" in err and not out.exists()


def test_bad_file_name_without_name(tmp_path, capsys):
    base = {k: v for k, v in BASE.items() if k != "name"}
    path = tmp_path / "my scenario.yaml"
    path.write_text(yaml.safe_dump(base))
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "name" in err and "'my scenario'" in err
    assert not (tmp_path / "out").exists()


TRACE_HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


@pytest.mark.parametrize("body,needles", [
    ("0.0,100,20\n1.5,200.5,30\n", ["row 3", "num_prefill_tokens", "whole number"]),
    ("0.0,100,20\ninf,200,30\n", ["row 3", "arrived_at", "number of seconds"]),
    ("0.0,100,20\nnan,200,30\n", ["row 3", "arrived_at"]),
    ("0.0,100,20\n-1,200,30\n", ["row 3", "arrived_at"]),
    ("0.0,100,20\n1.0,100,1e12\n", ["row 3", "num_decode_tokens", "10,000,000"]),
    ("0.0,100,20\n1.0,,30\n", ["row 3", "no value", "num_prefill_tokens"]),
    (None, ["empty file"]),
    ("", ["no rows"]),
], ids=["fractional length", "infinite time", "NaN time", "negative time", "huge length", "empty length", "empty file",
        "header only"])
def test_trace_rows_are_checked_truthfully(tmp_path, capsys, body, needles):
    trace = tmp_path / "trace.csv"
    trace.write_text("" if body is None else TRACE_HEADER + body)
    patch = {"workload": {"arrivals": {"kind": "trace", "path": str(trace)}, "rate": None}}
    code, err, out = _run(tmp_path, capsys, patch)
    assert code == 2, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err and not out.exists()


def test_unsorted_trace_is_replayed_in_arrival_order(tmp_path):
    # Rows out of order keep their own lengths and model; arrivals come out sorted.
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_HEADER.strip() + ",model\n0.0,100,10,a\n3.0,300,30,c\n1.0,200,20,b\n2.0,250,25,a\n")
    sc = scenario_from_dict(merge(BASE, {"workload": {"arrivals": {"kind": "trace", "path": str(trace)},
                                                      "rate": None}}))
    stream = build_workload(sc)
    assert stream.arrival_s.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert stream.prompt_tokens.tolist() == [100, 200, 250, 300]
    assert stream.output_tokens.tolist() == [10, 20, 25, 30]
    assert [stream.models[m] for m in stream.model] == ["a", "b", "a", "c"]
