"""The shape of the package: torch stays out of the simulator, one package per concept, small modules,
and an import graph without cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sunsim"
MAX_LINES = 400
MAX_TOP_LEVEL_MODULES = 8


def test_simulator_and_cli_do_not_import_torch(tmp_path):
    code = (
        "import sys, pkgutil, importlib, sunsim\n"
        "for m in pkgutil.walk_packages(sunsim.__path__, 'sunsim.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "from sunsim.cli import build_parser\n"
        "build_parser()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_few_top_level_modules_beside_the_packages():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert {"scenario", "costs", "workload", "sim", "analysis", "report", "cli"} <= set(packages)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the sunsim modules it imports at module level (imports inside functions are deferred
    on purpose and cannot form a cycle at import time)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("sunsim"):
                    deps.add(t)
        graph[name] = deps
    return graph


def test_no_import_cycle_inside_sunsim():
    graph = import_graph()
    # A package's __init__ re-exporting its own modules is not a cycle between concepts: drop the
    # edges from a module to the packages that contain it.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            raise AssertionError(" -> ".join(cycle))


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check above is not vacuous: two modules that import each other are reported."""
    pkg = tmp_path / "sunsim"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from sunsim import b\n")
    (pkg / "b.py").write_text("from .a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    try:
        test_no_import_cycle_inside_sunsim()
    except AssertionError as exc:
        assert "sunsim.a" in str(exc) and "sunsim.b" in str(exc)
    else:
        raise AssertionError("the cycle a <-> b was not found")


def test_the_public_api_resolves_and_runs(tmp_path):
    """Every name of ``sunsim.__all__`` resolves; the documented three lines run a scenario."""
    code = ("import sunsim, sys\n"
            "assert 'pandas' not in sys.modules\n"
            "missing = [n for n in sunsim.__all__ if getattr(sunsim, n, None) is None]\n"
            "assert not missing, missing\n"
            f"sc = sunsim.load_scenario({str(ROOT / 'scenarios' / 'default.yaml')!r}, ['workload.duration_s=5'])\n"
            "run = sunsim.run_scenario(sc)\n"
            "print(sorted(run.comparison['variant']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['dedicated', 'qsun', 'sun']"


def test_version_flag(capsys):
    import pytest

    import sunsim
    from sunsim.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"sunsim {sunsim.__version__}"
