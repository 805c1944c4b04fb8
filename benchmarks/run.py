"""Simulator speed: wall time, simulated requests per wall-second, events and peak memory.

Each measurement runs in a fresh process so that its peak RSS is its own. Reports the
median of ``--repeats`` runs per (size, mode), as a table and optionally a CSV.

    python benchmarks/run.py                       # 10k, 100k, 1M requests; 3 repeats; + 10M streamed, once
    python benchmarks/run.py --sizes 10000 100000 --repeats 5 --stream-sizes none --csv bench.csv
    python benchmarks/run.py --sweep-points 100    # also time a 100-point sweep of the 10k scenario

A streamed row (``--stream-sizes``) runs as ``sunsim run --stream`` does: requests drawn block by block,
rows written to a Parquet file as requests finish, the summary read back from it, so its peak RSS
follows the requests in flight (and the summary's read-back), not the request count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "fleet.yaml"


def one_run(size: int, variant: str, streamed: bool) -> dict:
    """Child process: simulate one variant of the fleet scenario and report its figures."""
    from dataclasses import replace

    from sunsim.scenario import load_scenario
    from sunsim.sim.variant import simulate_variant
    from sunsim.workload.stream import StreamedRequests, build_workload

    sc = load_scenario(SCENARIO, [f"workload.num_requests={size}"])
    v = next(v for v in sc.variants if v.name == variant)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.environ.get("SUNSIM_BENCH_TMP")) as tmp:
        if streamed:
            from sunsim.analysis.record_file import ParquetRecordSink

            source = StreamedRequests(sc)
            sink = ParquetRecordSink(Path(tmp) / "requests.parquet", source.models)
            res = simulate_variant(sc, v, source, sink=sink)
            sink.close()
            res = replace(res, records_file=str(sink.path))
            sim_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({"sim_wall_s": res.wall_s, "sim_peak_rss_mb": sim_rss}), file=sys.stderr, flush=True)
            from sunsim.analysis.metrics import summarize  # (imported after the run: what a summary adds shows)

            summary = summarize(res)
        else:
            from sunsim.analysis.metrics import request_table, summarize

            res = simulate_variant(sc, v, build_workload(sc))
            summary = summarize(res, request_table(res))
    sim_wall = res.wall_s
    total = time.perf_counter() - t0
    return {
        "requests": size, "mode": variant, "streamed": streamed, "sim_wall_s": sim_wall, "total_wall_s": total,
        "requests_per_wall_s": size / sim_wall, "events": res.events,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "finished": summary["requests"]["finished"], "tpot_p50_ms": summary["tpot_s"]["p50"] * 1e3,
        "slo_attainment": summary["slo"]["attainment"],
    }


def measure(size: int, variant: str, repeats: int, streamed: bool = False) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--child", str(size), variant, str(int(streamed))],
                             check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        sim_line = [ln for ln in out.stderr.splitlines() if ln.startswith('{"sim_wall_s"')]
        if sim_line:  # a streamed run: its peak before the summary, too
            row["sim_peak_rss_mb"] = json.loads(sim_line[-1])["sim_peak_rss_mb"]
        runs.append(row)
    med = {k: statistics.median(r[k] for r in runs) for k in ("sim_wall_s", "total_wall_s", "requests_per_wall_s",
                                                               "peak_rss_mb")}
    return {**runs[0], **med, "repeats": repeats,
            "sim_wall_min_s": min(r["sim_wall_s"] for r in runs), "sim_wall_max_s": max(r["sim_wall_s"] for r in runs)}


def time_sweep(points: int) -> float:
    """Wall time of a sweep of ``points`` grid points (all variants) of the 10k scenario, local executor."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        sweep = {"name": "bench", "scenario": str(SCENARIO), "set": {"workload.num_requests": 10000},
                 "grid": {"workload.rate": [1000 + 5 * i for i in range(points)]}, "seeds": [1]}
        path = Path(tmp) / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sunsim", "sweep", str(path), "--out", str(Path(tmp) / "t.csv")],
                       check=True, capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(one_run(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1")))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["10000,100000,1000000"],
                    help="request counts, comma- or space-separated")
    ap.add_argument("--modes", default="dedicated,shared,shared-int4", help="variants of benchmarks/fleet.yaml")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stream-sizes", default="10000000",
                    help="request counts of streamed rows (comma-separated; 'none' for none), run once each")
    ap.add_argument("--stream-modes", default="shared", help="variants of the streamed rows")
    ap.add_argument("--csv", help="also write the table here")
    ap.add_argument("--sweep-points", type=int, default=0, help="also time a sweep of this many 10k points")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    rows = []
    for size in [int(s) for arg in args.sizes for s in arg.split(",") if s]:
        for mode in args.modes.split(","):
            with console.status(f"{size:,} requests, {mode} ({args.repeats} runs)"):
                rows.append(measure(size, mode, args.repeats))
            r = rows[-1]
            console.print(f"{size:>9,} {mode:<12} {r['sim_wall_s']:7.2f} s  {r['requests_per_wall_s']:9,.0f} req/s  "
                          f"{r['peak_rss_mb']:6.0f} MB", highlight=False)
    for size in [int(s) for s in args.stream_sizes.split(",") if s and s != "none"]:
        for mode in args.stream_modes.split(","):
            with console.status(f"{size:,} requests, {mode}, streamed"):
                rows.append(measure(size, mode, 1, streamed=True))
            r = rows[-1]
            console.print(f"{size:>9,} {mode:<12} streamed {r['sim_wall_s']:7.2f} s  {r['requests_per_wall_s']:9,.0f} "
                          f"req/s  {r['peak_rss_mb']:6.0f} MB", highlight=False)
    table = Table(title="sunsim speed (median of repeats; sim = simulation only, total = + workload and summaries)")
    for col in ("requests", "mode", "sim wall s", "total wall s", "sim req/wall-s", "events", "peak RSS MB"):
        table.add_column(col, justify="right")
    for r in rows:
        mode = r["mode"] + (" (streamed)" if r["streamed"] else "")
        table.add_row(f"{r['requests']:,}", mode, f"{r['sim_wall_s']:.2f}", f"{r['total_wall_s']:.2f}",
                      f"{r['requests_per_wall_s']:,.0f}", f"{r['events']:,}", f"{r['peak_rss_mb']:.0f}")
    console.print(table)
    if args.sweep_points:
        with console.status(f"sweep of {args.sweep_points} points"):
            wall = time_sweep(args.sweep_points)
        console.print(f"sweep: {args.sweep_points} points of the 10k scenario (3 variants each) in {wall:.1f} s")
    if args.csv:
        import pandas as pd

        pd.DataFrame(rows).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
