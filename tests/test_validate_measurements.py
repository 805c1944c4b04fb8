"""``sunsim validate --measurements``: published end-to-end rows replayed with closed-loop clients, the rows
sunsim cannot express listed with their reason."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from sunsim.analysis.measurements import FIELDS, concurrency_of, gpu_name, model_preset, read_measurements
from sunsim.cli.main import main
from sunsim.costs import catalog
from sunsim.costs.architecture import PRESETS
from sunsim.costs.hardware import gpu
from sunsim.costs.model import decode_step_time
from sunsim.scenario import InterconnectSpec

#: The public layout's columns (aiconfigurator-core systems/silicon_sample.csv), in its order.
HEADER = ["id", "silicon_data_source", "backend", "backend_version", "model_path", "system", "precision", "mode",
          "isl", "osl", "gemm_quant_mode", "moe_quant_mode", "batch_size", "tp_size", "pp_size", "attention_dp_size",
          "moe_tp_size", "moe_ep_size", "prefill_batch_size", "prefill_num_workers", "prefill_tp_size",
          "prefill_pp_size", "prefill_attention_dp_size", "prefill_moe_tp_size", "prefill_moe_ep_size",
          "decode_batch_size", "decode_num_workers", "decode_tp_size", "decode_pp_size", "decode_attention_dp_size",
          "decode_moe_tp_size", "decode_moe_ep_size", "silicon_ttft_ms", "silicon_tpot_ms"]

DISAGG = {"id": "llama8b_h100_vllm_bf16_disagg_1024x128_c4", "silicon_data_source": "test; silicon_concurrency=4",
          "backend": "vllm", "model_path": "meta-llama/Llama-3.1-8B-Instruct", "system": "h100_sxm",
          "precision": "bf16", "mode": "disagg", "isl": "1024", "osl": "128", "prefill_num_workers": "1",
          "prefill_tp_size": "1", "decode_num_workers": "1", "decode_tp_size": "1", "decode_batch_size": "4",
          "silicon_ttft_ms": "40.0", "silicon_tpot_ms": "7.0"}
ROWS = [
    DISAGG,
    {**DISAGG, "id": "llama8b_h100_pp2_c8", "silicon_data_source": "test; silicon_concurrency=8",
     "decode_pp_size": "2"},
    {**DISAGG, "id": "llama8b_h100_tp3_c8", "silicon_data_source": "test; silicon_concurrency=8",
     "decode_tp_size": "3"},
    {**DISAGG, "id": "mystery_c4", "model_path": "someone/Mystery-30B"},
    {**DISAGG, "id": "llama8b_h100_agg_c16", "mode": "agg", "silicon_data_source": "test", "batch_size": "16",
     "tp_size": "1", "prefill_num_workers": "", "decode_num_workers": "", "prefill_tp_size": "", "decode_tp_size": ""},
]


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, HEADER)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in HEADER})


def test_cli_replays_the_expressible_row_and_lists_the_others(tmp_path):
    src = tmp_path / "silicon.csv"
    write_csv(src, ROWS)
    out = tmp_path / "out"
    assert main(["validate", "--measurements", str(src), "--out", str(out)]) == 0
    per_row = pd.read_csv(out / "per_row.csv")
    skipped = pd.read_csv(out / "not_expressible.csv")
    groups = pd.read_csv(out / "groups.csv")
    assert dict(zip(skipped["id"], skipped["reason"])) == {
        "llama8b_h100_pp2_c8": "pipeline parallelism not modelled",
        "llama8b_h100_tp3_c8": "tensor parallelism of this size not modelled",
        "mystery_c4": "model not known to sunsim",
    }
    assert list(per_row["id"]) == [DISAGG["id"], "llama8b_h100_agg_c16"]
    agg = per_row.iloc[1]
    assert agg["concurrency"] == 16 and agg["prefill_workers"] == 1
    assert math.isfinite(agg["simulated_tpot_ms"]) and agg["simulated_tpot_ms"] > 0
    row = per_row.iloc[0]
    assert row["concurrency"] == 4 and row["gpu"] == "h100" and row["profile"] == "vllm-h100"
    assert row["measured_tpot_ms"] == 7.0 and row["measured_ttft_ms"] == 40.0
    assert math.isfinite(row["simulated_tpot_ms"]) and row["simulated_tpot_ms"] > 0
    assert math.isfinite(row["simulated_ttft_ms"]) and row["simulated_ttft_ms"] > 0
    assert row["tpot_rel_error"] == pytest.approx(row["simulated_tpot_ms"] / 7.0 - 1)
    # Four clients on one decode GPU: each of a request's 127 decode steps takes between the step of a batch
    # of 1 and of 4 at the longest context; before the first, the prompt's KV crosses the link (behind at most
    # the other 3 clients' transfers) and waits at most one step for the next iteration boundary (TPOT counts
    # from the first token, made by prefill).
    shape = PRESETS["llama-3.1-8b"]
    cost = catalog.make_cost_model(gpu("h100"), shape, "bf16", catalog.load("vllm-h100"))
    low = decode_step_time(cost, 1, 1024) * 1e3
    high = decode_step_time(cost, 4, 4 * (1024 + 128)) * 1e3
    ic = InterconnectSpec()
    transfer = 4 * (1024 * shape.kv_bytes("bf16") / ic.bandwidth_Bps + ic.latency_us * 1e-6) * 1e3  # 3 queued ahead
    assert low * 0.999 <= row["simulated_tpot_ms"] <= (high * 128 + transfer) / 127 * 1.001
    assert row["window_requests"] > 0
    assert list(groups["rows"]) == [1, 1]  # agg and disagg are separate groups
    disagg = groups[groups["mode"] == "disagg"].iloc[0]
    assert disagg["tpot_median_abs_rel_error"] == pytest.approx(abs(row["tpot_rel_error"]))
    # A second run into the same folder replaces its own outputs (the output rule).
    assert main(["validate", "--measurements", str(src), "--out", str(out), "--limit", "1"]) == 0


def test_limit_and_refusals(tmp_path, capsys):
    src = tmp_path / "silicon.csv"
    write_csv(src, [DISAGG, {**DISAGG, "id": "second"}])
    out = tmp_path / "out"
    assert main(["validate", "--measurements", str(src), "--out", str(out), "--limit", "1"]) == 0
    assert len(pd.read_csv(out / "per_row.csv")) == 1
    # Both or neither of --profile/--measurements, an unknown --columns field, a missing column: exit 2.
    assert main(["validate", "--measurements", str(src), "--profile", "x", "--out", str(out)]) == 2
    assert main(["validate", "--measurements", str(src), "--columns", '{"nope": "x"}', "--out", str(out)]) == 2
    assert "unknown field 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("id,model_path\nx,y\n")
    assert main(["validate", "--measurements", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "missing" in capsys.readouterr().err


def test_columns_map_another_layout(tmp_path):
    src = tmp_path / "other.csv"
    pd.DataFrame([{"name": "r1", "hf": "Qwen/Qwen3-8B", "gpu": "H200", "how": "disagg", "prompt": 512,
                   "gen": 64, "clients": 2, "p": 1, "d": 1, "ttft": 30.0, "tpot": 6.0}]).to_csv(src, index=False)
    cols = {"id": "name", "model": "hf", "system": "gpu", "mode": "how", "isl": "prompt", "osl": "gen",
            "concurrency": "clients", "prefill_workers": "p", "decode_workers": "d", "ttft_ms": "ttft",
            "tpot_ms": "tpot"}
    out = tmp_path / "out"
    assert main(["validate", "--measurements", str(src), "--columns", json.dumps(cols), "--out", str(out)]) == 0
    row = pd.read_csv(out / "per_row.csv").iloc[0]
    assert row["concurrency"] == 2 and row["gpu"] == "h200" and row["simulated_tpot_ms"] > 0
    assert "precision empty" in row["note"]


def test_names_and_concurrency_by_hand():
    assert model_preset("meta-llama/Llama-3.1-8B-Instruct") == "llama-3.1-8b"
    assert model_preset("nvidia/Llama-3.1-8B-Instruct-FP8") == "llama-3.1-8b"
    assert model_preset("Qwen/Qwen3-8B") == "qwen3-8b"
    assert model_preset("Qwen/Qwen3-32B") == "qwen3-32b" and model_preset("nvidia/Qwen3-32B-NVFP4") == "qwen3-32b"
    assert model_preset("Qwen/Qwen3-30B-A3B") is None and model_preset("tiny") is None
    assert gpu_name("h100_sxm") == "h100" and gpu_name("b200_sxm") == "b200" and gpu_name("gb200") is None
    row = pd.Series({f: "" for f in FIELDS})
    assert concurrency_of({**row, "source": "a; silicon_concurrency=64; b", "id": "x_c8_y"}) == 64
    assert concurrency_of({**row, "id": "x_c8_y"}) == 8
    assert concurrency_of({**row, "mode": "agg", "batch_size": "16.0"}) == 16
    assert concurrency_of({**row, "mode": "disagg", "batch_size": "16"}) is None


def test_the_public_file_is_read_when_installed():
    aic = pytest.importorskip("aiconfigurator_core")
    path = Path(aic.__file__).parent / "systems" / "silicon_sample.csv"
    if not path.is_file():
        pytest.skip("no silicon_sample.csv in this aiconfigurator-core")
    df = read_measurements(path)
    assert len(df) > 0 and set(df["mode"]) <= {"agg", "disagg"}


def test_model_config_gives_an_unknown_name_a_shape(tmp_path):
    config = Path(__file__).parent / "data" / "hf" / "qwen3-8b" / "config.json"
    src = tmp_path / "silicon.csv"
    write_csv(src, [{**DISAGG, "model_path": "acme/Custom-8B"}])
    assert main(["validate", "--measurements", str(src), "--out", str(tmp_path / "a")]) == 0
    assert list(pd.read_csv(tmp_path / "a" / "not_expressible.csv")["reason"]) == ["model not known to sunsim"]
    assert main(["validate", "--measurements", str(src), "--model-config", f"acme/Custom-8B={config}",
                 "--out", str(tmp_path / "b")]) == 0
    assert len(pd.read_csv(tmp_path / "b" / "per_row.csv")) == 1


def test_overhead_fit_on_a_subset_and_held_out_rows(tmp_path):
    """The overhead is fitted on the rows --fit-on names; every row is then replayed at it, the held-out ones apart.
    The fitted value is the grid point whose linearised median error is least, and replaying at it moves each
    row's TPOT by the overhead's change (one iteration per output token)."""
    from sunsim.analysis.e2e_validate import validate_measurements

    fit = {**DISAGG, "id": "fit_c4", "silicon_tpot_ms": "9.0"}
    held = {**DISAGG, "id": "held_c4", "system": "h200_sxm", "silicon_tpot_ms": "8.0"}
    src = tmp_path / "m.csv"
    write_csv(src, [fit, held])
    base, _, _ = validate_measurements(src)
    per_row, groups, _ = validate_measurements(src, fit_on={"system": "h100_sxm"})
    b = base.set_index("id")
    fitted = per_row["overhead_ms"].iloc[0]
    assert abs((b.loc["fit_c4", "simulated_tpot_ms"] - 0.5 + fitted) - 9.0) < 0.02  # the subset's own error ~0
    p = per_row.set_index("id")
    assert p.loc["fit_c4", "subset"] == "fit" and p.loc["held_c4", "subset"] == "held out"
    moved = p.loc["held_c4", "simulated_tpot_ms"] - b.loc["held_c4", "simulated_tpot_ms"]
    assert moved == pytest.approx(fitted - 0.5, rel=0.05)
    assert set(groups["subset"]) == {"fit", "held out"}
    with pytest.raises(Exception, match="--fit-on"):
        validate_measurements(src, fit_on={"system": "b200_sxm"})


def test_overhead_flag_is_checked(tmp_path, capsys):
    src = tmp_path / "m.csv"
    write_csv(src, [DISAGG])
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "--measurements", str(src), "--out", str(tmp_path / "o"), "--overhead-ms", "nan"])
    assert exit_.value.code == 2 and "--overhead-ms" in capsys.readouterr().err
    assert main(["validate", "--measurements", str(src), "--out", str(tmp_path / "o"), "--fit-on", "colour=red"]) == 2
    assert "--fit-on 'colour=red'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "per_row.csv").exists()
