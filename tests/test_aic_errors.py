"""The error table of the analytic profiles against the imported aiconfigurator-core tables
(``calibration/aic_errors.py``): each error is recomputed here from the cost model's components and the raw
table lookups, so a wrong term on either side (a missing LM head, a per-sequence KV count, the step overhead
left in) fails; non-fitting points stay out of the summary; the Markdown lists every point."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from calibration import aic_errors as ae
from calibration.aic_analysis import BATCHES, CONTEXTS, PREFILLS, SMALL_M, Step
from calibration.aic_tables import AicTables
from sunsim.costs import efficiency as eff
from sunsim.costs.architecture import preset
from sunsim.costs.hardware import gpu
from sunsim.costs.model import DECODE_STEP_OVERHEAD_S, PREFILL_BATCH_OVERHEAD_S, AnalyticCostModel

PROFILES = Path(__file__).resolve().parents[1] / "sunsim" / "costs" / "profiles"
LAYERS, VOCAB, HIDDEN = 32, 128256, 4096
LAYER_GEMMS = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))  # (n, k): qkv, o, gate_up, down
KV_BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2


@pytest.fixture(scope="module")
def tables() -> dict[str, AicTables]:
    return {n: AicTables(PROFILES / f"vllm-{n}") for n in ae.GPUS}


@pytest.fixture(scope="module")
def report() -> str:
    return ae.report(PROFILES)


def _table_decode_us(t: AicTables, b: int, c: int) -> tuple[float, float]:
    gemm = LAYERS * sum(t.gemm("bf16", b, n, k).us for n, k in LAYER_GEMMS) + t.gemm("bf16", b, VOCAB, HIDDEN).us
    return gemm, LAYERS * t.attention("decode", b, c, 32, 8, 128).us


@pytest.mark.parametrize("name,b,c", [("h100", 64, 1024), ("h200", 1, 128), ("a100", 512, 128),
                                      ("h100", 256, 4096)])
def test_decode_error_recomputed_from_components(tables: dict[str, AicTables], name: str, b: int, c: int) -> None:
    m = AnalyticCostModel(gpu(name), preset("llama-3.1-8b"), "bf16")
    gemm = (m.projections_time(b) + m.head_time(b)) * 1e6
    attn = (m._attn_calls_s + m._beta * b * c) * 1e6
    t_gemm, t_attn = _table_decode_us(tables[name], b, c)
    point = next(p for p in ae.decode_points(m, tables[name]) if (p.batch, p.length) == (b, c))
    assert point.error("gemm") == pytest.approx(gemm / t_gemm - 1, rel=1e-9)
    assert point.error("attention") == pytest.approx(attn / t_attn - 1, rel=1e-9)
    assert point.error("step") == pytest.approx((gemm + attn) / (t_gemm + t_attn) - 1, rel=1e-9)


def test_decode_sum_is_the_full_step_less_what_the_tables_lack() -> None:
    """The compared step is decode_coeffs' step minus the overhead, norms and embedding reads, nothing else."""
    for name in ae.GPUS:
        m = ae.analytic(name)
        for b, c in ((1, 128), (64, 1024), (512, 4096)):
            alpha, beta = m.decode_coeffs(b)
            full = alpha + beta * b * c
            rest = DECODE_STEP_OVERHEAD_S + m._norm_read_s + m._embed_s_per_row * b
            assert sum(ae.analytic_decode_us(m, b, c)) == pytest.approx((full - rest) * 1e6, rel=1e-9)


def test_prefill_error_recomputed_with_sum_sq_tokens_squared(tables: dict[str, AicTables]) -> None:
    half = eff.fits().attention.prefill_half_len
    for name in ae.GPUS:
        m, t = ae.analytic(name), tables[name]
        points = ae.prefill_points(m, t)
        assert [p.length for p in points] == list(PREFILLS)
        for p in points:
            n = p.length
            gemm = (m.projections_time(n) + m.head_time(1)) * 1e6
            attn = (m._attn_calls_s + m._attn_s_per_sq * (n * n + half * n)) * 1e6
            t_gemm = LAYERS * sum(t.gemm("bf16", n, a, k).us for a, k in LAYER_GEMMS) + t.gemm("bf16", 1, VOCAB, HIDDEN).us
            t_attn = LAYERS * t.attention("prefill", 1, n, 32, 8, 128).us
            assert p.error("step") == pytest.approx((gemm + attn) / (t_gemm + t_attn) - 1, rel=1e-9)
            full = m.prefill_time(n, n * n, 1) - PREFILL_BATCH_OVERHEAD_S - m._norm_read_s - m._embed_s_per_row * n
            assert gemm + attn == pytest.approx(full * 1e6, rel=1e-9)


