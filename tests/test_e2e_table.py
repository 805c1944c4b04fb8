"""The validation table compares both tools on the rows both answered, with errors computed by hand."""

from __future__ import annotations

import pandas as pd

from calibration.e2e_table import joined, main, table


def _write(tmp_path):
    ours = pd.DataFrame({"id": ["a", "b", "c"], "model": "m", "system": ["h100_sxm", "h100_sxm", "b200_sxm"],
                         "backend": "vllm", "mode": "agg", "subset": ["fit", "held out", "held out"],
                         "measured_ttft_ms": [100.0, 200.0, 50.0], "simulated_ttft_ms": [110.0, 150.0, 50.0],
                         "measured_tpot_ms": [10.0, 20.0, 5.0], "simulated_tpot_ms": [11.0, 19.0, 5.5],
                         "overhead_ms": 0.7})
    peer = pd.DataFrame({"id": ["a", "b", "c"], "peer_ttft_ms": [90.0, 260.0, None], "peer_tpot_ms": [12.0, 20.0, None],
                         "status": ["ok", "ok", "out of memory"]})
    ours.to_csv(tmp_path / "ours.csv", index=False)
    peer.to_csv(tmp_path / "peer.csv", index=False)
    return tmp_path / "ours.csv", tmp_path / "peer.csv"


def test_only_rows_both_answered_and_errors_by_hand(tmp_path, capsys):
    ours, peer = _write(tmp_path)
    df = joined(ours, peer)
    assert list(df["id"]) == ["a", "b"]  # c: the peer gave no estimate
    assert df["sunsim_tpot_err"].round(6).tolist() == [0.1, 0.05]
    assert df["peer_tpot_err"].round(6).tolist() == [0.2, 0.0]
    assert df["peer_ttft_err"].round(6).tolist() == [0.1, 0.3]
    lines = table(df)
    assert lines[2].startswith("| **dense H100/H200, all** | 2 | 7.5% / 9.5% | 10.0% / 18.0% |")
    assert any(ln.startswith("| dense H100/H200, fit | 1 | 10.0% / 10.0% |") for ln in lines)
    assert main(["--ours", str(ours), "--peer", str(peer)]) == 0
    assert "0.7 ms engine overhead" in capsys.readouterr().out
    assert main(["--ours", str(tmp_path / "none.csv"), "--peer", str(peer)]) == 2


def test_the_readme_carries_the_table_of_the_committed_replay():
    """calibration/README.md quotes the table the committed per_row.csv and peer_estimates.csv give, line for line."""
    from pathlib import Path

    from calibration.e2e_table import OURS, PEER

    readme = (Path(__file__).resolve().parents[1] / "calibration" / "README.md").read_text()
    for line in table(joined(OURS, PEER)):
        assert line in readme
    overhead = pd.read_csv(OURS)["overhead_ms"].iloc[0]
    assert f"**{overhead:g} ms**" in readme
