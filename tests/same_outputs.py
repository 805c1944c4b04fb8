"""Check that every command's outputs are byte-identical between two revisions of sunsim.

Usage (from the repository root, with the project's venv)::

    .venv/bin/python tests/same_outputs.py [--ref REV] [--new REV] [--keep DIR]

It checks ``REV`` (default ``HEAD``) out into a temporary worktree, runs the same commands with
the worktree's code and with the working tree's code (or that of revision ``--new``) (a short default run, a baselines run with
its Perfetto trace, a plan, a sweep and a report of the run) and compares every file they wrote.
Fields that measure the wall clock (``*wall*`` keys of JSON files, ``wall_s``-like table columns)
and SVG creation dates are blanked first; so is the ledger of single-file outputs, which records
modification times. Exit 0 when everything matches, 1 with the differing files otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["--set", "workload.duration_s=20"]
SWEEP = """name: same
scenario: {root}/scenarios/default.yaml
grid: {{workload.rate: [60, 120]}}
set: {{workload.duration_s: 10}}
seeds: [1]
"""


def commands(root: Path, out: Path) -> list[list[str]]:
    """The command set: each writes under ``out``."""
    sweep = out / "same.yaml"
    sweep.write_text(SWEEP.format(root=root))
    return [
        ["run", f"{root}/scenarios/default.yaml", "--out", f"{out}/default", *SHORT],
        ["run", f"{root}/scenarios/experiments/baselines.yaml", "--out", f"{out}/baselines",
         "--set", "workload.duration_s=10", "--trace-out", f"{out}/baselines.trace.json"],
        ["plan", f"{root}/scenarios/default.yaml", "--out", f"{out}/plan", "--seeds", "1", "--duration", "20",
         "--variant", "sun", "--variant", "dedicated"],
        ["sweep", str(sweep), "--out", f"{out}/sweep.csv", "--workers", "1"],
        ["report", f"{out}/default", "-o", f"{out}/report"],
    ]


def run_all(code: Path, out: Path) -> None:
    """Run the command set with the sunsim found in ``code``."""
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONHASHSEED": "0", "COLUMNS": "120"}
    for argv in commands(code, out):
        done = subprocess.run([sys.executable, "-m", "sunsim", *argv], cwd=code, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"`sunsim {' '.join(argv)}` failed with {code}:\n{done.stderr[-2000:]}")


def normalised(path: Path, base: Path, code: Path) -> bytes:
    """A file's bytes with wall-clock fields and the paths of the two trees blanked."""
    data = path.read_bytes()
    if path.name == ".sunsim-files.json":
        return b""
    if path.suffix in (".json", ".yaml", ".csv", ".md", ".svg"):
        text = data.decode("utf-8", "replace").replace(str(base), "<OUT>").replace(str(code), "<CODE>")
        if path.suffix == ".json":
            try:
                text = json.dumps(_drop_wall(json.loads(text)), sort_keys=True)
            except ValueError:
                pass
        if path.suffix == ".svg":
            text = re.sub(r"<dc:date>.*?</dc:date>", "", text)
        if path.suffix == ".csv":
            text = _drop_wall_columns(text)
        return text.encode()
    return data


def _drop_wall(value):
    if isinstance(value, dict):
        return {k: ("<wall>" if "wall" in k else _drop_wall(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_wall(v) for v in value]
    return value


def _drop_wall_columns(text: str) -> str:
    lines = text.splitlines()
    if not lines:
        return text
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if "wall" not in name]
    if len(keep) == len(header):
        return text
    return "\n".join(",".join(cell for i, cell in enumerate(line.split(",")) if i in keep) for line in lines)


def digests(out: Path, code: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(normalised(p, out, code)).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "same.yaml"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="HEAD", help="revision to compare the working tree with (default HEAD)")
    parser.add_argument("--new", help="revision to compare with (default: the working tree)")
    parser.add_argument("--keep", type=Path, help="keep both output trees in this new folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="same-outputs-"))
    try:
        ref_tree, new_tree = work / "ref", (work / "new" if args.new else ROOT)
        trees = [(ref_tree, args.ref)] + ([(new_tree, args.new)] if args.new else [])
        for tree, rev in trees:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                           check=True, capture_output=True)
        try:
            run_all(ref_tree, work / "before")
            run_all(new_tree, work / "after")
        finally:
            for tree, _ in trees:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
        before, after = digests(work / "before", ref_tree), digests(work / "after", new_tree)
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        print(f"{len(before)} files before, {len(after)} after; {len(differ)} differ")
        for name in differ:
            print(f"  differs: {name}")
        if args.keep:
            shutil.copytree(work, args.keep, ignore=shutil.ignore_patterns("ref", "new"))
        return 1 if differ else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
