"""``sunsim report``: figures and report.md from a real run folder and a synthetic sweep table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sunsim.cli import main
from sunsim.report.markdown import RunData, plot_latency_cdfs, write_report

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "default"
    assert main(["run", str(ROOT / "scenarios" / "default.yaml"), "--out", str(out),
                 "--set", "workload.duration_s=20"]) == 0
    return out


def sweep_table() -> pd.DataFrame:
    """Two skews x two rates x two seeds x two variants, plus one failed point that must be ignored."""
    rows = []
    for point, (s, rate) in enumerate([(0.5, 40), (0.5, 80), (1.5, 40), (1.5, 80)]):
        for seed in (1, 2):
            for variant, gain in (("dedicated", 1.0), ("sun", 1.3)):
                rows.append({
                    "point": point, "seed": seed, "workload.popularity.s": s, "workload.rate": rate,
                    "variant": variant, "mode": "shared" if variant == "sun" else "dedicated", "dtype": "bf16",
                    "profile": "analytic-h100", "profile_kind": "analytic",
                    "tokens_per_s_per_gpu": rate * 20 * gain / (1 + s / 4) + seed, "tpot_p90_s": 0.01 * s / gain,
                    "ttft_p90_s": 0.1, "slo_attainment": min(1.0, gain * 60 / rate), "min_decode_gpus": 6 - gain * 2,
                    "status": "ok", "error": "",
                })
    rows.append({"point": 9, "seed": 1, "workload.popularity.s": 3.0, "workload.rate": 40, "variant": "sun",
                 "status": "error", "error": "does not fit"})
    return pd.DataFrame(rows)


def figures(report: Path) -> list[Path]:
    return sorted((report.parent / "figures").glob("*.png"))


def check_figures(report: Path) -> str:
    text = report.read_text()
    pngs = figures(report)
    assert pngs
    for png in pngs:
        svg = png.with_suffix(".svg")
        assert png.read_bytes()[:8] == PNG
        assert svg.stat().st_size > 0 and b"<svg" in svg.read_bytes()[:2000]
        assert f"(figures/{png.name})" in text and f"(figures/{svg.name})" in text
    return text


def test_report_of_run_folder(run_dir: Path) -> None:
    assert main(["report", str(run_dir)]) == 0
    report = run_dir / "report" / "report.md"
    text = check_figures(report)
    assert "vllm-h100" in text and "| dedicated |" in text
    assert any(p.name.endswith("latency-cdf.png") for p in figures(report))
    assert not list(run_dir.glob(".report-staging-*"))


@pytest.mark.slow
def test_report_of_sweep_table(tmp_path: Path) -> None:
    table = tmp_path / "sweep.csv"
    sweep_table().to_csv(table, index=False)
    out = tmp_path / "out"
    assert main(["report", str(table), "-o", str(out)]) == 0
    text = check_figures(out / "report.md")
    names = {p.stem for p in figures(out / "report.md")}
    assert {"sweep-throughput-vs-skew", "sweep-slo-vs-rate", "sweep-decode-gpus-vs-workload-popularity-s"} <= names
    assert "profile: **analytic-h100 (analytic)**" in text.lower() and "1 failed" in text


@pytest.mark.slow
def test_folder_of_results(run_dir: Path, tmp_path: Path) -> None:
    """A folder holding a run and a sweep table gets one report with both."""
    (tmp_path / "sweeps").mkdir()
    sweep_table().to_csv(tmp_path / "sweeps" / "grid.csv", index=False)
    (tmp_path / "run").symlink_to(run_dir, target_is_directory=True)
    report = write_report(tmp_path)
    text = check_figures(report)
    assert "## Run `default`" in text and "## Sweep `sweeps/grid.csv`" in text


@pytest.mark.parametrize("bad", ["missing", "columns"])
def test_bad_input_writes_nothing(tmp_path: Path, bad: str) -> None:
    source = tmp_path / "nope"
    if bad == "columns":
        source = tmp_path / "table.csv"
        pd.DataFrame({"a": [1], "b": [2]}).to_csv(source, index=False)
    before = set(tmp_path.rglob("*"))
    assert main(["report", str(source), "-o", str(tmp_path / "out")]) == 2
    assert set(tmp_path.rglob("*")) == before
    with pytest.raises(ValueError, match=str(source.name)):
        write_report(source)


def flat(text: str) -> str:
    """Text without whitespace: the console wraps long lines, even inside a path."""
    return "".join(text.split())


def copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("report"))
    return dest


def test_missing_requests_table_skips_the_cdf_and_says_so(run_dir: Path, tmp_path: Path, capsys) -> None:
    """A variant without requests.csv would silently lose its curve: the figure is skipped, printed and noted."""
    run = copy_run(run_dir, tmp_path / "run")
    (run / "sun" / "requests.csv").unlink()
    assert main(["report", str(run), "-o", str(tmp_path / "out")]) == 0
    printed = flat(capsys.readouterr().out)
    assert flat(f"{run / 'sun' / 'requests.csv'} missing: latency CDF figure") in printed
    text = check_figures(tmp_path / "out" / "report.md")
    assert "Missing `sun/requests.csv`: latency CDF figure skipped" in text
    assert not any("latency-cdf" in p.name for p in figures(tmp_path / "out" / "report.md"))
    assert any("timeline" in p.name for p in figures(tmp_path / "out" / "report.md"))  # the rest is drawn


@pytest.mark.parametrize("damage", ["cut-mid-line", "cut-at-line", "text-in-numbers", "empty"])
def test_truncated_requests_table_is_an_error_naming_it(run_dir: Path, tmp_path: Path, damage: str, capsys) -> None:
    """A table cut short or damaged is refused (exit 2) naming the file, and no report is written."""
    run = copy_run(run_dir, tmp_path / "run")
    req = run / "qsun" / "requests.csv"
    data = req.read_bytes()
    lines = data.splitlines(keepends=True)
    damaged = {
        "cut-mid-line": data[: len(data) // 2],  # a write interrupted mid-line
        "cut-at-line": b"".join(lines[: len(lines) // 2]),  # whole lines only: fewer rows than summary.json
        "text-in-numbers": b"".join(lines[:-1]) + b",".join(
            b"0.01x" if name == b"ttft_s" else v for name, v in zip(lines[0].split(b","), lines[-1].split(b","))),
        "empty": b"",
    }[damage]
    req.write_bytes(damaged)
    before = set(tmp_path.rglob("*"))
    assert main(["report", str(run), "-o", str(tmp_path / "out")]) == 2
    assert flat(str(req)) in flat(capsys.readouterr().err)
    assert set(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("decades", [0.3, 1.5, 3.0, 6.0, 9.0])
def test_cdf_tick_labels_never_overlap(decades: float) -> None:
    """Latencies spanning a fraction of a decade up to nine: several labelled major ticks on each log axis,
    no two labels touching, and the legend clear of both panels (where it would cover a curve or SLO label)."""
    rng = np.random.default_rng(0)
    requests = {v: pd.DataFrame({"ttft_s": 10 ** rng.uniform(-3, -3 + decades, 400),
                                 "tpot_s": 10 ** rng.uniform(-4, -4 + decades, 400), "output_tokens": 10})
                for v in ("dedicated", "sun", "qsun")}
    run = RunData(Path("wide"), pd.DataFrame({"variant": list(requests)}), requests=requests,
                  scenario={"slo": {"ttft_s": 0.01, "tpot_s": 0.001}})
    fig = plot_latency_cdfs(run)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    axes = fig.axes[:2]
    for ax in axes:
        lo, hi = sorted(ax.get_xlim())
        labels = [t for t in ax.get_xticklabels(which="both") if t.get_text() and lo <= t.get_position()[0] <= hi]
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        assert len(boxes) >= 2 if decades < 1 else len(boxes) >= 3, [t.get_text() for t in labels]
        for left, right in zip(boxes, boxes[1:]):
            assert left.x1 < right.x0, (left, right)
    legend = axes[1].get_legend().get_window_extent(renderer)
    assert not any(legend.overlaps(ax.get_window_extent(renderer)) for ax in axes)


def test_report_names_where_results_are_published(run_dir: Path, tmp_path: Path) -> None:
    """Results built in a staging folder (the experiments) name their published folder, not the staging one."""
    from sunsim.report.markdown import write_report

    report = write_report(run_dir, tmp_path / "rep", source_label="results")
    assert "Source: `results`." in report.read_text() and str(run_dir) not in report.read_text()


def test_a_run_as_the_repository_keeps_it_keeps_the_figures_drawn_with_it(run_dir: Path, tmp_path: Path) -> None:
    """No per-request tables, no timeline (``.gitignore``): given an earlier report's figures, those stay, copied
    byte for byte and captioned as drawn with the run; without them the figures are skipped, as before."""
    run = copy_run(run_dir, tmp_path / "run")
    first = write_report(run, tmp_path / "first")
    drawn = {p.name: p.read_bytes() for p in (tmp_path / "first" / "figures").iterdir()
             if "latency-cdf" in p.name or "timeline" in p.name}
    assert len(drawn) == 4  # PNG + SVG of each
    for f in [*run.glob("*/requests.csv"), *run.glob("timeline.csv"), *run.glob("*/timeline.csv")]:
        f.unlink()
    kept = write_report(run, tmp_path / "kept", kept_figures=tmp_path / "first" / "figures")
    text = check_figures(kept)
    assert {n: (tmp_path / "kept" / "figures" / n).read_bytes() for n in drawn} == drawn
    assert text.count("(Drawn when the run was made: its data is not kept here.)") == 2
    assert len(figures(kept)) == len(figures(first))
    bare = write_report(run, tmp_path / "bare")
    assert not [p for p in figures(bare) if p.name in drawn]
    assert "latency CDF figure skipped" in bare.read_text() and "worker figure skipped" in bare.read_text()


def test_the_results_page_keeps_its_latency_figure_for_a_run_without_requests(run_dir: Path, tmp_path: Path) -> None:
    from sunsim.errors import InputError
    from sunsim.experiments.paper import latency_cdfs

    run = copy_run(run_dir, tmp_path / "results" / "paper")
    latency_cdfs(run, tmp_path / "results" / "figures" / "latency_cdfs")  # drawn from the requests tables
    drawn = (tmp_path / "results" / "figures" / "latency_cdfs.png").read_bytes()
    for f in run.glob("*/requests.csv"):
        f.unlink()
    latency_cdfs(run, tmp_path / "stage" / "figures" / "latency_cdfs")  # a page written elsewhere takes it along
    assert (tmp_path / "stage" / "figures" / "latency_cdfs.png").read_bytes() == drawn
    shutil.rmtree(tmp_path / "results" / "figures")
    with pytest.raises(InputError, match="no per-variant requests tables"):
        latency_cdfs(run, tmp_path / "stage2" / "latency_cdfs")
