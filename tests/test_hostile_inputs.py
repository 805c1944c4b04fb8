"""Hostile input files: every one is refused with a message naming the file or field (exit 2), never a
traceback, a hang or a silently wrong run."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from sunsim.analysis.sweep import load_sweep
from sunsim.cli import main
from sunsim.errors import InputError
from sunsim.scenario import ScenarioError, load_scenario, read_hf_config, scenario_from_dict
from sunsim.workload.stream import build_workload, read_trace

from .conftest import BASE, merge

HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


def _cli(tmp_path, capsys, text: str | bytes, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    path = tmp_path / "hostile.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), *extra])
    assert not out.exists() or not any(out.iterdir())
    return code, " ".join(capsys.readouterr().err.split())


def _base_text() -> str:
    return yaml.safe_dump(BASE)


# --- YAML ------------------------------------------------------------------------------------
def _alias_bomb(levels: int = 9) -> str:
    """Nine-fold nested aliases: a few hundred bytes that expand to 9**levels nodes."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused(tmp_path, capsys):
    code, err = _cli(tmp_path, capsys, _base_text() + _alias_bomb())
    assert code == 2 and "aliases" in err and "hostile.yaml" in err, err


def test_yaml_recursive_alias_is_refused(tmp_path, capsys):
    code, err = _cli(tmp_path, capsys, _base_text() + "loop: &loop [*loop]\n")
    assert code == 2 and "refers to itself" in err, err


def test_yaml_small_aliases_still_work(tmp_path):
    doc = merge(BASE, {"workload": {"output_tokens": "__LEN__", "prompt_tokens": "__ALIAS__"}})
    text = yaml.safe_dump(doc).replace("__LEN__", "&len {kind: fixed, value: 64}").replace("__ALIAS__", "*len")
    sc = load_scenario(_write(tmp_path, text))
    assert sc.workload.prompt_tokens == sc.workload.output_tokens
    assert sc.workload.prompt_tokens.value == 64  # type: ignore[union-attr]


@pytest.mark.parametrize("nest", ["[" * 5000 + "]" * 5000, "{a: " * 2000 + "1" + "}" * 2000])
def test_yaml_deep_nesting_is_refused(tmp_path, capsys, nest):
    code, err = _cli(tmp_path, capsys, _base_text() + f"deep: {nest}\n")
    assert code == 2 and "nested" in err, err


def test_yaml_oversized_file_is_refused(tmp_path, capsys):
    code, err = _cli(tmp_path, capsys, _base_text() + "#" + "x" * (2 * 2**20) + "\n")
    assert code == 2 and "MiB" in err, err


def test_yaml_huge_integer_is_refused(tmp_path, capsys):
    code, err = _cli(tmp_path, capsys, _base_text().replace("seed: 7", "seed: 1" + "0" * 5000))
    assert code == 2 and "hostile.yaml" in err and "digits" in err, err


@pytest.mark.parametrize("data", [b"name: \xff\xfe\n", "name: t\n".encode("utf-16")])
def test_yaml_not_utf8_is_refused(tmp_path, capsys, data):
    code, err = _cli(tmp_path, capsys, data)
    assert code == 2 and "UTF-8" in err, err


def test_yaml_top_level_list_is_refused_also_with_set(tmp_path, capsys):
    code, err = _cli(tmp_path, capsys, "- 1\n- 2\n", ("--set", "workload.rate=3"))
    assert code == 2 and "mapping at the top level" in err, err