def test_non_fitting_points_are_marked_and_excluded(tables: dict[str, AicTables]) -> None:
    for name in ae.GPUS:
        t = tables[name]
        points = ae.decode_points(ae.analytic(name), t)
        memory = float(t.metadata["device"]["datasheet"]["memory_bytes"])
        weights = 2.0 * (LAYERS * sum(n * k for n, k in LAYER_GEMMS) + 2 * VOCAB * HIDDEN)
        for p in points:
            assert p.fits == (weights + p.batch * p.length * KV_BYTES_PER_TOKEN <= memory)
        assert any(not p.fits for p in points)  # B = 512, C = 4096 never fits in 80-141 GB
        fitting = [p for p in points if p.fits]
        for component in ae.COMPONENTS:
            s = ae.summarize(points, component)
            assert (s.points, s.excluded) == (len(fitting), len(points) - len(fitting))
            assert s.median_abs == pytest.approx(statistics.median(abs(p.error(component)) for p in fitting))
            assert abs(s.worst) == pytest.approx(max(abs(p.error(component)) for p in fitting))


def test_summary_ignores_a_huge_error_where_the_kv_does_not_fit() -> None:
    def point(b: int, analytic_us: float, fits: bool) -> ae.Point:
        return ae.Point("decode", b, 1024, analytic_us, 0.0, Step(100.0, 0.0, False), fits)

    points = [point(1, 110.0, True), point(2, 80.0, True), point(4, 105.0, True), point(8, 1000.0, False)]
    s = ae.summarize(points)
    assert (s.points, s.excluded) == (3, 1)
    assert s.median_abs == pytest.approx(0.10)
    assert s.worst == pytest.approx(-0.20) and s.worst_at == "B=2, C=1024"


def test_fp8_ratios_match_the_tables(tables: dict[str, AicTables]) -> None:
    for name in ae.FP8_GPUS:
        t = tables[name]
        fp8, bf16 = ae.analytic(name, "fp8"), ae.analytic(name, "bf16")
        ratios = ae.fp8_ratios(name, t)
        assert [r.m for r in ratios] == list(SMALL_M)
        for r in ratios:
            table = (sum(t.gemm("fp8", r.m, n, k).us for n, k in LAYER_GEMMS)
                     / sum(t.gemm("bf16", r.m, n, k).us for n, k in LAYER_GEMMS))
            assert r.table == pytest.approx(table, rel=1e-9)
            assert r.analytic == pytest.approx(fp8.projections_time(r.m) / bf16.projections_time(r.m), rel=1e-9)
            assert r.analytic_gemm_only < r.analytic  # the quantization term only adds time
            assert 0.3 < r.table < 1.0 and 0.3 < r.analytic < 1.0


def _rows(report: str, title_start: str) -> list[list[str]]:
    """The data rows of the Markdown table after the line starting with ``title_start``."""
    lines = report.splitlines()
    i = next(j for j, line in enumerate(lines) if line.startswith(title_start))
    rows = []
    for line in lines[i + 4:]:  # title, blank, header, separator
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_markdown_has_every_point(report: str, tables: dict[str, AicTables]) -> None:
    for name in ae.GPUS:
        rows = _rows(report, f"Decode step, {name} bf16")
        keys = [(int(r[0]), int(re.sub(r"\D", "", r[1]))) for r in rows]
        assert keys == [(b, c) for b in BATCHES for c in CONTEXTS]
        points = ae.decode_points(ae.analytic(name), tables[name])
        for r, p in zip(rows, points):
            assert r[1].endswith("‡") == (not p.fits)
            assert ("†" in r[1]) == p.table.extrapolated
            assert r[7] == f"{p.error('step'):+.1%}"
    prefill = _rows(report, "Prefill of one prompt")
    assert [(r[0], int(r[1].rstrip("†"))) for r in prefill] == [(n, t) for n in ae.GPUS for t in PREFILLS]
    summary = _rows(report, "Summary")
    assert [(r[0], r[1], r[2]) for r in summary] == [
        (n, ph, part) for n in ae.GPUS for ph in ("decode", "prefill") for part in ("GEMM", "attention", "sum")]
    assert len(_rows(report, "fp8 / bf16")) == len(SMALL_M)


def test_main_prints_the_report(capsys: pytest.CaptureFixture[str], report: str) -> None:
    assert ae.main(["--profiles", str(PROFILES)]) == 0
    assert capsys.readouterr().out == report


def test_readme_carries_the_current_tables(report: str) -> None:
    """The README section quotes the printed tables verbatim: a change to either side shows here."""
    readme = (Path(__file__).resolve().parents[1] / "calibration" / "README.md").read_text(encoding="utf-8")
    assert "### Analytic profiles against the imported tables" in readme
    assert report in readme
