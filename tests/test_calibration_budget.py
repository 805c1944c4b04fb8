"""The time budget, per-format profiles, packing, targets and CLI counts, with a synthetic timer and clock."""

from __future__ import annotations

import json
import tarfile
import types
from pathlib import Path

import pytest

pytest.importorskip("torch")

import calibration.calibrate as cal_mod  # noqa: E402
import calibration.measure as measure_mod  # noqa: E402
from calibration.calibrate import Request, calibrate  # noqa: E402
from calibration.errors import BudgetExceeded  # noqa: E402
from calibration.grid import Grid  # noqa: E402
from calibration.measure import grid_points  # noqa: E402
from calibration.pack import pack  # noqa: E402
from calibration.synthetic import LinearCost, SyntheticTimer  # noqa: E402
from calibration.targets import evaluate, missed, render  # noqa: E402
from sunsim.costs.architecture import preset  # noqa: E402
from sunsim.costs.model import measured_cost_model, read_profile  # noqa: E402

GRID = Grid(decode_batches=(1, 2, 4), decode_contexts=(128, 512), prefill_points=((1, 128), (2, 128), (1, 256)),
            mixed=((128, 384) * 2,), stack_decode=((2, 128),), stack_prefill=((1, 128),), attention=((2, 128),),
            name="t")
POINTS = len(grid_points(GRID, "bf16", 2))


