"""Hugging Face config.json as a model shape: the public configs of the presets give the presets."""

from __future__ import annotations

import json

import pytest
import yaml

from sunsim.cli import main
from sunsim.costs.architecture import PRESETS
from sunsim.scenario import ScenarioError, load_scenario, read_hf_config, scenario_from_dict, shape_from_hf

from .conftest import BASE, ROOT, merge

HF = ROOT / "tests" / "data" / "hf"


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen3-8b"])
def test_public_configs_give_the_presets(name):
    # Written from the models' published config.json; Llama omits head_dim (4096 / 32 = 128).
    assert read_hf_config(str(HF / name / "config.json")) == PRESETS[name]


def test_scenario_path_is_relative_to_the_scenario_file(tmp_path):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "qwen").mkdir()
    (folder / "qwen" / "config.json").write_text((HF / "qwen3-8b" / "config.json").read_text())
    doc = merge(BASE, {"model": {"preset": None, "hf_config": "qwen/config.json"}})
    (folder / "s.yaml").write_text(yaml.safe_dump(doc))
    sc = load_scenario(folder / "s.yaml")
    shape = PRESETS["qwen3-8b"]
    assert sc.shape.kv_bytes_per_token == shape.kv_bytes_per_token == 2 * 36 * 8 * 128 * 2
    assert sc.shape.params == shape.params
    assert sc.shape.name == "qwen"  # the folder holding config.json


def test_defaults_and_name():
    cfg = {"model_type": "mistral", "_name_or_path": "mistralai/Mistral-7B-v0.1", "hidden_size": 4096,
           "num_hidden_layers": 32, "num_attention_heads": 32, "intermediate_size": 14336, "vocab_size": 32000}
    shape = shape_from_hf(cfg)
    assert shape.name == "Mistral-7B-v0.1"
    assert shape.kv_heads == 32 and shape.head_dim == 128 and not shape.tied_embeddings
    tied = shape_from_hf({**cfg, "num_key_value_heads": 8, "tie_word_embeddings": True, "_name_or_path": None})
    assert tied.name == "mistral" and tied.kv_heads == 8
    # Tying drops the LM head; 8 instead of 32 KV heads drop 24 heads' K and V projections per layer.
    assert shape.params - tied.params == 32000 * 4096 + 32 * 4096 * 2 * 24 * 128


BAD = [
    ({"hidden_size": None}, "'hidden_size'"),
    ({"num_hidden_layers": 0}, "'num_hidden_layers'"),
    ({"num_attention_heads": "32"}, "'num_attention_heads'"),
    ({"num_key_value_heads": 7}, "num_key_value_heads"),
    ({"vocab_size": 1.5}, "'vocab_size'"),
    ({"tie_word_embeddings": "yes"}, "'tie_word_embeddings'"),
    ({"intermediate_size": True}, "'intermediate_size'"),
    ({"model_type": "mixtral"}, "model_type 'mixtral'"),
]


@pytest.mark.parametrize("change,needle", BAD, ids=[str(c) for c, _ in BAD])
def test_bad_config_names_the_key(change, needle):
    cfg = json.loads((HF / "llama-3.1-8b" / "config.json").read_text())
    cfg.update(change)
    with pytest.raises(ScenarioError, match="model.hf_config") as info:
        shape_from_hf(cfg)
    assert needle in str(info.value)


@pytest.mark.parametrize("text,needle", [
    (None, "file not found"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
])
def test_bad_file_via_cli(tmp_path, capsys, text, needle):
    if text is not None:
        (tmp_path / "config.json").write_text(text)
    doc = merge(BASE, {"model": {"preset": None, "hf_config": "config.json"}})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    code = main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "model.hf_config" in err and needle in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_only_one_model_source():
    with pytest.raises(ScenarioError, match="only one of"):
        scenario_from_dict(merge(BASE, {"model": {"hf_config": str(HF / "qwen3-8b" / "config.json")}}))