def test_sweep_file_hostile_yaml_is_refused(tmp_path):
    (tmp_path / "base.yaml").write_text(_base_text())
    for text, needle in [(b"scenario: base.yaml\ngrid: \xff\n", "UTF-8"),
                         ("scenario: base.yaml\n" + _alias_bomb(), "aliases"),
                         ("scenario: base.yaml\ngrid: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
                         ("- scenario\n", "mapping at the top level")]:
        path = tmp_path / "sweep.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ScenarioError, match=needle):
            load_sweep(path)


@pytest.mark.parametrize("override,needle", [
    ("variants.--1.workers=3", "no list item '--1'"),
    ("variants.².workers=3", "no list item '²'"),
    ("variants.١.workers=3", "no list item '١'"),
    ("workload.rate=[1", "--set workload.rate"),
    ("seed=!!python/object:os.system", "--set seed"),
    ("seed=1" + "0" * 5000, "--set seed"),
    ("workload.rate=" + "[" * 5000, "--set workload.rate"),
    ("workload.rate={a: 1, a: 2}", "duplicate key"),
])
def test_set_values_and_indices_are_checked(tmp_path, capsys, override, needle):
    code, err = _cli(tmp_path, capsys, _base_text(), ("--set", override))
    assert code == 2 and needle in err, err


def test_set_numbers_that_int_would_misread(tmp_path, capsys):
    for override, field in [("workload.rate=--1", "workload.rate"), ("seed=²", "seed")]:
        code, err = _cli(tmp_path, capsys, _base_text(), ("--set", override))
        assert code == 2 and field in err, err
    sc = load_scenario(_write(tmp_path, _base_text()), ["variants.-1.workers=3", "variants.0.workers=2"])
    assert [v.workers for v in sc.variants] == [2, 3]


def _write(tmp_path, text: str, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- traces ----------------------------------------------------------------------------------
def _trace_scenario(tmp_path, rows: str | bytes, **workload):
    trace = tmp_path / "trace.csv"
    if isinstance(rows, bytes):
        trace.write_bytes(rows)
    else:
        trace.write_text(rows)
    read_trace.cache_clear()
    patch = {"workload": {"arrivals": {"kind": "trace", "path": str(trace)}, "rate": None, **workload}}
    return scenario_from_dict(merge(BASE, patch))


def test_trace_out_of_order_rows_replay_sorted(tmp_path):
    sc = _trace_scenario(tmp_path, HEADER + "0,10,11\n5,20,21\n2,30,31\n1,40,41\n")
    stream = build_workload(sc)
    assert stream.arrival_s.tolist() == [0.0, 1.0, 2.0, 5.0]
    assert stream.prompt_tokens.tolist() == [10, 40, 30, 20]


@pytest.mark.parametrize("row,column", [
    ("nan,10,10", "arrived_at"), ("inf,10,10", "arrived_at"), (",10,10", "arrived_at"),
    ("1,-inf,10", "num_prefill_tokens"), ("1,1e400,10", "num_prefill_tokens"), ("1,10,", "num_decode_tokens"),
])
def test_trace_non_finite_or_empty_cells_name_file_row_column(tmp_path, row, column):
    with pytest.raises(ScenarioError) as exc:
        build_workload(_trace_scenario(tmp_path, HEADER + "0,10,10\n" + row + "\n"))
    msg = str(exc.value)
    assert "trace.csv" in msg and "row 3" in msg and column in msg and "np.float64" not in msg, msg


def test_trace_empty_model_cell_names_the_row(tmp_path):
    with pytest.raises(ScenarioError, match=r"row 3 .*model"):
        build_workload(_trace_scenario(tmp_path, HEADER.strip() + ",model\n0,10,10,a\n1,10,10,\n"))


@pytest.mark.parametrize("header", [
    "arrived_at,num_prefill_tokens,num_decode_tokens,arrived_at",
    "arrived_at,num_prefill_tokens,num_decode_tokens,model,model",
])
def test_trace_duplicate_header_is_refused(tmp_path, header):
    with pytest.raises(ScenarioError, match="more than once"):
        build_workload(_trace_scenario(tmp_path, header + "\n" + "0,10,10,5,6\n1,10,10,6,7\n"))


def test_trace_not_utf8_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match="UTF-8"):
        build_workload(_trace_scenario(tmp_path, HEADER.encode() + b"0,10,10\n1,\xff\xfe,10\n"))


def test_trace_rows_past_duration_are_dropped(tmp_path):
    sc = _trace_scenario(tmp_path, HEADER + "0,10,10\n1,10,10\n29.9,10,10\n30,10,10\n100,10,10\n", duration_s=30)
    assert build_workload(sc).arrival_s.tolist() == [0.0, 1.0, 29.9]


# --- Hugging Face configs --------------------------------------------------------------------
DENSE = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
         "intermediate_size": 14336, "vocab_size": 128256}


def _hf(tmp_path, content: str | bytes | dict) -> str:
    path = tmp_path / "cfg" / "config.json"
    path.parent.mkdir(exist_ok=True)
    if isinstance(content, dict):
        content = json.dumps(content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    read_hf_config.cache_clear()
    return str(path)


@pytest.mark.parametrize("key", ["num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size",
                                 "num_experts_per_tok"])
def test_hf_moe_config_without_model_type_is_refused(tmp_path, key):
    with pytest.raises(ScenarioError, match=f"'{key}'.*mixture-of-experts"):
        read_hf_config(_hf(tmp_path, {**DENSE, key: 8}))


@pytest.mark.parametrize("content,needle", [
    (b"\xff\xfe{}", "UTF-8"),
    ("hello", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ({**DENSE, "hidden_size": True}, "'hidden_size' is True"),
    ({**DENSE, "num_hidden_layers": 32.0}, "'num_hidden_layers' is 32.0"),
    ('{"hidden_size": NaN}', "not valid JSON"),
    ('{"hidden_size": Infinity}', "not valid JSON"),
    ('{"hidden_size": 1' + "0" * 5000 + "}", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
])
def test_hf_bad_files_are_refused_naming_the_file(tmp_path, content, needle):
    with pytest.raises(ScenarioError) as exc:
        read_hf_config(_hf(tmp_path, content))
    assert needle in str(exc.value) and "model.hf_config" in str(exc.value), str(exc.value)


def test_hf_dense_config_and_null_expert_keys_are_accepted(tmp_path):
    shape = read_hf_config(_hf(tmp_path, {**DENSE, "num_experts": None, "num_local_experts": 0}))
    assert shape.hidden == 4096 and shape.kv_heads == 8


# --- numbers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", "1e400", "1.0e+400", "'1e400'", "true",
                                  "1" + "0" * 400, str(2**64), "-1" + "0" * 30])
@pytest.mark.parametrize("path", [("seed",), ("workload", "rate"), ("workload", "duration_s"),
                                  ("prefill", "max_batch_tokens"), ("slo", "ttft_s"),
                                  ("workload", "prompt_tokens", "mean"), ("variants", 1, "workers")])
def test_hostile_numbers_name_the_field(tmp_path, text, path):
    doc = copy.deepcopy(BASE)
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = "__HOSTILE__"
    scenario = _write(tmp_path, yaml.safe_dump(doc).replace("__HOSTILE__", text))
    with pytest.raises(InputError) as exc:
        build_workload(load_scenario(scenario))
    assert str(path[-1]) in str(exc.value) or path[-1] == 1, str(exc.value)