class Clock:
    """A fake monotonic clock that the synthetic timer advances by one second per timed point."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    import time

    fake = types.SimpleNamespace(monotonic=c.monotonic, strftime=time.strftime, time=time.time)
    monkeypatch.setattr(measure_mod, "time", fake)
    monkeypatch.setattr(cal_mod, "time", fake)
    return c


class TickingTimer(SyntheticTimer):
    def __init__(self, clock: Clock, fail_at: int | None = None) -> None:
        super().__init__(LinearCost(), {"int4": 0.5, "int8": 0.7})
        self.clock, self.fail_at = clock, fail_at

    def measure(self, fn, graph=False, point=None):
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("kernel crashed")
        self.clock.now += 1.0
        return super().measure(fn, graph, point)


def _req(out: Path, **kw) -> Request:
    return Request(**{"shape": preset("tiny"), "dtypes": ["bf16", "int8", "int4"], "out": out, "grid": GRID, **kw})


def test_budget_keeps_finished_formats_complete_and_drops_the_cut_one(tmp_path: Path, clock: Clock) -> None:
    out = tmp_path / "p"
    # bf16 needs POINTS ticks; the budget ends inside int8.
    merged = calibrate(_req(out, time_budget=POINTS + POINTS // 2), progress=False, timer=TickingTimer(clock))
    assert sorted(merged["dtypes"]) == ["bf16"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["p", "p-bf16"]  # no half int8 profile, no .partial left behind
    for d in (tmp_path / "p-bf16", out):
        profile = read_profile(d)
        cost = measured_cost_model(profile, preset("tiny"), "bf16")
        assert cost.decode_coeffs(2)[0] > 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["format_status"]["bf16"].startswith("complete")
    assert meta["format_status"]["int8"].startswith("not finished")
    assert "int4" not in meta["format_status"]  # never started


def test_rerun_resumes_after_the_finished_formats(tmp_path: Path, clock: Clock) -> None:
    out = tmp_path / "p"
    calibrate(_req(out, time_budget=POINTS + 3), progress=False, timer=TickingTimer(clock))
    timer = TickingTimer(clock)
    merged = calibrate(_req(out, time_budget=10 * POINTS), progress=False, timer=timer)
    assert sorted(merged["dtypes"]) == ["bf16", "int4", "int8"]
    assert timer.calls == 2 * POINTS  # bf16 was not measured again
    # Every synthetic int4 time is half the bf16 one: the merged profile's fits say so.
    prof = read_profile(out)
    c16 = measured_cost_model(prof, preset("tiny"), "bf16").decode_coeffs(4)
    c4 = measured_cost_model(prof, preset("tiny"), "int4").decode_coeffs(4)
    assert c4[0] == pytest.approx(0.5 * c16[0], rel=1e-6) and c4[1] == pytest.approx(0.5 * c16[1], rel=1e-6)


def test_crash_leaves_no_half_profile(tmp_path: Path, clock: Clock) -> None:
    out = tmp_path / "p"
    with pytest.raises(RuntimeError, match="crashed"):
        calibrate(_req(out, per_format=True), progress=False, timer=TickingTimer(clock, fail_at=POINTS + 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p-bf16"]
    read_profile(tmp_path / "p-bf16")


def test_nothing_finished_is_an_error(tmp_path: Path, clock: Clock) -> None:
    with pytest.raises(BudgetExceeded, match="no format finished"):
        calibrate(_req(tmp_path / "p", time_budget=3), progress=False, timer=TickingTimer(clock))
    assert list(tmp_path.iterdir()) == []


def test_pack_holds_every_finished_file_and_no_partial(tmp_path: Path, clock: Clock) -> None:
    out = tmp_path / "p"
    calibrate(_req(out, time_budget=POINTS + 3), progress=False, timer=TickingTimer(clock))
    (tmp_path / ".p-int8.partial").mkdir()
    (tmp_path / ".p-int8.partial" / "timings.csv").write_text("x")
    log = tmp_path / "log.txt"
    log.write_text("run log\n")
    archive = tmp_path / "a.tar.gz"
    names = pack(archive, [out, tmp_path / "p-bf16", log, tmp_path / "missing"])
    with tarfile.open(archive) as tar:
        members = sorted(tar.getnames())
    assert members == sorted(names)
    assert "p-bf16/profile.json" in members and "p/profile.json" in members and "log.txt" in members
    assert not any("partial" in m for m in members)


def _rows(layer_s: float, gemm_s: float, attn_s: float) -> list[dict]:
    base = {"dtype": "bf16", "status": "ok", "lengths": "", "layers": 1, "sum_sq": 0}
    return [dict(base, kind="decode_layer", batch=1, seqlen=128, tokens=1, kv_tokens=128, time_s=layer_s),
            dict(base, kind="gemm", batch=1, seqlen=0, tokens=1, kv_tokens=0, time_s=gemm_s),
            dict(base, kind="attention", batch=64, seqlen=1024, tokens=64, kv_tokens=65536, time_s=attn_s)]


def test_targets_hand_computed_and_enforced_on_gpu_only() -> None:
    shape = preset("llama-3.1-8b")
    profile = {"model": shape.as_dict(), "dtypes": {}}
    kv_bytes = 65536 * shape.kv_heads * shape.head_dim * 4  # K and V, 2 bytes each
    meta = {"device": {"d2d_Bps": kv_bytes / 100e-6}}  # copying that many bytes takes 100 us
    rows = _rows(layer_s=140e-6, gemm_s=100e-6, attn_s=200e-6)  # ratio 1.4; bandwidth 50% of copy
    gpu = {t.name: t for t in evaluate(rows, profile, meta, None, enforced=True)}
    assert gpu["decode_layer_vs_gemm"].value == pytest.approx(1.4)
    assert gpu["attention_kv_bandwidth"].value == pytest.approx(0.5)
    assert gpu["int4_decode_faster_b1"].met is None  # no int4 profile: not measured, not missed
    assert sorted(t.name for t in missed(list(gpu.values()))) == ["attention_kv_bandwidth", "decode_layer_vs_gemm"]
    assert "MISSED" in render(list(gpu.values()), "cuda")
    cpu = evaluate(rows, profile, meta, None, enforced=False)
    assert missed(cpu) == []
    assert "reported only" in render(cpu, "cpu")
    good = {t.name: t for t in evaluate(_rows(120e-6, 100e-6, 130e-6), profile, meta, None, enforced=True)}
    assert good["decode_layer_vs_gemm"].met and good["attention_kv_bandwidth"].met


@pytest.mark.parametrize("argv", [
    ["calibrate", "--model", "tiny", "--out", "x", "--warmup", "-2"],
    ["calibrate", "--model", "tiny", "--out", "x", "--repeats", "0"],
    ["calibrate", "--model", "tiny", "--out", "x", "--time-budget", "0"],
    ["calibrate", "--model", "tiny", "--out", "x", "--layers", "two"],
    ["validate", "--profile", "x", "--step-repeats", "-1"],
    ["validate", "--profile", "x", "--requests", "0"],
    ["cost", "--profile", "analytic-h100", "--model", "tiny", "--phase", "decode", "--batch", "0"],
])
def test_cli_refuses_non_positive_counts(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sunsim.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "must be a positive" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_every_calibration_option_has_help() -> None:
    from sunsim.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ("calibrate", "cost", "validate"):
        p = sub.choices[name]
        assert p.description
        for action in p._actions:
            assert action.help, (name, action.dest)
