"""Bad input: a clear message naming the field, a non-zero exit, and no result files."""

from __future__ import annotations

import pytest
import yaml

from sunsim.cli import main

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
