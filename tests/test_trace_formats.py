"""Trace formats by column mapping: a BurstGPT-layout CSV, the same requests as JSON lines and as Parquet,
each request on the task model its trace model maps to, and every bad file refused naming its row and column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sunsim.scenario import DEFAULT_LAYOUT, ScenarioError, load_scenario, scenario_from_dict
from sunsim.workload.stream import RequestStream, build_workload, read_trace

from .conftest import BASE, ROOT, TRACE, merge

BURST_COLUMNS = ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"]
#: Timestamp (s from the trace start), Model, Request tokens, Response tokens; rows 4 and 5 out of order.
ROWS = [(5.0, "ChatGPT", 472, 18), (7.5, "GPT-4", 1109, 303), (8.25, "ChatGPT", 30, 1),
        (14.0, "GPT-4", 2048, 512), (11.0, "ChatGPT", 77, 90), (20.5, "ChatGPT", 600, 64)]
MAPPING = {"ChatGPT": "b", "GPT-4": "d"}
VLLM_KEYS = ("timestamp", "model", "prompt_len", "expected_output_len")  # the vllm-jsonl preset's keys


def burst_frame(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame([(t, m, p, o, p + o, "Conversation log") for t, m, p, o in rows], columns=BURST_COLUMNS)


def write_csv(path: Path, rows=ROWS) -> Path:
    burst_frame(rows).to_csv(path, index=False)
    return path


def write_jsonl(path: Path, rows=ROWS, keys=VLLM_KEYS) -> Path:
    path.write_text("".join(json.dumps(dict(zip(keys, r))) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows=ROWS) -> Path:
    burst_frame(rows).to_parquet(path, index=False)
    return path


def scenario(arrivals: dict, **workload):
    read_trace.cache_clear()
    return scenario_from_dict(merge(BASE, {"workload": {"arrivals": {"kind": "trace", **arrivals}, "rate": None,
                                                        **workload}}))


def stream_of(arrivals: dict, **workload) -> RequestStream:
    return build_workload(scenario(arrivals, **workload))


def error_of(arrivals: dict, **workload) -> str:
    with pytest.raises(ScenarioError) as exc:
        stream_of(arrivals, **workload)
    return str(exc.value)


def test_burstgpt_csv_replays_each_request_on_its_mapped_model(tmp_path):
    path = write_csv(tmp_path / "burst.csv")
    stream = stream_of({"path": str(path), "preset": "burstgpt", "models": MAPPING})
    expected = sorted(ROWS, key=lambda r: r[0])
    assert len(stream) == len(expected)
    t0 = expected[0][0]
    for i, (t, model, prompt, output) in enumerate(expected):
        assert stream.arrival_s[i] == pytest.approx(t - t0), i
        assert stream.models[stream.model[i]] == MAPPING[model], i
        assert (stream.prompt_tokens[i], stream.output_tokens[i]) == (prompt, output), i


def _same(a: RequestStream, b: RequestStream) -> None:
    assert a.models == b.models
    for field in ("arrival_s", "model", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@pytest.mark.parametrize("workload", [{}, {"rate": 2.0}, {"duration_s": 9.0}, {"num_requests": 3}],
                         ids=["own pace", "rescaled by rate", "cut by duration", "cut by count"])
def test_the_same_data_as_jsonl_and_parquet_gives_the_identical_stream(tmp_path, workload):
    csv = stream_of({"path": str(write_csv(tmp_path / "b.csv")), "preset": "burstgpt", "models": MAPPING}, **workload)
    jsonl = stream_of({"path": str(write_jsonl(tmp_path / "b.jsonl")), "preset": "vllm-jsonl", "models": MAPPING},
                      **workload)
    parquet = stream_of({"path": str(write_parquet(tmp_path / "b.parquet")), "preset": "burstgpt",
                         "models": MAPPING}, **workload)
    _same(csv, jsonl)
    _same(csv, parquet)
    if "rate" in workload:  # rescaled to the mean rate: (n - 1) gaps over n / rate seconds
        assert csv.arrival_s[-1] == pytest.approx((len(ROWS) - 1) / workload["rate"])


def test_columns_map_any_names_and_the_format_overrides_the_suffix(tmp_path):
    path = write_jsonl(tmp_path / "trace.log", keys=("t", "who", "in", "out"))
    mapped = stream_of({"path": str(path), "format": "jsonl", "models": MAPPING,
                        "columns": {"time": "t", "model": "who", "prompt_tokens": "in", "output_tokens": "out"}})
    _same(mapped, stream_of({"path": str(write_csv(tmp_path / "b.csv")), "preset": "burstgpt", "models": MAPPING}))


def test_without_a_model_column_popularity_draws_the_model(tmp_path):
    path = write_csv(tmp_path / "b.csv")
    ignored = stream_of({"path": str(path), "preset": "burstgpt", "use_models": False})
    azure = tmp_path / "azure.csv"
    pd.DataFrame({"arrived_at": [r[0] for r in ROWS], "num_prefill_tokens": [r[2] for r in ROWS],
                  "num_decode_tokens": [r[3] for r in ROWS]}).to_csv(azure, index=False)
    _same(ignored, stream_of({"path": str(azure)}))
    with pytest.raises(ScenarioError, match="use_models is false"):
        scenario({"path": str(path), "preset": "burstgpt", "use_models": False, "models": MAPPING})


def test_a_trace_model_without_a_mapping_is_refused_naming_it(tmp_path):
    path = write_csv(tmp_path / "burst.csv")
    msg = error_of({"path": str(path), "preset": "burstgpt", "models": {"ChatGPT": "a"}})
    assert "'GPT-4'" in msg and "burst.csv" in msg and "'Model'" in msg and "row 3" in msg, msg
    assert "workload.arrivals.models" in msg and "'ChatGPT': 'a'" in msg, msg
    msg = error_of({"path": str(path), "preset": "burstgpt"})  # no mapping at all: names must be task names
    assert "'ChatGPT'" in msg and "'GPT-4'" in msg and "model.tasks" in msg and "workload.arrivals.models" in msg, msg


def test_a_mapping_to_an_unknown_task_is_refused_naming_both(tmp_path):
    with pytest.raises(ScenarioError) as exc:
        scenario({"path": str(write_csv(tmp_path / "b.csv")), "preset": "burstgpt",
                  "models": {"ChatGPT": "a", "GPT-4": "gpt4"}})
    msg = str(exc.value)
    assert "workload.arrivals.models" in msg and "'GPT-4'" in msg and "'gpt4'" in msg and "model.tasks" in msg, msg


def test_a_mapping_needs_a_model_column_in_the_file(tmp_path):
    msg = error_of({"path": str(TRACE), "models": MAPPING}, num_requests=5)
    assert "no model column" in msg and "'model'" in msg, msg


# --- bad files: each names the file, the row (CSV: file line, header = row 1; JSON lines: line; Parquet: row)
# and the column, and says what is allowed ---------------------------------------------------------------
def _bad_rows(time, prompt=100, output=20):
    return ROWS[:2] + [(time, "GPT-4", prompt, output)] + ROWS[3:]


CELLS = [  # (time, prompt, output), the column named, the words that say what is allowed
    (("soon", 100, 20), "time", "a number of seconds"),
    ((-1.0, 100, 20), "time", "a number of seconds from 0"),
    ((float("inf"), 100, 20), "time", "a number of seconds"),
    ((float("nan"), 100, 20), "time", "no value"),
    ((3.0, 12.5, 20), "prompt_tokens", "a whole number from 1 to 10,000,000"),
    ((3.0, 100, 0), "output_tokens", "failed request"),
    ((3.0, 100, 10**8), "output_tokens", "a whole number from 1 to 10,000,000"),
]
COLUMN = {"csv": {"time": "Timestamp", "prompt_tokens": "Request tokens", "output_tokens": "Response tokens"},
          "jsonl": dict(zip(("time", "model", "prompt_tokens", "output_tokens"), VLLM_KEYS))}
COLUMN["parquet"] = COLUMN["csv"]
WRITE = {"csv": (write_csv, "b.csv", "burstgpt", "row 4"), "jsonl": (write_jsonl, "b.jsonl", "vllm-jsonl", "line 3"),
         "parquet": (write_parquet, "b.parquet", "burstgpt", "row 3")}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("cell,field,allowed", CELLS, ids=["text time", "negative time", "infinite time",
                                                           "NaN time", "fractional tokens", "zero tokens",
                                                           "too many tokens"])
def test_a_bad_cell_is_refused_naming_row_and_column(tmp_path, fmt, cell, field, allowed):
    write, name, preset, row = WRITE[fmt]
    if fmt == "parquet" and cell[0] == "soon":
        pytest.skip("a Parquet column has one type: text in a number column cannot be written")
    time, prompt, output = cell
    path = write(tmp_path / name, _bad_rows(time, prompt, output))
    msg = error_of({"path": str(path), "preset": preset, "models": MAPPING})
    column = COLUMN[fmt][field]
    assert name in msg and row in msg and f"'{column}' ({field})" in msg and allowed in msg, msg
    assert "np.float64" not in msg and "Traceback" not in msg, msg


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_missing_column_is_named_with_its_field(tmp_path, fmt):
    write, name, preset, _ = WRITE[fmt]
    path = write(tmp_path / name)
    msg = error_of({"path": str(path), "preset": preset, "columns": {"output_tokens": "Output"}})
    assert name in msg and "missing column" in msg and "'Output' (output_tokens)" in msg and "columns:" in msg, msg
    if fmt != "jsonl":  # BurstGPT's Model column is required by its preset
        msg = error_of({"path": str(write(tmp_path / ("x" + name), [])), "preset": preset})
        assert "no rows" in msg, msg


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_an_empty_file_is_refused(tmp_path, fmt):
    _, name, preset, _ = WRITE[fmt]
    (tmp_path / name).write_bytes(b"")
    msg = error_of({"path": str(tmp_path / name), "preset": preset})
    assert name in msg and "empty file" in msg, msg


def test_jsonl_blank_lines_only_has_no_rows(tmp_path):
    (tmp_path / "b.jsonl").write_text("\n  \n")
    assert "no rows" in error_of({"path": str(tmp_path / "b.jsonl"), "preset": "vllm-jsonl"})


@pytest.mark.parametrize("line,needle", [('{"timestamp": 3.0, "prompt_len": 5', "not valid JSON"),
                                         ("[3.0, 5, 6]", "JSON list, not an object"),
                                         ('{"timestamp": true, "prompt_len": 5, "expected_output_len": 6}',
                                          "timestamp=True")])
def test_a_malformed_json_line_is_refused_naming_its_line(tmp_path, line, needle):
    path = tmp_path / "b.jsonl"
    write_jsonl(path, ROWS[:2])
    path.write_text(path.read_text() + "\n" + line + "\n")  # a blank line 3: the bad one is line 4
    msg = error_of({"path": str(path), "preset": "vllm-jsonl", "models": MAPPING})
    assert "b.jsonl" in msg and "line 4" in msg and needle in msg, msg


def test_a_missing_key_on_one_line_is_no_value_there(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"timestamp": 0, "prompt_len": 5, "expected_output_len": 6}\n{"timestamp": 1, "prompt_len": 5}\n')
    msg = error_of({"path": str(path), "preset": "vllm-jsonl"})
    assert "line 2 has no value" in msg and "'expected_output_len' (output_tokens)" in msg, msg


def test_an_unreadable_parquet_file_is_refused(tmp_path):
    (tmp_path / "b.parquet").write_text("Timestamp,Model\n1,GPT-4\n")
    assert "not a readable Parquet file" in error_of({"path": str(tmp_path / "b.parquet"), "preset": "burstgpt"})


# --- old scenarios -----------------------------------------------------------------------------------------
def test_an_old_layout_scenario_loads_and_replays_unchanged():
    sc = scenario({"path": str(TRACE)}, num_requests=50)
    assert sc.workload.arrivals.layout() == DEFAULT_LAYOUT
    file = pd.read_csv(TRACE).iloc[:50]
    stream = build_workload(sc)
    np.testing.assert_allclose(stream.arrival_s, file["arrived_at"] - file["arrived_at"].iloc[0])
    np.testing.assert_array_equal(stream.prompt_tokens, file["num_prefill_tokens"])
    np.testing.assert_array_equal(stream.output_tokens, file["num_decode_tokens"])


def test_an_old_trace_scenario_file_loads_with_a_duration_override():
    sc = load_scenario(ROOT / "scenarios" / "experiments" / "trace.yaml", ["workload.duration_s=5"])
    assert sc.workload.arrivals.kind == "trace" and sc.workload.arrivals.preset is None
    assert len(build_workload(sc)) > 0


def test_a_burstgpt_scenario_file_with_a_relative_path(tmp_path):
    write_csv(tmp_path / "burst.csv")
    doc = merge(BASE, {"workload": {"arrivals": {"kind": "trace", "path": "burst.csv", "preset": "burstgpt",
                                                 "models": MAPPING},
                                    "rate": None, "prompt_tokens": {"kind": "trace", "path": "burst.csv",
                                                                    "preset": "burstgpt"}}})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    read_trace.cache_clear()
    sc = load_scenario(tmp_path / "s.yaml", ["workload.duration_s=5"])
    stream = build_workload(sc)
    assert [stream.models[m] for m in stream.model] == ["b", "d", "b"]  # rows at 5, 7.5 and 8.25 s


def test_a_layout_reads_back_the_same_after_the_scenario_is_dumped(tmp_path):
    """Relative paths are resolved by dumping and validating the scenario again: the layout must survive."""
    write_jsonl(tmp_path / "t.log", keys=("t", "who", "in", "out"))
    arrivals = {"kind": "trace", "path": "t.log", "format": "jsonl", "models": MAPPING,
                "columns": {"time": "t", "model": "who", "prompt_tokens": "in", "output_tokens": "out"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(merge(BASE, {"workload": {"arrivals": arrivals, "rate": None}})))
    read_trace.cache_clear()
    sc = load_scenario(tmp_path / "s.yaml")
    layout = sc.workload.arrivals.layout()
    assert (layout.format, layout.time, layout.model, layout.model_required) == ("jsonl", "t", "who", True)
    again = scenario_from_dict(sc.model_dump(mode="json"))
    assert again.workload.arrivals.layout() == layout
    _same(build_workload(sc), stream_of({"path": str(write_csv(tmp_path / "b.csv")), "preset": "burstgpt",
                                         "models": MAPPING}))
